/**
 * Constants from Linux's `<linux/kvm.h>` (x86), with the same names and values, so code
 * written against `/dev/kvm` maps onto kvm-core line by line.
 * @module
 */

/** The only API version Linux has ever shipped. */
export const KVM_API_VERSION = 12;

// ioctl request numbers. _IO(0xAE, n) = 0xAE00 | n; _IOW/_IOR/_IOWR add the direction and the
// size of the x86_64 struct, exactly as the kernel computes them.
export const KVM_GET_API_VERSION = 0xae00;
export const KVM_CREATE_VM = 0xae01;
export const KVM_CHECK_EXTENSION = 0xae03;
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
export const KVM_CREATE_VCPU = 0xae41;
export const KVM_GET_DIRTY_LOG = 0x4010ae42;
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
export const KVM_CLEAR_DIRTY_LOG = 0xc018aec0;
export const KVM_RUN = 0xae80;
export const KVM_GET_REGS = 0x8090ae81;
export const KVM_SET_REGS = 0x4090ae82;
export const KVM_GET_SREGS = 0x8138ae83;
export const KVM_SET_SREGS = 0x4138ae84;
export const KVM_GET_MSR_INDEX_LIST = 0xc004ae02;
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05;
export const KVM_INTERRUPT = 0x4004ae86;
export const KVM_GET_MSRS = 0xc008ae88;
export const KVM_SET_MSRS = 0x4008ae89;
export const KVM_SET_CPUID2 = 0x4008ae90;
export const KVM_GET_CPUID2 = 0xc008ae91;
export const KVM_NMI = 0xae9a;
export const KVM_SET_CLOCK = 0x4030ae7b;
export const KVM_GET_CLOCK = 0x8030ae7c;
export const KVM_GET_FPU = 0x81a0ae8c;
export const KVM_SET_FPU = 0x41a0ae8d;
export const KVM_GET_VCPU_EVENTS = 0x8040ae9f;
export const KVM_SET_VCPU_EVENTS = 0x4040aea0;
// In-kernel devices. State-carrying requests take kvm-core's own JSON-able device states
// (see irqchip/ and pit/) rather than the packed C structs; KVM_GET/SET_LAPIC keep the 1 KiB
// register image of struct kvm_lapic_state.
export const KVM_CREATE_IRQCHIP = 0xae60;
export const KVM_IRQ_LINE = 0x4008ae61;
export const KVM_GET_IRQCHIP = 0xc208ae62;
export const KVM_SET_IRQCHIP = 0x8208ae63;
export const KVM_IRQ_LINE_STATUS = 0xc008ae67;
export const KVM_CREATE_PIT2 = 0x4040ae77;
export const KVM_IOEVENTFD = 0x4040ae79;
export const KVM_GET_PIT2 = 0x8070ae9f;
export const KVM_SET_PIT2 = 0x4070aea0;
export const KVM_GET_LAPIC = 0x8400ae8e;
export const KVM_SET_LAPIC = 0x4400ae8f;
export const KVM_GET_MP_STATE = 0x8004ae98;
export const KVM_SET_MP_STATE = 0x4004ae99;

// KVM_IOEVENTFD flags.
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

// kvm_mp_state.mp_state
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_HALTED = 3;

// Capabilities (KVM_CHECK_EXTENSION arguments).
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_MP_STATE = 14;
export const KVM_CAP_IRQ_INJECT_STATUS = 26;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_PIT_STATE2 = 35;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_HLT = 1;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_USER_NMI = 22;
export const KVM_CAP_VCPU_EVENTS = 41;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168;

// Memory slot flags.
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

// Exit reasons (kvm_run.exit_reason).
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;

// kvm_run.io.direction
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

// kvm_run.internal.suberror
export const KVM_INTERNAL_ERROR_EMULATION = 1;

/** Exit reasons as a closed set, for `switch (vcpu.run())`. */
export const KvmExit = {
  Unknown: KVM_EXIT_UNKNOWN,
  Io: KVM_EXIT_IO,
  Hlt: KVM_EXIT_HLT,
  Mmio: KVM_EXIT_MMIO,
  IrqWindowOpen: KVM_EXIT_IRQ_WINDOW_OPEN,
  Shutdown: KVM_EXIT_SHUTDOWN,
  Intr: KVM_EXIT_INTR,
  InternalError: KVM_EXIT_INTERNAL_ERROR,
} as const;
/** One of the {@link KvmExit} values. */
export type KvmExitReason = (typeof KvmExit)[keyof typeof KvmExit];

/** Limits this implementation reports through KVM_CHECK_EXTENSION. */
export const KVM_USER_MEM_SLOTS = 32;
export const KVM_MAX_VCPUS = 1;
/** Size of the page that backs kvm_run on Linux; reported by KVM_GET_VCPU_MMAP_SIZE. */
export const KVM_RUN_MMAP_SIZE = 4096;
/** Guest page size; dirty bitmaps have one bit per page. */
export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;
