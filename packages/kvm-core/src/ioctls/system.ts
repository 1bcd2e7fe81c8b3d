import { close, ioctl, open } from '../dev-kvm.js';
import { KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_API_VERSION, KVM_GET_VCPU_MMAP_SIZE } from '../kvm-bindings.js';
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

  /** KVM_CREATE_VM. */
  createVm(): VmFd {
    return new VmFd(ioctl(this.fd, KVM_CREATE_VM, 0));
  }

  close(): void {
    close(this.fd);
  }
}
