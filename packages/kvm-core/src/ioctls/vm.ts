import { close, ioctl, vmClock, vmMemory } from '../dev-kvm.js';
import type { GuestClock } from '../time/clock.js';
import type { TimerQueue } from '../time/timers.js';
import { KvmError } from '../error.js';
import {
  KVM_CHECK_EXTENSION, KVM_CLEAR_DIRTY_LOG, KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_CREATE_VCPU, KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, PAGE_SIZE,
} from '../kvm-bindings.js';
import type { KvmUserspaceMemoryRegion } from '../kvm-types.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VcpuFd } from './vcpu.js';

/** A VM descriptor (rust-vmm's `VmFd`). */
export class VmFd {
  /** The guest's memory, for the VMM and its devices; writes through it are dirty-logged. */
  readonly memory: GuestMemory;

  constructor(readonly fd: number) {
    this.memory = vmMemory(fd);
  }

  /** The VM's guest clock: the TSC and every device timer follow it. */
  get clock(): GuestClock {
    return vmClock(this.fd).clock;
  }

  /** The VM's timer queue, on which devices schedule their timers. */
  get timers(): TimerQueue {
    return vmClock(this.fd).timers;
  }

  /**
   * Chooses how guest time passes: `'host'` (default) follows the host's monotonic clock;
   * `'instructions'` counts retired instructions (`nsPerInstruction` each) for reproducible runs.
   * Only before the vCPUs have run.
   */
  setClockMode(mode: 'host' | 'instructions', nsPerInstruction = 1): void {
    vmClock(this.fd).setMode(mode, nsPerInstruction);
  }

  /** KVM_GET_CLOCK: guest time in ns. */
  getClock(): number {
    const c = { clock: 0, flags: 0 };
    ioctl(this.fd, KVM_GET_CLOCK, c);
    return c.clock;
  }

  /** KVM_SET_CLOCK: sets guest time (ns), e.g. on restore. */
  setClock(ns: number): void {
    ioctl(this.fd, KVM_SET_CLOCK, { clock: ns, flags: 0 });
  }

  /** KVM_CHECK_EXTENSION on the VM. */
  checkExtension(cap: number): number {
    return ioctl(this.fd, KVM_CHECK_EXTENSION, cap);
  }

  /** KVM_SET_USER_MEMORY_REGION: maps, moves, changes the flags of, or (memorySize 0) deletes a slot. */
  setUserMemoryRegion(region: KvmUserspaceMemoryRegion): void {
    ioctl(this.fd, KVM_SET_USER_MEMORY_REGION, region);
  }

  /** KVM_CREATE_VCPU. */
  createVcpu(id: number): VcpuFd {
    return new VcpuFd(ioctl(this.fd, KVM_CREATE_VCPU, id));
  }

  /**
   * KVM_GET_DIRTY_LOG: the pages of `slot` written since the last call, one bit per page
   * (bit i of byte j is page 8j+i), then clears the log.
   */
  getDirtyLog(slot: number, memorySize: number): Uint8Array {
    const bitmap = new Uint8Array(Math.ceil(memorySize / PAGE_SIZE / 64) * 8);
    ioctl(this.fd, KVM_GET_DIRTY_LOG, { slot, dirtyBitmap: bitmap });
    return bitmap;
  }

  /** KVM_CLEAR_DIRTY_LOG: clears the bits of `bitmap` for pages [firstPage, firstPage+numPages). */
  clearDirtyLog(slot: number, firstPage: number, numPages: number, bitmap: Uint8Array): void {
    ioctl(this.fd, KVM_CLEAR_DIRTY_LOG, { slot, firstPage, numPages, dirtyBitmap: bitmap });
  }

  /** The host memory of a slot, read back by slot id (no copy). */
  slotMemory(slot: number): Uint8Array {
    const s = this.memory.getSlot(slot);
    if (!s) throw new KvmError('ENOENT', `slot ${slot} does not exist`);
    return s.bytes;
  }

  close(): void {
    close(this.fd);
  }
}
