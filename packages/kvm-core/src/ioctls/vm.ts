import { close, ioctl, vmClock, vmMemory } from '../dev-kvm.js';
import type { GuestClock } from '../time/clock.js';
import type { TimerQueue } from '../time/timers.js';
import { KvmError } from '../error.js';
import {
  KVM_CHECK_EXTENSION, KVM_CLEAR_DIRTY_LOG, KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_CREATE_VCPU, KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, PAGE_SIZE,
  KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_GET_IRQCHIP, KVM_GET_PIT2, KVM_IOEVENTFD, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO, KVM_IRQ_LINE, KVM_SET_IRQCHIP, KVM_SET_PIT2,
} from '../kvm-bindings.js';
import type { KvmUserspaceMemoryRegion } from '../kvm-types.js';
import type { IoApicState } from '../irqchip/ioapic.js';
import type { PicState } from '../irqchip/pic.js';
import type { PitState } from '../pit/pit.js';
import type { Port61State } from '../pit/port61.js';
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

  /**
   * KVM_CREATE_IRQCHIP: an in-kernel 8259A pair, I/O APIC and per-vCPU local APICs (call before
   * createVcpu). Their registers are then handled inside run(), and interrupts reach the vCPUs
   * without KVM_INTERRUPT; devices drive GSIs with {@link VmFd.irqLine}.
   */
  createIrqchip(): void {
    ioctl(this.fd, KVM_CREATE_IRQCHIP);
  }

  /** KVM_IRQ_LINE: drive GSI `gsi` (0–23: ISA IRQs 0–15, then I/O APIC pins 16–23). */
  irqLine(gsi: number, level: boolean): void {
    ioctl(this.fd, KVM_IRQ_LINE, { irq: gsi, level: level ? 1 : 0 });
  }

  /** KVM_GET_IRQCHIP: the state of the 8259A pair (chip 0 or 1) or the I/O APIC (chip 2). */
  getIrqchip(chipId: 0 | 1): PicState;
  getIrqchip(chipId: 2): IoApicState;
  getIrqchip(chipId: number): PicState | IoApicState {
    const c = { chipId, chip: undefined as unknown };
    ioctl(this.fd, KVM_GET_IRQCHIP, c);
    return c.chip as PicState | IoApicState;
  }

  /** KVM_SET_IRQCHIP. */
  setIrqchip(chipId: number, chip: PicState | IoApicState): void {
    ioctl(this.fd, KVM_SET_IRQCHIP, { chipId, chip });
  }

  /** KVM_CREATE_PIT2: an in-kernel 8254 at ports 0x40–0x43 with port 0x61, on GSI 0. Needs the irqchip. */
  createPit2(): void {
    ioctl(this.fd, KVM_CREATE_PIT2, { flags: 0 });
  }

  /** KVM_GET_PIT2. */
  getPit2(): { pit: PitState; port61: Port61State } {
    const p = { pit: undefined as unknown, port61: undefined as unknown };
    ioctl(this.fd, KVM_GET_PIT2, p);
    return p as { pit: PitState; port61: Port61State };
  }

  /** KVM_SET_PIT2. */
  setPit2(state: { pit: PitState; port61: Port61State }): void {
    ioctl(this.fd, KVM_SET_PIT2, state);
  }

  /**
   * KVM_IOEVENTFD: guest writes of `len` bytes to `addr` (a port when `pio`) call `notify` inside
   * run() instead of exiting; with `datamatch`, only writes of that value do.
   */
  registerIoevent(e: { addr: number; len: number; pio?: boolean; datamatch?: number; notify: () => void }): void {
    ioctl(this.fd, KVM_IOEVENTFD, ioeventArg(e, 0));
  }

  /** KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN. */
  unregisterIoevent(e: { addr: number; len: number; pio?: boolean; datamatch?: number; notify?: () => void }): void {
    ioctl(this.fd, KVM_IOEVENTFD, ioeventArg(e, KVM_IOEVENTFD_FLAG_DEASSIGN));
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

function ioeventArg(e: { addr: number; len: number; pio?: boolean; datamatch?: number; notify?: () => void }, flags: number) {
  if (e.pio) flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (e.datamatch !== undefined) flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
  return { addr: e.addr, len: e.len, flags, datamatch: e.datamatch ?? 0, ...(e.notify ? { notify: e.notify } : {}) };
}
