import { describe, it, expect } from 'vitest';
import { InstructionClock, TimerQueue } from '../index.js';
import { IoBus } from '../bus.js';
import { PIT_BASE, PIT_FREQ_HZ, PIT_PORT_LEN, Pit, pitTickNs, pitTicksAt, type PitState } from './pit.js';

// Ports, as the guest sees them.
const CH0 = 0x40, CH1 = 0x41, CH2 = 0x42, CTRL = 0x43;

/** Guest ns at which input-clock pulse `k` has happened, straight from the 1.193182 MHz rate. */
const tickNs = (k: number): number => Math.ceil((k * 1e9) / 1_193_182);

/** A PIT on an I/O bus, driven by an instruction clock at 1 ns per instruction that the test moves by hand. */
function harness(options: { irq?: boolean; minIrqIntervalNs?: number } = {}) {
  let retired = 0;
  const clock = new InstructionClock(() => retired);
  const timers = new TimerQueue(clock);
  const irqs: { level: boolean; tick: number }[] = [];
  const pit = new Pit({
    timers,
    irq0: options.irq === false ? undefined : (level) => irqs.push({ level, tick: pitTicksAt(clock.nowNs()) }),
    minIrqIntervalNs: options.minIrqIntervalNs ?? 0,
  });
  const bus = new IoBus();
  bus.insert(pit, PIT_BASE, PIT_PORT_LEN);
  const one = new Uint8Array(1);
  const h = {
    pit,
    timers,
    clock,
    irqs,
    /** Move guest time to the start of tick `k` (never backwards) without running timers. */
    at(k: number): void {
      const ns = tickNs(k);
      if (ns < retired) throw new Error(`time runs forward: tick ${k}`);
      retired = ns;
    },
    /** Move guest time to `ns` and run the timers that fall due. */
    runTo(ns: number): void {
      retired = ns;
      timers.runDue();
    },
    /** Step through timer deadlines up to `ns`, firing each one at its deadline, as a VMM run loop would. */
    runTimersTo(ns: number): void {
      for (;;) {
        const d = timers.nextDeadlineNs();
        if (d < 0 || d > ns) break;
        retired = Math.max(retired, d);
        timers.runDue();
      }
      retired = ns;
      timers.runDue();
    },
    out(port: number, v: number): void {
      one[0] = v;
      bus.write(port, one);
    },
    inb(port: number): number {
      bus.read(port, one);
      return one[0]!;
    },
    /** Counter latch command, then LSB and MSB. */
    latchRead(ch: number): number {
      h.out(CTRL, ch << 6);
      const lo = h.inb(CH0 + ch);
      return lo | (h.inb(CH0 + ch) << 8);
    },
    /** Read-back status of one channel. */
    status(ch: number): number {
      h.out(CTRL, 0xe0 | (2 << ch)); // read-back, latch status only
      return h.inb(CH0 + ch);
    },
    outAt(ch: 0 | 1 | 2, ticks: number[]): boolean[] {
      return ticks.map((k) => {
        h.at(k);
        return pit.channelOut(ch);
      });
    },
  };
  return h;
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

describe('PIT (8254)', () => {
  it('converts between guest time and input-clock ticks exactly', () => {
    expect(pitTicksAt(0)).toBe(0);
    expect(pitTicksAt(838)).toBe(0); // one period is 838.095 ns
    expect(pitTicksAt(839)).toBe(1);
    expect(pitTicksAt(1e9)).toBe(PIT_FREQ_HZ);
    expect(pitTicksAt(1e9 - 1)).toBe(PIT_FREQ_HZ - 1);
    expect(pitTickNs(1)).toBe(839);
    expect(pitTickNs(PIT_FREQ_HZ)).toBe(1e9);
    // 100 days in: still exact (products would exceed 2^53 without splitting off seconds)
    const day100 = 100 * 86400 * 1e9;
    expect(pitTicksAt(day100)).toBe(100 * 86400 * PIT_FREQ_HZ);
    for (const k of [1, 2, 3, 596591, 1193181, 1193183, 100 * 86400 * PIT_FREQ_HZ + 12345]) {
      expect(pitTicksAt(pitTickNs(k))).toBe(k);
      expect(pitTicksAt(pitTickNs(k) - 1)).toBe(k - 1);
    }
  });

  it('mode 0: OUT goes high N+1 pulses after the count is written and the count wraps past 0', () => {
    const h = harness();
    h.out(CTRL, 0x30); // ch0, LSB then MSB, mode 0, binary
    h.out(CH0, 4);
    h.out(CH0, 0);
    // written during tick 0: loaded by pulse 1, then 4, 3, 2, 1, 0
    expect(h.outAt(0, range(0, 7))).toEqual([false, false, false, false, false, true, true, true]);
    const h2 = harness();
    h2.out(CTRL, 0x30);
    h2.out(CH0, 4);
    h2.out(CH0, 0);
    const counts = range(1, 7).map((k) => {
      h2.at(k);
      return h2.latchRead(0);
    });
    expect(counts).toEqual([4, 3, 2, 1, 0, 0xffff, 0xfffe]);
  });

  it('mode 0: the first byte of a two-byte count stops counting and drives OUT low', () => {
    const h = harness();
    h.out(CTRL, 0x30);
    h.out(CH0, 3);
    h.out(CH0, 0);
    h.at(10); // terminal count passed: OUT high
    expect(h.pit.channelOut(0)).toBe(true);
    h.out(CH0, 5); // LSB only
    expect(h.pit.channelOut(0)).toBe(false);
    const frozen = h.latchRead(0);
    h.at(20);
    expect(h.latchRead(0)).toBe(frozen); // not counting
    expect(h.pit.channelOut(0)).toBe(false);
    h.out(CH0, 0); // MSB: count 5 loads on pulse 21
    expect(h.outAt(0, [25, 26])).toEqual([false, true]);
  });

  it('mode 2 with count 4: OUT is low for one pulse in every four', () => {
    const h = harness();
    h.out(CTRL, 0x34); // ch0, LSB/MSB, mode 2
    h.out(CH0, 4);
    h.out(CH0, 0);
    // loaded at pulse 1 (count 4); low while the count is 1 (pulses 4, 8, 12), reloaded after
    expect(h.outAt(0, range(0, 13))).toEqual([true, true, true, true, false, true, true, true, false, true, true, true, false, true]);
  });

  it('mode 2: counts N..1 and a latch taken mid-period holds its value until read', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 4);
    h.out(CH0, 0);
    const counts = range(1, 9).map((k) => {
      h.at(k);
      return h.latchRead(0);
    });
    expect(counts).toEqual([4, 3, 2, 1, 4, 3, 2, 1, 4]);
    h.at(10); // count 3
    h.out(CTRL, 0x00); // latch
    h.out(CTRL, 0x00); // a second latch before reading is ignored
    h.at(12); // live count is now 1
    expect(h.inb(CH0)).toBe(3);
    h.at(13); // the MSB still comes from the latch
    expect(h.inb(CH0)).toBe(0);
    h.at(14); // unlatched again: live count 3
    expect(h.inb(CH0)).toBe(3);
  });

  it('mode 2 with a large count: latched count in the middle of the period', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 1193 & 0xff);
    h.out(CH0, 1193 >> 8);
    h.at(1 + 1193 + 600); // second period, 600 pulses in
    expect(h.latchRead(0)).toBe(1193 - 600);
  });

  it('mode 3: even counts give equal halves and odd counts one more pulse high', () => {
    const even = harness();
    even.out(CTRL, 0x36); // ch0, LSB/MSB, mode 3
    even.out(CH0, 4);
    even.out(CH0, 0);
    expect(even.outAt(0, range(1, 9))).toEqual([true, true, false, false, true, true, false, false, true]);
    const odd = harness();
    odd.out(CTRL, 0x36);
    odd.out(CH0, 5);
    odd.out(CH0, 0);
    // (N+1)/2 = 3 pulses high, (N-1)/2 = 2 low
    expect(odd.outAt(0, range(1, 11))).toEqual([true, true, true, false, false, true, true, true, false, false, true]);
  });

  it('mode 3: the count steps by two within each half', () => {
    const even = harness();
    even.out(CTRL, 0x36);
    even.out(CH0, 6);
    even.out(CH0, 0);
    const e = range(1, 7).map((k) => {
      even.at(k);
      return even.latchRead(0);
    });
    expect(e).toEqual([6, 4, 2, 6, 4, 2, 6]);
    const odd = harness();
    odd.out(CTRL, 0x36);
    odd.out(CH0, 5);
    odd.out(CH0, 0);
    const o = range(1, 6).map((k) => {
      odd.at(k);
      return odd.latchRead(0);
    });
    expect(o).toEqual([4, 2, 0, 4, 2, 4]);
  });

  it('mode 3 with count 0 runs at 65536 pulses per period (18.2 Hz)', () => {
    const h = harness();
    h.out(CTRL, 0x36);
    h.out(CH0, 0);
    h.out(CH0, 0);
    expect(h.outAt(0, [32768, 32769, 65536, 65537])).toEqual([true, false, false, true]);
  });

  it('counts in BCD', () => {
    const h = harness();
    h.out(CTRL, 0x31); // ch0, LSB/MSB, mode 0, BCD
    h.out(CH0, 0x00);
    h.out(CH0, 0x10); // 1000 decimal
    h.at(1);
    expect(h.latchRead(0)).toBe(0x1000);
    h.at(4);
    expect(h.latchRead(0)).toBe(0x0997);
    h.at(1001);
    expect(h.latchRead(0)).toBe(0x0000);
    expect(h.pit.channelOut(0)).toBe(true);
    h.at(1002);
    expect(h.latchRead(0)).toBe(0x9999); // wraps at 10000
    // count 0 means 10000 in BCD
    h.out(CTRL, 0x31);
    h.out(CH0, 0);
    h.out(CH0, 0);
    h.at(1003);
    expect(h.latchRead(0)).toBe(0x0000);
    h.at(1004);
    expect(h.latchRead(0)).toBe(0x9999);
    h.at(1003 + 9999);
    expect(h.pit.channelOut(0)).toBe(false);
    h.at(1003 + 10000); // N+1 = 10001 pulses after the write at 1002
    expect(h.pit.channelOut(0)).toBe(true);
  });

  it('supports LSB-only and MSB-only access', () => {
    const h = harness();
    h.out(CTRL, 0x50); // ch1, LSB only, mode 0
    h.out(CH1, 0x20);
    h.at(1);
    expect(h.inb(CH1)).toBe(0x20);
    expect(h.inb(CH1)).toBe(0x20);
    h.out(CTRL, 0x60); // ch1, MSB only
    h.out(CH1, 0x02); // count 0x200
    h.at(2);
    expect(h.inb(CH1)).toBe(0x02);
    h.at(2 + 0x101);
    expect(h.inb(CH1)).toBe(0x00); // 0x200 - 0x101 = 0xff
  });

  it('read-back: status byte is OUT, null count, then RW/mode/BCD', () => {
    const h = harness();
    h.out(CTRL, 0xb0); // ch2, LSB/MSB, mode 0
    h.out(CH2, 0); // LSB; the count is not complete yet
    expect(h.status(2) & 0x7f).toBe(0x70); // null count set, RW=11, mode 0, binary
    h.out(CH2, 10); // MSB: count = 10 << 8 | 0 (LSB written above)
    h.pit.setGate(2, true);
    expect(h.status(2)).toBe(0x70); // OUT low, count not loaded yet
    h.at(1);
    expect(h.status(2)).toBe(0x30); // loaded: null count clear
    h.at(1 + 0xa00);
    expect(h.status(2)).toBe(0xb0); // terminal count: OUT high
    // mode 2, BCD on ch0: OUT high straight after the control word
    h.out(CTRL, 0x35);
    expect(h.status(0)).toBe(0x80 | 0x40 | 0x35);
    // mode 6 is reported as written and behaves as mode 2
    h.out(CTRL, 0x7c); // ch1, LSB/MSB, mode 6
    expect(h.status(1)).toBe(0x80 | 0x40 | 0x3c);
  });

  it('read-back: latched status is read before the latched count, and later commands do not overwrite latches', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 0x34);
    h.out(CH0, 0x12);
    h.at(3); // count 0x1234 - 2
    h.out(CTRL, 0xc2); // read-back: latch count and status of ch0
    h.at(50);
    h.out(CTRL, 0xc2); // ignored: both still latched
    expect(h.inb(CH0)).toBe(0xb4); // status: OUT high, loaded, LSB/MSB, mode 2
    expect(h.inb(CH0)).toBe(0x32);
    expect(h.inb(CH0)).toBe(0x12);
    h.at(60);
    h.out(CTRL, 0xd2); // count only (bit 4 set = no status)
    expect(h.inb(CH0) | (h.inb(CH0) << 8)).toBe(0x1234 - 59);
    // one read-back command can latch several counters
    h.out(CTRL, 0x70);
    h.out(CH1, 0x00);
    h.out(CH1, 0x01);
    h.at(61);
    h.out(CTRL, 0xc6); // ch0 and ch1
    h.at(70);
    expect(h.inb(CH1)).toBe(0x30);
    expect(h.inb(CH1) | (h.inb(CH1) << 8)).toBe(0x100);
    expect(h.inb(CH0)).toBe(0xb4);
    expect(h.inb(CH0) | (h.inb(CH0) << 8)).toBe(0x1234 - 60);
  });

  it('reads of the control port float high', () => {
    const h = harness();
    expect(h.inb(CTRL)).toBe(0xff);
  });

  it('mode 4: one low strobe N+1 pulses after the count is written', () => {
    const h = harness();
    h.out(CTRL, 0x38);
    h.out(CH0, 3);
    h.out(CH0, 0);
    expect(h.outAt(0, range(0, 8))).toEqual([true, true, true, true, false, true, true, true, true]);
  });

  it('GATE low holds counting in mode 0 and resumes it where it stopped', () => {
    const h = harness();
    h.out(CTRL, 0xb0); // ch2 (gate low at power-on)
    h.out(CH2, 5);
    h.out(CH2, 0);
    h.at(10);
    expect(h.latchRead(2)).toBe(5); // loaded, but not counting
    h.pit.setGate(2, true);
    h.at(12);
    expect(h.latchRead(2)).toBe(3);
    h.pit.setGate(2, false);
    h.at(40);
    expect(h.latchRead(2)).toBe(3);
    expect(h.pit.channelOut(2)).toBe(false);
    h.pit.setGate(2, true);
    expect(h.outAt(2, [42, 43])).toEqual([false, true]);
  });

  it('mode 1: a GATE rising edge fires a retriggerable one-shot low for N pulses', () => {
    const h = harness();
    h.out(CTRL, 0xb2); // ch2, mode 1
    h.out(CH2, 4);
    h.out(CH2, 0);
    expect(h.outAt(2, [1, 5])).toEqual([true, true]); // no trigger yet
    h.pit.setGate(2, true); // trigger during tick 5: load at pulse 6
    expect(h.outAt(2, [5, 6, 9, 10])).toEqual([true, false, false, true]);
    // retrigger mid-pulse restarts the N pulses
    h.at(20);
    h.pit.setGate(2, false);
    h.pit.setGate(2, true);
    h.at(22);
    h.pit.setGate(2, false);
    h.pit.setGate(2, true); // reloads at 23
    expect(h.outAt(2, [23, 26, 27])).toEqual([false, false, true]);
  });

  it('mode 5: a GATE trigger strobes OUT low once after N+1 pulses', () => {
    const h = harness();
    h.out(CTRL, 0xba); // ch2, mode 5
    h.out(CH2, 2);
    h.out(CH2, 0);
    h.pit.setGate(2, true);
    expect(h.outAt(2, range(0, 5))).toEqual([true, true, true, false, true, true]);
  });

  it('mode 2 and 3: GATE low forces OUT high and a rising edge restarts the period', () => {
    const h = harness();
    h.out(CTRL, 0xb4); // ch2, mode 2
    h.out(CH2, 4);
    h.out(CH2, 0);
    h.pit.setGate(2, true); // restart: load at pulse 1
    expect(h.outAt(2, [3, 4])).toEqual([true, false]);
    h.pit.setGate(2, false);
    expect(h.pit.channelOut(2)).toBe(true);
    h.at(30);
    expect(h.pit.channelOut(2)).toBe(true);
    h.pit.setGate(2, true); // reload at 31; low at 34
    expect(h.outAt(2, [31, 33, 34, 35])).toEqual([true, true, false, true]);
  });

  it('mode 2: a count written mid-period takes over at the end of the period', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 4);
    h.out(CH0, 0);
    h.at(2);
    h.out(CH0, 8);
    h.out(CH0, 0);
    expect(h.status(0) & 0x40).toBe(0x40); // null count until the reload
    // current period ends at pulse 5, then 8-pulse periods: lows at 4, then 12, 20
    expect(h.outAt(0, [4, 5, 8, 11, 12, 13, 20])).toEqual([false, true, true, true, false, true, false]);
    expect(h.status(0) & 0x40).toBe(0);
  });

  it('mode 3: a count written mid-half-cycle takes over at the end of the half-cycle', () => {
    const h = harness();
    h.out(CTRL, 0x36);
    h.out(CH0, 8);
    h.out(CH0, 0);
    h.at(2); // high half: pulses 1..4
    h.out(CH0, 4);
    h.out(CH0, 0);
    // at 5 OUT goes low with the new count's low half (2 pulses), then 2 high, 2 low
    expect(h.outAt(0, range(4, 12))).toEqual([true, false, false, true, true, false, false, true, true]);
  });

  it('drives IRQ0 from timers in mode 2, one rising edge per period', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 1193 & 0xff);
    h.out(CH0, 1193 >> 8);
    expect(h.irqs).toEqual([{ level: true, tick: 0 }]); // mode 2 sets OUT high
    // the first low strobe is pulse 1193 and its rising edge pulse 1194: one timer for both
    expect(h.timers.nextDeadlineNs()).toBe(tickNs(1194));
    h.runTimersTo(tickNs(1 + 5 * 1193));
    const edges = h.irqs.slice(1);
    expect(edges).toEqual(
      [1, 2, 3, 4, 5].flatMap((k) => [
        { level: false, tick: 1 + k * 1193 },
        { level: true, tick: 1 + k * 1193 },
      ]),
    );
  });

  it('drives IRQ0 in mode 3 with both edges, and mode 0 once', () => {
    const h = harness();
    h.out(CTRL, 0x36);
    h.out(CH0, 100);
    h.out(CH0, 0);
    h.runTimersTo(tickNs(201));
    expect(h.irqs.map((e) => [e.level, e.tick])).toEqual([
      [true, 0],
      [false, 51],
      [true, 101],
      [false, 151],
      [true, 201],
    ]);
    const z = harness();
    z.out(CTRL, 0x30);
    z.out(CH0, 100);
    z.out(CH0, 0);
    z.runTimersTo(tickNs(1000));
    expect(z.irqs.map((e) => [e.level, e.tick])).toEqual([[true, 101]]);
    expect(z.timers.nextDeadlineNs()).toBe(-1);
  });

  it('coalesces IRQ0 edges that fall due together into one pulse, and re-injects the lost periods later', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 100);
    h.out(CH0, 0);
    h.irqs.length = 0;
    h.runTo(tickNs(350)); // three periods late, in one timer firing
    expect(h.irqs.map((e) => e.level)).toEqual([false, true]);
    expect(h.pit.irq0Backlog).toBe(2);
    expect(h.timers.nextDeadlineNs()).toBe(tickNs(401));
    // the floor on timer spacing coalesces the same way
    const f = harness({ minIrqIntervalNs: 1_000_000 });
    f.out(CTRL, 0x34);
    f.out(CH0, 100);
    f.out(CH0, 0);
    f.irqs.length = 0;
    f.runTimersTo(3_500_000);
    // firings at 84.6 µs, then 1, 2 and 3 ms later: four pulses for 41 periods
    expect(f.irqs.map((e) => e.level)).toEqual([false, true, false, true, false, true, false, true]);
  });

  it('re-injects lost periods between the natural ones, and forgets them when reprogrammed', () => {
    const h = harness();
    h.out(CTRL, 0x34);
    h.out(CH0, 1000 & 0xff);
    h.out(CH0, 1000 >> 8); // rate generator, 838 µs
    h.irqs.length = 0;
    h.runTo(tickNs(3500)); // three periods late
    expect(h.irqs.filter((e) => e.level)).toHaveLength(1);
    expect(h.pit.irq0Backlog).toBe(2);
    h.runTo(tickNs(3500) + 100_000);
    h.runTo(tickNs(3500) + 200_000);
    expect(h.irqs.filter((e) => e.level)).toHaveLength(3);
    expect(h.pit.irq0Backlog).toBe(0);
    h.runTo(tickNs(4001)); // the next natural period
    expect(h.irqs.filter((e) => e.level)).toHaveLength(4);
    h.runTo(tickNs(9500));
    expect(h.pit.irq0Backlog).toBe(4);
    h.out(CTRL, 0x30);
    expect(h.pit.irq0Backlog).toBe(0);
    expect(h.pit.save().irq0Backlog).toBe(0);
  });

  it('reports edges already due before a write changes channel 0', () => {
    const h = harness();
    h.out(CTRL, 0x30);
    h.out(CH0, 10);
    h.out(CH0, 0);
    h.at(50); // OUT went high at 11, but no timer has run
    h.out(CTRL, 0x30); // back low
    expect(h.irqs.map((e) => e.level)).toEqual([true, false]);
  });

  it('arms no timer without an irq0 hook', () => {
    const h = harness({ irq: false });
    h.out(CTRL, 0x34);
    h.out(CH0, 100);
    h.out(CH0, 0);
    expect(h.timers.nextDeadlineNs()).toBe(-1);
  });

  it('saves and restores through JSON, re-arming the channel-0 timer', () => {
    const a = harness();
    a.out(CTRL, 0x34);
    a.out(CH0, 100);
    a.out(CH0, 0);
    a.out(CTRL, 0xb6); // ch2 mode 3
    a.out(CH2, 10);
    a.out(CH2, 0);
    a.pit.setGate(2, true);
    a.out(CTRL, 0x70); // ch1 mode 0, half-written count
    a.out(CH1, 0x55);
    a.at(150);
    a.out(CTRL, 0x00); // latch ch0 (count 51)
    const state = JSON.parse(JSON.stringify(a.pit.save())) as PitState;
    const b = harness();
    b.at(150);
    b.pit.restore(state);
    expect(b.pit.save()).toEqual(state);
    expect(b.timers.nextDeadlineNs()).toBe(a.timers.nextDeadlineNs());
    expect(b.timers.nextDeadlineNs()).toBe(tickNs(101)); // overdue: nothing has run the timers
    for (const h of [a, b]) {
      expect(h.inb(CH0) | (h.inb(CH0) << 8)).toBe(51);
      h.out(CH1, 0x00);
    }
    for (const k of [151, 155, 156, 200, 230]) {
      a.at(k);
      b.at(k);
      for (const ch of [0, 1, 2] as const) expect(b.pit.channelOut(ch)).toBe(a.pit.channelOut(ch));
      expect(b.latchRead(1)).toBe(a.latchRead(1));
      expect(b.latchRead(2)).toBe(a.latchRead(2));
    }
    a.irqs.length = 0;
    b.irqs.length = 0;
    a.runTimersTo(tickNs(400));
    b.runTimersTo(tickNs(400));
    expect(b.irqs).toEqual(a.irqs);
  });

  it('rejects malformed state', () => {
    const good = harness().pit.save();
    const pit = harness().pit;
    expect(() => pit.restore({ ...good, channels: good.channels.slice(0, 2) })).toThrow(/3 entries/);
    const bad = structuredClone(good);
    bad.channels[1]!.control = 0x40;
    expect(() => pit.restore(bad)).toThrow(/channel 1: control/);
    const bad2 = structuredClone(good);
    bad2.channels[0]!.run = { n: 0, load: 1, outBefore: true, countBefore: 0 };
    expect(() => pit.restore(bad2)).toThrow(/run.n = 0/);
    expect(() => pit.restore({ ...good, irq0DeadlineNs: -5 })).toThrow(/irq0DeadlineNs/);
  });
});

describe('PIT channel 2 for TSC calibration', () => {
  it('mode 0 one-shot polled through the MSB counts down from 0xffff', () => {
    const h = harness();
    h.pit.setGate(2, true);
    h.out(CTRL, 0xb0);
    h.out(CH2, 0xff);
    h.out(CH2, 0xff); // loaded at pulse 1
    const msb = (k: number): number => {
      h.at(k);
      h.inb(CH2); // LSB, discarded
      return h.inb(CH2);
    };
    expect(msb(1)).toBe(0xff);
    expect(msb(256)).toBe(0xff); // 0xffff - 255 = 0xff00
    expect(msb(257)).toBe(0xfe);
    expect(msb(1 + 256 * 10)).toBe(0xf5);
  });
});
