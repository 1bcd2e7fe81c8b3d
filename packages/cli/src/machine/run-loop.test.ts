import { describe, it, expect } from 'vitest';
import {
  InstructionClock,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_SHUTDOWN,
  KvmRun,
  TimerQueue,
  type GuestClock,
} from '@kvmts/kvm-core';
import { IoBus, MmioBus } from '@kvmts/devices';
import { PcRunLoop, type LoopHost, type LoopVcpu } from './run-loop.js';
import type { MachineStop } from './pc.js';

const IF = 0x200;

interface StepCtx {
  run: KvmRun;
  vcpu: FakeVcpu;
}
type Step = (c: StepCtx) => number;

/** A vCPU that replays scripted exits and records what the VMM injected. */
class FakeVcpu implements LoopVcpu {
  readonly runData = new KvmRun();
  rflags = IF | 0x2;
  rip = 0x1000;
  readonly injected: number[] = [];
  /** The vector injected and not yet "taken" by a run. */
  pending = -1;
  constructor(private readonly steps: Step[]) {}
  run(): number {
    const step = this.steps.shift();
    if (step === undefined) throw new Error('the run loop asked for more exits than scripted');
    this.pending = -1;
    return step({ run: this.runData, vcpu: this });
  }
  interrupt(vector: number): void {
    if (this.pending >= 0) throw new Error('interrupt injected twice before a run');
    this.pending = vector;
    this.injected.push(vector);
  }
  getRegs(): { rflags: number; rip: number } {
    return { rflags: this.rflags, rip: this.rip };
  }
  get remaining(): number {
    return this.steps.length;
  }
}

/** An interrupt controller with a list of pending vectors. */
class FakePic {
  readonly queue: number[] = [];
  hasInterrupt(): boolean {
    return this.queue.length > 0;
  }
  acknowledge(): number {
    return this.queue.shift() ?? 0x27;
  }
}

/** A settable clock. */
class ManualClock implements GuestClock {
  readonly mode: 'host' | 'instructions';
  ns = 0;
  constructor(mode: 'host' | 'instructions' = 'host') {
    this.mode = mode;
  }
  nowNs(): number {
    return this.ns;
  }
  pause(): void {}
  resume(): void {}
  setNs(ns: number): void {
    this.ns = ns;
  }
}

/** Exit with `reason`, reporting `ready` as the vCPU's readiness for injection. */
const exit = (reason: number, ready = true): Step => ({ run }) => {
  run.readyForInterruptInjection = ready;
  return reason;
};

function setup(steps: Step[], clock: GuestClock = new ManualClock(), stop?: () => MachineStop | null) {
  const vcpu = new FakeVcpu(steps);
  const pic = new FakePic();
  const timers = new TimerQueue(clock);
  const io = new IoBus();
  const loop = new PcRunLoop({
    vcpu,
    io,
    mmio: new MmioBus(),
    intc: pic,
    timers,
    clock,
    ...(stop ? { takeStop: stop } : {}),
    hostMs: () => 0,
  });
  return { vcpu, pic, timers, io, loop };
}

const halt = (rflags: number): Step => ({ run, vcpu }) => {
  vcpu.rflags = rflags;
  run.readyForInterruptInjection = (rflags & IF) !== 0;
  return KVM_EXIT_HLT;
};

describe('PcRunLoop interrupt injection', () => {
  it('injects the PIC vector at once when the vCPU is ready', () => {
    const { vcpu, pic, loop } = setup([exit(KVM_EXIT_IO), halt(0x2)]);
    vcpu.runData.readyForInterruptInjection = true;
    vcpu.runData.io.direction = KVM_EXIT_IO_OUT;
    vcpu.runData.io.size = 1;
    vcpu.runData.io.count = 1;
    pic.queue.push(0x24);
    const r = loop.runSlice();
    expect(r).toEqual({ kind: 'stop', outcome: { kind: 'halted', rip: 0x1000 } });
    expect(vcpu.injected).toEqual([0x24]);
    expect(vcpu.runData.requestInterruptWindow).toBe(false);
  });

  it('asks for the interrupt window when the vCPU is not ready, and injects when it opens', () => {
    const seen: boolean[] = [];
    const { vcpu, pic, loop } = setup([
      ({ run }) => {
        seen.push(run.requestInterruptWindow);
        run.readyForInterruptInjection = true;
        return KVM_EXIT_IRQ_WINDOW_OPEN;
      },
      ({ run }) => {
        seen.push(run.requestInterruptWindow);
        return halt(0x2)({ run, vcpu });
      },
    ]);
    vcpu.runData.readyForInterruptInjection = false;
    pic.queue.push(0x20);
    loop.runSlice();
    expect(seen).toEqual([true, false]);
    expect(vcpu.injected).toEqual([0x20]);
    expect(loop.stats.windowRequests).toBe(1);
  });

  it('acknowledges nothing while the vCPU cannot take an interrupt', () => {
    const { vcpu, pic, loop } = setup([exit(KVM_EXIT_INTR, false), exit(KVM_EXIT_INTR, false), halt(0x2)]);
    pic.queue.push(0x21);
    loop.runSlice();
    expect(vcpu.injected).toEqual([]);
    expect(pic.queue).toEqual([0x21]);
  });

  it('injects one vector per run, the next one after the vCPU ran', () => {
    const { vcpu, pic, loop } = setup([exit(KVM_EXIT_INTR), exit(KVM_EXIT_INTR), halt(0x2)]);
    vcpu.runData.readyForInterruptInjection = true;
    pic.queue.push(0x20, 0x21);
    loop.runSlice();
    expect(vcpu.injected).toEqual([0x20, 0x21]);
  });
});

describe('PcRunLoop halting and timers', () => {
  it('stops on HLT with IF=0', () => {
    const { loop } = setup([halt(0x2)]);
    expect(loop.runSlice()).toEqual({ kind: 'stop', outcome: { kind: 'halted', rip: 0x1000 } });
  });

  it('under a host clock, returns the next timer deadline to wait for on HLT with IF=1', () => {
    const clock = new ManualClock('host');
    const { timers, loop } = setup([halt(IF)], clock);
    timers.create(() => {}).arm(5_000_000);
    expect(loop.runSlice()).toEqual({ kind: 'wait', deadlineNs: 5_000_000 });
  });

  it('fires due timers after every exit, before injecting', () => {
    const clock = new ManualClock('host');
    const fired: number[] = [];
    const { vcpu, pic, timers, loop } = setup(
      [
        ({ run }) => {
          clock.ns = 1000;
          run.readyForInterruptInjection = true;
          return KVM_EXIT_INTR;
        },
        halt(0x2),
      ],
      clock,
    );
    timers.create((now) => {
      fired.push(now);
      pic.queue.push(0x20);
    }).arm(500);
    loop.runSlice();
    expect(fired).toEqual([1000]);
    expect(vcpu.injected).toEqual([0x20]);
  });

  it('does not wait on HLT when a timer already raised an interrupt', () => {
    const clock = new ManualClock('host');
    const { vcpu, pic, timers, loop } = setup(
      [
        ({ run, vcpu: v }) => {
          clock.ns = 2000; // the timer is due by the time the vCPU halts
          return halt(IF)({ run, vcpu: v });
        },
        halt(0x2),
      ],
      clock,
    );
    timers.create(() => pic.queue.push(0x20)).arm(1000);
    expect(loop.runSlice().kind).toBe('stop');
    expect(vcpu.injected).toEqual([0x20]);
  });

  it('under an instruction clock, moves guest time to the deadline on HLT with IF=1', () => {
    let retired = 0;
    const clock = new InstructionClock(() => retired);
    const fired: number[] = [];
    const { vcpu, pic, timers, loop } = setup(
      [
        ({ run, vcpu: v }) => {
          retired = 100;
          return halt(IF)({ run, vcpu: v });
        },
        halt(0x2),
      ],
      clock,
    );
    timers.create((now) => {
      fired.push(now);
      pic.queue.push(0x20);
    }).arm(1_000_000);
    expect(loop.runSlice().kind).toBe('stop');
    expect(fired).toEqual([1_000_000]);
    expect(clock.nowNs()).toBe(1_000_000);
    expect(vcpu.injected).toEqual([0x20]);
  });

  it('run() sleeps for the remaining host time and then delivers the timer interrupt', async () => {
    const clock = new ManualClock('host');
    const { vcpu, pic, timers, loop } = setup([halt(IF), halt(0x2)], clock);
    clock.ns = 1_000_000;
    timers.create(() => pic.queue.push(0x20)).arm(4_000_000);
    const sleeps: number[] = [];
    const host: LoopHost = {
      yield: async () => {},
      sleep: async (ms) => {
        sleeps.push(ms);
        clock.ns += ms * 1e6;
      },
      inputOpen: () => false,
    };
    expect(await loop.run(host)).toEqual({ kind: 'halted', rip: 0x1000 });
    expect(sleeps).toEqual([3]);
    expect(vcpu.injected).toEqual([0x20]);
  });

  it('run() waits for input when halted with no timer but input is open, and gives up when it is not', async () => {
    const { loop } = setup([halt(IF), halt(IF)]);
    let open = true;
    const sleeps: number[] = [];
    const host: LoopHost = {
      yield: async () => {},
      sleep: async (ms) => {
        sleeps.push(ms);
        open = false;
      },
      inputOpen: () => open,
    };
    expect(await loop.run(host)).toEqual({ kind: 'halted-forever', rip: 0x1000 });
    expect(sleeps).toEqual([Infinity]);
  });

  it('yields when the host time slice is used up', () => {
    let t = 0;
    const vcpu = new FakeVcpu([exit(KVM_EXIT_INTR), exit(KVM_EXIT_INTR)]);
    const clock = new ManualClock();
    const loop = new PcRunLoop({
      vcpu,
      io: new IoBus(),
      mmio: new MmioBus(),
      intc: new FakePic(),
      timers: new TimerQueue(clock),
      clock,
      hostMs: () => (t += 15),
    });
    expect(loop.runSlice(20)).toEqual({ kind: 'yield' });
    expect(vcpu.remaining).toBe(0);
  });

  // Any exit but KVM_EXIT_INTR restarts the vCPU's instruction budget: a guest that exits every
  // few ms (an MMIO read, a HLT with a timer due) never ends a vCPU time slice. The slice must
  // still end on time, or the event loop (socket data, disk completions) waits for seconds.
  it.each(['port I/O', 'HLT with a timer due'])('yields on time when the guest exits every few ms without ending a vCPU time slice (%s)', (kind) => {
    let t = 0;
    const clock = new ManualClock();
    const timers = new TimerQueue(clock);
    const timer = timers.create(() => {});
    const step: Step = kind === 'port I/O'
      ? exit(KVM_EXIT_IO)
      : (c) => {
          // The guest halts just as a timer falls due: the loop fires it and goes back in.
          timer.arm(clock.nowNs());
          return halt(IF | 0x2)(c);
        };
    const vcpu = new FakeVcpu(Array.from({ length: 2000 }, () => step));
    vcpu.runData.io.direction = KVM_EXIT_IO_OUT;
    vcpu.runData.io.size = 1;
    vcpu.runData.io.count = 1;
    const loop = new PcRunLoop({
      vcpu,
      io: new IoBus(),
      mmio: new MmioBus(),
      timers,
      clock,
      // 2 ms of host time per exit.
      hostMs: () => (t += 2),
    });
    expect(loop.runSlice(20)).toEqual({ kind: 'yield' });
    // About ten exits fit in 20 ms; not 1024 (2 s).
    expect(2000 - vcpu.remaining).toBeLessThanOrEqual(12);
  });
});

describe('PcRunLoop stops', () => {
  it('reports a device stop request after the exit that made it', () => {
    let stop: MachineStop | null = null;
    const { loop, vcpu } = setup(
      [
        () => {
          stop = { kind: 'poweroff' };
          return KVM_EXIT_INTR;
        },
      ],
      new ManualClock(),
      () => {
        const s = stop;
        stop = null;
        return s;
      },
    );
    expect(loop.runSlice()).toEqual({ kind: 'stop', outcome: { kind: 'poweroff' } });
    expect(vcpu.remaining).toBe(0);
  });

  it('prefers a stop request over the halt that follows it', () => {
    let stop: MachineStop | null = { kind: 'reset', source: 'test' };
    const { loop } = setup([halt(0x2)], new ManualClock(), () => {
      const s = stop;
      stop = null;
      return s;
    });
    // The request is seen before the first run.
    expect(loop.runSlice()).toEqual({ kind: 'stop', outcome: { kind: 'reset', source: 'test' } });
  });

  it('maps triple faults, internal errors and unknown exits', () => {
    expect(setup([exit(KVM_EXIT_SHUTDOWN)]).loop.runSlice()).toEqual({ kind: 'stop', outcome: { kind: 'shutdown' } });
    const { loop, vcpu } = setup([exit(KVM_EXIT_INTERNAL_ERROR)]);
    vcpu.runData.internal.message = 'not implemented: 0f 0b';
    expect(loop.runSlice()).toEqual({
      kind: 'stop',
      outcome: { kind: 'internal-error', suberror: vcpu.runData.internal.suberror, message: 'not implemented: 0f 0b' },
    });
    expect(setup([exit(99)]).loop.runSlice()).toEqual({ kind: 'stop', outcome: { kind: 'unknown-exit', reason: 99 } });
  });

  it('pause() holds run() between slices, running only between(); resume() and quit() release it', async () => {
    const { loop, vcpu } = setup([exit(KVM_EXIT_INTR), exit(KVM_EXIT_INTR), halt(0)]);
    let betweens = 0;
    loop.pause();
    const host: LoopHost = { yield: async () => {}, sleep: async () => {}, inputOpen: () => false, between: async () => void betweens++ };
    const running = loop.run(host);
    await new Promise((r) => setTimeout(r, 5));
    expect(loop.paused).toBe(true);
    expect(vcpu.remaining).toBe(3);
    loop.kick();
    await new Promise((r) => setTimeout(r, 5));
    expect(betweens).toBe(2);
    expect(vcpu.remaining).toBe(3);
    loop.resume();
    expect(await running).toEqual({ kind: 'halted', rip: 0x1000 });
    expect(vcpu.remaining).toBe(0);

    const second = setup([exit(KVM_EXIT_INTR)]);
    second.loop.pause();
    const quitting = second.loop.run({ yield: async () => {}, sleep: async () => {}, inputOpen: () => false });
    second.loop.quit('monitor');
    expect(await quitting).toEqual({ kind: 'quit', reason: 'monitor' });
  });

  it('quit() stops at the next exit', () => {
    const { loop } = setup([exit(KVM_EXIT_INTR)]);
    loop.quit();
    expect(loop.runSlice()).toEqual({ kind: 'stop', outcome: { kind: 'quit', reason: 'user' } });
  });

  it('dispatches port I/O to the bus', () => {
    const writes: number[] = [];
    const { loop, io } = setup([
      ({ run }) => {
        run.io.direction = KVM_EXIT_IO_OUT;
        run.io.port = 0x3f8;
        run.io.size = 1;
        run.io.count = 2;
        run.io.data.set([0x41, 0x42]);
        return KVM_EXIT_IO;
      },
      halt(0x2),
    ]);
    io.insert({ read: () => {}, write: (_o, d) => writes.push(d[0]!) }, 0x3f8, 8);
    loop.runSlice();
    expect(writes).toEqual([0x41, 0x42]);
  });
});
