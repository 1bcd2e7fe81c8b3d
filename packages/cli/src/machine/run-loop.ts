/**
 * The run loop of a {@link PcMachine}. With an in-kernel irqchip, kvm-core delivers interrupts
 * itself and reports KVM_EXIT_HLT only when the vCPU halts with nothing to take; without one
 * (`intc` given), the loop drives the vCPU as a VMM drives KVM with a userspace PIC:
 *
 * - port I/O and MMIO exits go to the machine's buses (unclaimed reads are all-ones);
 * - after every exit the timers that are due fire ({@link TimerQueue.runDue});
 * - the PIC's INTR is delivered with `interrupt(acknowledge())` when the vCPU reports
 *   `readyForInterruptInjection`, otherwise the loop sets `requestInterruptWindow` and injects
 *   at the next exit (KVM_EXIT_IRQ_WINDOW_OPEN among them);
 * - HLT with IF=1 and nothing pending waits for the next timer deadline: under a host clock the
 *   caller sleeps for real ({@link PcRunLoop.run} does, without busy-waiting, so stdin keeps
 *   flowing); under an instruction clock guest time jumps to the deadline;
 * - HLT with IF=0 ends the run: nothing but an NMI could wake the vCPU, and nothing sends one.
 *
 * The synchronous core is {@link PcRunLoop.runSlice}; it runs the vCPU for about `sliceMs` of
 * wall time at most, so the host's event loop gets a turn regularly.
 * @module
 */

import { ExitDispatcher, type ExitBus, type ExitRecord } from '../exit-dispatch.js';
import {
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
} from '@kvmts/kvm-core';
import type { MachineStop } from './pc.js';

const EFLAGS_IF = 0x200;

/** The `kvm_run` fields the loop uses (KvmRun has them). */
export interface LoopRunData extends ExitRecord {
  readyForInterruptInjection: boolean;
  requestInterruptWindow: boolean;
}

/** What the loop needs of a vCPU (VcpuFd has it). */
export interface LoopVcpu {
  run(): number;
  readonly runData: LoopRunData;
  interrupt(vector: number): void;
  getRegs(): { rflags: number; rip: number };
}

/** A bus as the loop uses it (IoBus and MmioBus have this shape). */
export type LoopBus = ExitBus;

/** The interrupt controller driving the vCPU's INTR (Pic has it). */
export interface InterruptSource {
  hasInterrupt(): boolean;
  acknowledge(): number;
}

/** The VM's timers (TimerQueue has it). */
export interface LoopTimers {
  runDue(): number;
  nextDeadlineNs(): number;
}

/** The VM's clock (GuestClock has it). */
export interface LoopClock {
  nowNs(): number;
  setNs(ns: number): void;
  readonly mode: 'host' | 'instructions';
}

/** What the loop is given. */
export interface PcRunLoopParts {
  vcpu: LoopVcpu;
  io: LoopBus;
  mmio: LoopBus;
  /** The userspace interrupt controller; absent with an in-kernel irqchip, which injects by itself. */
  intc?: InterruptSource;
  timers: LoopTimers;
  clock: LoopClock;
  /** Stop requests from devices (PcMachine.takeStop). */
  takeStop?: () => MachineStop | null;
  /** Called after every exit, before interrupts are injected (e.g. to feed queued input to the UART). */
  poll?: () => void;
  /** Host time in ms for slice accounting (default performance.now). */
  hostMs?: () => number;
}

/** Why the machine stopped running. */
export type LoopOutcome =
  | MachineStop
  /** HLT with IF=0. */
  | { readonly kind: 'halted'; readonly rip: number }
  /** HLT with IF=1 and nothing that could ever interrupt it (no timer armed, no input). */
  | { readonly kind: 'halted-forever'; readonly rip: number }
  /** Triple fault (KVM_EXIT_SHUTDOWN). */
  | { readonly kind: 'shutdown' }
  | { readonly kind: 'internal-error'; readonly suberror: number; readonly message: string }
  | { readonly kind: 'unknown-exit'; readonly reason: number }
  /** The user quit (Ctrl-A X) or the host asked to stop (see {@link QuitReason}). */
  | { readonly kind: 'quit'; readonly reason?: QuitReason };

/**
 * Who ended the run with {@link PcRunLoop.quit}: the user (Ctrl-A X), the monitor's `quit`, a
 * completed live migration, or a termination signal to the process (SIGTERM, SIGINT, SIGHUP).
 */
export type QuitReason = 'user' | 'monitor' | 'migrated' | 'signal';

/** The result of one {@link PcRunLoop.runSlice}. */
export type SliceResult =
  /** The slice's wall time is used up: give the host a turn, then call runSlice again. */
  | { readonly kind: 'yield' }
  /** Halted with IF=1 under a host clock: sleep until `deadlineNs` guest time (-1: no timer armed), or until input. */
  | { readonly kind: 'wait'; readonly deadlineNs: number }
  | { readonly kind: 'stop'; readonly outcome: LoopOutcome };

/** Waiting for the host: {@link PcRunLoop.run} uses it between slices and while halted. */
export interface LoopHost {
  /** Let the host's event loop run once (e.g. setImmediate). */
  yield(): Promise<void>;
  /** Sleep up to `ms` (Infinity: until woken); resolves early when input arrives. */
  sleep(ms: number): Promise<void>;
  /** Whether input may still arrive (a halted guest with no timer waits for it). */
  inputOpen(): boolean;
  /**
   * Work that must not overlap guest execution (snapshots, migration steps), run before every
   * slice and whenever a paused loop is {@link PcRunLoop.kick}ed.
   */
  between?(): Promise<void>;
}

/** Counters, for the curious and for tests. */
export interface LoopStats {
  exits: number;
  interrupts: number;
  halts: number;
  windowRequests: number;
}

/** See the module comment. */
export class PcRunLoop {
  readonly stats: LoopStats = { exits: 0, interrupts: 0, halts: 0, windowRequests: 0 };
  private readonly exits: ExitDispatcher;
  private readonly hostMs: () => number;
  private quitRequested: QuitReason | null = null;
  private pausedFlag = false;
  private pauseWaiter: (() => void) | null = null;

  constructor(private readonly parts: PcRunLoopParts) {
    this.exits = new ExitDispatcher(parts.vcpu.runData, parts.io, parts.mmio);
    this.hostMs = parts.hostMs ?? (() => performance.now());
  }

  /** Stop at the next exit (or at once when paused) with outcome `quit`. */
  quit(reason: QuitReason = 'user'): void {
    this.quitRequested = reason;
    this.kick();
  }

  /**
   * Stop running the vCPU after the current slice (the caller stops guest time if it wants to):
   * {@link run} then waits, running only the host's `between` hook, until {@link resume} or
   * {@link quit}.
   */
  pause(): void {
    this.pausedFlag = true;
  }

  resume(): void {
    this.pausedFlag = false;
    this.kick();
  }

  get paused(): boolean {
    return this.pausedFlag;
  }

  /** Wake a paused {@link run} so that it runs the host's `between` hook once (queued work). */
  kick(): void {
    const w = this.pauseWaiter;
    this.pauseWaiter = null;
    w?.();
  }

  /**
   * Fire due timers and move the PIC's request to the vCPU: inject if it can take it now,
   * otherwise ask for the interrupt window.
   */
  service(): void {
    const { vcpu, intc, timers } = this.parts;
    this.parts.poll?.();
    timers.runDue();
    const run = vcpu.runData;
    if (intc === undefined) return;
    if (intc.hasInterrupt()) {
      if (run.readyForInterruptInjection) {
        vcpu.interrupt(intc.acknowledge());
        this.stats.interrupts++;
        // Until the vCPU runs, it holds the vector: nothing more can be injected.
        run.readyForInterruptInjection = false;
        run.requestInterruptWindow = false;
      } else if (!run.requestInterruptWindow) {
        run.requestInterruptWindow = true;
        this.stats.windowRequests++;
      }
    } else {
      run.requestInterruptWindow = false;
    }
  }

  /** Run for up to about `sliceMs` of host time. */
  runSlice(sliceMs = 20): SliceResult {
    const { vcpu, timers, clock } = this.parts;
    const run = vcpu.runData;
    const end = this.hostMs() + sliceMs;
    for (;;) {
      this.service();
      const stop = this.takeStop();
      if (stop) return { kind: 'stop', outcome: stop };
      const reason = vcpu.run();
      this.stats.exits++;
      switch (reason) {
        case KVM_EXIT_IO:
          this.exits.io();
          break;
        case KVM_EXIT_MMIO:
          this.exits.mmio();
          break;
        case KVM_EXIT_IRQ_WINDOW_OPEN:
          break;
        case KVM_EXIT_INTR:
          break;
        case KVM_EXIT_HLT: {
          this.stats.halts++;
          const regs = vcpu.getRegs();
          if ((regs.rflags & EFLAGS_IF) === 0) {
            // A device might still have asked for a stop with the instruction before HLT.
            return { kind: 'stop', outcome: this.takeStop() ?? { kind: 'halted', rip: regs.rip } };
          }
          this.parts.poll?.();
          // A timer that fired may have raised an interrupt: the userspace PIC's is injected at
          // the top of the loop, an in-kernel irqchip's wakes the vCPU inside run().
          if (timers.runDue() > 0 || this.parts.intc?.hasInterrupt()) break;
          const deadline = timers.nextDeadlineNs();
          if (clock.mode === 'instructions') {
            if (deadline < 0) return { kind: 'wait', deadlineNs: -1 };
            // No instructions retire while halted: jump guest time to the deadline.
            if (deadline > clock.nowNs()) clock.setNs(deadline);
            break;
          }
          return { kind: 'wait', deadlineNs: deadline };
        }
        case KVM_EXIT_SHUTDOWN:
          return { kind: 'stop', outcome: { kind: 'shutdown' } };
        case KVM_EXIT_INTERNAL_ERROR:
          return { kind: 'stop', outcome: { kind: 'internal-error', suberror: run.internal.suberror, message: run.internal.message } };
        default:
          return { kind: 'stop', outcome: { kind: 'unknown-exit', reason } };
      }
      // Look at the host clock after every exit, not only at the end of a vCPU time slice
      // (KVM_EXIT_INTR): any other exit restarts the vCPU's instruction budget, so a guest that
      // exits now and then (an MMIO read, a port, a HLT with a timer due) may never end one,
      // and counting exits instead (say every 1024) lets a slice run for seconds when exits are
      // a few ms apart. Meanwhile the event loop is blocked: socket data, disk completions and
      // console input wait, which made VM-to-VM network round trips take 50-200 ms. A clock
      // read costs far less than the exit itself.
      if (this.hostMs() >= end) return { kind: 'yield' };
    }
  }

  /**
   * Run to the end, giving `host` a turn between slices and sleeping while the guest halts
   * with interrupts enabled.
   */
  async run(host: LoopHost, sliceMs = 20): Promise<LoopOutcome> {
    const clock = this.parts.clock;
    for (;;) {
      if (host.between) await host.between();
      while (this.pausedFlag && this.quitRequested === null) {
        await new Promise<void>((resolve) => (this.pauseWaiter = resolve));
        if (host.between) await host.between();
      }
      const r = this.runSlice(sliceMs);
      if (r.kind === 'stop') return r.outcome;
      if (r.kind === 'yield') {
        await host.yield();
        continue;
      }
      // Halted with IF=1.
      if (r.deadlineNs < 0) {
        if (!host.inputOpen()) return this.haltedForever();
        await host.sleep(Infinity);
        continue;
      }
      const ms = (r.deadlineNs - clock.nowNs()) / 1e6;
      if (ms > 0) await host.sleep(ms);
      else await host.yield();
    }
  }

  private haltedForever(): LoopOutcome {
    return { kind: 'halted-forever', rip: this.parts.vcpu.getRegs().rip };
  }

  private takeStop(): LoopOutcome | null {
    if (this.quitRequested !== null) {
      const reason = this.quitRequested;
      this.quitRequested = null;
      return { kind: 'quit', reason };
    }
    return this.parts.takeStop?.() ?? null;
  }


}
