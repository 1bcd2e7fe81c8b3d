/**
 * A small test machine on raw kvm-core: one RAM slot, one vCPU in flat 32-bit protected mode
 * running a guest that counts in memory, scatters writes over a working set of pages and
 * reports every 1024th count on port 0xE9 (to a userspace "outlog" device with saved state).
 */
import { createHash } from 'node:crypto';
import { Assembler, mem, reg } from '@kvmts/kvm-core/asm';
import { KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_OUT, Kvm, type VcpuFd, type VmFd } from '@kvmts/kvm-core';
import type { DeviceEntry, MigratableMachine, Persist } from '../src/index.js';

export const CODE_AT = 0x1000;
export const COUNTER_AT = 0x800;
export const WORK_AT = 0x100000;
export const OUT_PORT = 0xe9;

/** Assembles the guest: `hotPages` (a power of two) is the size of its working set. */
export function guestCode(hotPages: number): Uint8Array {
  const a = new Assembler({ bits: 32, origin: CODE_AT });
  a.label('loop');
  a.inc(mem({ disp: COUNTER_AT, size: 32 }));
  a.mov(reg.eax, mem({ disp: COUNTER_AT, size: 32 }));
  a.mov(reg.ecx, reg.eax);
  a.shr(reg.ecx, 4);
  a.and(reg.ecx, hotPages - 1);
  a.shl(reg.ecx, 12);
  a.mov(reg.ebx, reg.eax);
  a.and(reg.ebx, 0x3ff);
  a.shl(reg.ebx, 2);
  a.add(reg.ecx, reg.ebx);
  a.mov(mem({ base: reg.ecx, disp: WORK_AT, size: 32 }), reg.eax);
  a.test(reg.eax, 0x3ff);
  a.jnz('loop');
  a.out(OUT_PORT, reg.al);
  a.jmp('loop');
  return a.bytes();
}

/** Counts the guest's reports; its state is what a real device's would be. */
export class OutLog implements Persist<{ count: number; last: number }> {
  readonly version = 1;
  count = 0;
  last = -1;
  save(): { count: number; last: number } {
    return { count: this.count, last: this.last };
  }
  restore(s: { count: number; last: number }): void {
    if (!Number.isInteger(s.count)) throw new RangeError('outlog: bad count');
    this.count = s.count;
    this.last = s.last;
  }
}

export interface TestMachineOptions {
  memSize?: number;
  hotPages?: number;
  irqchip?: boolean;
  /** Load the guest and fill memory (false: a blank machine to restore into). */
  boot?: boolean;
}

const openMachines = new Set<TestMachine>();

/** Closes every machine the tests left open. */
export function closeAll(): void {
  for (const m of openMachines) m.close();
}

export class TestMachine implements MigratableMachine {
  readonly kind = 'test';
  readonly options: { irqchip: boolean; hotPages: number };
  readonly kvm = new Kvm();
  readonly vm: VmFd;
  readonly vcpus: VcpuFd[];
  readonly ram: Uint8Array;
  readonly outlog = new OutLog();
  paused = false;
  throttleFraction = 0;
  throttleCalls: number[] = [];
  closed = false;

  constructor(o: TestMachineOptions = {}) {
    const memSize = o.memSize ?? 4 << 20;
    this.options = { irqchip: o.irqchip ?? false, hotPages: o.hotPages ?? 64 };
    this.vm = this.kvm.createVm();
    this.ram = new Uint8Array(memSize);
    this.vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: memSize, userspaceAddr: this.ram });
    if (this.options.irqchip) {
      this.vm.createIrqchip();
      this.vm.createPit2();
    }
    this.vcpus = [this.vm.createVcpu(0)];
    openMachines.add(this);
    if (o.boot ?? true) this.boot();
  }

  private boot(): void {
    this.ram.set(guestCode(this.options.hotPages), CODE_AT);
    // Something other than zeros for the first pass: a fixed pseudo-random pattern.
    let x = 12345;
    for (let i = 2 << 20; i < this.ram.length - (512 << 10); i += 4) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      this.ram[i] = x >>> 24;
    }
    const vcpu = this.vcpus[0]!;
    const s = vcpu.getSregs();
    for (const seg of [s.cs, s.ds, s.es, s.fs, s.gs, s.ss]) {
      Object.assign(seg, { base: 0, limit: 0xffffffff, g: 1, db: 1, present: 1, s: 1, type: 3, selector: 0x10, dpl: 0 });
    }
    Object.assign(s.cs, { type: 0xb, selector: 0x08 });
    s.cr0 |= 1;
    vcpu.setSregs(s);
    const r = vcpu.getRegs();
    r.rip = CODE_AT;
    r.rflags = 2;
    r.rsp = 0x7000;
    vcpu.setRegs(r);
  }

  get vcpu(): VcpuFd {
    return this.vcpus[0]!;
  }

  devices(): DeviceEntry[] {
    return [{ name: 'outlog', device: this.outlog as Persist<unknown> }];
  }

  pause(): void {
    this.vm.clock.pause();
    this.paused = true;
  }

  resume(): void {
    this.vm.clock.resume();
    this.paused = false;
  }

  throttle(f: number): void {
    this.throttleFraction = f;
    this.throttleCalls.push(f);
  }

  /** Runs until the outlog has seen `count` reports, or `maxExits` exits (throttled). */
  run(opts: { untilCount?: number; maxExits?: number } = {}): void {
    if (this.paused) throw new Error('run() while paused');
    let exits = Math.max(1, Math.floor((opts.maxExits ?? Infinity) * (1 - this.throttleFraction)));
    const until = opts.untilCount ?? Infinity;
    while (exits-- > 0 && this.outlog.count < until) {
      const r = this.vcpu.run();
      if (r === KVM_EXIT_IO) {
        const io = this.vcpu.runData.io;
        if (io.direction !== KVM_EXIT_IO_OUT || io.port !== OUT_PORT) throw new Error(`unexpected I/O on port 0x${io.port.toString(16)}`);
        this.outlog.count++;
        this.outlog.last = io.data[0]!;
      } else if (r !== KVM_EXIT_INTR) {
        throw new Error(`unexpected exit ${r}: ${this.vcpu.runData.internal.message}`);
      }
    }
  }

  counter(): number {
    return new DataView(this.ram.buffer).getUint32(COUNTER_AT, true);
  }

  checksum(): string {
    return createHash('sha256').update(this.ram).digest('hex');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    openMachines.delete(this);
    this.vcpu.close();
    this.vm.close();
    this.kvm.close();
  }
}

/** A blank machine shaped like `options` (for restoring into). */
export function blankLike(options: TestMachineOptions): TestMachine {
  return new TestMachine({ ...options, boot: false });
}
