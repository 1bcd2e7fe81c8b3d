/**
 * The Intel 8254 programmable interval timer, as on the PC at ports 0x40–0x43.
 *
 * Three 16-bit down-counters share one 1.193182 MHz input clock. Channel 0's OUT drives IRQ0,
 * channel 1's once paced DRAM refresh, and channel 2's feeds the speaker and is readable (with
 * its GATE writable) through system control port B at 0x61.
 *
 * Nothing here is stepped: a counter keeps the input-clock tick at which its counting element
 * was last loaded, and its count and OUT at any later tick are computed from the mode's
 * waveform. Guest time comes from a {@link GuestClock}; tick `t` is the `t`-th input-clock
 * pulse since guest time 0. Channel 0's OUT edges are delivered through a {@link Timer}.
 * @module
 */

import type { GuestClock } from '../time/clock.js';
import type { Timer, TimerQueue } from '../time/timers.js';
import type { BusDevice } from '../bus.js';

/** First of the PIT's four ports (counters 0–2, then the control word register). */
export const PIT_BASE = 0x40;
/** Number of ports the PIT occupies. */
export const PIT_PORT_LEN = 4;
/** ISA IRQ line that channel 0's OUT drives. */
export const PIT_IRQ = 0;
/** Input clock of all three channels: the PC's 14.31818 MHz crystal divided by 12. */
export const PIT_FREQ_HZ = 1_193_182;

const NS_PER_S = 1_000_000_000;
// Port offsets.
const CONTROL = 3;
// Control word fields.
const SC_READ_BACK = 3; // SC1:SC0 = 11 selects the read-back command
const RW_LATCH = 0; // RW1:RW0 = 00 is the counter latch command
const RW_LSB = 1;
const RW_MSB = 2;
const RW_WORD = 3; // LSB, then MSB
// Read-back command bits (active low).
const RB_NO_COUNT = 0x20;
const RB_NO_STATUS = 0x10;
// Status byte bits; the low six bits echo RW, M and BCD of the control word.
const STATUS_OUT = 0x80;
const STATUS_NULL = 0x40;
/**
 * Default floor on the spacing of channel-0 timer firings. Counts of a few ticks would
 * otherwise fire a timer every microsecond; edges due inside the window are coalesced into
 * one interrupt, as a late timer would.
 */
const DEFAULT_MIN_IRQ_INTERVAL_NS = 20_000;
/** Lost channel-0 periods kept for re-injection at most (a few seconds' worth at Linux's rates). */
const MAX_BACKLOG = 1000;
/** Guest time between two re-injected ticks: room for the guest to take and acknowledge each. */
const REINJECT_SPACING_NS = 100_000;

/** The input-clock tick at guest time `ns`: pulses `1..t` have happened by then. Exact to 2^53 ns. */
export function pitTicksAt(ns: number): number {
  // Split off whole seconds so the products stay exact in a double.
  const q = Math.floor(ns / NS_PER_S);
  const r = ns - q * NS_PER_S;
  return q * PIT_FREQ_HZ + Math.floor((r * PIT_FREQ_HZ) / NS_PER_S);
}

/** The earliest guest time (ns) at which input-clock pulse `tick` has happened. */
export function pitTickNs(tick: number): number {
  const q = Math.floor(tick / PIT_FREQ_HZ);
  const r = tick - q * PIT_FREQ_HZ;
  return q * NS_PER_S + Math.ceil((r * NS_PER_S) / PIT_FREQ_HZ);
}

const toBcd = (v: number): number =>
  (v % 10) | (Math.floor(v / 10) % 10) << 4 | (Math.floor(v / 100) % 10) << 8 | (Math.floor(v / 1000) % 10) << 12;
// Digits above 9 are not BCD; weigh them by position anyway and let the count wrap.
const fromBcd = (v: number): number =>
  ((v & 0xf) + ((v >> 4) & 0xf) * 10 + ((v >> 8) & 0xf) * 100 + ((v >> 12) & 0xf) * 1000) % 10000;

/** One counting run: the counting element was (or will be) loaded with `n` at pulse `load`. */
export interface PitRunState {
  /** The count loaded, 1..65536 (binary) or 1..10000 (BCD); a written 0 means the maximum. */
  n: number;
  /** The input-clock pulse that loads the counting element. */
  load: number;
  /** OUT and the count before that pulse. */
  outBefore: boolean;
  countBefore: number;
}

/** Plain, JSON-able snapshot of one PIT channel. */
export interface PitChannelState {
  /** RW, M and BCD of the last control word (its low six bits). */
  control: number;
  /** The count register (binary value, 0..65535 or 0..9999). */
  countRegister: number;
  /** A count has been written since the control word. */
  armed: boolean;
  /** Word access: the next byte written is the MSB, and the LSB already written. */
  writeMsbNext: boolean;
  lsb: number;
  /** Word access: the next byte read is the MSB. */
  readMsbNext: boolean;
  /** Output latch (in register format) and status latch, or null when not latched. */
  latchedCount: number | null;
  latchedStatus: number | null;
  gate: boolean;
  /** The tick GATE last went low. */
  gateLowTick: number;
  run: PitRunState | null;
  /** A count written in mode 2 or 3 mid-period, taking over at tick `from`. */
  next: { run: PitRunState; from: number } | null;
  /** OUT and the count while no run is defined (after a control word). */
  idleOut: boolean;
  idleCount: number;
  /** Null count: set by a CR write, cleared at `nullClearTick` (-1: not yet scheduled). */
  nullCount: boolean;
  nullClearTick: number;
}

/** Plain, JSON-able snapshot of a {@link Pit}. */
export interface PitState {
  channels: PitChannelState[];
  /** The IRQ0 level last reported, and the tick up to which OUT edges have been reported. */
  irq0Level: boolean;
  irq0Tick: number;
  /** Guest time of the last channel-0 timer firing. */
  irq0FiredNs: number;
  /** Deadline of the channel-0 timer (guest ns), or -1. */
  irq0DeadlineNs: number;
  /** Channel-0 periods that passed unreported and are still to be delivered (absent: 0). */
  irq0Backlog?: number;
}

/** Options for {@link Pit}. */
export interface PitOptions {
  /** Schedules channel 0's OUT edges. */
  timers: TimerQueue;
  /** Guest time; defaults to the queue's clock. */
  clock?: GuestClock;
  /** Called with channel 0's OUT level whenever it is reported to change (drive ISA IRQ0). */
  irq0?: (level: boolean) => void;
  /** Minimum spacing of channel-0 timer firings in guest ns (default 20 µs); 0 for none. */
  minIrqIntervalNs?: number;
}

/** One 8254 counter. Every method takes the current tick `t`. */
class Counter {
  control = 0x30; // power-on: treated as LSB-then-MSB, mode 0, binary, never loaded
  mode = 0;
  cr = 0;
  armed = false;
  writeMsbNext = false;
  lsb = 0;
  readMsbNext = false;
  latchedCount: number | null = null;
  latchedStatus: number | null = null;
  gate: boolean;
  gateLowTick = 0;
  run: PitRunState | null = null;
  next: { run: PitRunState; from: number } | null = null;
  idleOut = false;
  idleCount = 0;
  nullCount = true;
  nullClearTick = -1;

  constructor(gate: boolean) {
    this.gate = gate;
  }

  get rw(): number {
    return (this.control >> 4) & 3;
  }
  get bcd(): boolean {
    return (this.control & 1) !== 0;
  }
  /** Modulus of the counting element: it wraps from 0 to 9999 in BCD, 0xffff in binary. */
  get modulus(): number {
    return this.bcd ? 10000 : 0x10000;
  }

  /** Modes 0, 2, 3 and 4 count only while GATE is high (GATE is a level there). */
  private gatedByLevel(): boolean {
    return this.mode !== 1 && this.mode !== 5;
  }

  /** The run that governs tick `t`. */
  private runAt(t: number): PitRunState | null {
    const nx = this.next;
    return nx !== null && t >= nx.from ? nx.run : this.run;
  }

  /** Pulses since `run`'s load pulse at tick `t`, frozen while GATE holds counting; negative before the load. */
  private pulses(run: PitRunState, t: number): number {
    if (!this.gate && this.gatedByLevel()) t = Math.min(t, Math.max(this.gateLowTick, run.load));
    return t - run.load;
  }

  private outOf(run: PitRunState, t: number): boolean {
    const p = this.pulses(run, t);
    if (p < 0) return run.outBefore;
    const n = run.n;
    switch (this.mode) {
      case 0: // interrupt on terminal count: low until the count reaches 0
      case 1: // one-shot: low from the trigger's load until the count reaches 0
        return p >= n;
      case 2: // rate generator: low for the one pulse the count is 1
        return !this.gate || p % n !== n - 1;
      case 3: // square wave: high for ceil(N/2) pulses, low for floor(N/2); GATE low forces high
        return !this.gate || p % n < Math.ceil(n / 2);
      default: // 4, 5: strobes: low for the one pulse the count is 0
        return p !== n;
    }
  }

  private countOf(run: PitRunState, t: number): number {
    const p = this.pulses(run, t);
    if (p < 0) return run.countBefore;
    const n = run.n;
    const m = this.modulus;
    switch (this.mode) {
      case 2:
        return (n - (p % n)) % m;
      case 3: {
        // Even N counts N, N-2, ..., 2 per half; odd N counts N-1, N-3, ..., 0 per half.
        const q = p % n;
        const half = Math.ceil(n / 2);
        const start = n & 1 ? n - 1 : n;
        return (start - 2 * (q < half ? q : q - half)) % m;
      }
      default: // the count keeps wrapping past 0
        return (((n - p) % m) + m) % m;
    }
  }

  /** The first tick after `t` at which `run`'s OUT changes, or -1. */
  private nextChangeOf(run: PitRunState, t: number): number {
    if (!this.gate && this.gatedByLevel()) {
      // Counting is held; only the load pulse can still move OUT (it cannot in these modes).
      return t < run.load && this.outOf(run, run.load) !== this.outOf(run, t) ? run.load : -1;
    }
    if (t < run.load) {
      if (this.outOf(run, run.load) !== run.outBefore) return run.load;
      t = run.load;
    }
    const p = t - run.load;
    const n = run.n;
    let rel: number;
    switch (this.mode) {
      case 0:
      case 1:
        rel = p < n ? n : -1;
        break;
      case 4:
      case 5:
        rel = p < n ? n : p === n ? n + 1 : -1;
        break;
      case 2: {
        if (n === 1) return -1; // count 1 is illegal in mode 2; OUT stays low
        const q = p % n;
        rel = p - q + (q < n - 1 ? n - 1 : n);
        break;
      }
      default: {
        const half = Math.ceil(n / 2);
        if (half === n) return -1; // count 1: never low
        const q = p % n;
        rel = p - q + (q < half ? half : n);
        break;
      }
    }
    return rel < 0 ? -1 : run.load + rel;
  }

  out(t: number): boolean {
    const run = this.runAt(t);
    return run === null ? this.idleOut : this.outOf(run, t);
  }

  count(t: number): number {
    const run = this.runAt(t);
    return run === null ? this.idleCount : this.countOf(run, t);
  }

  isNull(t: number): boolean {
    return this.nullCount && !(this.nullClearTick >= 0 && t >= this.nullClearTick);
  }

  /** The first tick after `t` at which OUT changes, or -1 if it will not without a write or a GATE change. */
  nextChange(t: number): number {
    const run = this.run;
    if (run === null) return -1;
    const nx = this.next;
    if (nx === null || t >= nx.from) return this.nextChangeOf(this.runAt(t)!, t);
    const c = this.nextChangeOf(run, t);
    if (c !== -1 && c < nx.from) return c;
    if (this.outOf(run, nx.from - 1) !== this.outOf(nx.run, nx.from)) return nx.from;
    return this.nextChangeOf(nx.run, nx.from);
  }

  /** Fold a pending mid-period count and a passed null-count clear into the current state. */
  settle(t: number): void {
    if (this.next !== null && t >= this.next.from) {
      this.run = this.next.run;
      this.next = null;
    }
    if (this.nullCount && this.nullClearTick >= 0 && t >= this.nullClearTick) {
      this.nullCount = false;
      this.nullClearTick = -1;
    }
  }

  writeControl(control: number, t: number): void {
    this.settle(t);
    const count = this.count(t);
    this.control = control & 0x3f;
    const m = (control >> 1) & 7;
    this.mode = m > 5 ? m - 4 : m; // 6 and 7 are aliases of 2 and 3
    this.run = null;
    this.next = null;
    this.armed = false;
    this.idleCount = count % this.modulus;
    this.idleOut = this.mode !== 0; // OUT starts low in mode 0, high in every other mode
    this.writeMsbNext = false;
    this.readMsbNext = false;
    this.latchedCount = null;
    this.latchedStatus = null;
    this.nullCount = true;
    this.nullClearTick = -1;
  }

  writeCount(byte: number, t: number): void {
    this.settle(t);
    let value: number;
    switch (this.rw) {
      case RW_LSB:
        value = byte;
        break;
      case RW_MSB:
        value = byte << 8;
        break;
      default:
        if (!this.writeMsbNext) {
          this.lsb = byte;
          this.writeMsbNext = true;
          if (this.mode === 0) {
            // Mode 0: the first byte stops counting and drives OUT low at once.
            this.idleCount = this.count(t);
            this.idleOut = false;
            this.run = null;
            this.next = null;
          }
          return;
        }
        this.writeMsbNext = false;
        value = this.lsb | (byte << 8);
        break;
    }
    this.loadCount(this.bcd ? fromBcd(value) : value, t);
  }

  private loadCount(value: number, t: number): void {
    this.cr = value;
    const n = value === 0 ? this.modulus : value;
    const wasArmed = this.armed;
    this.armed = true;
    this.nullCount = true;
    this.nullClearTick = -1;
    const fresh = (outBefore: boolean): PitRunState => ({ n, load: t + 1, outBefore, countBefore: this.count(t) });
    switch (this.mode) {
      case 0: // loaded on the next pulse; OUT low until the count reaches 0
      case 4: // loaded on the next pulse; OUT unchanged
        this.run = fresh(this.mode === 4 && this.out(t));
        this.next = null;
        this.nullClearTick = t + 1;
        return;
      case 1:
      case 5:
        // Waits for a GATE trigger; a one-shot in flight is not disturbed.
        return;
      default: {
        const run = this.run;
        if (!wasArmed || run === null) {
          this.run = fresh(true);
          this.nullClearTick = t + 1;
          return;
        }
        // GATE low: the count is loaded by the trigger that ends it.
        if (!this.gate) return;
        if (t < run.load) {
          this.run = { ...run, n };
          this.nullClearTick = run.load;
          return;
        }
        // Counting: the new count waits for the end of the period (mode 2) or half-cycle (mode 3).
        const p = t - run.load;
        const q = p % run.n;
        let from: number;
        let load: number;
        if (this.mode === 2) {
          from = t - q + run.n;
          load = from;
        } else {
          const half = Math.ceil(run.n / 2);
          if (q < half) {
            // The high half ends: the new count starts with its low half.
            from = t - q + half;
            load = from - Math.ceil(n / 2);
          } else {
            from = t - q + run.n;
            load = from;
          }
        }
        this.next = { run: { n, load, outBefore: true, countBefore: 0 }, from };
        this.nullClearTick = from;
        return;
      }
    }
  }

  setGate(level: boolean, t: number): void {
    this.settle(t);
    if (level === this.gate) return;
    if (!level) {
      if (this.mode === 2 || this.mode === 3) this.next = null; // the rising edge reloads from CR
      this.gateLowTick = t;
      this.gate = false;
      return;
    }
    const run = this.run;
    switch (this.mode) {
      case 0:
      case 4:
        // Counting resumes where it stopped.
        if (run !== null) {
          const shift = Math.max(0, t - Math.max(this.gateLowTick, run.load));
          this.run = { ...run, load: run.load + shift };
        }
        this.gate = true;
        return;
      default: {
        // Modes 1, 2, 3, 5: a rising edge is a trigger that loads CR on the next pulse.
        const trigger = this.armed;
        const outBefore = this.out(t);
        const countBefore = this.count(t);
        this.gate = true;
        if (!trigger) return;
        const n = this.cr === 0 ? this.modulus : this.cr;
        this.run = { n, load: t + 1, outBefore: this.mode === 2 || this.mode === 3 ? true : outBefore, countBefore };
        this.next = null;
        if (this.nullCount) this.nullClearTick = t + 1;
        return;
      }
    }
  }

  latchCount(t: number): void {
    if (this.latchedCount === null) this.latchedCount = this.encode(this.count(t));
  }

  latchStatus(t: number): void {
    if (this.latchedStatus === null) {
      this.latchedStatus = (this.out(t) ? STATUS_OUT : 0) | (this.isNull(t) ? STATUS_NULL : 0) | this.control;
    }
  }

  readByte(t: number): number {
    // A latched status is read first, then a latched count, then the live count.
    if (this.latchedStatus !== null) {
      const s = this.latchedStatus;
      this.latchedStatus = null;
      return s;
    }
    const v = this.latchedCount ?? this.encode(this.count(t));
    switch (this.rw) {
      case RW_LSB:
        this.latchedCount = null;
        return v & 0xff;
      case RW_MSB:
        this.latchedCount = null;
        return v >> 8;
      default:
        if (!this.readMsbNext) {
          this.readMsbNext = true;
          return v & 0xff;
        }
        this.readMsbNext = false;
        this.latchedCount = null;
        return v >> 8;
    }
  }

  private encode(count: number): number {
    return this.bcd ? toBcd(count) : count;
  }

  save(): PitChannelState {
    const copy = (r: PitRunState): PitRunState => ({ ...r });
    return {
      control: this.control,
      countRegister: this.cr,
      armed: this.armed,
      writeMsbNext: this.writeMsbNext,
      lsb: this.lsb,
      readMsbNext: this.readMsbNext,
      latchedCount: this.latchedCount,
      latchedStatus: this.latchedStatus,
      gate: this.gate,
      gateLowTick: this.gateLowTick,
      run: this.run === null ? null : copy(this.run),
      next: this.next === null ? null : { run: copy(this.next.run), from: this.next.from },
      idleOut: this.idleOut,
      idleCount: this.idleCount,
      nullCount: this.nullCount,
      nullClearTick: this.nullClearTick,
    };
  }

  restore(s: PitChannelState, i: number): void {
    const where = `pit state: channel ${i}`;
    const int = (v: unknown, what: string, lo: number, hi: number): number => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) throw new RangeError(`${where}: ${what} = ${String(v)}`);
      return v;
    };
    const tick = (v: unknown, what: string): number => int(v, what, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    const run = (r: PitRunState | null | undefined, what: string): PitRunState | null => {
      if (r === null) return null;
      if (typeof r !== 'object' || r === undefined) throw new RangeError(`${where}: ${what} is not an object`);
      return {
        n: int(r.n, `${what}.n`, 1, 0x10000),
        load: tick(r.load, `${what}.load`),
        outBefore: Boolean(r.outBefore),
        countBefore: int(r.countBefore, `${what}.countBefore`, 0, 0xffff),
      };
    };
    const control = int(s.control, 'control', 0, 0x3f);
    if (((control >> 4) & 3) === RW_LATCH) throw new RangeError(`${where}: control = ${control} has no access mode`);
    this.control = control;
    const m = (control >> 1) & 7;
    this.mode = m > 5 ? m - 4 : m;
    this.cr = int(s.countRegister, 'countRegister', 0, 0xffff);
    this.armed = Boolean(s.armed);
    this.writeMsbNext = Boolean(s.writeMsbNext);
    this.lsb = int(s.lsb, 'lsb', 0, 0xff);
    this.readMsbNext = Boolean(s.readMsbNext);
    this.latchedCount = s.latchedCount === null ? null : int(s.latchedCount, 'latchedCount', 0, 0xffff);
    this.latchedStatus = s.latchedStatus === null ? null : int(s.latchedStatus, 'latchedStatus', 0, 0xff);
    this.gate = Boolean(s.gate);
    this.gateLowTick = tick(s.gateLowTick, 'gateLowTick');
    this.run = run(s.run, 'run');
    if (s.next === null) this.next = null;
    else if (typeof s.next !== 'object' || s.next === undefined) throw new RangeError(`${where}: next is not an object`);
    else this.next = { run: run(s.next.run, 'next.run') ?? this.fail('next.run is null'), from: tick(s.next.from, 'next.from') };
    this.idleOut = Boolean(s.idleOut);
    this.idleCount = int(s.idleCount, 'idleCount', 0, 0xffff);
    this.nullCount = Boolean(s.nullCount);
    this.nullClearTick = tick(s.nullClearTick, 'nullClearTick');
  }

  private fail(msg: string): never {
    throw new RangeError(`pit state: ${msg}`);
  }
}

/**
 * An Intel 8254 PIT; map it on an {@link IoBus} at {@link PIT_BASE}, length {@link PIT_PORT_LEN}.
 *
 * Channels 0 and 1 have GATE tied high; channel 2's GATE belongs to port 0x61 ({@link setGate}).
 * Channel 0's OUT goes to `irq0`: each edge is delivered by a timer armed for it, and edges
 * that fall due together (a late timer, or the {@link PitOptions.minIrqIntervalNs} floor) are
 * coalesced into one low-high pulse. A one-pulse-wide low strobe (modes 2, 4, 5) is delivered
 * at its rising edge, as the fall and rise together.
 */
export class Pit implements BusDevice {
  /** The guest clock the counters run from. */
  readonly clock: GuestClock;
  private readonly irq0: ((level: boolean) => void) | undefined;
  private readonly timer: Timer;
  private readonly minIrqIntervalNs: number;
  private readonly counters: [Counter, Counter, Counter] = [new Counter(true), new Counter(true), new Counter(false)];
  private irqLevel = false;
  private irqTick = 0;
  private irqFiredNs = -Infinity;
  /**
   * Rising edges of channel 0 that were coalesced because the host ran the timer late. They
   * are delivered afterwards, one per {@link REINJECT_SPACING_NS}, as KVM's PIT re-injects
   * lost ticks: a guest counting timer interrupts (Linux's jiffies, its IO-APIC timer check)
   * then sees every period even when the host was busy.
   */
  private backlog = 0;

  constructor(options: PitOptions) {
    this.clock = options.clock ?? options.timers.clock;
    this.irq0 = options.irq0;
    this.minIrqIntervalNs = options.minIrqIntervalNs ?? DEFAULT_MIN_IRQ_INTERVAL_NS;
    this.timer = options.timers.create((now) => {
      this.irqFiredNs = now;
      const t = pitTicksAt(now);
      if (!this.catchUp(t) && this.backlog > 0) {
        // No period ended now: deliver one that was lost, as a pulse on the line.
        this.backlog--;
        const level = this.irqLevel;
        if (level) this.emit(false);
        this.emit(true);
        if (!level) this.emit(false);
      }
      this.schedule(t);
    });
    this.irqTick = this.tick();
  }

  /** The current input-clock tick. */
  private tick(): number {
    return pitTicksAt(this.clock.nowNs());
  }

  /** The level of channel `n`'s OUT pin now. */
  channelOut(n: 0 | 1 | 2): boolean {
    return this.counter(n).out(this.tick());
  }

  /** The level last reported on `irq0`. */
  get irq0Level(): boolean {
    return this.irqLevel;
  }

  /** Drive channel `n`'s GATE input (port 0x61 drives channel 2's). */
  setGate(n: 0 | 1 | 2, level: boolean): void {
    const t = this.tick();
    this.beforeChange(n, t);
    this.counter(n).setGate(level, t);
    this.afterChange(n, t);
  }

  /** Channel `n`'s GATE input. */
  gate(n: 0 | 1 | 2): boolean {
    return this.counter(n).gate;
  }

  read(offset: number, data: Uint8Array): void {
    const t = this.tick();
    for (let i = 0; i < data.length; i++) {
      const off = offset + i;
      // The control word register is write-only; the bus floats.
      data[i] = off < CONTROL ? this.counter(off).readByte(t) : 0xff;
    }
  }

  write(offset: number, data: Uint8Array): void {
    const t = this.tick();
    for (let i = 0; i < data.length; i++) {
      const off = offset + i;
      const v = data[i]!;
      if (off < CONTROL) {
        this.beforeChange(off, t);
        this.counter(off).writeCount(v, t);
        this.afterChange(off, t);
      } else if (off === CONTROL) {
        this.writeControl(v, t);
      }
    }
  }

  private writeControl(v: number, t: number): void {
    const sc = v >> 6;
    if (sc === SC_READ_BACK) {
      for (let n = 0; n < 3; n++) {
        if (!(v & (2 << n))) continue;
        const c = this.counter(n);
        c.settle(t);
        // Status is latched as of the command, so take it before the count.
        if (!(v & RB_NO_STATUS)) c.latchStatus(t);
        if (!(v & RB_NO_COUNT)) c.latchCount(t);
      }
      return;
    }
    const c = this.counter(sc);
    if (((v >> 4) & 3) === RW_LATCH) {
      c.latchCount(t);
      return;
    }
    this.beforeChange(sc, t);
    c.writeControl(v, t);
    this.afterChange(sc, t);
  }

  /** Power-on state: every channel unprogrammed with OUT low, GATEs 0 and 1 high, 2 low. */
  reset(): void {
    const t = this.tick();
    this.beforeChange(0, t);
    for (let n = 0; n < 3; n++) this.counters[n] = new Counter(n !== 2);
    this.afterChange(0, t);
  }

  /** Snapshot the device state. */
  save(): PitState {
    const t = this.tick();
    for (const c of this.counters) c.settle(t);
    return {
      channels: this.counters.map((c) => c.save()),
      irq0Level: this.irqLevel,
      irq0Tick: this.irqTick,
      irq0FiredNs: Number.isFinite(this.irqFiredNs) ? this.irqFiredNs : -1,
      irq0DeadlineNs: this.timer.deadlineNs,
      irq0Backlog: this.backlog,
    };
  }

  /**
   * Load a snapshot from {@link save}; throws RangeError if it is malformed. Ticks are guest
   * time, so the guest clock must be restored to the snapshot's time base first.
   */
  restore(state: PitState): void {
    if (!Array.isArray(state.channels) || state.channels.length !== 3) throw new RangeError('pit state: channels must hold 3 entries');
    const fresh: [Counter, Counter, Counter] = [new Counter(true), new Counter(true), new Counter(false)];
    fresh.forEach((c, i) => c.restore(state.channels[i]!, i));
    const deadline = state.irq0DeadlineNs;
    if (typeof deadline !== 'number' || !(deadline === -1 || (Number.isFinite(deadline) && deadline >= 0))) {
      throw new RangeError(`pit state: irq0DeadlineNs = ${String(deadline)}`);
    }
    if (!Number.isSafeInteger(state.irq0Tick)) throw new RangeError(`pit state: irq0Tick = ${String(state.irq0Tick)}`);
    const fired = state.irq0FiredNs;
    if (typeof fired !== 'number' || !Number.isFinite(fired)) throw new RangeError(`pit state: irq0FiredNs = ${String(fired)}`);
    this.counters[0] = fresh[0];
    this.counters[1] = fresh[1];
    this.counters[2] = fresh[2];
    const backlog = state.irq0Backlog ?? 0;
    if (!Number.isInteger(backlog) || backlog < 0 || backlog > MAX_BACKLOG) throw new RangeError(`pit state: irq0Backlog = ${String(backlog)}`);
    this.irqTick = state.irq0Tick;
    this.irqFiredNs = fired < 0 ? -Infinity : fired;
    this.backlog = backlog;
    const level = Boolean(state.irq0Level);
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq0?.(level);
    }
    if (this.irq0 !== undefined && deadline >= 0) this.timer.arm(deadline);
    else this.timer.disarm();
  }

  private counter(n: number): Counter {
    return this.counters[n as 0 | 1 | 2];
  }

  // Deliver channel 0's edges that are already due before a write changes its waveform.
  private beforeChange(n: number, t: number): void {
    if (n === 0) this.catchUp(t);
  }

  private afterChange(n: number, t: number): void {
    if (n === 0) this.updateIrq0(t);
  }

  private updateIrq0(t: number): void {
    this.catchUp(t);
    this.schedule(t);
  }

  /** Channel-0 periods waiting to be re-injected (for tests and statistics). */
  get irq0Backlog(): number {
    return this.backlog;
  }

  private emit(level: boolean): void {
    this.irqLevel = level;
    this.irq0?.(level);
  }

  /**
   * Report OUT's edges between the last reported tick and `t`, coalesced: the level ends at
   * OUT's level at `t`, and a rising edge is reported if at least one happened; the rising
   * edges beyond the first join the backlog. Returns whether a rising edge was reported.
   */
  private catchUp(t: number): boolean {
    const c = this.counters[0];
    const last = this.irqLevel;
    const final = c.out(t);
    let rises = 0;
    if (t > this.irqTick) {
      // Walk OUT's changes in (irqTick, t], counting rising edges (bounded: a long host stall
      // is not worth more than MAX_BACKLOG periods).
      let level = last;
      let at = this.irqTick;
      for (let steps = 0; steps < 2 * MAX_BACKLOG + 4; steps++) {
        const next = c.nextChange(at);
        if (next === -1 || next > t || next <= at) break;
        const out = c.out(next);
        if (out && !level) rises++;
        level = out;
        at = next;
      }
      this.irqTick = t;
    }
    if (rises > 1 && this.irq0 !== undefined) this.backlog = Math.min(MAX_BACKLOG, this.backlog + rises - 1);
    if (rises > 0) {
      if (last) this.emit(false);
      this.emit(true);
      if (!final) this.emit(false);
    } else if (final !== last) {
      this.emit(final);
    }
    return rises > 0;
  }

  private schedule(t: number): void {
    if (this.irq0 === undefined) return;
    const c = this.counters[0];
    let edge = c.nextChange(t);
    if (edge === -1) {
      // The counter stopped (reprogrammed, gated): lost periods of the old setting are moot.
      this.backlog = 0;
      this.timer.disarm();
      return;
    }
    // A one-pulse low strobe is delivered whole at its rising edge.
    if (!c.out(edge) && c.nextChange(edge) === edge + 1) edge += 1;
    let deadline = Math.max(pitTickNs(edge), this.irqFiredNs + this.minIrqIntervalNs);
    if (this.backlog > 0) deadline = Math.min(deadline, Math.max(pitTickNs(t), this.irqFiredNs + Math.max(REINJECT_SPACING_NS, this.minIrqIntervalNs)));
    this.timer.arm(deadline);
  }
}
