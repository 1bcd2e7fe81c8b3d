/**
 * ACPI fixed-hardware power management registers (ACPI 6.x section 4.8), in one block of I/O
 * ports whose layout is kvmts's own:
 *
 * | offset | register            | width | FADT field                         |
 * | ------ | ------------------- | ----- | ---------------------------------- |
 * | 0x00   | PM1_STS             | 2     | PM1a_EVT_BLK (PM1_EVT_LEN = 4)     |
 * | 0x02   | PM1_EN              | 2     |                                    |
 * | 0x04   | PM1_CNT             | 2     | PM1a_CNT_BLK (PM1_CNT_LEN = 2)     |
 * | 0x08   | PM_TMR              | 4     | PM_TMR_BLK (PM_TMR_LEN = 4)        |
 * | 0x0c   | GPE0_STS            | 2     | GPE0_BLK (GPE0_BLK_LEN = 4)        |
 * | 0x0e   | GPE0_EN             | 2     |                                    |
 * | 0x10   | RESET_REG           | 1     | RESET_REG (I/O, 8 bits), value 01h |
 *
 * The block is {@link PM_IO_LEN} ports; unused ports read all-ones. {@link pmLayout} gives
 * every port and width so the firmware's FADT generator need not repeat them.
 *
 * What is implemented: the PM timer (24 bits, so the FADT's TMR_VAL_EXT flag is 0), the fixed
 * power button (PWR_BUTTON flag 0), TMR_STS/PWRBTN_STS/WAK_STS, sleep through SLP_TYP/SLP_EN
 * (only S5, {@link ACPI_SLP_TYP_S5}, means anything: the platform powers off), 16 GPEs, and
 * the reset register. Not implemented, so the FADT should say so: sleep button (SLP_BUTTON
 * flag 1), RTC alarm status (FIX_RTC 1), bus master status, global lock release. There is no
 * SMM, so the FADT's SMI_CMD is 0 and the machine is always in ACPI mode: SCI_EN reads 1.
 * @module
 */

import type { GuestClock, Timer, TimerQueue } from '@kvmts/kvm-core';
import type { BusDevice } from '@kvmts/kvm-core';

/** Default base port of the block (where QEMU's PIIX4 PM puts its PM1 block too). */
export const PM_BASE_DEFAULT = 0x600;
/** Ports the block occupies. */
export const PM_IO_LEN = 0x20;
/** PM timer frequency, Hz. */
export const PM_TIMER_HZ = 3_579_545;
/** PM timer width in bits (FADT flag TMR_VAL_EXT = 0). */
export const PM_TIMER_BITS = 24;
/** SLP_TYP value for S5 (soft off); the DSDT's \_S5 package carries it. */
export const ACPI_SLP_TYP_S5 = 5;
/** The value the FADT's RESET_VALUE tells OSPM to write to RESET_REG. */
export const PM_RESET_VALUE = 0x01;

// Offsets within the block.
const PM1_STS = 0x00;
const PM1_EN = 0x02;
const PM1_CNT = 0x04;
const PM_TMR = 0x08;
const GPE0_STS = 0x0c;
const GPE0_EN = 0x0e;
const RESET_REG = 0x10;

// PM1_STS / PM1_EN bits.
/** PM1_STS bit 0: the PM timer's top bit changed. */
export const PM1_TMR_STS = 0x0001;
/** PM1_STS bit 8: the power button was pressed. */
export const PM1_PWRBTN_STS = 0x0100;
/** PM1_STS bit 15: the system woke from a sleep state. */
export const PM1_WAK_STS = 0x8000;
/** PM1_EN bit 0: TMR_STS raises an SCI. */
export const PM1_TMR_EN = 0x0001;
/** PM1_EN bit 8: PWRBTN_STS raises an SCI. */
export const PM1_PWRBTN_EN = 0x0100;
const STS_W1C = PM1_TMR_STS | PM1_PWRBTN_STS | PM1_WAK_STS;
/** PM1_EN bit 5: GBL_STS (global-lock release) raises an SCI. Stored: no firmware ever releases the lock. */
export const PM1_GBL_EN = 0x0020;
/** PM1_EN bit 10: RTC_STS (RTC alarm wake) raises an SCI. Stored: alarm wake-ups are not modelled. */
export const PM1_RTC_EN = 0x0400;
const EN_WRITABLE = PM1_TMR_EN | PM1_PWRBTN_EN | PM1_GBL_EN | PM1_RTC_EN;

// PM1_CNT bits.
/** PM1_CNT bit 0: power management events raise SCIs (fixed 1 here: no SMM). */
export const PM1_SCI_EN = 0x0001;
const CNT_BM_RLD = 0x0002;
const SLP_TYP_SHIFT = 10;
const CNT_SLP_TYP = 0x7 << SLP_TYP_SHIFT;
/** PM1_CNT bit 13: write 1 to enter the sleep state in SLP_TYP (reads 0). */
export const PM1_SLP_EN = 0x2000;
// BM_RLD and SLP_TYP are stored; GBL_RLS (bit 2) and SLP_EN are write-only strobes.
const CNT_STORED = CNT_BM_RLD | CNT_SLP_TYP;

const TIMER_MASK = 2 ** PM_TIMER_BITS - 1;
// TMR_STS is set each time the timer's most significant bit changes, every 2^23 ticks (~2.34 s).
const TMR_PERIOD = 2 ** (PM_TIMER_BITS - 1);
const NS_PER_S = 1_000_000_000;

/** One register: its I/O port and width in bytes. */
export interface PmRegister {
  port: number;
  width: number;
}

/** Every register of the block, for firmware tables (FADT fixed-hardware fields and GAS structures). */
export interface PmLayout {
  base: number;
  /** Ports the block occupies. */
  length: number;
  /** PM1a_EVT_BLK: PM1_STS then PM1_EN (PM1_EVT_LEN = 4). */
  pm1aEvt: PmRegister;
  pm1Sts: PmRegister;
  pm1En: PmRegister;
  /** PM1a_CNT_BLK (PM1_CNT_LEN = 2). */
  pm1aCnt: PmRegister;
  /** PM_TMR_BLK (PM_TMR_LEN = 4). */
  pmTmr: PmRegister;
  /** Timer bits: 24 (TMR_VAL_EXT = 0). */
  pmTmrBits: number;
  /** GPE0_BLK: GPE0_STS then GPE0_EN (GPE0_BLK_LEN = 4, 16 GPEs). */
  gpe0: PmRegister;
  gpe0Sts: PmRegister;
  gpe0En: PmRegister;
  /** RESET_REG (I/O space, 8-bit access) and RESET_VALUE. */
  resetReg: PmRegister & { value: number };
  /** SLP_TYP for \_S5. */
  slpTypS5: number;
}

/** The register layout with the block at `base`. */
export function pmLayout(base = PM_BASE_DEFAULT): PmLayout {
  if (!Number.isInteger(base) || base < 0 || base + PM_IO_LEN > 0x10000) throw new RangeError(`ACPI PM base ${String(base)} does not fit in I/O space`);
  const reg = (off: number, width: number): PmRegister => ({ port: base + off, width });
  return {
    base,
    length: PM_IO_LEN,
    pm1aEvt: reg(PM1_STS, 4),
    pm1Sts: reg(PM1_STS, 2),
    pm1En: reg(PM1_EN, 2),
    pm1aCnt: reg(PM1_CNT, 2),
    pmTmr: reg(PM_TMR, 4),
    pmTmrBits: PM_TIMER_BITS,
    gpe0: reg(GPE0_STS, 4),
    gpe0Sts: reg(GPE0_STS, 2),
    gpe0En: reg(GPE0_EN, 2),
    resetReg: { ...reg(RESET_REG, 1), value: PM_RESET_VALUE },
    slpTypS5: ACPI_SLP_TYP_S5,
  };
}

/** PM timer ticks since guest time 0 (not wrapped), exact for any safe `ns`. */
export function pmTimerTicks(ns: number): number {
  const s = Math.floor(ns / NS_PER_S);
  return s * PM_TIMER_HZ + Math.floor(((ns - s * NS_PER_S) * PM_TIMER_HZ) / NS_PER_S);
}

/** The first guest time (ns) at which the timer has counted `ticks`. */
function nsForTicks(ticks: number): number {
  const q = Math.floor(ticks / PM_TIMER_HZ);
  let ns = q * NS_PER_S + Math.ceil(((ticks - q * PM_TIMER_HZ) * NS_PER_S) / PM_TIMER_HZ);
  // Settle any rounding of the division.
  while (pmTimerTicks(ns) < ticks) ns++;
  while (ns > 0 && pmTimerTicks(ns - 1) >= ticks) ns--;
  return ns;
}

/** Options for {@link AcpiPm}. */
export interface AcpiPmOptions {
  /** The VM's guest clock; the PM timer counts guest time. */
  clock: GuestClock;
  /** Where to arm the timer that raises TMR_STS on time while TMR_EN is set (without it, TMR_STS is only noticed when read). */
  timers?: TimerQueue;
  /** Base port, for {@link AcpiPm.layout} (default {@link PM_BASE_DEFAULT}). */
  base?: number;
  /** The SCI line: high while any enabled status bit is set. Called on change. */
  sci?: (level: boolean) => void;
  /** SLP_EN was written; `slpTyp` is SLP_TYP. The platform powers off for {@link ACPI_SLP_TYP_S5}. */
  onSleep?: (slpTyp: number) => void;
  /** {@link PM_RESET_VALUE} was written to RESET_REG. */
  reset?: () => void;
}

/** Plain, JSON-able snapshot of an {@link AcpiPm}. */
export interface AcpiPmState {
  pm1Sts: number;
  pm1En: number;
  /** Stored PM1_CNT bits (BM_RLD, SLP_TYP). */
  pm1Cnt: number;
  gpe0Sts: number;
  gpe0En: number;
  /** PM timer ticks / 2^23 when TMR_STS was last brought up to date. */
  tmrEpoch: number;
}

/** The ACPI PM register block; map on an {@link IoBus} at `layout.base`, length `layout.length`. */
export class AcpiPm implements BusDevice {
  /** Ports and widths of every register. */
  readonly layout: PmLayout;

  private readonly clock: GuestClock;
  private readonly timer: Timer | undefined;
  private readonly sci: ((level: boolean) => void) | undefined;
  private readonly onSleep: ((slpTyp: number) => void) | undefined;
  private readonly onReset: (() => void) | undefined;

  private pm1Sts = 0;
  private pm1En = 0;
  private pm1Cnt = 0;
  private gpe0Sts = 0;
  private gpe0En = 0;
  private tmrEpoch: number;
  private level = false;

  constructor(options: AcpiPmOptions) {
    this.layout = pmLayout(options.base);
    this.clock = options.clock;
    this.sci = options.sci;
    this.onSleep = options.onSleep;
    this.onReset = options.reset;
    this.timer = options.timers?.create((now) => this.timerFired(now));
    this.tmrEpoch = this.epoch(this.clock.nowNs());
  }

  /** The current level of the SCI. */
  get sciLevel(): boolean {
    return this.level;
  }

  /** The 24-bit PM timer value now. */
  timerValue(): number {
    return pmTimerTicks(this.clock.nowNs()) & TIMER_MASK;
  }

  /** The power button was pressed: sets PWRBTN_STS (an SCI if PWRBTN_EN). */
  pressPowerButton(): void {
    this.pm1Sts |= PM1_PWRBTN_STS;
    this.updateSci();
  }

  /** A general-purpose event: sets GPE0_STS bit `bit` (0..15), an SCI if enabled in GPE0_EN. */
  raiseGpe(bit: number): void {
    if (!Number.isInteger(bit) || bit < 0 || bit > 15) throw new RangeError(`GPE ${String(bit)} is not 0..15`);
    this.gpe0Sts |= 1 << bit;
    this.updateSci();
  }

  read(offset: number, data: Uint8Array): void {
    this.syncTimer(this.clock.nowNs());
    // One timer sample per access, so a 32-bit read is not torn.
    let tmr = -1;
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      if (o >= PM_TMR && o < PM_TMR + 4) {
        if (tmr < 0) tmr = this.timerValue();
        data[i] = (tmr >>> (8 * (o - PM_TMR))) & 0xff;
      } else {
        data[i] = this.readByte(o);
      }
    }
    this.updateSci();
  }

  write(offset: number, data: Uint8Array): void {
    const now = this.clock.nowNs();
    // Bring TMR_STS up to date first, so a W1C clears a transition that has already happened.
    this.syncTimer(now);
    let sleep = false;
    let reset = false;
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      const v = data[i]!;
      const sh = 8 * (o & 1);
      const b = (v << sh) & (0xff << sh);
      switch (o) {
        case PM1_STS:
        case PM1_STS + 1:
          this.pm1Sts &= ~(b & STS_W1C);
          break;
        case PM1_EN:
        case PM1_EN + 1:
          this.pm1En = (this.pm1En & ~(0xff << sh)) | (b & EN_WRITABLE);
          break;
        case PM1_CNT:
        case PM1_CNT + 1:
          this.pm1Cnt = (this.pm1Cnt & ~(0xff << sh)) | (b & CNT_STORED);
          if (b & PM1_SLP_EN) sleep = true;
          break;
        case GPE0_STS:
        case GPE0_STS + 1:
          this.gpe0Sts &= ~b;
          break;
        case GPE0_EN:
        case GPE0_EN + 1:
          this.gpe0En = (this.gpe0En & ~(0xff << sh)) | b;
          break;
        case RESET_REG:
          if (v === PM_RESET_VALUE) reset = true;
          break;
        default:
          // PM_TMR is read-only; the rest of the block is unused.
          break;
      }
    }
    this.updateSci();
    this.armTimer(now);
    // Callbacks that may stop the VM go last, with the registers already consistent.
    if (sleep) {
      const typ = (this.pm1Cnt & CNT_SLP_TYP) >> SLP_TYP_SHIFT;
      this.onSleep?.(typ);
      // Only S5 is a real state; for anything else the machine "wakes" at once, so OSPM waiting on WAK_STS goes on.
      if (typ !== ACPI_SLP_TYP_S5) {
        this.pm1Sts |= PM1_WAK_STS;
        this.updateSci();
      }
    }
    if (reset) this.onReset?.();
  }

  /** Power-on state: all status and enables clear. */
  reset(): void {
    this.pm1Sts = 0;
    this.pm1En = 0;
    this.pm1Cnt = 0;
    this.gpe0Sts = 0;
    this.gpe0En = 0;
    const now = this.clock.nowNs();
    this.tmrEpoch = this.epoch(now);
    this.armTimer(now);
    this.updateSci();
  }

  save(): AcpiPmState {
    this.syncTimer(this.clock.nowNs());
    return {
      pm1Sts: this.pm1Sts,
      pm1En: this.pm1En,
      pm1Cnt: this.pm1Cnt,
      gpe0Sts: this.gpe0Sts,
      gpe0En: this.gpe0En,
      tmrEpoch: this.tmrEpoch,
    };
  }

  /** Load a snapshot from {@link save} (restore the guest clock first); throws RangeError if it is malformed. */
  restore(state: AcpiPmState): void {
    const regs = ['pm1Sts', 'pm1En', 'pm1Cnt', 'gpe0Sts', 'gpe0En'] as const;
    for (const k of regs) {
      const v = state[k];
      if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`ACPI PM state: ${k} = ${String(v)} is not a 16-bit value`);
    }
    if (!Number.isSafeInteger(state.tmrEpoch) || state.tmrEpoch < 0) throw new RangeError(`ACPI PM state: tmrEpoch = ${String(state.tmrEpoch)}`);
    this.pm1Sts = state.pm1Sts & STS_W1C;
    this.pm1En = state.pm1En & EN_WRITABLE;
    this.pm1Cnt = state.pm1Cnt & CNT_STORED;
    this.gpe0Sts = state.gpe0Sts;
    this.gpe0En = state.gpe0En;
    this.tmrEpoch = state.tmrEpoch;
    const now = this.clock.nowNs();
    this.syncTimer(now);
    this.armTimer(now);
    this.updateSci();
  }

  private readByte(o: number): number {
    const sh = 8 * (o & 1);
    switch (o) {
      case PM1_STS:
      case PM1_STS + 1:
        return (this.pm1Sts >> sh) & 0xff;
      case PM1_EN:
      case PM1_EN + 1:
        return (this.pm1En >> sh) & 0xff;
      case PM1_CNT:
      case PM1_CNT + 1:
        return ((this.pm1Cnt | PM1_SCI_EN) >> sh) & 0xff;
      case GPE0_STS:
      case GPE0_STS + 1:
        return (this.gpe0Sts >> sh) & 0xff;
      case GPE0_EN:
      case GPE0_EN + 1:
        return (this.gpe0En >> sh) & 0xff;
      case RESET_REG:
        return 0;
      default:
        return 0xff;
    }
  }

  private epoch(ns: number): number {
    return Math.floor(pmTimerTicks(ns) / TMR_PERIOD);
  }

  /** Set TMR_STS if the timer's top bit has changed since we last looked. */
  private syncTimer(now: number): void {
    const e = this.epoch(now);
    if (e !== this.tmrEpoch) {
      this.tmrEpoch = e;
      this.pm1Sts |= PM1_TMR_STS;
    }
  }

  /** While TMR_EN is set, wake up at the next top-bit change so the SCI is on time. */
  private armTimer(now: number): void {
    if (this.timer === undefined) return;
    if (this.pm1En & PM1_TMR_EN) this.timer.arm(Math.max(now, nsForTicks((this.epoch(now) + 1) * TMR_PERIOD)));
    else if (this.timer.deadlineNs >= 0) this.timer.disarm();
  }

  private timerFired(now: number): void {
    this.syncTimer(now);
    this.armTimer(now);
    this.updateSci();
  }

  private updateSci(): void {
    // SCI_EN is fixed at 1, so every enabled event is an SCI.
    const level = (this.pm1Sts & this.pm1En) !== 0 || (this.gpe0Sts & this.gpe0En) !== 0;
    if (level !== this.level) {
      this.level = level;
      this.sci?.(level);
    }
  }
}
