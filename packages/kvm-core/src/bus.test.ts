import { describe, it, expect } from 'vitest';
import { BusError, IoBus, MmioBus, type BusDevice } from './bus.js';

/** Records accesses; reads return offset + i. */
class Probe implements BusDevice {
  readonly log: string[] = [];
  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i;
    this.log.push(`r${offset}/${data.length}`);
  }
  write(offset: number, data: Uint8Array): void {
    this.log.push(`w${offset}=${Array.from(data).join(',')}`);
  }
}

describe('IoBus', () => {
  it('dispatches with offsets relative to the base', () => {
    const bus = new IoBus();
    const d = new Probe();
    bus.insert(d, 0x3f8, 8);
    const buf = new Uint8Array(1);
    expect(bus.read(0x3fd, buf)).toBe(true);
    expect(buf[0]).toBe(5);
    expect(bus.write(0x3f8, new Uint8Array([0x41]))).toBe(true);
    const wide = new Uint8Array(2);
    expect(bus.read(0x3fe, wide)).toBe(true);
    expect(Array.from(wide)).toEqual([6, 7]);
    expect(d.log).toEqual(['r5/1', 'w0=65', 'r6/2']);
  });

  it('reports unclaimed ports and leaves the buffer alone', () => {
    const bus = new IoBus();
    bus.insert(new Probe(), 0x3f8, 8);
    const buf = new Uint8Array([0xaa]);
    expect(bus.read(0x3f7, buf)).toBe(false);
    expect(bus.read(0x400, buf)).toBe(false);
    expect(bus.write(0, buf)).toBe(false);
    expect(buf[0]).toBe(0xaa);
  });

  it('maps the first and the last port', () => {
    const bus = new IoBus();
    const a = new Probe();
    const b = new Probe();
    bus.insert(a, 0, 1);
    bus.insert(b, 0xffff, 1);
    expect(bus.write(0, new Uint8Array([1]))).toBe(true);
    expect(bus.write(0xffff, new Uint8Array([2]))).toBe(true);
    expect(a.log).toEqual(['w0=1']);
    expect(b.log).toEqual(['w0=2']);
  });

  it('rejects overlaps with a message naming both ranges', () => {
    const bus = new IoBus();
    bus.insert(new Probe(), 0x3f8, 8);
    expect(() => bus.insert(new Probe(), 0x3ff, 2)).toThrow(
      'cannot insert device at 0x3ff..0x400 (len 2): overlaps the device at 0x3f8..0x3ff',
    );
    expect(() => bus.insert(new Probe(), 0x3f0, 9)).toThrow(BusError);
    // adjacent ranges are fine
    bus.insert(new Probe(), 0x3f0, 8);
    bus.insert(new Probe(), 0x400, 1);
    expect(bus.ranges().map((r) => [r.base, r.len])).toEqual([
      [0x3f0, 8],
      [0x3f8, 8],
      [0x400, 1],
    ]);
  });

  it('rejects bad ranges', () => {
    const bus = new IoBus();
    for (const [base, len] of [
      [-1, 1],
      [0, 0],
      [0xffff, 2],
      [0x10000, 1],
      [1.5, 1],
    ] as const) {
      try {
        bus.insert(new Probe(), base, len);
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(BusError);
        expect((e as BusError).kind).toBe('InvalidRange');
      }
    }
  });

  it('removes devices and frees their ports', () => {
    const bus = new IoBus();
    const d = new Probe();
    bus.insert(d, 0x60, 4);
    expect(bus.find(0x62)?.device).toBe(d);
    expect(() => bus.remove(0x61)).toThrow(/no device inserted at port 0x61/);
    expect(bus.remove(0x60)).toBe(d);
    expect(bus.find(0x62)).toBeUndefined();
    expect(bus.read(0x60, new Uint8Array(1))).toBe(false);
    bus.insert(new Probe(), 0x60, 4);
  });
});

describe('MmioBus', () => {
  it('dispatches to the right range with binary search', () => {
    const bus = new MmioBus();
    const devs = [0xfee00000, 0xd0000000, 0xfec00000, 0xa0000].map((base) => {
      const d = new Probe();
      bus.insert(d, base, 0x1000);
      return { base, d };
    });
    for (const { base, d } of devs) {
      const buf = new Uint8Array(4);
      expect(bus.read(base + 0x20, buf)).toBe(true);
      expect(Array.from(buf)).toEqual([0x20, 0x21, 0x22, 0x23]);
      expect(bus.write(base + 0xfff, new Uint8Array([9]))).toBe(true);
      expect(d.log).toEqual(['r32/4', 'w4095=9']);
    }
    expect(bus.ranges().map((r) => r.base)).toEqual([0xa0000, 0xd0000000, 0xfec00000, 0xfee00000]);
    expect(bus.read(0xa0000 - 1, new Uint8Array(1))).toBe(false);
    expect(bus.read(0xa1000, new Uint8Array(1))).toBe(false);
    expect(bus.write(0x1_0000_0000, new Uint8Array(1))).toBe(false);
  });

  it('rejects overlaps on either side', () => {
    const bus = new MmioBus();
    bus.insert(new Probe(), 0x1000, 0x1000);
    expect(() => bus.insert(new Probe(), 0x1800, 0x1000)).toThrow(/overlaps the device at 0x1000\.\.0x1fff/);
    expect(() => bus.insert(new Probe(), 0x800, 0x1000)).toThrow(/overlaps/);
    expect(() => bus.insert(new Probe(), 0x1000, 1)).toThrow(/overlaps/);
    expect(() => bus.insert(new Probe(), 0, 0x10000)).toThrow(/overlaps/);
    bus.insert(new Probe(), 0x2000, 0x10);
    bus.insert(new Probe(), 0, 0x1000);
    expect(() => bus.insert(new Probe(), 0, 0)).toThrow(BusError);
  });

  it('addresses above 4 GiB work', () => {
    const bus = new MmioBus();
    const d = new Probe();
    bus.insert(d, 0x1_0000_0000, 0x100);
    expect(bus.write(0x1_0000_0010, new Uint8Array([1]))).toBe(true);
    expect(d.log).toEqual(['w16=1']);
  });

  it('the last-hit cache does not outlive a removal', () => {
    const bus = new MmioBus();
    const d = new Probe();
    bus.insert(d, 0x1000, 0x100);
    expect(bus.read(0x1000, new Uint8Array(1))).toBe(true);
    expect(bus.remove(0x1000)).toBe(d);
    expect(bus.read(0x1000, new Uint8Array(1))).toBe(false);
    expect(() => bus.remove(0x1000)).toThrow(/no device inserted at MMIO address 0x1000/);
  });
});
