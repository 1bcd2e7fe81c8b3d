import { describe, expect, it } from 'vitest';
import { VIRTIO_INT_CONFIG_CHANGE } from '../constants.js';
import { TestQueueDriver, startMmioDevice } from '../test-driver.js';
import { VIRTIO_CONSOLE_INPUT_LIMIT, VirtioConsole, type VirtioConsoleState } from './console.js';

const text = (b: Uint8Array[]): string => Buffer.concat(b).toString('latin1');

describe('VirtioConsole', () => {
  it('passes guest output from the transmit queue to the host', () => {
    const out: Uint8Array[] = [];
    const con = new VirtioConsole({ output: (d) => out.push(d) });
    const m = startMmioDevice(con);
    const tx = m.queues[1]!;
    m.ram.set(Buffer.from('hello, '), 0x80000);
    m.ram.set(Buffer.from('world\n'), 0x80100);
    tx.publish(tx.addChain([{ addr: 0x80000, len: 7 }, { addr: 0x80100, len: 6 }]));
    m.notify(1);
    expect(text(out)).toBe('hello, world\n');
    expect(tx.usedIdx()).toBe(1);
    expect(tx.usedElem(0)).toEqual({ id: 0, len: 0 });
    expect(m.irqs).toEqual([true]);
  });

  it('holds host input until the guest posts receive buffers, then splits it across them', () => {
    const con = new VirtioConsole();
    expect(con.sendInput('early')).toBe(5); // before the driver is up
    const m = startMmioDevice(con);
    const rx = m.queues[0]!;
    expect(con.pendingInput).toBe(5);
    rx.publish(rx.addChain([{ addr: 0x80000, len: 3, write: true }]));
    rx.publish(rx.addChain([{ addr: 0x80100, len: 16, write: true }]));
    m.notify(0);
    expect(rx.usedIdx()).toBe(2);
    expect(Buffer.from(m.ram.subarray(0x80000, 0x80003)).toString()).toBe('ear');
    expect(rx.usedElem(1).len).toBe(2);
    expect(Buffer.from(m.ram.subarray(0x80100, 0x80102)).toString()).toBe('ly');
    // No buffer left: input waits, and arrives with the next buffer.
    con.sendInput('x');
    expect(rx.usedIdx()).toBe(2);
    rx.publish(rx.addChain([{ addr: 0x80200, len: 16, write: true }]));
    m.notify(0);
    expect(rx.usedElem(2).len).toBe(1);
    expect(m.ram[0x80200]).toBe(0x78);
    // Without input, posted buffers stay with the device.
    rx.publish(rx.addChain([{ addr: 0x80300, len: 16, write: true }]));
    m.notify(0);
    expect(rx.usedIdx()).toBe(3);
    expect(con.sendInput('y')).toBe(1);
    expect(rx.usedIdx()).toBe(4);
  });

  it('bounds buffered input', () => {
    const con = new VirtioConsole();
    expect(con.sendInput(new Uint8Array(VIRTIO_CONSOLE_INPUT_LIMIT - 1))).toBe(VIRTIO_CONSOLE_INPUT_LIMIT - 1);
    expect(con.sendInput('abc')).toBe(1);
    expect(con.sendInput('d')).toBe(0);
  });

  it('reports its size, signals resizes, and outputs emergency writes', () => {
    const out: Uint8Array[] = [];
    const con = new VirtioConsole({ output: (d) => out.push(d), cols: 132, rows: 43 });
    const m = startMmioDevice(con);
    const cfg = new Uint8Array(4);
    m.t.read(0x100, cfg);
    expect([...cfg]).toEqual([132, 0, 43, 0]);
    const gen = m.t.core.configGeneration;
    con.resize(100, 30);
    m.t.read(0x100, cfg);
    expect([...cfg]).toEqual([100, 0, 30, 0]);
    expect(m.t.core.configGeneration).toBe(gen + 1);
    expect(m.t.core.interruptStatus & VIRTIO_INT_CONFIG_CHANGE).toBe(VIRTIO_INT_CONFIG_CHANGE);
    m.t.write(0x108, new Uint8Array([0x21, 0, 0, 0]));
    expect(text(out)).toBe('!');
    expect(() => con.resize(70000, 1)).toThrow(RangeError);
  });

  it('saves pending input and size, and delivers the input after restore', () => {
    const con = new VirtioConsole({ cols: 90 });
    con.sendInput('pending');
    const m = startMmioDevice(con);
    const state = JSON.parse(JSON.stringify(m.t.save())) as ReturnType<typeof m.t.save>;
    expect(state.transport.device).toEqual({ version: 1, cols: 90, rows: 25, pendingInput: [...Buffer.from('pending')] });
    const con2 = new VirtioConsole();
    const m2 = startMmioDevice(con2);
    m2.t.restore(state as unknown as ReturnType<typeof m2.t.save>);
    expect(con2.cols).toBe(90);
    const rx = m.queues[0]!; // same ring layout in both VMs
    const drv2 = new TestQueueDriver(m2.dv, rx.desc, rx.size);
    drv2.publish(drv2.addChain([{ addr: 0x80000, len: 16, write: true }]));
    m2.notify(0);
    expect(Buffer.from(m2.ram.subarray(0x80000, 0x80007)).toString()).toBe('pending');
    expect(() => con2.restore({ version: 1, cols: 1, rows: 1, pendingInput: [256] } as VirtioConsoleState)).toThrow(/bytes/);
  });
});
