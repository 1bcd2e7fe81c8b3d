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
  KvmClearDirtyLog, KvmCpuid2, KvmDirtyLog, KvmFpu, KvmIoeventfd, KvmIrqchip, KvmIrqLevel, KvmLapicState, KvmMpState, KvmMsrs,
  KvmPitState2, KvmRegs, KvmSregs, KvmUserspaceMemoryRegion, KvmVcpuEvents,
} from './kvm-types.js';
import { IoBus, MmioBus, type BusDevice } from './bus.js';
import { KernelIrqchip } from './irqchip/irqchip.js';
import type { IoApicState } from './irqchip/ioapic.js';
import { LAPIC_REGS_SIZE } from './irqchip/lapic.js';
import type { PicState } from './irqchip/pic.js';
import { PIT_BASE, PIT_PORT_LEN, Pit, type PitState } from './pit/pit.js';
import { PORT61_PORT, Port61, type Port61State } from './pit/port61.js';
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
  /** Ports and MMIO handled inside run(): the in-kernel irqchip and PIT. */
  readonly kernelIo = new IoBus();
  readonly kernelMmio = new MmioBus();
  /** ioeventfd registrations: consulted for guest writes only. */
  readonly eventIo = new IoBus();
  readonly eventMmio = new MmioBus();
  irqchip: KernelIrqchip | null = null;
  pit: { pit: Pit; port61: Port61 } | null = null;

  /** Instructions retired by all vCPUs (the source of an InstructionClock). */
  retired(): number {
    let n = 0;
    for (const v of this.vcpus.values()) n += v.cpu.retired();
    return n;
  }

  /** Switches to a clock mode; only before any vCPU has run, so guest time never jumps. */
  setClockMode(mode: 'host' | 'instructions', nsPerInstruction = 1): void {
    if (this.irqchip !== null) throw new KvmError('EBUSY', 'the clock mode can only be chosen before KVM_CREATE_IRQCHIP (its timers use the clock)');
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
    const cpu = (this.cpu = new X86Cpu(vm.memory, this.run));
    cpu.clock = vm.clock;
    cpu.kernelIo = new KernelBus(vm.kernelIo, vm.eventIo);
    cpu.kernelMmio = new KernelBus(vm.kernelMmio, vm.eventMmio);
    if (vm.irqchip !== null) {
      cpu.lapic = vm.irqchip.addVcpu(id, cpu);
      cpu.kernelTimers = vm.timers;
      cpu.reset();
    }
  }
}

/**
 * What run() sees of one in-kernel address space: the in-kernel devices for reads and writes,
 * and the ioeventfd registrations for writes (a read of a notify address still exits to the VMM,
 * and so does a write no registration matches).
 */
class KernelBus {
  constructor(private readonly devices: IoBus | MmioBus, private readonly events: IoBus | MmioBus) {}
  read(addr: number, data: Uint8Array): boolean {
    return this.devices.read(addr, data);
  }
  write(addr: number, data: Uint8Array): boolean {
    const r = this.events.find(addr);
    if (r !== undefined && r.base === addr && (r.device as IoEventSlot).signal(data)) return true;
    return this.devices.write(addr, data);
  }
}

/** The ioeventfds registered at one address and length; each matches one value or any. */
class IoEventSlot implements BusDevice {
  readonly entries: { datamatch: number | null; notify: () => void }[] = [];
  constructor(readonly len: number) {}
  read(): void {}
  write(_offset: number, data: Uint8Array): void {
    this.signal(data);
  }
  /** Calls the matching registrations; false when none matched (the write then exits). */
  signal(data: Uint8Array): boolean {
    if (this.len !== 0 && data.length !== this.len) return false;
    let v = 0;
    for (let k = data.length - 1; k >= 0; k--) v = v * 256 + data[k]!;
    let matched = false;
    for (const e of this.entries) {
      if (e.datamatch === null || e.datamatch === v) {
        matched = true;
        e.notify();
      }
    }
    return matched;
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
    case K.KVM_CAP_IRQCHIP:
    case K.KVM_CAP_IRQ_INJECT_STATUS:
    case K.KVM_CAP_PIT2:
    case K.KVM_CAP_PIT_STATE2:
    case K.KVM_CAP_IOEVENTFD:
    case K.KVM_CAP_MP_STATE:
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
    case K.KVM_CREATE_IRQCHIP: {
      if (vm.irqchip !== null) throw new KvmError('EEXIST', 'KVM_CREATE_IRQCHIP: the VM already has an irqchip');
      if (vm.vcpus.size > 0) throw new KvmError('EINVAL', 'KVM_CREATE_IRQCHIP: create the irqchip before the vCPUs');
      const chip = new KernelIrqchip(vm.clock, vm.timers);
      chip.attach(vm.kernelIo, vm.kernelMmio);
      vm.irqchip = chip;
      return 0;
    }
    case K.KVM_IRQ_LINE:
    case K.KVM_IRQ_LINE_STATUS: {
      const name = request === K.KVM_IRQ_LINE ? 'KVM_IRQ_LINE' : 'KVM_IRQ_LINE_STATUS';
      const l = requireObject<KvmIrqLevel>(arg, name, ['irq', 'level']);
      const chip = requireIrqchip(vm, name);
      try {
        chip.setIrqLine(l.irq, l.level !== 0);
      } catch (e) {
        throw new KvmError('EINVAL', `${name}: ${(e as Error).message}`);
      }
      if (request === K.KVM_IRQ_LINE_STATUS) l.status = 1;
      return 0;
    }
    case K.KVM_GET_IRQCHIP: {
      const c = requireObject<KvmIrqchip>(arg, 'KVM_GET_IRQCHIP', ['chipId']);
      try {
        c.chip = requireIrqchip(vm, 'KVM_GET_IRQCHIP').getChip(c.chipId);
      } catch (e) {
        if (e instanceof KvmError) throw e;
        throw new KvmError('EINVAL', `KVM_GET_IRQCHIP: ${(e as Error).message}`);
      }
      return 0;
    }
    case K.KVM_SET_IRQCHIP: {
      const c = requireObject<KvmIrqchip>(arg, 'KVM_SET_IRQCHIP', ['chipId', 'chip']);
      const chip = requireIrqchip(vm, 'KVM_SET_IRQCHIP');
      try {
        chip.setChip(c.chipId, c.chip as PicState | IoApicState);
      } catch (e) {
        throw new KvmError('EINVAL', `KVM_SET_IRQCHIP: ${(e as Error).message}`);
      }
      return 0;
    }
    case K.KVM_CREATE_PIT2: {
      const chip = requireIrqchip(vm, 'KVM_CREATE_PIT2');
      if (vm.pit !== null) throw new KvmError('EEXIST', 'KVM_CREATE_PIT2: the VM already has a PIT');
      const pit = new Pit({ timers: vm.timers, clock: vm.clock, irq0: (level) => chip.setIrqLine(0, level) });
      const port61 = new Port61({ pit });
      vm.kernelIo.insert(pit, PIT_BASE, PIT_PORT_LEN);
      vm.kernelIo.insert(port61, PORT61_PORT, 1);
      vm.pit = { pit, port61 };
      return 0;
    }
    case K.KVM_GET_PIT2: {
      const p = requireObject<KvmPitState2>(arg, 'KVM_GET_PIT2', []);
      if (vm.pit === null) throw new KvmError('ENXIO', 'KVM_GET_PIT2: the VM has no in-kernel PIT (KVM_CREATE_PIT2)');
      p.pit = vm.pit.pit.save();
      p.port61 = vm.pit.port61.save();
      return 0;
    }
    case K.KVM_SET_PIT2: {
      const p = requireObject<KvmPitState2>(arg, 'KVM_SET_PIT2', ['pit', 'port61']);
      if (vm.pit === null) throw new KvmError('ENXIO', 'KVM_SET_PIT2: the VM has no in-kernel PIT (KVM_CREATE_PIT2)');
      try {
        vm.pit.pit.restore(p.pit as PitState);
        vm.pit.port61.restore(p.port61 as Port61State);
      } catch (e) {
        throw new KvmError('EINVAL', `KVM_SET_PIT2: ${(e as Error).message}`);
      }
      return 0;
    }
    case K.KVM_IOEVENTFD:
      ioeventfd(vm, requireObject<KvmIoeventfd>(arg, 'KVM_IOEVENTFD', ['addr', 'len', 'flags']));
      return 0;
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

function requireIrqchip(vm: VmObject, request: string): KernelIrqchip {
  if (vm.irqchip === null) throw new KvmError('ENXIO', `${request}: the VM has no in-kernel irqchip (KVM_CREATE_IRQCHIP)`);
  return vm.irqchip;
}

function ioeventfd(vm: VmObject, e: KvmIoeventfd): void {
  const pio = (e.flags & K.KVM_IOEVENTFD_FLAG_PIO) !== 0;
  const bus = pio ? vm.eventIo : vm.eventMmio;
  const datamatch = (e.flags & K.KVM_IOEVENTFD_FLAG_DATAMATCH) !== 0 ? e.datamatch : null;
  if (![0, 1, 2, 4, 8].includes(e.len)) throw new KvmError('EINVAL', `KVM_IOEVENTFD: len ${e.len} is not 0, 1, 2, 4 or 8`);
  const limit = pio ? 0x10000 : 2 ** 52;
  if (!Number.isSafeInteger(e.addr) || e.addr < 0 || e.addr + Math.max(e.len, 1) > limit) {
    throw new KvmError('EINVAL', `KVM_IOEVENTFD: address ${hex(e.addr)} is out of range`);
  }
  const r = bus.find(e.addr);
  const slot = r !== undefined && r.base === e.addr ? (r.device as IoEventSlot) : undefined;
  if ((e.flags & K.KVM_IOEVENTFD_FLAG_DEASSIGN) !== 0) {
    const i = slot?.entries.findIndex((x) => x.datamatch === datamatch && (e.notify === undefined || x.notify === e.notify)) ?? -1;
    if (slot === undefined || i < 0) throw new KvmError('ENOENT', `KVM_IOEVENTFD: nothing registered at ${hex(e.addr)}`);
    slot.entries.splice(i, 1);
    if (slot.entries.length === 0) bus.remove(e.addr);
    return;
  }
  if (typeof e.notify !== 'function') throw new KvmError('EINVAL', 'KVM_IOEVENTFD: notify must be a function');
  if (slot !== undefined) {
    if (slot.len !== e.len) throw new KvmError('EEXIST', `KVM_IOEVENTFD: ${hex(e.addr)} is registered with length ${slot.len}`);
    if (slot.entries.some((x) => x.datamatch === datamatch)) throw new KvmError('EEXIST', `KVM_IOEVENTFD: ${hex(e.addr)} is already registered for that value`);
    slot.entries.push({ datamatch, notify: e.notify });
    return;
  }
  const fresh = new IoEventSlot(e.len);
  fresh.entries.push({ datamatch, notify: e.notify });
  try {
    bus.insert(fresh, e.addr, Math.max(e.len, 1));
  } catch (err) {
    throw new KvmError('EEXIST', `KVM_IOEVENTFD: ${(err as Error).message}`);
  }
}

function vcpuIoctl(vcpu: VcpuObject, request: number, arg: unknown): number {
  switch (request) {
    case K.KVM_GET_LAPIC: {
      const l = requireObject<KvmLapicState>(arg, 'KVM_GET_LAPIC', ['regs']);
      if (vcpu.cpu.lapic === null) throw new KvmError('ENXIO', 'KVM_GET_LAPIC: the VM has no in-kernel irqchip');
      if (!(l.regs instanceof Uint8Array) || l.regs.length < LAPIC_REGS_SIZE) throw new KvmError('EFAULT', `KVM_GET_LAPIC: regs must be a Uint8Array of ${LAPIC_REGS_SIZE} bytes`);
      vcpu.cpu.lapic.getRegisters(l.regs);
      return 0;
    }
    case K.KVM_SET_LAPIC: {
      const l = requireObject<KvmLapicState>(arg, 'KVM_SET_LAPIC', ['regs']);
      if (vcpu.cpu.lapic === null) throw new KvmError('ENXIO', 'KVM_SET_LAPIC: the VM has no in-kernel irqchip');
      if (!(l.regs instanceof Uint8Array) || l.regs.length < LAPIC_REGS_SIZE) throw new KvmError('EFAULT', `KVM_SET_LAPIC: regs must be a Uint8Array of ${LAPIC_REGS_SIZE} bytes`);
      vcpu.cpu.lapic.setRegisters(l.regs);
      return 0;
    }
    case K.KVM_GET_MP_STATE: {
      const m = requireObject<KvmMpState>(arg, 'KVM_GET_MP_STATE', []);
      m.mpState = vcpu.cpu.halted ? K.KVM_MP_STATE_HALTED : K.KVM_MP_STATE_RUNNABLE;
      return 0;
    }
    case K.KVM_SET_MP_STATE: {
      const m = requireObject<KvmMpState>(arg, 'KVM_SET_MP_STATE', ['mpState']);
      if (m.mpState !== K.KVM_MP_STATE_RUNNABLE && m.mpState !== K.KVM_MP_STATE_HALTED) throw new KvmError('EINVAL', `KVM_SET_MP_STATE: state ${m.mpState} is not RUNNABLE (0) or HALTED (3)`);
      if (m.mpState === K.KVM_MP_STATE_HALTED && vcpu.cpu.lapic === null) throw new KvmError('EINVAL', 'KVM_SET_MP_STATE: HALTED needs an in-kernel irqchip');
      vcpu.cpu.halted = m.mpState === K.KVM_MP_STATE_HALTED;
      return 0;
    }
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
      if (vcpu.cpu.lapic !== null) throw new KvmError('ENXIO', 'KVM_INTERRUPT: the VM has an in-kernel irqchip; drive interrupts with KVM_IRQ_LINE');
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

/**
 * A vCPU's statistics, the counterpart of what KVM publishes per vCPU (KVM_GET_STATS_FD):
 * instructions retired and exits to the VMM.
 */
export function vcpuStats(fd: number): { instructions: number; exits: number } {
  const obj = lookup(fd);
  if (obj.kind !== 'vcpu') throw new KvmError('EINVAL', `fd ${fd} is not a vCPU descriptor`);
  return { instructions: obj.vcpu.cpu.retired(), exits: obj.vcpu.cpu.exitCount };
}

export function vmMemory(fd: number): GuestMemory {
  const obj = lookup(fd);
  if (obj.kind !== 'vm') throw new KvmError('EINVAL', `fd ${fd} is not a VM descriptor`);
  return obj.vm.memory;
}
