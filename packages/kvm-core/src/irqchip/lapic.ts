/**
 * A local APIC (xAPIC, as the Intel SDM vol. 3 chapter 10 describes it for P6-family CPUs),
 * one per vCPU, with its register page at the APIC base (0xFEE00000 after reset).
 *
 * State lives in one 1 KiB register image, the layout of KVM's `struct kvm_lapic_state`: each
 * 32-bit register at its MMIO offset / 4 dwords apart, so KVM_GET_LAPIC / KVM_SET_LAPIC copy it
 * whole. IRR, ISR and TMR are the eight-dword bitmaps at 0x200, 0x100 and 0x180.
 *
 * - Interrupts arrive from the I/O APIC ({@link Lapic.deliver}), from the 8259A through LINT0
 *   in ExtINT mode (virtual-wire mode, which is how firmware leaves it), from the timer, and
 *   from self-IPIs through the ICR.
 * - The timer counts at {@link LAPIC_BUS_HZ} divided by the divide configuration, in one-shot
 *   and periodic modes, on the VM's clock. TSC-deadline mode is not offered (CPUID says so).
 * - With the APIC disabled in IA32_APIC_BASE the register page is not decoded and the PIC's
 *   INTR goes straight to the CPU, as on a P6 with its APIC off.
 * @module
 */

import type { GuestClock } from '../time/clock.js';
import type { Timer, TimerQueue } from '../time/timers.js';
import type { Pic } from './pic.js';

/** Size of the register page that is decoded. */
export const LAPIC_PAGE_SIZE = 0x1000;
/** Size of KVM_GET_LAPIC's register image. */
export const LAPIC_REGS_SIZE = 0x400;
/** The timer's input clock before division: 1 GHz, as KVM's emulated APIC bus. */
export const LAPIC_BUS_HZ = 1_000_000_000;
/** Version register: version 0x14 (integrated APIC), six LVT entries (max LVT index 5). */
export const LAPIC_VERSION = 0x00050014;

/** Register offsets in the page. */
export const LapicReg = {
  ID: 0x020,
  VERSION: 0x030,
  TPR: 0x080,
  APR: 0x090,
  PPR: 0x0a0,
  EOI: 0x0b0,
  RRD: 0x0c0,
  LDR: 0x0d0,
  DFR: 0x0e0,
  SVR: 0x0f0,
  ISR: 0x100,
  TMR: 0x180,
  IRR: 0x200,
  ESR: 0x280,
  ICR_LOW: 0x300,
  ICR_HIGH: 0x310,
  LVT_TIMER: 0x320,
  LVT_THERMAL: 0x330,
  LVT_PERF: 0x340,
  LVT_LINT0: 0x350,
  LVT_LINT1: 0x360,
  LVT_ERROR: 0x370,
  TIMER_INITIAL: 0x380,
  TIMER_CURRENT: 0x390,
  TIMER_DIVIDE: 0x3e0,
} as const;

const LVT_MASKED = 1 << 16;
const LVT_LEVEL = 1 << 15;
const LVT_DELIVERY = 0x700;
const DELIVERY_FIXED = 0x000;
const DELIVERY_NMI = 0x400;
const DELIVERY_EXTINT = 0x700;
const TIMER_PERIODIC = 1 << 17;
const SVR_ENABLE = 1 << 8;
const ICR_PENDING = 1 << 12;
const ICR_LEVEL_ASSERT = 1 << 14;
const ICR_DEST_LOGICAL = 1 << 11;
const ICR_SHORTHAND_SHIFT = 18;

/** Writable bits of each LVT register (vector, delivery mode, polarity, trigger, mask, timer mode). */
const LVT_WRITABLE: Readonly<Record<number, number>> = {
  [LapicReg.LVT_TIMER]: 0x300ff,
  [LapicReg.LVT_THERMAL]: 0x107ff,
  [LapicReg.LVT_PERF]: 0x107ff,
  [LapicReg.LVT_LINT0]: 0x1a7ff,
  [LapicReg.LVT_LINT1]: 0x1a7ff,
  [LapicReg.LVT_ERROR]: 0x100ff,
};

/** What a local APIC drives on its vCPU and the rest of the irqchip. */
export interface LapicHooks {
  /** The local APIC has something for the CPU: re-check before the next instruction. */
  kick(): void;
  /** An NMI for the CPU (LINT/LVT or ICR delivery mode NMI). */
  nmi(): void;
  /** EOI of a level-triggered vector: the I/O APIC clears remote IRR for it. */
  eoiLevel(vector: number): void;
}

/** Options for {@link Lapic}. */
export interface LapicOptions extends LapicHooks {
  /** The APIC ID (= the vCPU id). */
  id: number;
  clock: GuestClock;
  timers: TimerQueue;
  /** The 8259A pair whose INTR feeds LINT0 (the boot processor's APIC only). */
  pic?: Pic;
}

/** Divide configuration (bits 0, 1, 3) → divisor. */
function divisorOf(dcr: number): number {
  const v = (dcr & 3) | ((dcr >> 1) & 4);
  return v === 7 ? 1 : 2 << v;
}

/** See the module comment. */
export class Lapic {
  /** The register image (KVM_GET_LAPIC layout). */
  private readonly regs = new Uint32Array(LAPIC_REGS_SIZE / 4);
  private readonly timer: Timer;
  private timerStartNs = -1;
  private timerStartCount = 0;
  private timerDeadlineNs = -1;
  /** IA32_APIC_BASE bit 11: when clear, the APIC neither decodes its page nor delivers. */
  hwEnabled = true;

  constructor(private readonly options: LapicOptions) {
    this.timer = options.timers.create((now) => this.timerFired(now));
    this.reset();
  }

  /** Power-on / INIT state (SDM 10.4.7.1). */
  reset(): void {
    this.regs.fill(0);
    this.set(LapicReg.ID, (this.options.id & 0xff) << 24);
    this.set(LapicReg.VERSION, LAPIC_VERSION);
    this.set(LapicReg.DFR, 0xffffffff);
    this.set(LapicReg.SVR, 0xff);
    for (const r of Object.keys(LVT_WRITABLE)) this.set(Number(r), LVT_MASKED);
    this.stopTimer();
  }

  private get(reg: number): number {
    return this.regs[reg >> 2]! >>> 0;
  }
  private set(reg: number, v: number): void {
    this.regs[reg >> 2] = v >>> 0;
  }

  private get swEnabled(): boolean {
    return (this.get(LapicReg.SVR) & SVR_ENABLE) !== 0;
  }

  // --- the 256-bit IRR/ISR/TMR bitmaps -------------------------------------------------------

  private testBit(base: number, vector: number): boolean {
    return ((this.regs[(base >> 2) + ((vector >> 5) << 2)]! >>> (vector & 31)) & 1) !== 0;
  }
  private setBit(base: number, vector: number, on: boolean): void {
    const i = (base >> 2) + ((vector >> 5) << 2);
    const m = 1 << (vector & 31);
    this.regs[i] = on ? this.regs[i]! | m : this.regs[i]! & ~m;
  }
  /** The highest vector set in a bitmap, or -1. */
  private highest(base: number): number {
    for (let w = 7; w >= 0; w--) {
      const v = this.regs[(base >> 2) + (w << 2)]! >>> 0;
      if (v !== 0) return (w << 5) + 31 - Math.clz32(v);
    }
    return -1;
  }

  /** Processor priority (SDM 10.8.3.1): the higher of TPR and the in-service class. */
  private ppr(): number {
    const tpr = this.get(LapicReg.TPR) & 0xff;
    const isrv = Math.max(this.highest(LapicReg.ISR), 0);
    return (tpr >> 4) >= (isrv >> 4) ? tpr : isrv & 0xf0;
  }

  // --- delivery into the APIC ----------------------------------------------------------------

  /** Accept a fixed interrupt (I/O APIC message, IPI, LVT). Discarded while the APIC is disabled, as in KVM. */
  acceptFixed(vector: number, level: boolean): void {
    if (!this.hwEnabled || !this.swEnabled) return;
    // Vectors 0–15 are illegal: the APIC reports a receive-illegal-vector error instead.
    if (vector < 16) {
      this.set(LapicReg.ESR, this.get(LapicReg.ESR) | (1 << 6));
      return;
    }
    this.setBit(LapicReg.IRR, vector, true);
    this.setBit(LapicReg.TMR, vector, level);
    this.options.kick();
  }

  /** Whether an I/O APIC or IPI destination names this APIC (flat or cluster logical, or physical). */
  matchesDestination(logical: boolean, dest: number): boolean {
    if (!logical) return dest === 0xff || dest === this.get(LapicReg.ID) >>> 24;
    const ldr = this.get(LapicReg.LDR) >>> 24;
    if ((this.get(LapicReg.DFR) >>> 28) === 0xf) return (ldr & dest) !== 0;
    // Cluster model: high nibble is the cluster (15 = broadcast), low nibble the members.
    return ((dest >> 4) === 0xf || (dest >> 4) === (ldr >> 4)) && (dest & ldr & 0xf) !== 0;
  }

  /** The 8259A's INTR reaches the CPU: LINT0 unmasked in ExtINT mode, or the APIC is off. */
  private picAccepted(): boolean {
    if (!this.hwEnabled) return true;
    const lint0 = this.get(LapicReg.LVT_LINT0);
    return (lint0 & LVT_MASKED) === 0 && (lint0 & LVT_DELIVERY) === DELIVERY_EXTINT;
  }

  /** Whether the CPU should take an interrupt now (when its IF allows). */
  hasInterrupt(): boolean {
    const pic = this.options.pic;
    if (pic !== undefined && this.picAccepted() && pic.hasInterrupt()) return true;
    if (!this.hwEnabled) return false;
    const irr = this.highest(LapicReg.IRR);
    return irr >= 0 && (irr & 0xf0) > (this.ppr() & 0xf0);
  }

  /**
   * The CPU's interrupt acknowledge: the 8259A's vector for ExtINT, otherwise the highest
   * pending vector moves from IRR to ISR. A request masked by the TPR meanwhile gives the
   * spurious vector.
   */
  acknowledge(): number {
    const pic = this.options.pic;
    if (pic !== undefined && this.picAccepted() && pic.hasInterrupt()) return pic.acknowledge();
    const irr = this.highest(LapicReg.IRR);
    if (irr < 0 || (irr & 0xf0) <= (this.ppr() & 0xf0)) return this.get(LapicReg.SVR) & 0xff;
    this.setBit(LapicReg.IRR, irr, false);
    this.setBit(LapicReg.ISR, irr, true);
    return irr;
  }

  private eoi(): void {
    const v = this.highest(LapicReg.ISR);
    if (v < 0) return;
    this.setBit(LapicReg.ISR, v, false);
    if (this.testBit(LapicReg.TMR, v)) this.options.eoiLevel(v);
    // Lowering the PPR can unmask something already in IRR.
    this.options.kick();
  }

  // --- the timer -----------------------------------------------------------------------------

  private tickNs(): number {
    return (divisorOf(this.get(LapicReg.TIMER_DIVIDE)) * 1e9) / LAPIC_BUS_HZ;
  }

  private stopTimer(): void {
    this.timerStartNs = -1;
    this.timerStartCount = 0;
    this.timerDeadlineNs = -1;
    this.timer.disarm();
  }

  private startTimer(count: number, now: number): void {
    if (count === 0) {
      this.stopTimer();
      return;
    }
    this.timerStartNs = now;
    this.timerStartCount = count;
    this.timerDeadlineNs = now + Math.max(1, Math.round(count * this.tickNs()));
    this.timer.arm(this.timerDeadlineNs);
  }

  private currentCount(now: number): number {
    if (this.timerStartNs < 0) return 0;
    const elapsed = Math.floor((now - this.timerStartNs) / this.tickNs());
    return Math.max(0, this.timerStartCount - elapsed);
  }

  private timerFired(now: number): void {
    const lvt = this.get(LapicReg.LVT_TIMER);
    if ((lvt & LVT_MASKED) === 0) this.acceptFixed(lvt & 0xff, false);
    const initial = this.get(LapicReg.TIMER_INITIAL);
    if ((lvt & TIMER_PERIODIC) === 0 || initial === 0) {
      this.stopTimer();
      return;
    }
    // Keep the period's phase: the next period starts at the deadline that just passed, unless
    // the host stalled for many periods (then start afresh rather than fire a burst).
    const period = Math.max(1, Math.round(initial * this.tickNs()));
    const start = this.timerDeadlineNs >= now - 10 * period ? this.timerDeadlineNs : now;
    this.timerStartNs = start;
    this.timerStartCount = initial;
    this.timerDeadlineNs = start + period;
    this.timer.arm(this.timerDeadlineNs);
  }

  // --- MMIO ----------------------------------------------------------------------------------

  /** A register read; `offset` within the page, any size (registers are 32-bit aligned on 16 bytes). */
  read(offset: number, data: Uint8Array): void {
    const reg = offset & 0xff0;
    const v = this.readRegister(reg);
    const shift = (offset & 3) * 8;
    for (let i = 0; i < data.length; i++) data[i] = (offset & 0xc) === 0 ? (v >>> (shift + i * 8)) & 0xff : 0;
  }

  /** A register write; only aligned 32-bit writes to the register's first dword take effect (SDM 10.4.1). */
  write(offset: number, data: Uint8Array): void {
    if ((offset & 0xf) !== 0 || data.length !== 4) return;
    const v = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
    this.writeRegister(offset & 0xff0, v);
  }

  private readRegister(reg: number): number {
    switch (reg) {
      case LapicReg.PPR:
        return this.ppr();
      case LapicReg.TIMER_CURRENT:
        return this.currentCount(this.options.clock.nowNs());
      case LapicReg.EOI:
        return 0;
      default:
        return reg < LAPIC_REGS_SIZE ? this.get(reg) : 0;
    }
  }

  private writeRegister(reg: number, v: number): void {
    switch (reg) {
      case LapicReg.ID:
        this.set(reg, v & 0xff000000);
        return;
      case LapicReg.TPR:
        this.set(reg, v & 0xff);
        this.options.kick();
        return;
      case LapicReg.EOI:
        this.eoi();
        return;
      case LapicReg.LDR:
        this.set(reg, v & 0xff000000);
        return;
      case LapicReg.DFR:
        this.set(reg, v | 0x0fffffff);
        return;
      case LapicReg.SVR: {
        this.set(reg, v & 0x11ff);
        if ((v & SVR_ENABLE) === 0) {
          // Software disable masks every LVT entry (SDM 10.4.7.2).
          for (const r of Object.keys(LVT_WRITABLE)) this.set(Number(r), this.get(Number(r)) | LVT_MASKED);
        }
        this.options.kick();
        return;
      }
      case LapicReg.ESR:
        // A write latches the errors for reading and clears them: nothing accumulates here.
        this.set(reg, 0);
        return;
      case LapicReg.ICR_HIGH:
        this.set(reg, v & 0xff000000);
        return;
      case LapicReg.ICR_LOW:
        this.set(reg, v & ~ICR_PENDING);
        this.sendIpi(v);
        return;
      case LapicReg.LVT_TIMER:
      case LapicReg.LVT_THERMAL:
      case LapicReg.LVT_PERF:
      case LapicReg.LVT_LINT0:
      case LapicReg.LVT_LINT1:
      case LapicReg.LVT_ERROR: {
        let val = v & LVT_WRITABLE[reg]!;
        if (!this.swEnabled) val |= LVT_MASKED;
        const wasPeriodic = (this.get(reg) ^ val) & TIMER_PERIODIC;
        this.set(reg, val);
        if (reg === LapicReg.LVT_TIMER && wasPeriodic) this.stopTimer();
        this.options.kick();
        return;
      }
      case LapicReg.TIMER_INITIAL:
        this.set(reg, v);
        this.startTimer(v, this.options.clock.nowNs());
        return;
      case LapicReg.TIMER_DIVIDE: {
        const now = this.options.clock.nowNs();
        const remaining = this.currentCount(now);
        this.set(reg, v & 0xb);
        if (this.timerStartNs >= 0) this.startTimer(remaining, now);
        return;
      }
      default:
        // Read-only and reserved registers ignore writes.
        return;
    }
  }

  /** ICR writes: fixed and NMI IPIs to this APIC (the only one a uniprocessor VM has). */
  private sendIpi(icr: number): void {
    const shorthand = (icr >>> ICR_SHORTHAND_SHIFT) & 3;
    const toSelf =
      shorthand === 1 ||
      shorthand === 2 ||
      (shorthand === 0 && this.matchesDestination((icr & ICR_DEST_LOGICAL) !== 0, this.get(LapicReg.ICR_HIGH) >>> 24));
    if (!toSelf) return;
    switch (icr & LVT_DELIVERY) {
      case DELIVERY_FIXED:
        this.acceptFixed(icr & 0xff, false);
        return;
      case DELIVERY_NMI:
        if ((icr & ICR_LEVEL_ASSERT) !== 0 || (icr & LVT_LEVEL) === 0) this.options.nmi();
        return;
      default:
        // INIT and start-up IPIs only matter with application processors.
        return;
    }
  }

  // --- KVM_GET_LAPIC / KVM_SET_LAPIC ----------------------------------------------------------

  /** Copies the register image into `out` (1 KiB), with the timer's current count filled in. */
  getRegisters(out: Uint8Array): void {
    this.set(LapicReg.TIMER_CURRENT, this.currentCount(this.options.clock.nowNs()));
    this.set(LapicReg.PPR, this.ppr());
    out.set(new Uint8Array(this.regs.buffer, this.regs.byteOffset, LAPIC_REGS_SIZE).subarray(0, Math.min(out.length, LAPIC_REGS_SIZE)));
  }

  /** Loads a register image; a counting timer resumes from the image's current count. */
  setRegisters(src: Uint8Array): void {
    if (src.length < LAPIC_REGS_SIZE) throw new RangeError(`lapic: register image is ${src.length} bytes, need ${LAPIC_REGS_SIZE}`);
    new Uint8Array(this.regs.buffer, this.regs.byteOffset, LAPIC_REGS_SIZE).set(src.subarray(0, LAPIC_REGS_SIZE));
    this.set(LapicReg.VERSION, LAPIC_VERSION);
    const now = this.options.clock.nowNs();
    const current = this.get(LapicReg.TIMER_CURRENT);
    // A counting timer resumes with what was left of its count.
    this.startTimer(current, now);
    this.options.kick();
  }
}
