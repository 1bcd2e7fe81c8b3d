/**
 * The structs that cross the ioctl boundary, shaped like Linux's x86 `kvm_*` structs with
 * camelCase field names. Values are plain numbers; on this i686-class core the upper 32 bits
 * of the 64-bit register fields are always zero, and r8–r15 always read as zero.
 * @module
 */

/** `struct kvm_userspace_memory_region`. `userspaceAddr` is the host memory itself. */
export interface KvmUserspaceMemoryRegion {
  slot: number;
  flags: number;
  guestPhysAddr: number;
  /** Bytes; 0 deletes the slot. */
  memorySize: number;
  /** The backing memory: an ArrayBuffer, a SharedArrayBuffer, or a Uint8Array view of one. */
  userspaceAddr: ArrayBuffer | SharedArrayBuffer | Uint8Array;
}

/** `struct kvm_dirty_log`: `dirtyBitmap` receives one bit per page, little-endian bit order. */
export interface KvmDirtyLog {
  slot: number;
  dirtyBitmap: Uint8Array;
}

/** `struct kvm_clear_dirty_log`: clears `numPages` bits starting at `firstPage`. */
export interface KvmClearDirtyLog {
  slot: number;
  firstPage: number;
  numPages: number;
  dirtyBitmap: Uint8Array;
}

/** `struct kvm_regs`. */
export interface KvmRegs {
  rax: number; rbx: number; rcx: number; rdx: number;
  rsi: number; rdi: number; rsp: number; rbp: number;
  r8: number; r9: number; r10: number; r11: number;
  r12: number; r13: number; r14: number; r15: number;
  rip: number; rflags: number;
}

/** `struct kvm_segment`. */
export interface KvmSegment {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  /** Default operand size: 1 = 32-bit. */
  db: number;
  /** 1 = code/data, 0 = system. */
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** `struct kvm_dtable` (GDTR/IDTR). */
export interface KvmDtable {
  base: number;
  limit: number;
}

/** `struct kvm_sregs`. */
export interface KvmSregs {
  cs: KvmSegment; ds: KvmSegment; es: KvmSegment; fs: KvmSegment; gs: KvmSegment; ss: KvmSegment;
  tr: KvmSegment; ldt: KvmSegment;
  gdt: KvmDtable; idt: KvmDtable;
  cr0: number; cr2: number; cr3: number; cr4: number; cr8: number;
  efer: number;
  apicBase: number;
  /** Pending external interrupt, one bit per vector (as in KVM, at most one bit set). */
  interruptBitmap: number[];
}

export function emptyRegs(): KvmRegs {
  return {
    rax: 0, rbx: 0, rcx: 0, rdx: 0, rsi: 0, rdi: 0, rsp: 0, rbp: 0,
    r8: 0, r9: 0, r10: 0, r11: 0, r12: 0, r13: 0, r14: 0, r15: 0,
    rip: 0, rflags: 2,
  };
}

export function emptySegment(): KvmSegment {
  return { base: 0, limit: 0, selector: 0, type: 0, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };
}

export function emptySregs(): KvmSregs {
  return {
    cs: emptySegment(), ds: emptySegment(), es: emptySegment(), fs: emptySegment(), gs: emptySegment(),
    ss: emptySegment(), tr: emptySegment(), ldt: emptySegment(),
    gdt: { base: 0, limit: 0 }, idt: { base: 0, limit: 0 },
    cr0: 0, cr2: 0, cr3: 0, cr4: 0, cr8: 0, efer: 0, apicBase: 0,
    interruptBitmap: [0, 0, 0, 0],
  };
}

/** `struct kvm_msr_entry`. `data` is the 64-bit value as a number (exact below 2^53). */
export interface KvmMsrEntry {
  index: number;
  data: number;
}

/** `struct kvm_msrs`: KVM_GET_MSRS fills `data` of each entry; both return how many were processed. */
export interface KvmMsrs {
  entries: KvmMsrEntry[];
}

/** `struct kvm_cpuid_entry2`. */
export interface KvmCpuidEntry2 {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** `struct kvm_cpuid2`. */
export interface KvmCpuid2 {
  entries: KvmCpuidEntry2[];
}

/** `struct kvm_vcpu_events` (the x86 fields this CPU has). */
export interface KvmVcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  flags: number;
}

/** Values of `KvmVcpuEvents.interrupt.shadow`. */
export const KVM_X86_SHADOW_INT_MOV_SS = 1;
export const KVM_X86_SHADOW_INT_STI = 2;

export function emptyVcpuEvents(): KvmVcpuEvents {
  return {
    exception: { injected: 0, nr: 0, hasErrorCode: 0, pending: 0, errorCode: 0 },
    interrupt: { injected: 0, nr: 0, soft: 0, shadow: 0 },
    nmi: { injected: 0, pending: 0, masked: 0 },
    sipiVector: 0,
    flags: 0,
  };
}

/**
 * `struct kvm_fpu`: the x87 state in FXSAVE form. `fpr[i]` is ST(i) as 10 bytes (significand
 * little-endian, then sign and exponent) padded to 16; `ftw` is the abridged tag byte (bit set =
 * register valid); `lastIp`/`lastDp` carry FCS/FDS in bits 32–47, as Linux's does. There is no
 * SSE unit, so `xmm` is always zero.
 */
export interface KvmFpu {
  fpr: Uint8Array[];
  fcw: number;
  fsw: number;
  ftw: number;
  lastOpcode: number;
  lastIp: number;
  lastDp: number;
  xmm: Uint8Array[];
  mxcsr: number;
}

export function emptyFpu(): KvmFpu {
  return {
    fpr: Array.from({ length: 8 }, () => new Uint8Array(16)),
    fcw: 0, fsw: 0, ftw: 0, lastOpcode: 0, lastIp: 0, lastDp: 0,
    xmm: Array.from({ length: 16 }, () => new Uint8Array(16)),
    mxcsr: 0,
  };
}

/** struct kvm_irq_level: drive GSI `irq` to `level` (KVM_IRQ_LINE). */
export interface KvmIrqLevel {
  irq: number;
  level: number;
  /** KVM_IRQ_LINE_STATUS: set to 1 when the interrupt was delivered (not coalesced or masked), as far as known. */
  status?: number;
}

/** KVM_GET_IRQCHIP / KVM_SET_IRQCHIP: `chip` is the device's JSON-able state (PicState or IoApicState). */
export interface KvmIrqchip {
  chipId: number;
  chip: unknown;
}

/** KVM_GET_LAPIC / KVM_SET_LAPIC: the local APIC's 1 KiB register image (struct kvm_lapic_state). */
export interface KvmLapicState {
  regs: Uint8Array;
}

/** KVM_GET_PIT2 / KVM_SET_PIT2: the PIT's JSON-able state (PitState) and port 0x61's (Port61State). */
export interface KvmPitState2 {
  pit: unknown;
  port61: unknown;
}

/**
 * KVM_IOEVENTFD: a guest write to `addr` (`len` bytes; with the DATAMATCH flag only when the
 * value equals `datamatch`) calls `notify` inside run() instead of exiting — the function takes
 * the place of the eventfd. The PIO flag selects port I/O; DEASSIGN removes a registration.
 */
export interface KvmIoeventfd {
  addr: number;
  len: number;
  flags: number;
  datamatch: number;
  notify?: () => void;
}

/** struct kvm_mp_state. */
export interface KvmMpState {
  mpState: number;
}
