/**
 * Guest time. One clock per VM drives everything that counts time — the TSC, and the PIT, RTC
 * and APIC timers of the devices — so that all of them agree.
 *
 * Two modes:
 * - {@link HostClock} (the default): guest time follows the host's monotonic clock while the VM
 *   runs, and stands still while it is paused (snapshots, migration).
 * - {@link InstructionClock}: guest time is a fixed function of the instructions the vCPUs have
 *   retired, so every run of the same guest sees the same times (reproducible tests, and a
 *   guest that sees no time pass across a migration).
 * @module
 */

/** Nanoseconds of guest time since the VM's clock started. */
export interface GuestClock {
  /** The current guest time in nanoseconds (a non-decreasing number; exact up to 2^53 ns, about 104 days). */
  nowNs(): number;
  /** Stops guest time (the VM is paused). */
  pause(): void;
  /** Lets guest time run again. */
  resume(): void;
  /** Sets the current guest time, e.g. when restoring a snapshot. */
  setNs(ns: number): void;
  /** `'host'` or `'instructions'`. */
  readonly mode: 'host' | 'instructions';
}

/** Guest time from the host's monotonic clock, pausable. */
export class HostClock implements GuestClock {
  readonly mode = 'host' as const;
  private base: number;
  private pausedAt: number | null = null;

  constructor(private readonly hostNs: () => number = () => performance.now() * 1e6) {
    this.base = hostNs();
  }

  nowNs(): number {
    return Math.floor((this.pausedAt ?? this.hostNs()) - this.base);
  }
  pause(): void {
    if (this.pausedAt === null) this.pausedAt = this.hostNs();
  }
  resume(): void {
    if (this.pausedAt === null) return;
    this.base += this.hostNs() - this.pausedAt;
    this.pausedAt = null;
  }
  setNs(ns: number): void {
    const now = this.pausedAt ?? this.hostNs();
    this.base = now - ns;
  }
}

/**
 * Guest time as retired instructions times a fixed period. `retired` reports the VM's
 * instruction count (kvm-core's vCPUs count every instruction they retire).
 */
export class InstructionClock implements GuestClock {
  readonly mode = 'instructions' as const;
  private offsetNs = 0;
  private frozenAt: number | null = null;

  /**
   * @param retired the number of instructions retired so far
   * @param nsPerInstruction guest nanoseconds per instruction (default 1: a 1 GHz, 1-IPC guest)
   */
  constructor(private readonly retired: () => number, readonly nsPerInstruction = 1) {}

  nowNs(): number {
    return this.frozenAt ?? this.offsetNs + this.retired() * this.nsPerInstruction;
  }
  pause(): void {
    if (this.frozenAt === null) this.frozenAt = this.nowNs();
  }
  resume(): void {
    if (this.frozenAt === null) return;
    const at = this.frozenAt;
    this.frozenAt = null;
    this.setNs(at);
  }
  setNs(ns: number): void {
    if (this.frozenAt !== null) { this.frozenAt = ns; return; }
    this.offsetNs = ns - this.retired() * this.nsPerInstruction;
  }
}
