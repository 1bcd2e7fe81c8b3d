import { close, ioctl, open } from '../dev-kvm.js';
import {
  KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_API_VERSION, KVM_GET_MSR_INDEX_LIST, KVM_GET_SUPPORTED_CPUID, KVM_GET_VCPU_MMAP_SIZE,
} from '../kvm-bindings.js';
import type { KvmCpuidEntry2 } from '../kvm-types.js';
import { VmFd } from './vm.js';

/** The system handle: an open `/dev/kvm` (rust-vmm's `Kvm`). */
export class Kvm {
  readonly fd: number;

  constructor() {
    this.fd = open('/dev/kvm');
  }

  /** KVM_GET_API_VERSION: always 12. */
  getApiVersion(): number {
    return ioctl(this.fd, KVM_GET_API_VERSION);
  }

  /** KVM_CHECK_EXTENSION: 0 when the capability is absent, else a positive value. */
  checkExtension(cap: number): number {
    return ioctl(this.fd, KVM_CHECK_EXTENSION, cap);
  }

  /** KVM_GET_VCPU_MMAP_SIZE. */
  getVcpuMmapSize(): number {
    return ioctl(this.fd, KVM_GET_VCPU_MMAP_SIZE);
  }

  /** KVM_GET_SUPPORTED_CPUID: the CPUID leaves this CPU can offer a guest. */
  getSupportedCpuid(): KvmCpuidEntry2[] {
    const c = { entries: [] as KvmCpuidEntry2[] };
    ioctl(this.fd, KVM_GET_SUPPORTED_CPUID, c);
    return c.entries;
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs KVM_GET_MSRS/KVM_SET_MSRS can save and restore. */
  getMsrIndexList(): number[] {
    const list = { indices: [] as number[] };
    ioctl(this.fd, KVM_GET_MSR_INDEX_LIST, list);
    return list.indices;
  }

  /** KVM_CREATE_VM. */
  createVm(): VmFd {
    return new VmFd(ioctl(this.fd, KVM_CREATE_VM, 0));
  }

  close(): void {
    close(this.fd);
  }
}
