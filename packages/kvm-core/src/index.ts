/**
 * kvm-core: a `/dev/kvm`-like interface over a software x86 CPU.
 *
 * Two layers, as on Linux: the raw layer ({@link open}, {@link ioctl}, {@link mmapRun}) takes
 * Linux's request numbers; the typed layer ({@link Kvm} → {@link VmFd} → {@link VcpuFd}, named
 * as in rust-vmm's kvm-ioctls) is what other packages use.
 * @packageDocumentation
 */
export { Kvm } from './ioctls/system.js';
export { VmFd } from './ioctls/vm.js';
export { VcpuFd } from './ioctls/vcpu.js';
export { open, close, ioctl, mmapRun, vmMemory, vmClock, vcpuStats } from './dev-kvm.js';
export { KvmError } from './error.js';
export type { Errno } from './error.js';
export { KvmRun, KvmRunIo, KvmRunMmio, KvmRunInternal } from './kvm-run.js';
export { GuestMemory, GUEST_PHYS_LIMIT } from './memory/guest-memory.js';
export type { MemorySlot } from './memory/guest-memory.js';
export { emptyRegs, emptySregs, emptySegment, emptyVcpuEvents, emptyFpu, KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI } from './kvm-types.js';
export type {
  KvmRegs, KvmSregs, KvmSegment, KvmDtable, KvmUserspaceMemoryRegion, KvmDirtyLog, KvmClearDirtyLog,
  KvmMsrEntry, KvmMsrs, KvmCpuid2, KvmCpuidEntry2, KvmVcpuEvents, KvmFpu,
  KvmIrqLevel, KvmIrqchip, KvmLapicState, KvmPitState2, KvmIoeventfd, KvmMpState,
} from './kvm-types.js';
export {
  KVM_API_VERSION,
  KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE, KVM_CREATE_VCPU,
  KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, KVM_CLEAR_DIRTY_LOG, KVM_RUN,
  KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS,
  KVM_GET_MSR_INDEX_LIST, KVM_GET_SUPPORTED_CPUID, KVM_INTERRUPT, KVM_GET_MSRS, KVM_SET_MSRS, KVM_SET_CPUID2, KVM_GET_CPUID2,
  KVM_NMI, KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_GET_FPU, KVM_SET_FPU, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_CAP_EXT_CPUID, KVM_CAP_USER_NMI, KVM_CAP_VCPU_EVENTS,
  KVM_CAP_HLT, KVM_CAP_USER_MEMORY, KVM_CAP_NR_VCPUS, KVM_CAP_NR_MEMSLOTS, KVM_CAP_MAX_VCPUS,
  KVM_CAP_READONLY_MEM, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
  KVM_EXIT_UNKNOWN, KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_INTR, KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_INTERNAL_ERROR_EMULATION,
  KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_CREATE_PIT2, KVM_GET_PIT2, KVM_SET_PIT2,
  KVM_IOEVENTFD, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_MP_STATE, KVM_SET_MP_STATE,
  KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_HALTED,
  KVM_CAP_IRQCHIP, KVM_CAP_MP_STATE, KVM_CAP_IRQ_INJECT_STATUS, KVM_CAP_PIT2, KVM_CAP_PIT_STATE2, KVM_CAP_IOEVENTFD,
  KvmExit, KVM_USER_MEM_SLOTS, KVM_MAX_VCPUS, KVM_RUN_MMAP_SIZE, PAGE_SIZE,
} from './kvm-bindings.js';
export type { KvmExitReason } from './kvm-bindings.js';
export { CpuidFeature, Msr, CPUID_SIGNATURE } from './x86/cpuid.js';
export { HostClock, InstructionClock } from './time/clock.js';
export type { GuestClock } from './time/clock.js';
export { TimerQueue } from './time/timers.js';
export type { Timer } from './time/timers.js';
export { BusError, IO_PORT_COUNT, IoBus, MMIO_ADDR_LIMIT, MmioBus } from './bus.js';
export type { BusDevice, BusErrorKind, BusRange } from './bus.js';
export { PIC_CASCADE_IRQ, PIC_ELCR_BASE, PIC_MASTER_BASE, PIC_PORT_LEN, PIC_SLAVE_BASE, Pic } from './irqchip/pic.js';
export type { PicChipState, PicOptions, PicState } from './irqchip/pic.js';
export { IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE, IOAPIC_VERSION, IoApic, IoApicDeliveryMode } from './irqchip/ioapic.js';
export type { IoApicMessage, IoApicOptions, IoApicRedirection, IoApicState } from './irqchip/ioapic.js';
export { PIT_BASE, PIT_FREQ_HZ, PIT_IRQ, PIT_PORT_LEN, Pit, pitTickNs, pitTicksAt } from './pit/pit.js';
export type { PitChannelState, PitOptions, PitRunState, PitState } from './pit/pit.js';
export { PORT61_PORT, Port61 } from './pit/port61.js';
export type { Port61Options, Port61State } from './pit/port61.js';
export { Lapic, LapicReg, LAPIC_BUS_HZ, LAPIC_PAGE_SIZE, LAPIC_REGS_SIZE, LAPIC_VERSION } from './irqchip/lapic.js';
export type { LapicHooks, LapicOptions } from './irqchip/lapic.js';
export { KernelIrqchip, IRQCHIP_GSIS, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE } from './irqchip/irqchip.js';
export type { IrqchipVcpu } from './irqchip/irqchip.js';
