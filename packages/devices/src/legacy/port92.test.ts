import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { PORT92_PORT, Port92, type Port92State } from './port92.js';

function harness() {
  const a20: boolean[] = [];
  let resets = 0;
  const port = new Port92({ a20: (on) => a20.push(on), reset: () => resets++ });
  const bus = new IoBus();
  bus.insert(port, PORT92_PORT, 1);
  const one = new Uint8Array(1);
  return {
    port,
    a20,
    resets: (): number => resets,
    outb(v: number): void {
      one[0] = v;
      bus.write(0x92, one);
    },
    inb(): number {
      bus.read(0x92, one);
      return one[0]!;
    },
  };
}

describe('Port92 (system control port A)', () => {
  it('starts with A20 enabled and reports changes of bit 1', () => {
    const h = harness();
    expect(h.inb()).toBe(0x02);
    expect(h.port.a20).toBe(true);
    h.outb(0x00);
    expect(h.port.a20).toBe(false);
    h.outb(0x00); // no change, no report
    h.outb(0x02);
    expect(h.a20).toEqual([false, true]);
    expect(h.resets()).toBe(0);
  });

  it('resets on a 0 to 1 write of bit 0 only', () => {
    const h = harness();
    h.outb(0x03);
    expect(h.resets()).toBe(1);
    h.outb(0x03); // bit 0 stays 1: no new reset
    expect(h.resets()).toBe(1);
    expect(h.inb()).toBe(0x03);
    h.outb(0x02);
    h.outb(0x03);
    expect(h.resets()).toBe(2);
    expect(h.a20).toEqual([]);
  });

  it('reset() returns to A20 on; save/restore through JSON without hooks', () => {
    const h = harness();
    h.outb(0x00);
    h.port.reset();
    expect(h.inb()).toBe(0x02);
    expect(h.a20).toEqual([false, true]);
    h.outb(0x40);
    const state = JSON.parse(JSON.stringify(h.port.save())) as Port92State;
    const b = harness();
    b.port.restore(state);
    expect(b.inb()).toBe(0x40);
    expect(b.port.a20).toBe(false);
    expect(b.a20).toEqual([]);
    expect(() => b.port.restore({ value: 256 })).toThrow(RangeError);
  });
});
