import type { GuestClock } from './clock.js';

/** A callback due at a guest time. */
export interface Timer {
  /** Guest time (ns) at which it fires, or -1 when disarmed. */
  readonly deadlineNs: number;
  /** Arms (or re-arms) the timer for `deadlineNs`; -1 disarms. */
  arm(deadlineNs: number): void;
  disarm(): void;
}

class QueuedTimer implements Timer {
  deadlineNs = -1;
  constructor(private readonly queue: TimerQueue, readonly fire: (nowNs: number) => void) {}
  arm(deadlineNs: number): void {
    this.deadlineNs = deadlineNs;
    this.queue.changed();
  }
  disarm(): void {
    this.deadlineNs = -1;
    this.queue.changed();
  }
}

/**
 * The VM's timers. Devices create timers here; the VMM's run loop calls {@link TimerQueue.runDue}
 * between vCPU runs and bounds each run by {@link TimerQueue.nextDeadlineNs}. Firing order is by
 * deadline, then by creation, so it is deterministic under an {@link InstructionClock}.
 */
export class TimerQueue {
  private readonly timers: QueuedTimer[] = [];
  private next = -1;
  private dirty = false;

  constructor(readonly clock: GuestClock) {}

  /** A new, disarmed timer whose callback gets the guest time it fired at. */
  create(fire: (nowNs: number) => void): Timer {
    const t = new QueuedTimer(this, fire);
    this.timers.push(t);
    return t;
  }

  /** @internal */
  changed(): void {
    this.dirty = true;
  }

  /** The earliest armed deadline, or -1 when no timer is armed. */
  nextDeadlineNs(): number {
    if (this.dirty) {
      let n = -1;
      for (const t of this.timers) if (t.deadlineNs >= 0 && (n < 0 || t.deadlineNs < n)) n = t.deadlineNs;
      this.next = n;
      this.dirty = false;
    }
    return this.next;
  }

  /** Fires every timer whose deadline has passed (a timer disarms itself before its callback runs); returns how many fired. */
  runDue(): number {
    let fired = 0;
    for (let guard = 0; guard < 10_000; guard++) {
      const next = this.nextDeadlineNs();
      const now = this.clock.nowNs();
      if (next < 0 || next > now) return fired;
      let due: QueuedTimer | undefined;
      for (const t of this.timers) if (t.deadlineNs >= 0 && t.deadlineNs <= now && (!due || t.deadlineNs < due.deadlineNs)) due = t;
      if (!due) return fired;
      due.deadlineNs = -1;
      this.dirty = true;
      due.fire(now);
      fired++;
    }
    return fired;
  }
}
