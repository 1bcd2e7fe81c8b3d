/**
 * The Motorola MC146818A real-time clock and its CMOS RAM, as on the PC at ports 0x70/0x71.
 *
 * Port 0x70 selects a register (bit 7 masks NMI); port 0x71 reads or writes it. Registers
 * 0x00–0x09 hold the time, date and alarm, 0x0A–0x0D are status registers A–D, and the rest
 * of the 128 bytes is battery-backed RAM the firmware uses (the PC extends the chip's 64 bytes
 * to 128; byte 0x32 holds the century).
 *
 * The chip's 32.768 kHz divider chain is modelled as a cycle count derived from the guest
 * clock: updates fall on every 32768th cycle and periodic interrupts on every 2^(RS-1)th.
 * Nothing is stepped; the time registers are brought up to date when they are touched, and
 * timers are armed only for the interrupts that are enabled.
 * @module
 */

import type { GuestClock, Timer, TimerQueue } from '@kvmts/kvm-core';
import type { BusDevice } from '@kvmts/kvm-core';

/** First of the RTC's two ports (index, then data). */
export const RTC_BASE = 0x70;
/** Number of ports the RTC occupies. */
export const RTC_PORT_LEN = 2;
/** ISA IRQ line of the RTC. */
export const RTC_IRQ = 8;
/** Bytes of CMOS RAM, clock registers included. */
export const RTC_CMOS_SIZE = 128;
/** Where the PC keeps the century (the ACPI FADT's CENTURY field usually points here). */
export const RTC_CENTURY_INDEX = 0x32;

// Clock registers.
const SECONDS = 0x00;
const SECONDS_ALARM = 0x01;
const MINUTES = 0x02;
const MINUTES_ALARM = 0x03;
const HOURS = 0x04;
const HOURS_ALARM = 0x05;
const DAY_OF_WEEK = 0x06;
const DAY_OF_MONTH = 0x07;
const MONTH = 0x08;
const YEAR = 0x09;
const REG_A = 0x0a;
const REG_B = 0x0b;
const REG_C = 0x0c;
const REG_D = 0x0d;
/** First byte of general-purpose RAM. */
const RAM_START = 0x0e;

// Index port.
const INDEX_MASK = 0x7f;
const NMI_DISABLE = 0x80;

// Register A.
const A_UIP = 0x80;
const A_DV_MASK = 0x70;
const A_DV_32KHZ = 0x20; // 010: 32.768 kHz time base, divider running
const A_RS_MASK = 0x0f;
// Register B.
const B_SET = 0x80;
const B_PIE = 0x40;
const B_AIE = 0x20;
const B_UIE = 0x10;
const B_DM_BINARY = 0x04;
const B_24H = 0x02;
const B_DSE = 0x01;
// Register C.
const C_IRQF = 0x80;
const C_PF = 0x40;
const C_AF = 0x20;
const C_UF = 0x10;
// Register D.
const D_VRT = 0x80; // the battery never runs flat

const HOUR_PM = 0x80;
/** Alarm bytes with both top bits set match any value. */
const ALARM_DONT_CARE = 0xc0;

/** The divider's input frequency. */
const CYCLES_PER_S = 32768;
/** UIP rises this many cycles (244.14 µs) before each update. */
const UIP_CYCLES = 8;
/** After the divider leaves reset the first update comes half a second later. */
const RESET_TO_UPDATE_CYCLES = CYCLES_PER_S / 2;
const NS_PER_S = 1_000_000_000;
const S_PER_DAY = 86400;
/** Scan at most a day of seconds for an alarm match; every time of day has occurred by then. */
const ALARM_SCAN_LIMIT = S_PER_DAY;

/** Register A, B and D values a PC BIOS leaves: 32.768 kHz, 1024 Hz rate; BCD, 24-hour; valid. */
const DEFAULT_A = A_DV_32KHZ | 0x06;
const DEFAULT_B = B_24H;

const KIB = 1024;
const MIB = 1024 * KIB;

/** Options for {@link Rtc}. */
export interface RtcOptions {
  /** Schedules the periodic, alarm and update-ended interrupts. */
  timers: TimerQueue;
  /** Guest time; defaults to the queue's clock. */
  clock?: GuestClock;
  /** The wall-clock instant (UTC) the RTC shows at construction: a Date or ms since 1970. Default: now. */
  startTime?: Date | number;
  /** Called with the level of IRQ8 whenever it changes (it drops when register C is read). */
  irq8?: (level: boolean) => void;
  /** CMOS byte kept as the century, or null for none (years 00–69 then count as 20xx). Default 0x32. */
  centuryIndex?: number | null;
}

/** Plain, JSON-able snapshot of an {@link Rtc}. */
export interface RtcState {
  /** All 128 bytes; the clock registers as of `syncedCycle`, register A without UIP. */
  cmos: number[];
  /** The index register, NMI-disable bit included. */
  index: number;
  /** Guest time (ns) at which the divider chain was at cycle 0. */
  originNs: number;
  /** Divider cycle up to which updates and interrupt flags have been applied. */
  syncedCycle: number;
  /** DSE: the clock has fallen back this October and has not yet passed 2:00 again. */
  fellBack: boolean;
  irqLevel: boolean;
  /** Timer deadlines (guest ns), or -1. */
  periodicDeadlineNs: number;
  updateDeadlineNs: number;
}

/** The time registers, decoded. */
export interface RtcTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  /** 1 = Sunday. */
  dayOfWeek: number;
}

// Proleptic Gregorian day numbers (day 0 = 1970-01-01), after the classic era/day-of-era method.
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(days: number): [number, number, number] {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

const mod = (a: number, n: number): number => ((a % n) + n) % n;

/** An MC146818A RTC with 128 bytes of CMOS; map it on an {@link IoBus} at {@link RTC_BASE}, length {@link RTC_PORT_LEN}. */
export class Rtc implements BusDevice {
  private readonly clock: GuestClock;
  private readonly irq8: ((level: boolean) => void) | undefined;
  private readonly centuryIndex: number | null;
  private readonly periodicTimer: Timer;
  private readonly updateTimer: Timer;
  private readonly cmos = new Uint8Array(RTC_CMOS_SIZE);
  private index = 0;
  private originNs = 0;
  private syncedCycle = 0;
  private fellBack = false;
  private level = false;

  constructor(options: RtcOptions) {
    this.clock = options.clock ?? options.timers.clock;
    this.irq8 = options.irq8;
    const century = options.centuryIndex === undefined ? RTC_CENTURY_INDEX : options.centuryIndex;
    if (century !== null && (!Number.isInteger(century) || century < RAM_START || century >= RTC_CMOS_SIZE)) {
      throw new RangeError(`rtc: centuryIndex ${String(century)} is not a CMOS RAM byte (0x0e..0x7f)`);
    }
    this.centuryIndex = century;
    this.periodicTimer = options.timers.create((now) => this.onTimer(now));
    this.updateTimer = options.timers.create((now) => this.onTimer(now));
    this.cmos[REG_A] = DEFAULT_A;
    this.cmos[REG_B] = DEFAULT_B;
    this.cmos[REG_D] = D_VRT;
    const start = options.startTime ?? Date.now();
    const ms = typeof start === 'number' ? start : start.getTime();
    if (!Number.isFinite(ms)) throw new RangeError(`rtc: startTime ${String(start)} is not a time`);
    const seconds = Math.floor(ms / 1000);
    // Put the divider where the start instant's fraction of a second is, so the first update
    // comes when the wall clock ticks over.
    this.originNs = Math.round(this.clock.nowNs() - (ms - seconds * 1000) * 1e6);
    this.syncedCycle = this.cyclesAt(this.clock.nowNs());
    this.writeTime(seconds);
  }

  /** Whether bit 7 of the last index written masks NMIs. */
  get nmiDisabled(): boolean {
    return (this.index & NMI_DISABLE) !== 0;
  }

  /** The level of IRQ8. */
  get irqLevel(): boolean {
    return this.level;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      // The index register is write-only.
      data[i] = offset + i === 1 ? this.readData(this.index & INDEX_MASK) : 0xff;
    }
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const off = offset + i;
      if (off === 0) this.index = data[i]!;
      else if (off === 1) this.writeData(this.index & INDEX_MASK, data[i]!);
    }
  }

  /** A CMOS byte as the guest would read it now, without the side effects of reading (C is not cleared). */
  getByte(index: number): number {
    this.checkIndex(index, 0);
    this.sync(this.clock.nowNs());
    if (index === REG_A) return this.cmos[REG_A]! | (this.uip() ? A_UIP : 0);
    if (index === REG_C) return this.regC();
    return this.cmos[index]!;
  }

  /** Set a general-purpose CMOS byte (0x0e–0x7f), as the firmware's setup would. */
  setByte(index: number, value: number): void {
    this.checkIndex(index, RAM_START);
    if (!Number.isInteger(value) || value < 0 || value > 0xff) throw new RangeError(`rtc: CMOS value ${String(value)} is not a byte`);
    if (index === this.centuryIndex) this.sync(this.clock.nowNs());
    this.cmos[index] = value;
  }

  /**
   * Fill in the memory-size bytes the firmware reads, for `bytes` of RAM of which at most
   * `lowLimit` (default 3 GiB, leaving room for the PCI hole) sits below 4 GiB and the rest
   * above it, and update the standard checksum over 0x10–0x2d.
   *
   * 0x15/0x16: base memory in KiB (at most 640); 0x17/0x18 and 0x30/0x31: KiB above 1 MiB (at
   * most 0xffff); 0x34/0x35: 64 KiB units above 16 MiB; 0x5b–0x5d: 64 KiB units above 4 GiB.
   */
  setMemorySize(bytes: number, lowLimit = 3 * 1024 * MIB): void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`rtc: memory size ${String(bytes)}`);
    const low = Math.min(bytes, lowLimit, 4 * 1024 * MIB);
    const high = bytes - low;
    const clamp = (v: number, max: number): number => Math.max(0, Math.min(max, Math.floor(v)));
    const put16 = (at: number, v: number): void => {
      this.cmos[at] = v & 0xff;
      this.cmos[at + 1] = v >> 8;
    };
    put16(0x15, clamp(low / KIB, 640));
    const ext = clamp((low - MIB) / KIB, 0xffff);
    put16(0x17, ext);
    put16(0x30, ext);
    put16(0x34, clamp((low - 16 * MIB) / (64 * KIB), 0xffff));
    const above4g = clamp(high / (64 * KIB), 0xffffff);
    this.cmos[0x5b] = above4g & 0xff;
    this.cmos[0x5c] = (above4g >> 8) & 0xff;
    this.cmos[0x5d] = above4g >> 16;
    this.updateChecksum();
  }

  /** Recompute the AT checksum of bytes 0x10–0x2d into 0x2e (high) and 0x2f (low). */
  updateChecksum(): void {
    let sum = 0;
    for (let i = 0x10; i <= 0x2d; i++) sum += this.cmos[i]!;
    this.cmos[0x2e] = (sum >> 8) & 0xff;
    this.cmos[0x2f] = sum & 0xff;
  }

  /** Set the time registers to a wall-clock instant (UTC ms since 1970), in the current data mode. */
  setTime(time: Date | number): void {
    const ms = typeof time === 'number' ? time : time.getTime();
    if (!Number.isFinite(ms)) throw new RangeError(`rtc: ${String(time)} is not a time`);
    this.sync(this.clock.nowNs());
    this.writeTime(Math.floor(ms / 1000));
  }

  /** The time registers now, decoded per register B. */
  time(): RtcTime {
    this.sync(this.clock.nowNs());
    const l = this.localSeconds();
    const days = Math.floor(l / S_PER_DAY);
    const [year, month, day] = civilFromDays(days);
    const sod = l - days * S_PER_DAY;
    return {
      year,
      month,
      day,
      hour: Math.floor(sod / 3600),
      minute: Math.floor(sod / 60) % 60,
      second: sod % 60,
      dayOfWeek: this.dec(this.cmos[DAY_OF_WEEK]!),
    };
  }

  /** The RESET pin: clears PIE, AIE, UIE, SQWE and the flags of register C, lowering IRQ8. Time and RAM stay. */
  reset(): void {
    this.sync(this.clock.nowNs());
    this.cmos[REG_B]! &= ~(B_PIE | B_AIE | B_UIE | 0x08);
    this.cmos[REG_C] = 0;
    this.updateIrq();
    this.schedule();
  }

  /** Snapshot the device state. */
  save(): RtcState {
    this.sync(this.clock.nowNs());
    return {
      cmos: Array.from(this.cmos),
      index: this.index,
      originNs: this.originNs,
      syncedCycle: this.syncedCycle,
      fellBack: this.fellBack,
      irqLevel: this.level,
      periodicDeadlineNs: this.periodicTimer.deadlineNs,
      updateDeadlineNs: this.updateTimer.deadlineNs,
    };
  }

  /**
   * Load a snapshot from {@link save}; throws RangeError if it is malformed. Times are guest
   * time, so the guest clock must be restored to the snapshot's time base first.
   */
  restore(state: RtcState): void {
    if (!Array.isArray(state.cmos) || state.cmos.length !== RTC_CMOS_SIZE) throw new RangeError(`rtc state: cmos must hold ${RTC_CMOS_SIZE} bytes`);
    for (const b of state.cmos) if (!Number.isInteger(b) || b < 0 || b > 0xff) throw new RangeError(`rtc state: cmos byte ${String(b)}`);
    if (!Number.isInteger(state.index) || state.index < 0 || state.index > 0xff) throw new RangeError(`rtc state: index = ${String(state.index)}`);
    if (typeof state.originNs !== 'number' || !Number.isFinite(state.originNs)) throw new RangeError(`rtc state: originNs = ${String(state.originNs)}`);
    if (!Number.isSafeInteger(state.syncedCycle)) throw new RangeError(`rtc state: syncedCycle = ${String(state.syncedCycle)}`);
    const deadline = (v: unknown, what: string): number => {
      if (typeof v !== 'number' || !(v === -1 || (Number.isFinite(v) && v >= 0))) throw new RangeError(`rtc state: ${what} = ${String(v)}`);
      return v;
    };
    const periodic = deadline(state.periodicDeadlineNs, 'periodicDeadlineNs');
    const update = deadline(state.updateDeadlineNs, 'updateDeadlineNs');
    this.cmos.set(state.cmos);
    this.cmos[REG_A]! &= ~A_UIP;
    this.cmos[REG_C]! &= C_PF | C_AF | C_UF;
    this.cmos[REG_D] = D_VRT;
    this.index = state.index;
    this.originNs = state.originNs;
    this.syncedCycle = state.syncedCycle;
    this.fellBack = Boolean(state.fellBack);
    const level = Boolean(state.irqLevel);
    if (level !== this.level) {
      this.level = level;
      this.irq8?.(level);
    }
    if (periodic >= 0) this.periodicTimer.arm(periodic);
    else this.periodicTimer.disarm();
    if (update >= 0) this.updateTimer.arm(update);
    else this.updateTimer.disarm();
  }

  // ---- register access ----

  private readData(reg: number): number {
    const now = this.clock.nowNs();
    this.sync(now);
    switch (reg) {
      case REG_A:
        return this.cmos[REG_A]! | (this.uip() ? A_UIP : 0);
      case REG_C: {
        // Reading C reports and clears every flag, and so releases IRQ8.
        const v = this.regC();
        this.cmos[REG_C] = 0;
        this.updateIrq();
        this.schedule();
        return v;
      }
      case REG_D:
        return D_VRT;
      default:
        return this.cmos[reg]!;
    }
  }

  private writeData(reg: number, v: number): void {
    const now = this.clock.nowNs();
    this.sync(now);
    switch (reg) {
      case REG_A: {
        const wasRunning = this.running();
        this.cmos[REG_A] = v & ~A_UIP;
        if (!wasRunning && this.running()) {
          // Leaving reset: the divider restarts half a second before the next update.
          this.originNs = now - RESET_TO_UPDATE_CYCLES * (NS_PER_S / CYCLES_PER_S);
          this.syncedCycle = this.cyclesAt(now);
        }
        break;
      }
      case REG_B: {
        const old = this.cmos[REG_B]!;
        // Setting SET aborts any update and clears UIE.
        if (v & B_SET && !(old & B_SET)) v &= ~B_UIE;
        if ((old ^ v) & B_DSE) this.fellBack = false;
        this.cmos[REG_B] = v;
        break;
      }
      case REG_C:
      case REG_D:
        return; // read-only
      default:
        this.cmos[reg] = v;
        if (reg <= YEAR || reg === this.centuryIndex) this.fellBack = false;
        return;
    }
    this.updateIrq();
    this.schedule();
  }

  private regC(): number {
    const c = this.cmos[REG_C]!;
    return c | (this.irqf() ? C_IRQF : 0);
  }

  private irqf(): boolean {
    const b = this.cmos[REG_B]!;
    const c = this.cmos[REG_C]!;
    return ((c & C_PF && b & B_PIE) || (c & C_AF && b & B_AIE) || (c & C_UF && b & B_UIE)) !== 0;
  }

  private updateIrq(): void {
    const level = this.irqf();
    if (level !== this.level) {
      this.level = level;
      this.irq8?.(level);
    }
  }

  private checkIndex(index: number, min: number): void {
    if (!Number.isInteger(index) || index < min || index >= RTC_CMOS_SIZE) {
      throw new RangeError(`rtc: CMOS index ${String(index)} is out of range (0x${min.toString(16)}..0x7f)`);
    }
  }

  // ---- the divider chain ----

  private running(): boolean {
    return (this.cmos[REG_A]! & A_DV_MASK) === A_DV_32KHZ;
  }

  /** Divider cycles at guest time `ns`; whole seconds are split off so the product stays exact. */
  private cyclesAt(ns: number): number {
    const d = ns - this.originNs;
    const q = Math.floor(d / NS_PER_S);
    const r = d - q * NS_PER_S;
    return q * CYCLES_PER_S + Math.floor((r * CYCLES_PER_S) / NS_PER_S);
  }

  /** The earliest guest time at which the divider has reached cycle `c`. */
  private cycleNs(c: number): number {
    const q = Math.floor(c / CYCLES_PER_S);
    const r = c - q * CYCLES_PER_S;
    let ns = this.originNs + q * NS_PER_S + Math.ceil((r * NS_PER_S) / CYCLES_PER_S);
    // A fractional origin can round the sum below the cycle; never arm a timer that early.
    while (this.cyclesAt(ns) < c) ns += 1;
    return ns;
  }

  /** Cycles per periodic interrupt for the rate select, or 0 for none. RS 1 and 2 alias 8 and 9 on a 32 kHz base. */
  private periodCycles(): number {
    const rs = this.cmos[REG_A]! & A_RS_MASK;
    if (rs === 0) return 0;
    return 1 << ((rs < 3 ? rs + 7 : rs) - 1);
  }

  private uip(): boolean {
    if (!this.running() || this.cmos[REG_B]! & B_SET) return false;
    return mod(this.cyclesAt(this.clock.nowNs()), CYCLES_PER_S) >= CYCLES_PER_S - UIP_CYCLES;
  }

  /** Apply the periodic ticks and once-a-second updates that have come due by `now`. */
  private sync(now: number): void {
    if (!this.running()) return;
    const c1 = this.cyclesAt(now);
    const c0 = this.syncedCycle;
    if (c1 <= c0) return;
    const p = this.periodCycles();
    if (p !== 0 && Math.floor(c1 / p) > Math.floor(c0 / p)) this.cmos[REG_C]! |= C_PF;
    const updates = Math.floor(c1 / CYCLES_PER_S) - Math.floor(c0 / CYCLES_PER_S);
    if (updates > 0 && !(this.cmos[REG_B]! & B_SET)) {
      this.advance(updates);
      this.cmos[REG_C]! |= C_UF;
    }
    this.syncedCycle = c1;
    this.updateIrq();
  }

  private onTimer(now: number): void {
    this.sync(now);
    this.schedule();
  }

  /** Arm the timers for the interrupts that could still change IRQ8. */
  private schedule(): void {
    const b = this.cmos[REG_B]!;
    // While IRQ8 is asserted nothing can change it until register C is read.
    const live = this.running() && !this.level;
    const p = this.periodCycles();
    if (live && b & B_PIE && p !== 0) {
      this.periodicTimer.arm(this.cycleNs((Math.floor(this.syncedCycle / p) + 1) * p));
    } else this.periodicTimer.disarm();
    if (live && b & (B_UIE | B_AIE) && !(b & B_SET)) {
      this.updateTimer.arm(this.cycleNs((Math.floor(this.syncedCycle / CYCLES_PER_S) + 1) * CYCLES_PER_S));
    } else this.updateTimer.disarm();
  }

  // ---- the time registers ----

  private binary(): boolean {
    return (this.cmos[REG_B]! & B_DM_BINARY) !== 0;
  }
  private dec(v: number): number {
    return this.binary() ? v : (v >> 4) * 10 + (v & 0x0f);
  }
  private enc(v: number): number {
    return this.binary() ? v : (Math.floor(v / 10) << 4) | v % 10;
  }
  private encHour(h: number): number {
    if (this.cmos[REG_B]! & B_24H) return this.enc(h);
    return this.enc(h % 12 === 0 ? 12 : h % 12) | (h >= 12 ? HOUR_PM : 0);
  }
  private decHour(v: number): number {
    if (this.cmos[REG_B]! & B_24H) return this.dec(v);
    return (this.dec(v & ~HOUR_PM) % 12) + (v & HOUR_PM ? 12 : 0);
  }

  private fullYear(): number {
    const yy = this.dec(this.cmos[YEAR]!);
    if (this.centuryIndex !== null) return this.dec(this.cmos[this.centuryIndex]!) * 100 + yy;
    return yy < 70 ? 2000 + yy : 1900 + yy;
  }

  /** The time registers as seconds since 1970-01-01 00:00 of the RTC's own (local) time. */
  private localSeconds(): number {
    const c = this.cmos;
    const month = Math.min(12, Math.max(1, this.dec(c[MONTH]!)));
    const day = Math.max(1, this.dec(c[DAY_OF_MONTH]!));
    const days = daysFromCivil(this.fullYear(), month, day);
    return days * S_PER_DAY + this.decHour(c[HOURS]!) * 3600 + this.dec(c[MINUTES]!) * 60 + this.dec(c[SECONDS]!);
  }

  /** Write `l` (seconds since 1970 in the RTC's time) to the date and time registers, not the day of week. */
  private storeLocal(l: number): void {
    const c = this.cmos;
    const days = Math.floor(l / S_PER_DAY);
    const sod = l - days * S_PER_DAY;
    const [y, m, d] = civilFromDays(days);
    c[SECONDS] = this.enc(sod % 60);
    c[MINUTES] = this.enc(Math.floor(sod / 60) % 60);
    c[HOURS] = this.encHour(Math.floor(sod / 3600));
    c[DAY_OF_MONTH] = this.enc(d);
    c[MONTH] = this.enc(m);
    c[YEAR] = this.enc(mod(y, 100));
    if (this.centuryIndex !== null) c[this.centuryIndex] = this.enc(mod(Math.floor(y / 100), 100));
  }

  private writeTime(seconds: number): void {
    this.storeLocal(seconds);
    // 1970-01-01 was a Thursday: day of week 5 with Sunday = 1.
    this.cmos[DAY_OF_WEEK] = this.enc(mod(Math.floor(seconds / S_PER_DAY) + 4, 7) + 1);
    this.fellBack = false;
  }

  /**
   * The daylight-saving special updates as seconds of RTC time at 1:59:59 on the last Sunday
   * of April (next comes 3:00:00) and of October (next comes 1:00:00, the first time), for
   * `year`. Sundays are the days the day-of-week register calls 1.
   */
  private dstPoints(year: number, sundayShift: number): [number, number] {
    const lastSunday = (month: number, lastDay: number): number => {
      const d = daysFromCivil(year, month, lastDay);
      return d - mod(d + sundayShift, 7);
    };
    const at = (day: number): number => day * S_PER_DAY + 2 * 3600 - 1;
    return [at(lastSunday(4, 30)), at(lastSunday(10, 31))];
  }

  /** Advance the clock by `k` update cycles, flagging AF if the alarm matched on any of them. */
  private advance(k: number): void {
    const c = this.cmos;
    let l = this.localSeconds();
    const startDay = Math.floor(l / S_PER_DAY);
    const dow = this.dec(c[DAY_OF_WEEK]!);
    // Shift such that (day + shift) mod 7 == 0 on the days the register calls Sunday.
    const sundayShift = mod(dow - 1 - startDay, 7);
    const checkAlarm = !(c[REG_C]! & C_AF);
    let matched = false;
    const scan = (from: number, n: number): void => {
      // Seconds from+1 .. from+n are shown; test the last day's worth against the alarm.
      if (!checkAlarm || matched) return;
      for (let i = Math.max(1, n - ALARM_SCAN_LIMIT + 1); i <= n && !matched; i++) matched = this.alarmMatches(from + i);
    };
    const dse = (c[REG_B]! & B_DSE) !== 0;
    while (k > 0) {
      let next = -1;
      let april = false;
      if (dse) {
        const [year] = civilFromDays(Math.floor(l / S_PER_DAY));
        for (const y of [year, year + 1]) {
          const [apr, oct] = this.dstPoints(y, sundayShift);
          if (apr >= l && (next < 0 || apr < next)) {
            next = apr;
            april = true;
          }
          if (oct >= l && (next < 0 || oct < next)) {
            next = oct;
            april = false;
          }
        }
      }
      if (next < 0 || next - l >= k) {
        scan(l, k);
        l += k;
        break;
      }
      // Run up to 1:59:59, then take the special step.
      scan(l, next - l);
      k -= next - l + 1;
      if (april) l = next + 1 + 3600;
      else if (!this.fellBack) {
        l = next + 1 - 3600;
        this.fellBack = true;
      } else {
        l = next + 1;
        this.fellBack = false;
      }
      scan(l - 1, 1);
    }
    const days = Math.floor(l / S_PER_DAY) - startDay;
    this.storeLocal(l);
    if (days !== 0) c[DAY_OF_WEEK] = this.enc(mod(dow - 1 + days, 7) + 1);
    if (matched) c[REG_C]! |= C_AF;
  }

  /** Whether the alarm registers match the time `l` would show (0xc0–0xff match anything). */
  private alarmMatches(l: number): boolean {
    const c = this.cmos;
    const sod = mod(l, S_PER_DAY);
    const ok = (alarm: number, value: number): boolean => (alarm & ALARM_DONT_CARE) === ALARM_DONT_CARE || alarm === value;
    return (
      ok(c[SECONDS_ALARM]!, this.enc(sod % 60)) &&
      ok(c[MINUTES_ALARM]!, this.enc(Math.floor(sod / 60) % 60)) &&
      ok(c[HOURS_ALARM]!, this.encHour(Math.floor(sod / 3600)))
    );
  }
}
