import { describe, it, expect } from 'vitest';
import { InstructionClock, TimerQueue } from '../index.js';
import { IoBus } from '../bus.js';
import { PIT_BASE, PIT_PORT_LEN, Pit, pitTicksAt } from './pit.js';
import { PORT61_PORT, Port61, type Port61State } from './port61.js';

const tickNs = (k: number): number => Math.ceil((k * 1e9) / 1_193_182);

function harness() {
  let retired = 0;
  const clock = new InstructionClock(() => retired);
  const timers = new TimerQueue(clock);
  const pit = new Pit({ timers });
  const speaker: [boolean, boolean][] = [];
  const port = new Port61({ pit, speaker: (on, gate) => speaker.push([on, gate]) });
  const bus = new IoBus();
  bus.insert(pit, PIT_BASE, PIT_PORT_LEN);
  bus.insert(port, PORT61_PORT, 1);
  const one = new Uint8Array(1);
  return {
    pit,
    port,
    speaker,
    now: (): number => retired,
    setNs(ns: number): void {
      retired = ns;
    },
    outb(p: number, v: number): void {
      one[0] = v;
      bus.write(p, one);
    },
    inb(p: number): number {
      bus.read(p, one);
      return one[0]!;
    },
  };
}

describe('Port61 (system control port B)', () => {
  it('stores bits 0-3, ignores writes to 4-7 and reads 6-7 as 0', () => {
    const h = harness();
    expect(h.inb(0x61)).toBe(0x00);
    h.outb(0x61, 0xff);
    expect(h.inb(0x61) & 0xcf).toBe(0x0f);
    expect(h.port.speakerEnabled).toBe(true);
    expect(h.pit.gate(2)).toBe(true);
    h.outb(0x61, 0x02);
    expect(h.pit.gate(2)).toBe(false);
    expect(h.speaker).toEqual([
      [true, true],
      [true, false],
    ]);
  });

  it('toggles the refresh bit every 15.085 µs of guest time', () => {
    const h = harness();
    const bit4 = (ns: number): number => {
      h.setNs(ns);
      return (h.inb(0x61) >> 4) & 1;
    };
    expect([0, 15_084, 15_085, 30_169, 30_170, 45_255].map(bit4)).toEqual([0, 0, 1, 1, 0, 1]);
  });

  it('shows channel 2 OUT in bit 5', () => {
    const h = harness();
    h.outb(0x61, 0x01);
    h.outb(0x43, 0xb6); // ch2 mode 3, count 4
    h.outb(0x42, 4);
    h.outb(0x42, 0);
    const bit5 = (k: number): number => {
      h.setNs(tickNs(k));
      return (h.inb(0x61) >> 5) & 1;
    };
    expect([1, 2, 3, 4, 5].map(bit5)).toEqual([1, 1, 0, 0, 1]);
  });

  it('runs the Linux TSC calibration loop: channel 2 gated on, mode 0, poll bit 5', () => {
    const h = harness();
    const start = 123_456_789;
    h.setNs(start);
    // leave channel 2 in a state with OUT high first, as firmware might
    h.outb(0x43, 0xb6);
    h.outb(0x42, 2);
    h.outb(0x42, 0);
    // pit_calibrate_tsc(): gate high, speaker off; ch2 mode 0 binary, LSB then MSB
    h.outb(0x61, (h.inb(0x61) & ~0x02) | 0x01);
    h.outb(0x43, 0xb0);
    const latch = Math.floor(1_193_182 / 20); // CAL_LATCH: 50 ms
    h.outb(0x42, latch & 0xff);
    h.outb(0x42, latch >> 8);
    const t0 = pitTicksAt(start);
    let polls = 0;
    let ns = start;
    while ((h.inb(0x61) & 0x20) === 0) {
      polls++;
      ns += 250; // one poll of port 0x61 every 250 ns of guest time
      h.setNs(ns);
    }
    // OUT rises at the pulse latch+1 after the write; the loop sees it on the first poll at or after it
    const rise = tickNs(t0 + latch + 1);
    expect(ns).toBeGreaterThanOrEqual(rise);
    expect(ns - rise).toBeLessThan(250);
    expect(ns - 250).toBeLessThan(rise);
    expect(ns - start).toBeGreaterThan(50_000_000);
    expect(ns - start).toBeLessThan(50_002_000);
    expect(polls).toBeGreaterThan(1000); // the kernel's loopmin
    // and it stays high: mode 0 does not repeat
    h.setNs(ns + 1_000_000_000);
    expect(h.inb(0x61) & 0x20).toBe(0x20);
  });

  it('saves and restores through JSON', () => {
    const a = harness();
    a.outb(0x61, 0x0b);
    const state = JSON.parse(JSON.stringify(a.port.save())) as Port61State;
    expect(state).toEqual({ value: 0x0b });
    const b = harness();
    b.port.restore(state);
    expect(b.inb(0x61) & 0x0f).toBe(0x0b);
    expect(() => b.port.restore({ value: 0x10 })).toThrow(RangeError);
  });
});
