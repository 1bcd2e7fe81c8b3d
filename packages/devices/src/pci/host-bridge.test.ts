import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { PCI_COMMAND_MEMORY, PciConfigSpace, type PciDevice } from './device.js';
import { PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT, PciHostBridge, type PciHostBridgeState } from './host-bridge.js';

function machine(): { pci: PciHostBridge; io: IoBus; in: (port: number, size: 1 | 2 | 4) => number; out: (port: number, size: 1 | 2 | 4, v: number) => void } {
  const pci = new PciHostBridge();
  const io = new IoBus();
  pci.mapPorts(io);
  return {
    pci,
    io,
    in: (port, size) => {
      const d = new Uint8Array(size).fill(0xff);
      io.read(port, d);
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = v * 256 + d[i]!;
      return v;
    },
    out: (port, size, v) => {
      const d = new Uint8Array(size);
      for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
      io.write(port, d);
    },
  };
}

/** CONFIG_ADDRESS for bus 0. */
const addr = (dev: number, fn: number, reg: number): number => (0x80000000 | (dev << 11) | (fn << 8) | reg) >>> 0;

describe('PciHostBridge configuration mechanism #1', () => {
  it('reads CONFIG_ADDRESS back, with reserved and low bits as 0', () => {
    const m = machine();
    expect(m.in(0xcf8, 4)).toBe(0);
    m.out(0xcf8, 4, 0x80001234);
    expect(m.in(0xcf8, 4)).toBe(0x80001234);
    m.out(0xcf8, 4, 0xffffffff);
    expect(m.in(0xcf8, 4)).toBe(0x80fffffc);
    // Byte and word accesses are not CONFIG_ADDRESS.
    m.out(0xcf8, 1, 0);
    m.out(0xcf8, 2, 0);
    expect(m.in(0xcf8, 4)).toBe(0x80fffffc);
    expect(m.in(0xcf8, 1)).toBe(0xff);
    // 0xCF9..0xCFB are left for other devices (the PIIX's reset control).
    expect(m.io.find(0xcf9)).toBeUndefined();
    expect(m.io.find(0xcfb)).toBeUndefined();
  });

  it('identifies the host bridge at 00:00.0', () => {
    const m = machine();
    m.out(0xcf8, 4, addr(0, 0, 0x00));
    expect(m.in(0xcfc, 4)).toBe(0x12378086);
    m.out(0xcf8, 4, addr(0, 0, 0x08));
    expect(m.in(0xcfc, 4)).toBe(0x06000002); // class 060000h, revision 02h
    m.out(0xcf8, 4, addr(0, 0, 0x0c));
    expect(m.in(0xcfe, 1)).toBe(0x00); // header type 0, single function
  });

  it('forwards byte and word accesses at any offset within the dword', () => {
    const m = machine();
    m.out(0xcf8, 4, addr(0, 0, 0x00));
    expect(m.in(0xcfe, 1)).toBe(0x37); // device ID, low byte
    expect(m.in(0xcff, 1)).toBe(0x12);
    expect(m.in(0xcfe, 2)).toBe(0x1237);
    expect(m.in(0xcfc, 2)).toBe(0x8086);
    expect(m.in(0xcfd, 1)).toBe(0x80);
    // Bytes of an unaligned access past 0xCFF are not configuration data.
    expect(m.in(0xcfe, 4)).toBe(0xffff1237);

    const dev = new PciConfigSpace({ vendorId: 0x1af4, deviceId: 0x1001, classCode: 0x010000, interruptPin: 1 });
    m.pci.attach(dev, 3);
    m.out(0xcf8, 4, addr(3, 0, 0x3c));
    m.out(0xcfc, 1, 11); // interrupt line
    m.out(0xcfd, 1, 4); // interrupt pin: read-only
    expect(m.in(0xcfc, 4)).toBe(0x0000010b);
    m.out(0xcf8, 4, addr(3, 0, 0x04));
    m.out(0xcfc, 2, PCI_COMMAND_MEMORY);
    expect(dev.get16(0x04)).toBe(PCI_COMMAND_MEMORY);
  });

  it('reads all-ones for absent functions, other buses and a disabled CONFIG_ADDRESS', () => {
    const m = machine();
    m.out(0xcf8, 4, addr(5, 0, 0x00));
    expect(m.in(0xcfc, 4)).toBe(0xffffffff);
    expect(m.in(0xcfe, 2)).toBe(0xffff);
    m.out(0xcfc, 4, 0x12345678); // master abort: dropped
    m.out(0xcf8, 4, addr(0, 1, 0x00));
    expect(m.in(0xcfc, 4)).toBe(0xffffffff);
    m.out(0xcf8, 4, (addr(0, 0, 0x00) | (1 << 16)) >>> 0); // bus 1
    expect(m.in(0xcfc, 4)).toBe(0xffffffff);
    m.out(0xcf8, 4, 0x00000000); // enable bit clear
    expect(m.in(0xcfc, 4)).toBe(0xffffffff);
    m.out(0xcfc, 2, 0); // not a config cycle
    expect(m.pci.configRead(0, 0, 0x04, 2)).toBe(0x0006);
  });

  it('sizes and programs a BAR through CONFIG_DATA', () => {
    const m = machine();
    const moves: [number, number | null][] = [];
    const dev = new PciConfigSpace({ vendorId: 0x1af4, deviceId: 0x1000, classCode: 0x020000 }, (i, a) => moves.push([i, a]));
    dev.addBar(0, { kind: 'io', size: 32 });
    dev.addBar(1, { kind: 'mem32', size: 0x1000 });
    m.pci.attach(dev, 2);
    m.out(0xcf8, 4, addr(2, 0, 0x10));
    m.out(0xcfc, 4, 0xffffffff);
    expect(m.in(0xcfc, 4)).toBe(0xffffffe1);
    m.out(0xcfc, 4, 0xc040);
    m.out(0xcf8, 4, addr(2, 0, 0x14));
    m.out(0xcfc, 4, 0xffffffff);
    expect(m.in(0xcfc, 4)).toBe(0xfffff000);
    m.out(0xcfc, 4, 0xfebf0000);
    m.out(0xcf8, 4, addr(2, 0, 0x04));
    m.out(0xcfc, 2, 0x0003);
    expect(moves).toEqual([[0, 0xc040], [1, 0xfebf0000]]);
  });

  it('attaches functions by slot and function', () => {
    const m = machine();
    const f0 = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x0001, classCode: 0x0c0300, multiFunction: true });
    const f2 = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x0002, classCode: 0x0c0300 });
    m.pci.attach(f0, 7);
    m.pci.attach(f2, 7, 2);
    expect(() => m.pci.attach(f0, 0)).toThrow(/00:00\.0 is already occupied/);
    expect(() => m.pci.attach(f0, 32)).toThrow(RangeError);
    expect(() => m.pci.attach(f0, 1, 8)).toThrow(RangeError);
    m.out(0xcf8, 4, addr(7, 2, 0x00));
    expect(m.in(0xcfc, 4)).toBe(0x00021234);
    expect(m.pci.configRead(7, 0, 0x0e, 1)).toBe(0x80);
    expect(m.pci.list().map((s) => [s.slot, s.fn])).toEqual([[0, 0], [7, 0], [7, 2]]);
    expect(m.pci.detach(7, 2)).toBe(f2);
    expect(m.pci.configRead(7, 2, 0x00, 4)).toBe(0xffffffff);
    expect(() => m.pci.detach(7, 2)).toThrow(/no PCI function/);
  });

  it('takes any PciDevice implementation', () => {
    const m = machine();
    const log: string[] = [];
    const dev: PciDevice = {
      readConfig: (off, data) => {
        log.push(`r${off}/${data.length}`);
        data.fill(0x5a);
      },
      writeConfig: (off, data) => log.push(`w${off}/${data.length}`),
    };
    m.pci.attach(dev, 9);
    m.out(0xcf8, 4, addr(9, 0, 0x40));
    expect(m.in(0xcfd, 2)).toBe(0x5a5a);
    m.out(0xcff, 1, 1);
    m.pci.configWrite(9, 0, 0x44, 4, 0);
    expect(log).toEqual(['r65/2', 'w67/1', 'w68/4']);
  });

  it('saves and restores through JSON', () => {
    const a = machine();
    a.out(0xcf8, 4, addr(0, 0, 0x0c));
    a.out(0xcfd, 1, 0x40); // latency timer
    a.out(0xcf8, 4, addr(3, 0, 0x10));
    const state = JSON.parse(JSON.stringify(a.pci.save())) as PciHostBridgeState;
    const b = machine();
    b.pci.restore(state);
    expect(b.in(0xcf8, 4)).toBe(addr(3, 0, 0x10));
    expect(b.pci.configRead(0, 0, 0x0d, 1)).toBe(0x40);
    expect(b.pci.save()).toEqual(state);
    expect(() => b.pci.restore({ ...state, configAddress: 0x80000001 })).toThrow(/not a CONFIG_ADDRESS value/);
    b.pci.reset();
    expect(b.in(0xcf8, 4)).toBe(0);
    expect(b.pci.configRead(0, 0, 0x0d, 1)).toBe(0);
    expect([PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT]).toEqual([0xcf8, 0xcfc]);
  });
});
