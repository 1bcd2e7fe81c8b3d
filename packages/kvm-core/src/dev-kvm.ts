/**
 * The raw layer: a `/dev/kvm` look-alike with its own file-descriptor table. `open()` hands
 * out descriptors, and `ioctl()` takes Linux's request numbers and struct-shaped arguments.
 * Get-style requests fill the object passed in, as the kernel fills the caller's struct.
 * @module
 */
import * as K from './kvm-bindings.js';
import { KvmError } from './error.js';
import { GuestMemory } from './memory/guest-memory.js';
import { KvmRun } from './kvm-run.js';
import type {
  KvmClearDirtyLog, KvmCpuid2, KvmDirtyLog, KvmFpu, KvmMsrs, KvmRegs, KvmSregs, KvmUserspaceMemoryRegion, KvmVcpuEvents,
} from './kvm-types.js';
import { KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI } from './kvm-types.js';
import { MSR_INDEX_LIST, readMsr, supportedCpuid, writeMsr } from './x86/cpuid.js';
import { X86Cpu } from './x86/cpu.js';
import { HostClock, InstructionClock, type GuestClock } from './time/clock.js';
import { TimerQueue } from './time/timers.js';

/** Kernel-side state behind a VM descriptor. */
class VmObject {
  readonly memory = new GuestMemory();
  readonly vcpus = new Map<number, VcpuObject>();
  clock: GuestClock = new HostClock();
  timers = new TimerQueue(this.clock);

  /** Instructions retired by all vCPUs (the source of an InstructionClock). */
  retired(): number {
    let n = 0;
    for (const v of this.vcpus.values()) n += v.cpu.retired();
    return n;
  }

  /** Switches to a clock mode; only before any vCPU has run, so guest time never jumps. */
  setClockMode(mode: 'host' | 'instructions', nsPerInstruction = 1): void {
    for (const v of this.vcpus.values()) {
      if (v.cpu.retired() > 0) throw new KvmError('EBUSY', 'the clock mode can only be chosen before the vCPUs run');
    }
    this.clock = mode === 'host' ? new HostClock() : new InstructionClock(() => this.retired(), nsPerInstruction);
    this.timers = new TimerQueue(this.clock);
    for (const v of this.vcpus.values()) v.cpu.clock = this.clock;
  }
}

/** Kernel-side state behind a vCPU descriptor. */
class VcpuObject {
  readonly run = new KvmRun();
  readonly cpu: X86Cpu;
  constructor(readonly vm: VmObject, readonly id: number) {
    this.cpu = new X86Cpu(vm.memory, this.run);
    this.cpu.clock = vm.clock;
  }
}

type FdObject = { kind: 'system' } | { kind: 'vm'; vm: VmObject } | { kind: 'vcpu'; vcpu: VcpuObject };

const fdTable = new Map<number, FdObject>();
// 0–2 are stdin/stdout/stderr on a real system; start above them so descriptors look familiar.
let nextFd = 3;

function allocFd(obj: FdObject): number {
  const fd = nextFd++;
  fdTable.set(fd, obj);
  return fd;
}

/** open(2) for kvm-core's device node. Only `/dev/kvm` exists. */
export function open(path: string): number {
  if (path !== '/dev/kvm') throw new KvmError('ENOENT', `no such device: ${JSON.stringify(path)} (kvm-core provides only /dev/kvm)`);
  return allocFd({ kind: 'system' });
}

/** close(2). A VM stays alive while any of its vCPU descriptors is open, as in Linux. */
export function close(fd: number): void {
  if (!fdTable.delete(fd)) throw new KvmError('EBADF', `fd ${fd} is not open`);
}

function lookup(fd: number): FdObject {
  const obj = fdTable.get(fd);
  if (!obj) throw new KvmError('EBADF', `fd ${fd} is not an open kvm descriptor`);
  return obj;
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16)}`;
}

function requireObject<T>(arg: unknown, request: string, fields: readonly string[]): T {
  if (typeof arg !== 'object' || arg === null) throw new KvmError('EFAULT', `${request}: argument must be an object with ${fields.join(', ')}`);
  for (const f of fields) {
    if (!(f in arg)) throw new KvmError('EFAULT', `${request}: argument lacks field '${f}'`);
  }
  return arg as T;
}

function requireInt(arg: unknown, request: string): number {
  if (typeof arg !== 'number' || !Number.isInteger(arg)) throw new KvmError('EINVAL', `${request}: argument must be an integer, got ${typeof arg}`);
  return arg;
}

const REGS_FIELDS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'rip', 'rflags'] as const;
const SREGS_FIELDS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt', 'gdt', 'idt', 'cr0', 'cr2', 'cr3', 'cr4', 'efer', 'apicBase'] as const;

function checkExtension(cap: number): number {
  switch (cap) {
    case K.KVM_CAP_HLT:
    case K.KVM_CAP_EXT_CPUID:
    case K.KVM_CAP_USER_NMI:
    case K.KVM_CAP_VCPU_EVENTS:
    case K.KVM_CAP_USER_MEMORY:
    case K.KVM_CAP_READONLY_MEM:
    case K.KVM_CAP_IMMEDIATE_EXIT:
    case K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
      return 1;
    case K.KVM_CAP_NR_MEMSLOTS:
      return K.KVM_USER_MEM_SLOTS;
    case K.KVM_CAP_NR_VCPUS:
    case K.KVM_CAP_MAX_VCPUS:
      return K.KVM_MAX_VCPUS;
    default:
      return 0;
  }
}

/**
 * ioctl(2). Returns the ioctl's non-negative result (0, a new descriptor, or a value);
 * failures throw {@link KvmError} with the errno Linux would set.
 */
export function ioctl(fd: number, request: number, arg?: unknown): number {
  const obj = lookup(fd);
  switch (obj.kind) {
    case 'system':
      return systemIoctl(request, arg);
    case 'vm':
      return vmIoctl(obj.vm, request, arg);
    case 'vcpu':
      return vcpuIoctl(obj.vcpu, request, arg);
  }
}

function systemIoctl(request: number, arg: unknown): number {
  switch (request) {
    case K.KVM_GET_API_VERSION: return K.KVM_API_VERSION;
    case K.KVM_CHECK_EXTENSION: return checkExtension(requireInt(arg, 'KVM_CHECK_EXTENSION'));
    case K.KVM_GET_VCPU_MMAP_SIZE: return K.KVM_RUN_MMAP_SIZE;
    case K.KVM_GET_MSR_INDEX_LIST: {
      const list = requireObject<{ indices: number[] }>(arg, 'KVM_GET_MSR_INDEX_LIST', ['indices']);
      list.indices.length = 0;
      list.indices.push(...MSR_INDEX_LIST);
      return 0;
    }
    case K.KVM_GET_SUPPORTED_CPUID: {
      const c = requireObject<KvmCpuid2>(arg, 'KVM_GET_SUPPORTED_CPUID', ['entries']);
      c.entries.length = 0;
      for (const e of supportedCpuid({ fpu: X86Cpu.FPU_AVAILABLE, apic: false })) c.entries.push({ ...e, flags: 0 });
      return 0;
    }
    case K.KVM_CREATE_VM: {
      if (arg !== undefined && arg !== 0) throw new KvmError('EINVAL', `KVM_CREATE_VM: machine type ${String(arg)} is not supported (use 0)`);
      return allocFd({ kind: 'vm', vm: new VmObject() });
    }
    default:
      throw new KvmError('ENOTTY', `unknown ioctl request ${hex(request)} on the /dev/kvm descriptor`);
  }
}

function vmIoctl(vm: VmObject, request: number, arg: unknown): number {
  switch (request) {
    case K.KVM_CHECK_EXTENSION: return checkExtension(requireInt(arg, 'KVM_CHECK_EXTENSION'));
    case K.KVM_SET_USER_MEMORY_REGION: {
      const r = requireObject<KvmUserspaceMemoryRegion>(arg, 'KVM_SET_USER_MEMORY_REGION', ['slot', 'flags', 'guestPhysAddr', 'memorySize', 'userspaceAddr']);
      vm.memory.setRegion(r);
      return 0;
    }
    case K.KVM_CREATE_VCPU: {
      const id = requireInt(arg, 'KVM_CREATE_VCPU');
      if (id < 0 || id >= K.KVM_MAX_VCPUS) throw new KvmError('EINVAL', `KVM_CREATE_VCPU: vcpu id ${id} is out of range (max vcpus ${K.KVM_MAX_VCPUS})`);
      if (vm.vcpus.has(id)) throw new KvmError('EEXIST', `KVM_CREATE_VCPU: vcpu ${id} already exists`);
      const vcpu = new VcpuObject(vm, id);
      vm.vcpus.set(id, vcpu);
      return allocFd({ kind: 'vcpu', vcpu });
    }
    case K.KVM_GET_DIRTY_LOG: {
      const d = requireObject<KvmDirtyLog>(arg, 'KVM_GET_DIRTY_LOG', ['slot', 'dirtyBitmap']);
      if (!(d.dirtyBitmap instanceof Uint8Array)) throw new KvmError('EFAULT', 'KVM_GET_DIRTY_LOG: dirtyBitmap must be a Uint8Array');
      vm.memory.getDirtyLog(d.slot, d.dirtyBitmap);
      return 0;
    }
    case K.KVM_GET_CLOCK: {
      const c = requireObject<{ clock: number; flags: number }>(arg, 'KVM_GET_CLOCK', []);
      c.clock = vm.clock.nowNs();
      c.flags = 0;
      return 0;
    }
    case K.KVM_SET_CLOCK: {
      const c = requireObject<{ clock: number }>(arg, 'KVM_SET_CLOCK', ['clock']);
      if (!Number.isFinite(c.clock) || c.clock < 0) throw new KvmError('EINVAL', `KVM_SET_CLOCK: clock ${c.clock} is not a time in ns`);
      vm.clock.setNs(c.clock);
      return 0;
    }
    case K.KVM_CLEAR_DIRTY_LOG: {
      const d = requireObject<KvmClearDirtyLog>(arg, 'KVM_CLEAR_DIRTY_LOG', ['slot', 'firstPage', 'numPages', 'dirtyBitmap']);
      if (!(d.dirtyBitmap instanceof Uint8Array)) throw new KvmError('EFAULT', 'KVM_CLEAR_DIRTY_LOG: dirtyBitmap must be a Uint8Array');
      vm.memory.clearDirtyLog(d.slot, d.firstPage, d.numPages, d.dirtyBitmap);
      return 0;
    }
    default:
      throw new KvmError('ENOTTY', `unknown ioctl request ${hex(request)} on a VM descriptor`);
  }
}

function vcpuIoctl(vcpu: VcpuObject, request: number, arg: unknown): number {
  switch (request) {
    case K.KVM_RUN:
      vcpu.cpu.runLoop();
      return 0;
    case K.KVM_GET_REGS:
      vcpu.cpu.getRegs(requireObject<KvmRegs>(arg, 'KVM_GET_REGS', []));
      return 0;
    case K.KVM_SET_REGS:
      vcpu.cpu.setRegs(requireObject<KvmRegs>(arg, 'KVM_SET_REGS', REGS_FIELDS));
      return 0;
    case K.KVM_GET_SREGS:
      vcpu.cpu.getSregs(requireObject<KvmSregs>(arg, 'KVM_GET_SREGS', []));
      return 0;
    case K.KVM_SET_SREGS:
      vcpu.cpu.setSregs(requireObject<KvmSregs>(arg, 'KVM_SET_SREGS', SREGS_FIELDS));
      return 0;
    case K.KVM_INTERRUPT: {
      const irq = requireObject<{ irq: number }>(arg, 'KVM_INTERRUPT', ['irq']).irq;
      if (!Number.isInteger(irq) || irq < 0 || irq > 255) throw new KvmError('EINVAL', `KVM_INTERRUPT: irq ${irq} is not a vector 0..255`);
      // As in KVM without an in-kernel irqchip: one interrupt may be queued at a time.
      if (vcpu.cpu.pendingIrq >= 0) throw new KvmError('EEXIST', `KVM_INTERRUPT: vector ${vcpu.cpu.pendingIrq} is still waiting to be injected`);
      vcpu.cpu.injectInterrupt(irq);
      return 0;
    }
    case K.KVM_NMI:
      vcpu.cpu.injectNmi();
      return 0;
    case K.KVM_GET_FPU:
      vcpu.cpu.getFpu(requireObject<KvmFpu>(arg, 'KVM_GET_FPU', ['fpr']));
      return 0;
    case K.KVM_SET_FPU: {
      const f = requireObject<KvmFpu>(arg, 'KVM_SET_FPU', ['fpr', 'fcw', 'fsw', 'ftw', 'lastOpcode', 'lastIp', 'lastDp', 'mxcsr']);
      if (!Array.isArray(f.fpr) || f.fpr.length !== 8 || !f.fpr.every((r) => r instanceof Uint8Array && r.length >= 10)) {
        throw new KvmError('EFAULT', 'KVM_SET_FPU: fpr must be 8 Uint8Arrays of at least 10 bytes');
      }
      vcpu.cpu.setFpu(f);
      return 0;
    }
    case K.KVM_GET_MSRS: {
      const m = requireObject<KvmMsrs>(arg, 'KVM_GET_MSRS', ['entries']);
      const out = new Int32Array(2);
      let n = 0;
      for (const e of m.entries) {
        if (!readMsr(vcpu.cpu, e.index >>> 0, out)) break;
        e.data = (out[1]! >>> 0) * 0x1_0000_0000 + (out[0]! >>> 0);
        n++;
      }
      return n;
    }
    case K.KVM_SET_MSRS: {
      const m = requireObject<KvmMsrs>(arg, 'KVM_SET_MSRS', ['entries']);
      let n = 0;
      for (const e of m.entries) {
        if (!writeMsr(vcpu.cpu, e.index >>> 0, e.data % 0x1_0000_0000, Math.floor(e.data / 0x1_0000_0000))) break;
        n++;
      }
      return n;
    }
    case K.KVM_SET_CPUID2: {
      const c = requireObject<KvmCpuid2>(arg, 'KVM_SET_CPUID2', ['entries']);
      vcpu.cpu.setCpuid(c.entries.map((e) => ({ function: e.function >>> 0, index: e.index >>> 0, eax: e.eax | 0, ebx: e.ebx | 0, ecx: e.ecx | 0, edx: e.edx | 0 })));
      return 0;
    }
    case K.KVM_GET_CPUID2: {
      const c = requireObject<KvmCpuid2>(arg, 'KVM_GET_CPUID2', ['entries']);
      c.entries.length = 0;
      for (const e of vcpu.cpu.cpuidTable) c.entries.push({ ...e, flags: 0 });
      return 0;
    }
    case K.KVM_GET_VCPU_EVENTS: {
      const ev = requireObject<KvmVcpuEvents>(arg, 'KVM_GET_VCPU_EVENTS', []);
      const cpu = vcpu.cpu;
      // Exceptions are delivered synchronously, so none is ever pending at an exit.
      ev.exception = { injected: 0, nr: 0, hasErrorCode: 0, pending: 0, errorCode: 0 };
      ev.interrupt = {
        injected: cpu.pendingIrq >= 0 ? 1 : 0, nr: Math.max(cpu.pendingIrq, 0), soft: 0,
        shadow: cpu.interruptShadow ? (cpu.shadowFromMovSs ? KVM_X86_SHADOW_INT_MOV_SS : KVM_X86_SHADOW_INT_STI) : 0,
      };
      ev.nmi = { injected: 0, pending: cpu.pendingNmi ? 1 : 0, masked: cpu.nmiBlocked ? 1 : 0 };
      ev.sipiVector = 0;
      ev.flags = 0;
      return 0;
    }
    case K.KVM_SET_VCPU_EVENTS: {
      const ev = requireObject<KvmVcpuEvents>(arg, 'KVM_SET_VCPU_EVENTS', ['exception', 'interrupt', 'nmi']);
      if (ev.exception.injected || ev.exception.pending) throw new KvmError('EINVAL', 'KVM_SET_VCPU_EVENTS: pending exceptions are not supported (this CPU delivers them synchronously)');
      const cpu = vcpu.cpu;
      cpu.pendingIrq = ev.interrupt.injected ? ev.interrupt.nr & 0xff : -1;
      cpu.interruptShadow = ev.interrupt.shadow !== 0;
      cpu.shadowFromMovSs = (ev.interrupt.shadow & KVM_X86_SHADOW_INT_MOV_SS) !== 0;
      cpu.pendingNmi = ev.nmi.pending !== 0;
      cpu.nmiBlocked = ev.nmi.masked !== 0;
      return 0;
    }
    default:
      throw new KvmError('ENOTTY', `unknown ioctl request ${hex(request)} on a vCPU descriptor`);
  }
}

/**
 * mmap(2) of a vCPU descriptor: the shared `kvm_run` record. The same object is returned on
 * every call and rewritten in place on every exit.
 */
export function mmapRun(fd: number): KvmRun {
  const obj = lookup(fd);
  if (obj.kind !== 'vcpu') throw new KvmError('EINVAL', `fd ${fd} is not a vCPU descriptor; only vCPUs have a kvm_run page`);
  return obj.vcpu.run;
}

/**
 * The VM's guest memory, for the VMM's own accesses (the counterpart of the VMM's mapping of
 * its slots). Writes through it are dirty-logged.
 */
export function vmClock(fd: number): { clock: GuestClock; timers: TimerQueue; setMode: (mode: 'host' | 'instructions', nsPerInstruction?: number) => void } {
  const obj = lookup(fd);
  if (obj.kind !== 'vm') throw new KvmError('EINVAL', `fd ${fd} is not a VM descriptor`);
  const vm = obj.vm;
  return {
    get clock() { return vm.clock; },
    get timers() { return vm.timers; },
    setMode: (mode, ns) => vm.setClockMode(mode, ns),
  };
}

export function vmMemory(fd: number): GuestMemory {
  const obj = lookup(fd);
  if (obj.kind !== 'vm') throw new KvmError('EINVAL', `fd ${fd} is not a VM descriptor`);
  return obj.vm.memory;
}
