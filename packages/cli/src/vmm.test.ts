import { describe, it, expect } from 'vitest';
import {
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KvmRun,
} from '@kvmts/kvm-core';
import { Assembler, mem, reg } from '@kvmts/kvm-core/asm';
import { DebugExit, IoBus, MmioBus, Serial, type BusDevice } from '@kvmts/devices';
import { ExitStatus } from './errors.js';
import { RunLoop, Vmm, outcomeExitStatus, outcomeMessage, type RunOutcome, type RunnableVcpu } from './vmm.js';

type Step = (run: KvmRun) => number;

/** A vCPU that replays scripted exits. */
class FakeVcpu implements RunnableVcpu {
  readonly runData = new KvmRun();
  rflags = 0x2;
  constructor(private readonly steps: Step[]) {}
  run(): number {
    const step = this.steps.shift();
    if (step === undefined) throw new Error('the run loop asked for more exits than scripted');
    const reason = step(this.runData);
    this.runData.exitReason = reason;
    return reason;
  }
  getRegs(): { rflags: number } {
    return { rflags: this.rflags };
  }
  get remaining(): number {
    return this.steps.length;
  }
}

const ioOut = (port: number, size: number, bytes: number[]): Step => (run) => {
  run.io.direction = KVM_EXIT_IO_OUT;
  run.io.port = port;
  run.io.size = size;
  run.io.count = bytes.length / size;
  run.io.data.set(bytes);
  return KVM_EXIT_IO;
};
const ioIn = (port: number, size: number, count = 1): Step => (run) => {
  run.io.direction = KVM_EXIT_IO_IN;
  run.io.port = port;
  run.io.size = size;
  run.io.count = count;
  run.io.data.fill(0xaa, 0, 16);
  return KVM_EXIT_IO;
};
const mmio = (physAddr: number, len: number, write?: number[]): Step => (run) => {
  run.mmio.physAddr = physAddr;
  run.mmio.len = len;
  run.mmio.isWrite = write !== undefined;
  run.mmio.data.fill(0xaa);
  if (write) run.mmio.data.set(write);
  return KVM_EXIT_MMIO;
};
const exit = (reason: number): Step => () => reason;

function machine(steps: Step[]): { vcpu: FakeVcpu; loop: RunLoop; out: number[]; io: IoBus; mmio: MmioBus; slices: number[] } {
  const vcpu = new FakeVcpu(steps);
  const io = new IoBus();
  const mmioBus = new MmioBus();
  const out: number[] = [];
  const slices: number[] = [];
  const loop = new RunLoop(vcpu, io, mmioBus, () => slices.push(1));
  io.insert(new Serial({ output: (b) => out.push(b) }), 0x3f8, 8);
  io.insert(new DebugExit((v) => loop.requestExit(v)), 0xf4, 1);
  return { vcpu, loop, out, io, mmio: mmioBus, slices };
}

describe('RunLoop', () => {
  it('sends port writes to the devices and ends on HLT with IF=0', () => {
    const m = machine([ioOut(0x3f8, 1, [0x48]), ioOut(0x3f8, 1, [0x69]), exit(KVM_EXIT_HLT)]);
    expect(m.loop.run()).toEqual({ kind: 'halted' });
    expect(String.fromCharCode(...m.out)).toBe('Hi');
  });

  it('completes IN from devices, and with all-ones from unclaimed ports', () => {
    let seen: number[] = [];
    const m = machine([
      ioIn(0x3fd, 1),
      (run) => {
        seen = Array.from(run.io.data.subarray(0, 1));
        return ioIn(0x60, 2)(run);
      },
      (run) => {
        seen.push(...run.io.data.subarray(0, 3));
        return ioIn(0x1234, 4)(run);
      },
      (run) => {
        seen.push(...run.io.data.subarray(0, 5));
        return KVM_EXIT_HLT;
      },
    ]);
    m.loop.run();
    // LSR = THRE|TEMT; then ff ff (and the byte after untouched); then ff ff ff ff
    expect(seen).toEqual([0x60, 0xff, 0xff, 0xaa, 0xff, 0xff, 0xff, 0xff, 0xaa]);
  });

  it('handles string I/O of several accesses', () => {
    let seen: number[] = [];
    const m = machine([
      ioOut(0x3f8, 1, [0x61, 0x62, 0x63]),
      ioIn(0x3ff, 1, 2),
      (run) => {
        seen = Array.from(run.io.data.subarray(0, 2));
        return ioIn(0x80, 2, 3)(run);
      },
      (run) => {
        seen.push(...run.io.data.subarray(0, 7));
        return KVM_EXIT_HLT;
      },
    ]);
    m.loop.run();
    expect(String.fromCharCode(...m.out)).toBe('abc');
    expect(seen).toEqual([0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xaa]);
  });

  it('dispatches MMIO; unclaimed reads return all-ones and unclaimed writes are dropped', () => {
    const log: string[] = [];
    const dev: BusDevice = {
      read: (off, data) => {
        data.fill(0x11);
        log.push(`r${off}/${data.length}`);
      },
      write: (off, data) => log.push(`w${off}=${Array.from(data).join(',')}`),
    };
    let seen: number[] = [];
    const m = machine([
      mmio(0xfec00010, 4),
      (run) => {
        seen = Array.from(run.mmio.data);
        return mmio(0xfec00000, 2, [1, 2])(run);
      },
      mmio(0xd0000000, 8),
      (run) => {
        seen.push(...run.mmio.data);
        return mmio(0xd0000000, 1, [5])(run);
      },
      exit(KVM_EXIT_HLT),
    ]);
    m.mmio.insert(dev, 0xfec00000, 0x1000);
    m.loop.run();
    expect(log).toEqual(['r16/4', 'w0=1,2']);
    expect(seen).toEqual([0x11, 0x11, 0x11, 0x11, 0xaa, 0xaa, 0xaa, 0xaa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  });

  it('reports HLT with IF=1 separately', () => {
    const m = machine([exit(KVM_EXIT_HLT)]);
    m.vcpu.rflags = 0x202;
    expect(m.loop.run()).toEqual({ kind: 'halted-with-interrupts' });
  });

  it('keeps running across time-slice exits', () => {
    const m = machine([exit(KVM_EXIT_INTR), exit(KVM_EXIT_INTR), ioOut(0x3f8, 1, [0x21]), exit(KVM_EXIT_HLT)]);
    expect(m.loop.run().kind).toBe('halted');
    expect(m.slices.length).toBe(2);
    expect(m.out).toEqual([0x21]);
  });

  it('stops right after a debug-exit write, even in the middle of string I/O', () => {
    const m = machine([ioOut(0xf4, 1, [42]), exit(KVM_EXIT_HLT)]);
    expect(m.loop.run()).toEqual({ kind: 'debug-exit', value: 42 });
    expect(m.vcpu.remaining).toBe(1);
    const n = machine([ioOut(0xf4, 2, [7, 0, 9, 0])]);
    expect(n.loop.run()).toEqual({ kind: 'debug-exit', value: 7 });
    // a later run starts afresh
    const o = machine([ioOut(0xf4, 1, [1]), exit(KVM_EXIT_HLT)]);
    expect(o.loop.run().kind).toBe('debug-exit');
    expect(o.loop.run().kind).toBe('halted');
  });

  it('reports shutdown, internal errors and unknown exits', () => {
    expect(machine([exit(KVM_EXIT_SHUTDOWN)]).loop.run()).toEqual({ kind: 'shutdown' });
    const m = machine([
      (run) => {
        run.internal.suberror = 1;
        run.internal.message = 'not implemented: opcode 0f 0b at 0000:7c00';
        return KVM_EXIT_INTERNAL_ERROR;
      },
    ]);
    expect(m.loop.run()).toEqual({ kind: 'internal-error', suberror: 1, message: 'not implemented: opcode 0f 0b at 0000:7c00' });
    expect(machine([exit(99)]).loop.run()).toEqual({ kind: 'unknown-exit', reason: 99 });
  });
});

describe('outcomes', () => {
  it('map to exit statuses and messages', () => {
    const table: Array<[RunOutcome, number, string | undefined]> = [
      [{ kind: 'halted' }, ExitStatus.Ok, undefined],
      [{ kind: 'halted-with-interrupts' }, 1, 'guest halted with interrupts enabled and no interrupt source; stopping'],
      [{ kind: 'debug-exit', value: 0 }, 0, undefined],
      [{ kind: 'debug-exit', value: 42 }, 42, undefined],
      [{ kind: 'debug-exit', value: 0x1234 }, 0x34, undefined],
      [{ kind: 'shutdown' }, 2, 'guest triple-faulted (shutdown)'],
      [{ kind: 'internal-error', suberror: 1, message: 'boom' }, 3, 'internal error: boom'],
      [{ kind: 'unknown-exit', reason: 99 }, 3, 'internal error: unexpected exit reason 99'],
    ];
    for (const [o, status, msg] of table) {
      expect(outcomeExitStatus(o)).toBe(status);
      expect(outcomeMessage(o)).toBe(msg);
    }
  });
});

// These run real guests on kvm-core's software CPU.
describe('Vmm', () => {
  function runGuest(build: (a: Assembler) => void, loadAddr = 0x7c00, memSize = 1 << 20): { outcome: RunOutcome; out: string; vmm: Vmm } {
    const a = new Assembler({ bits: 16, origin: loadAddr <= 0xffff ? loadAddr : loadAddr & 0xf });
    build(a);
    let out = '';
    const vmm = new Vmm({ memSize, image: a.bytes(), loadAddr, serialOutput: (b) => (out += String.fromCharCode(b)) });
    try {
      return { outcome: vmm.run(), out, vmm };
    } finally {
      vmm.close();
    }
  }

  it('starts in real mode at the load address with a stack below it', () => {
    const { outcome, out } = runGuest((a) => {
      // Print CS:IP-derived and SP-derived checks as characters.
      a.call('next').label('next').pop(reg.ax); // AX = IP of 'next'
      a.cmp(reg.ax, 'next').jne('bad');
      a.cmp(reg.sp, 0x7c00).jne('bad');
      a.mov(reg.ax, reg.cs).test(reg.ax, reg.ax).jnz('bad');
      a.mov(reg.dx, 0x3f8).mov(reg.al, 0x4f).out_dx_al().hlt();
      a.label('bad').mov(reg.al, 1).out(0xf4, reg.al);
    });
    expect(outcome).toEqual({ kind: 'halted' });
    expect(out).toBe('O');
  });

  it('starts at CS=addr>>4 for load addresses above 64K', () => {
    const { outcome } = runGuest((a) => {
      a.mov(reg.ax, reg.cs).cmp(reg.ax, 0x1234).jne('bad');
      a.cmp(reg.sp, 0xfffe).jne('bad');
      a.mov(reg.al, 0).out(0xf4, reg.al);
      a.label('bad').mov(reg.al, 9).out(0xf4, reg.al);
    }, 0x12345);
    expect(outcome).toEqual({ kind: 'debug-exit', value: 0 });
  });

  it('returns all-ones for unclaimed ports and MMIO', () => {
    const { outcome } = runGuest((a) => {
      a.in(reg.al, 0x60).cmp(reg.al, 0xff).jne('bad');
      a.mov(reg.dx, 0x1234).in_ax_dx().cmp(reg.ax, 0xffff).jne('bad');
      // 0x2000:0 = 128K lies beyond the 64K of RAM
      a.mov(reg.ax, 0x2000).mov(reg.es, reg.ax).mov(reg.ax, mem({ seg: reg.es, disp: 0 })).cmp(reg.ax, 0xffff).jne('bad');
      a.mov(mem({ seg: reg.es, disp: 0 }), reg.ax);
      a.mov(reg.al, 0).out(0xf4, reg.al);
      a.label('bad').mov(reg.al, 1).out(0xf4, reg.al);
    }, 0x7c00, 64 * 1024);
    expect(outcome).toEqual({ kind: 'debug-exit', value: 0 });
  });

  it('reports HLT with interrupts enabled', () => {
    expect(runGuest((a) => a.sti().hlt()).outcome).toEqual({ kind: 'halted-with-interrupts' });
  });
});
