import { close, ioctl, mmapRun, vcpuStats } from '../dev-kvm.js';
import {
  KVM_GET_CPUID2, KVM_GET_FPU, KVM_GET_MSRS, KVM_SET_FPU, KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_VCPU_EVENTS, KVM_INTERRUPT, KVM_NMI, KVM_RUN,
  KVM_SET_CPUID2, KVM_SET_MSRS, KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_VCPU_EVENTS, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_MP_STATE,
  KVM_SET_MP_STATE,
} from '../kvm-bindings.js';
import { LAPIC_REGS_SIZE } from '../irqchip/lapic.js';
import type { KvmRun } from '../kvm-run.js';
import type { KvmCpuidEntry2, KvmFpu, KvmMsrEntry, KvmRegs, KvmSregs, KvmVcpuEvents } from '../kvm-types.js';
import { emptyFpu, emptyRegs, emptySregs, emptyVcpuEvents } from '../kvm-types.js';

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

  /**
   * KVM_INTERRUPT: queues an external interrupt vector. Inject when `runData.readyForInterruptInjection`
   * is set, or set `runData.requestInterruptWindow` and wait for KVM_EXIT_IRQ_WINDOW_OPEN.
   */
  interrupt(irq: number): void {
    ioctl(this.fd, KVM_INTERRUPT, { irq });
  }

  /** KVM_GET_FPU: the x87 state (FXSAVE form). */
  getFpu(): KvmFpu {
    const f = emptyFpu();
    ioctl(this.fd, KVM_GET_FPU, f);
    return f;
  }

  /** KVM_SET_FPU. */
  setFpu(fpu: KvmFpu): void {
    ioctl(this.fd, KVM_SET_FPU, fpu);
  }

  /** KVM_NMI. */
  nmi(): void {
    ioctl(this.fd, KVM_NMI);
  }

  /** KVM_GET_MSRS for the given indices; stops at the first MSR the CPU does not have. */
  getMsrs(indices: readonly number[]): KvmMsrEntry[] {
    const entries = indices.map((index) => ({ index, data: 0 }));
    const n = ioctl(this.fd, KVM_GET_MSRS, { entries });
    return entries.slice(0, n);
  }

  /** KVM_SET_MSRS; returns how many entries were written (it stops at the first unknown MSR). */
  setMsrs(entries: readonly KvmMsrEntry[]): number {
    return ioctl(this.fd, KVM_SET_MSRS, { entries: entries.map((e) => ({ ...e })) });
  }

  /** KVM_SET_CPUID2: what CPUID returns in this vCPU. */
  setCpuid2(entries: readonly KvmCpuidEntry2[]): void {
    ioctl(this.fd, KVM_SET_CPUID2, { entries: entries.map((e) => ({ ...e })) });
  }

  /** KVM_GET_CPUID2. */
  getCpuid2(): KvmCpuidEntry2[] {
    const c = { entries: [] as KvmCpuidEntry2[] };
    ioctl(this.fd, KVM_GET_CPUID2, c);
    return c.entries;
  }

  /** KVM_GET_VCPU_EVENTS: pending interrupt and NMI, interrupt shadow, NMI masking. */
  getVcpuEvents(): KvmVcpuEvents {
    const ev = emptyVcpuEvents();
    ioctl(this.fd, KVM_GET_VCPU_EVENTS, ev);
    return ev;
  }

  /** KVM_SET_VCPU_EVENTS. */
  setVcpuEvents(events: KvmVcpuEvents): void {
    ioctl(this.fd, KVM_SET_VCPU_EVENTS, events);
  }

  /** KVM_GET_LAPIC: the local APIC's 1 KiB register image (in-kernel irqchip only). */
  getLapic(): Uint8Array {
    const regs = new Uint8Array(LAPIC_REGS_SIZE);
    ioctl(this.fd, KVM_GET_LAPIC, { regs });
    return regs;
  }

  /** KVM_SET_LAPIC. */
  setLapic(regs: Uint8Array): void {
    ioctl(this.fd, KVM_SET_LAPIC, { regs });
  }

  /** KVM_GET_MP_STATE: KVM_MP_STATE_RUNNABLE (0) or KVM_MP_STATE_HALTED (3). */
  getMpState(): number {
    const m = { mpState: 0 };
    ioctl(this.fd, KVM_GET_MP_STATE, m);
    return m.mpState;
  }

  /** KVM_SET_MP_STATE. */
  setMpState(mpState: number): void {
    ioctl(this.fd, KVM_SET_MP_STATE, { mpState });
  }

  /** Statistics: instructions retired and run() exits so far (KVM publishes these through KVM_GET_STATS_FD). */
  stats(): { instructions: number; exits: number } {
    return vcpuStats(this.fd);
  }

  close(): void {
    close(this.fd);
  }
}
