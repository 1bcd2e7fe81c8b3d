import { KVM_EXIT_UNKNOWN } from './kvm-bindings.js';

/** `kvm_run.io`: a port access the VMM must complete. */
export class KvmRunIo {
  /** KVM_EXIT_IO_IN (0) or KVM_EXIT_IO_OUT (1). */
  direction = 0;
  /** Bytes per access: 1, 2 or 4. */
  size = 0;
  port = 0;
  /** Number of accesses (string I/O may batch); `data` holds `size * count` bytes. */
  count = 0;
  /** OUT: the bytes written. IN: fill these before the next `run()`. Little-endian. */
  readonly data = new Uint8Array(4096);
}

/** `kvm_run.mmio`: a guest access to an address no memory slot backs (or a write to a read-only slot). */
export class KvmRunMmio {
  physAddr = 0;
  /** Write: the bytes written. Read: fill the first `len` bytes before the next `run()`. */
  readonly data = new Uint8Array(8);
  len = 0;
  isWrite = false;
}

/** `kvm_run.internal`: why the vCPU could not go on. */
export class KvmRunInternal {
  suberror = 0;
  /** Human-readable detail: the instruction bytes and address, or the state that was wrong. */
  message = '';
}

/**
 * The shared `kvm_run` record of one vCPU. It is allocated once and rewritten on every exit,
 * so handling an exit allocates nothing.
 */
export class KvmRun {
  /** In: make the next `run()` return KVM_EXIT_INTR at once, without running the guest. */
  immediateExit = false;
  /** In: ask for an exit as soon as the guest can take an external interrupt. */
  requestInterruptWindow = false;
  /** Out: the exit reason of the last `run()`. */
  exitReason: number = KVM_EXIT_UNKNOWN;
  /** Out: the guest can take an interrupt injected now (IF=1, no interrupt shadow). */
  readyForInterruptInjection = false;
  /** Out: EFLAGS.IF at the exit. */
  ifFlag = false;
  readonly io = new KvmRunIo();
  readonly mmio = new KvmRunMmio();
  readonly internal = new KvmRunInternal();
}
