import { close, ioctl, mmapRun } from '../dev-kvm.js';
import { KVM_GET_REGS, KVM_GET_SREGS, KVM_RUN, KVM_SET_REGS, KVM_SET_SREGS } from '../kvm-bindings.js';
import type { KvmRun } from '../kvm-run.js';
import type { KvmRegs, KvmSregs } from '../kvm-types.js';
import { emptyRegs, emptySregs } from '../kvm-types.js';

/** A vCPU descriptor (rust-vmm's `VcpuFd`). */
export class VcpuFd {
  /** The shared kvm_run record, rewritten on every exit. */
  readonly runData: KvmRun;

  constructor(readonly fd: number) {
    this.runData = mmapRun(fd);
  }

  /**
   * KVM_RUN: runs the guest until it needs the VMM. Returns the exit reason; the details are in
   * {@link VcpuFd.runData}. For an IN or MMIO read, fill in the data before calling run() again.
   */
  run(): number {
    ioctl(this.fd, KVM_RUN);
    return this.runData.exitReason;
  }

  getRegs(): KvmRegs {
    const regs = emptyRegs();
    ioctl(this.fd, KVM_GET_REGS, regs);
    return regs;
  }

  setRegs(regs: KvmRegs): void {
    ioctl(this.fd, KVM_SET_REGS, regs);
  }

  getSregs(): KvmSregs {
    const sregs = emptySregs();
    ioctl(this.fd, KVM_GET_SREGS, sregs);
    return sregs;
  }

  setSregs(sregs: KvmSregs): void {
    ioctl(this.fd, KVM_SET_SREGS, sregs);
  }

  close(): void {
    close(this.fd);
  }
}
