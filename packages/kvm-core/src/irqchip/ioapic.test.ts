import { describe, it, expect } from 'vitest';
import { MmioBus } from '../bus.js';
import { IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE, IOAPIC_VERSION, IoApic, IoApicDeliveryMode, type IoApicMessage, type IoApicState } from './ioapic.js';

const IOREGSEL = 0x00;
const IOWIN = 0x10;
const redLo = (pin: number): number => 0x10 + 2 * pin;
const redHi = (pin: number): number => 0x11 + 2 * pin;

function harness(id?: number): { io: IoApic; msgs: IoApicMessage[]; rd: (index: number) => number; wr: (index: number, v: number) => void } {
  const msgs: IoApicMessage[] = [];
  const io = new IoApic({ id, deliver: (m) => msgs.push(m) });
  const bus = new MmioBus();
  bus.insert(io, IOAPIC_BASE, IOAPIC_SIZE);
  const dw = new DataView(new ArrayBuffer(4));
  const b4 = new Uint8Array(dw.buffer);
  const sel = (index: number): void => {
    expect(bus.write(IOAPIC_BASE + IOREGSEL, new Uint8Array([index]))).toBe(true);
  };
  return {
    io,
    msgs,
    rd: (index) => {
      sel(index);
      expect(bus.read(IOAPIC_BASE + IOWIN, b4)).toBe(true);
      return dw.getUint32(0, true);
    },
    wr: (index, v) => {
      sel(index);
      dw.setUint32(0, v >>> 0, true);
      expect(bus.write(IOAPIC_BASE + IOWIN, b4)).toBe(true);
    },
  };
}

describe('IoApic (82093AA)', () => {
  it('has the 82093AA identification registers and masked entries at reset', () => {
    const { rd } = harness();
    expect(rd(0x00)).toBe(0);
    expect(rd(0x01)).toBe(0x00170011);
    expect(IOAPIC_VERSION).toBe(0x00170011);
    expect((rd(0x01) >>> 16) + 1).toBe(IOAPIC_PINS);
    expect(rd(0x02)).toBe(0);
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      expect(rd(redLo(pin))).toBe(0x00010000);
      expect(rd(redHi(pin))).toBe(0);
    }
    // past the table and the gaps between registers read zero
    expect(rd(0x40)).toBe(0);
    expect(rd(0x03)).toBe(0);
  });

  it('keeps 4 ID bits, loads the arbitration ID from it, and ignores writes to VER and ARB', () => {
    const { rd, wr } = harness(2);
    expect(rd(0x00)).toBe(0x02000000);
    expect(rd(0x02)).toBe(0x02000000);
    wr(0x00, 0xffffffff);
    expect(rd(0x00)).toBe(0x0f000000);
    expect(rd(0x02)).toBe(0x0f000000);
    wr(0x01, 0);
    wr(0x02, 0x05000000);
    expect(rd(0x01)).toBe(IOAPIC_VERSION);
    expect(rd(0x02)).toBe(0x0f000000);
    expect(() => new IoApic({ id: 16 })).toThrow(RangeError);
  });

  it('reads back redirection entries with only the defined writable bits', () => {
    const { rd, wr } = harness();
    // vector 0x31, lowest priority, logical, active low, level, unmasked
    wr(redLo(5), 0x0000a931);
    wr(redHi(5), 0x0f000000);
    expect(rd(redLo(5))).toBe(0x0000a931);
    expect(rd(redHi(5))).toBe(0x0f000000);
    // delivery status (12), remote IRR (14) and reserved bits are read-only
    wr(redLo(6), 0xffffffff);
    wr(redHi(6), 0xffffffff);
    expect(rd(redLo(6))).toBe(0x0001afff);
    expect(rd(redHi(6))).toBe(0xff000000);
    expect(rd(redLo(7))).toBe(0x00010000);
  });

  it('delivers edge entries on rising edges only', () => {
    const { io, rd, wr, msgs } = harness();
    wr(redHi(4), 0x01000000);
    wr(redLo(4), 0x00000034); // vector 0x34, fixed, physical, edge, unmasked
    io.setIrq(4, true);
    io.setIrq(4, true);
    expect(msgs).toEqual([{ vector: 0x34, deliveryMode: 0, destMode: 'physical', dest: 1, trigger: 'edge' }]);
    io.setIrq(4, false);
    io.setIrq(4, true);
    expect(msgs).toHaveLength(2);
    // edge entries never set remote IRR or delivery status
    expect(rd(redLo(4))).toBe(0x34);
    io.eoi(0x34);
    expect(msgs).toHaveLength(2);
  });

  it('drops edges on masked pins, even after unmasking', () => {
    const { io, wr, msgs } = harness();
    wr(redLo(1), 0x00010031);
    io.setIrq(1, true);
    wr(redLo(1), 0x00000031);
    expect(msgs).toEqual([]);
    io.setIrq(1, false);
    io.setIrq(1, true);
    expect(msgs.map((m) => m.vector)).toEqual([0x31]);
  });

  it('holds level entries in remote IRR until EOI and redelivers while the pin stays asserted', () => {
    const { io, rd, wr, msgs } = harness();
    wr(redHi(16), 0x03000000);
    wr(redLo(16), 0x0000a941); // vector 0x41, lowest priority, logical, active low, level
    io.setIrq(16, true);
    expect(msgs).toEqual([{ vector: 0x41, deliveryMode: IoApicDeliveryMode.LowestPriority, destMode: 'logical', dest: 3, trigger: 'level' }]);
    expect(rd(redLo(16))).toBe(0x0000e941); // remote IRR set
    io.setIrq(16, true);
    expect(msgs).toHaveLength(1);
    io.eoi(0x42); // another vector: no effect
    expect(rd(redLo(16)) & 0x4000).toBe(0x4000);
    io.eoi(0x41);
    expect(msgs).toHaveLength(2); // still asserted: delivered again
    expect(rd(redLo(16)) & 0x4000).toBe(0x4000);
    io.setIrq(16, false);
    io.eoi(0x41);
    expect(msgs).toHaveLength(2);
    expect(rd(redLo(16))).toBe(0x0000a941);
    // deasserted then asserted again with remote IRR clear: delivered
    io.setIrq(16, true);
    expect(msgs).toHaveLength(3);
  });

  it('delivers an asserted level pin when it is unmasked', () => {
    const { io, rd, wr, msgs } = harness();
    wr(redLo(10), 0x00018050); // level, masked
    io.setIrq(10, true);
    expect(msgs).toEqual([]);
    expect(rd(redLo(10))).toBe(0x00018050);
    wr(redLo(10), 0x00008050);
    expect(msgs.map((m) => [m.vector, m.trigger])).toEqual([[0x50, 'level']]);
    // masking after acceptance leaves remote IRR for the EOI to clear
    wr(redLo(10), 0x00018050);
    expect(rd(redLo(10))).toBe(0x0001c050);
    io.eoi(0x50);
    expect(rd(redLo(10))).toBe(0x00018050);
    expect(msgs).toHaveLength(1);
  });

  it('clears remote IRR when an entry is switched to edge (Linux\'s EOI for version 0x11)', () => {
    const { io, rd, wr, msgs } = harness();
    wr(redLo(9), 0x00008061);
    io.setIrq(9, true);
    io.setIrq(9, false);
    expect(rd(redLo(9)) & 0x4000).toBe(0x4000);
    wr(redLo(9), 0x00010061); // mask, edge
    wr(redLo(9), 0x00018061); // masked, level
    expect(rd(redLo(9))).toBe(0x00018061);
    wr(redLo(9), 0x00008061);
    io.setIrq(9, true);
    expect(msgs).toHaveLength(2);
  });

  it('treats NMI, SMI, INIT and ExtINT entries as edge-triggered whatever the trigger bit', () => {
    const { io, rd, wr, msgs } = harness();
    wr(redLo(2), 0x00008400); // NMI, level bit set
    wr(redLo(0), 0x00000700); // ExtINT
    io.setIrq(2, true);
    io.setIrq(2, true);
    io.setIrq(0, true);
    expect(msgs).toEqual([
      { vector: 0, deliveryMode: IoApicDeliveryMode.NMI, destMode: 'physical', dest: 0, trigger: 'edge' },
      { vector: 0, deliveryMode: IoApicDeliveryMode.ExtINT, destMode: 'physical', dest: 0, trigger: 'edge' },
    ]);
    expect(rd(redLo(2)) & 0x4000).toBe(0);
    // reserved delivery mode 3 goes nowhere
    wr(redLo(3), 0x00000330);
    io.setIrq(3, true);
    expect(msgs).toHaveLength(2);
  });

  it('handles byte-wide IOREGSEL and narrow IOWIN accesses', () => {
    const io = new IoApic();
    io.write(IOREGSEL, new Uint8Array([0x12]));
    const sel = new Uint8Array(4);
    io.read(IOREGSEL, sel);
    expect(Array.from(sel)).toEqual([0x12, 0, 0, 0]);
    // write the vector byte alone, then the mask byte alone
    io.write(IOWIN, new Uint8Array([0x77]));
    io.write(IOWIN + 2, new Uint8Array([0x00]));
    const b = new Uint8Array(1);
    io.read(IOWIN + 2, b);
    expect(b[0]).toBe(0);
    const d = new Uint8Array(4);
    io.read(IOWIN, d);
    expect(Array.from(d)).toEqual([0x77, 0, 0, 0]);
    // unimplemented offsets read as zero and ignore writes
    io.write(0x08, new Uint8Array([0xff]));
    io.read(0x08, b);
    expect(b[0]).toBe(0);
  });

  it('rejects pins outside 0..23', () => {
    const io = new IoApic();
    expect(() => io.setIrq(24, true)).toThrow(RangeError);
  });

  it('saves and restores through JSON without delivering', () => {
    const a = harness(1);
    a.wr(redHi(16), 0x02000000);
    a.wr(redLo(16), 0x00008041);
    a.wr(redLo(4), 0x00000034);
    a.io.setIrq(16, true);
    a.io.setIrq(4, true);
    a.rd(redLo(4));
    const state = JSON.parse(JSON.stringify(a.io.save())) as IoApicState;
    expect(state).toMatchObject({ id: 1, arbitrationId: 1, ioregsel: 0x18, pins: (1 << 16) | (1 << 4) });
    expect(state.redirection[16]).toEqual({ low: 0x0000c041, high: 0x02000000 });
    expect(state.redirection[0]).toEqual({ low: 0x00010000, high: 0 });

    const b = harness();
    b.io.restore(state);
    expect(b.msgs).toEqual([]);
    expect(b.io.save()).toEqual(state);
    // the pin is still asserted: EOI redelivers
    b.io.eoi(0x41);
    expect(b.msgs).toEqual([{ vector: 0x41, deliveryMode: 0, destMode: 'physical', dest: 2, trigger: 'level' }]);
    // and the edge pin, already high, needs a new edge
    b.io.setIrq(4, true);
    expect(b.msgs).toHaveLength(1);
  });

  it('rejects malformed state', () => {
    const good = new IoApic().save();
    const io = new IoApic();
    expect(() => io.restore({ ...good, id: 16 })).toThrow(/id = 16/);
    expect(() => io.restore({ ...good, redirection: good.redirection.slice(1) })).toThrow(/24 entries/);
    expect(() => io.restore({ ...good, pins: 2 ** 24 })).toThrow(RangeError);
    expect(() => io.restore({ ...good, redirection: good.redirection.map(() => ({ low: -1, high: 0 })) })).toThrow(RangeError);
  });
});
