/**
 * The split virtqueue (VirtIO 1.2, 2.7): a descriptor table, an available ring the driver
 * fills and a used ring the device fills, all in guest memory.
 *
 * The queue's configuration and progress are plain fields that the transport writes and
 * {@link Virtqueue.save} snapshots. Everything read from the rings is untrusted: a head or
 * next index past the table, an available index that runs more than a ring ahead, a chain
 * that loops or is too long, a buffer outside guest memory or a malformed indirect table puts
 * the queue into an error state ({@link Virtqueue.error}) and tells the transport
 * ({@link Virtqueue.onError}), which sets DEVICE_NEEDS_RESET. Nothing is thrown to the caller
 * and guest memory is only touched through {@link GuestMemory}, after a range check.
 * @module
 */

import type { GuestMemory } from '@kvmts/kvm-core';
import { DescriptorChain } from './chain.js';

/** Descriptor flag: the chain continues at `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is a table of further descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Available-ring flag: the driver does not want used-buffer interrupts (without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Used-ring flag: the device does not want available-buffer notifications (without EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Largest queue size this implementation accepts (the spec allows 32768). */
export const VIRTQUEUE_MAX_SIZE = 1024;
/** Most segments one chain may have, counting those in an indirect table. */
export const VIRTQUEUE_MAX_CHAIN = 1024;
/** Bytes per descriptor. */
export const VIRTQ_DESC_SIZE = 16;

/** What went wrong with a queue; each is the guest's fault. */
export type VirtqueueErrorKind =
  | 'InvalidSize'
  | 'RingOutsideMemory'
  | 'RingMisaligned'
  | 'AvailIndex'
  | 'HeadIndex'
  | 'NextIndex'
  | 'ChainTooLong'
  | 'ChainTooLarge'
  | 'BufferOutsideMemory'
  | 'DescriptorOrder'
  | 'IndirectNotNegotiated'
  | 'IndirectTable'
  | 'NestedIndirect'
  | 'UsedIndex'
  | 'MemoryFault'
  | 'DeviceError';

/** A queue stopped because the driver broke the ring protocol; `kind` says how. */
export class VirtqueueError extends Error {
  readonly kind: VirtqueueErrorKind;
  constructor(kind: VirtqueueErrorKind, message: string) {
    super(message);
    this.name = 'VirtqueueError';
    this.kind = kind;
  }
}

/** Plain, JSON-able snapshot of a {@link Virtqueue}. */
export interface VirtqueueState {
  version: 1;
  maxSize: number;
  size: number;
  ready: boolean;
  descTable: number;
  availRing: number;
  usedRing: number;
  nextAvail: number;
  nextUsed: number;
  eventIdx: boolean;
  indirectDesc: boolean;
  notificationsEnabled: boolean;
  /** The used index at the last interrupt decision under EVENT_IDX; null if none since reset. */
  signalledUsed: number | null;
  error: { kind: VirtqueueErrorKind; message: string } | null;
}

const hex = (v: number): string => `0x${v.toString(16)}`;
const isPow2 = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;
const isAddress = (v: number): boolean => Number.isSafeInteger(v) && v >= 0;

/** True when every byte of `[gpa, gpa+len)` is backed by a memory slot (possibly several). */
export function isGuestRange(memory: GuestMemory, gpa: number, len: number): boolean {
  if (!isAddress(gpa) || !isAddress(len)) return false;
  let addr = gpa;
  let left = len;
  while (left > 0) {
    const slot = memory.findSlot(addr);
    if (slot === undefined) return false;
    const n = Math.min(left, slot.guestPhysAddr + slot.size - addr);
    addr += n;
    left -= n;
  }
  return true;
}

/** Byte sizes of the three parts of a split queue of `size` entries (2.7: with the event fields). */
export function splitQueueSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: VIRTQ_DESC_SIZE * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

/**
 * One split virtqueue, device side. The transport sets {@link size}, the three addresses and
 * {@link ready}, then {@link activate}s it; the device pops chains, completes them with
 * {@link addUsed} and asks {@link needsNotification} before interrupting.
 */
export class Virtqueue {
  /** Largest size the device offers (QueueNumMax / queue_size on reset). */
  readonly maxSize: number;
  size: number;
  ready = false;
  /** Guest-physical address of the descriptor table. */
  descTable = 0;
  /** Guest-physical address of the available (driver) ring. */
  availRing = 0;
  /** Guest-physical address of the used (device) ring. */
  usedRing = 0;
  /** Free-running 16-bit index of the next available entry to consume. */
  nextAvail = 0;
  /** Free-running 16-bit index of the next used entry to fill. */
  nextUsed = 0;
  /** VIRTIO_F_RING_EVENT_IDX was negotiated. */
  eventIdx = false;
  /** VIRTIO_F_RING_INDIRECT_DESC was negotiated. */
  indirectDesc = false;
  /** The first protocol violation seen since the last reset, or null. */
  error: VirtqueueError | null = null;
  /** Told once when the queue enters the error state (the transport sets DEVICE_NEEDS_RESET). */
  onError: ((error: VirtqueueError) => void) | undefined;

  private memory: GuestMemory | null = null;
  private notificationsEnabled = true;
  private signalledUsed: number | null = null;
  // Reused while walking a chain: one descriptor, and the segments found so far.
  private readonly descBytes = new Uint8Array(VIRTQ_DESC_SIZE);
  private readonly desc = new DataView(this.descBytes.buffer);
  private readonly usedElem = new Uint8Array(8);
  private readonly usedElemView = new DataView(this.usedElem.buffer);
  private readonly segAddr = new Float64Array(VIRTQUEUE_MAX_CHAIN);
  private readonly segLen = new Uint32Array(VIRTQUEUE_MAX_CHAIN);

  constructor(maxSize: number) {
    if (!Number.isInteger(maxSize) || !isPow2(maxSize) || maxSize > VIRTQUEUE_MAX_SIZE) {
      throw new RangeError(`virtqueue max size ${String(maxSize)} is not a power of two up to ${VIRTQUEUE_MAX_SIZE}`);
    }
    this.maxSize = maxSize;
    this.size = maxSize;
  }

  /** Ready, activated and not in error: the device may use it. */
  get usable(): boolean {
    return this.ready && this.memory !== null && this.error === null;
  }

  /**
   * Check the configuration against guest memory and start using it. Returns false (and
   * enters the error state) if the size is not a power of two up to {@link maxSize} or a ring
   * is misaligned or not entirely inside guest memory. A queue that is not ready is skipped.
   */
  activate(memory: GuestMemory): boolean {
    if (!this.ready) return true;
    const { size } = this;
    if (!Number.isInteger(size) || !isPow2(size) || size > this.maxSize) {
      return this.fail('InvalidSize', `queue size ${String(size)} is not a power of two up to ${this.maxSize}`);
    }
    const sizes = splitQueueSizes(size);
    const parts: [string, number, number, number][] = [
      ['descriptor table', this.descTable, sizes.desc, 16],
      ['available ring', this.availRing, sizes.avail, 2],
      ['used ring', this.usedRing, sizes.used, 4],
    ];
    for (const [name, addr, len, align] of parts) {
      if (!isGuestRange(memory, addr, len)) return this.fail('RingOutsideMemory', `${name} ${hex(addr)}+${hex(len)} is outside guest memory`);
      if (addr % align !== 0) return this.fail('RingMisaligned', `${name} at ${hex(addr)} is not ${align}-byte aligned`);
    }
    this.memory = memory;
    if (this.eventIdx && this.notificationsEnabled) this.guard(() => this.writeAvailEvent());
    return this.error === null;
  }

  /** Back to the reset state: not ready, default size, no addresses, no progress, no error. */
  reset(): void {
    this.size = this.maxSize;
    this.ready = false;
    this.descTable = this.availRing = this.usedRing = 0;
    this.nextAvail = this.nextUsed = 0;
    this.eventIdx = this.indirectDesc = false;
    this.error = null;
    this.memory = null;
    this.notificationsEnabled = true;
    this.signalledUsed = null;
  }

  /** Put the queue into the error state (first error wins) and tell {@link onError}. Returns false. */
  fail(kind: VirtqueueErrorKind, message: string): false {
    if (this.error === null) {
      this.error = new VirtqueueError(kind, message);
      this.onError?.(this.error);
    }
    return false;
  }

  /** Number of chains the driver has made available that the device has not popped. */
  availableCount(): number {
    if (!this.usable) return 0;
    return this.guard(() => this.pending()) ?? 0;
  }

  /** Whether {@link pop} would return a chain. */
  hasAvailable(): boolean {
    return this.availableCount() > 0;
  }

  /** Take the next available chain, or null when there is none or the queue is (now) in error. */
  pop(): DescriptorChain | null {
    if (!this.usable) return null;
    return this.guard(() => {
      const memory = this.memory!;
      if (this.pending() === 0) return null;
      if (this.error !== null) return null;
      const head = memory.readU16(this.availRing + 4 + 2 * (this.nextAvail & (this.size - 1)));
      const chain = this.walk(memory, head);
      if (chain === null) return null;
      this.nextAvail = (this.nextAvail + 1) & 0xffff;
      if (this.eventIdx && this.notificationsEnabled) this.writeAvailEvent();
      return chain;
    }) ?? null;
  }

  /**
   * Re-read the chain starting at descriptor `head` without consuming anything: for a device
   * restoring requests that were in flight when its state was saved.
   */
  chainAt(head: number): DescriptorChain | null {
    if (!this.usable) return null;
    return this.guard(() => this.walk(this.memory!, head)) ?? null;
  }

  /** Return chain `head` to the driver with `len` bytes written. False if the queue is unusable. */
  addUsed(head: number, len: number): boolean {
    if (!this.usable) return false;
    if (!Number.isInteger(head) || head < 0 || head >= this.size) return this.fail('UsedIndex', `device returned head ${String(head)} outside a queue of ${this.size}`);
    return this.guard(() => {
      const memory = this.memory!;
      const v = this.usedElemView;
      v.setUint32(0, head, true);
      v.setUint32(4, len >>> 0, true);
      memory.write(this.usedRing + 4 + 8 * (this.nextUsed & (this.size - 1)), this.usedElem);
      this.nextUsed = (this.nextUsed + 1) & 0xffff;
      memory.writeU16(this.usedRing + 2, this.nextUsed);
      return true;
    }) ?? false;
  }

  /**
   * Whether the driver wants an interrupt for the used entries added since the last call
   * (2.7.10): with EVENT_IDX, when used_event was passed; without it, unless the available
   * ring's NO_INTERRUPT flag is set.
   */
  needsNotification(): boolean {
    if (!this.usable) return false;
    return this.guard(() => {
      const memory = this.memory!;
      if (!this.eventIdx) return (memory.readU16(this.availRing) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
      const usedEvent = memory.readU16(this.availRing + 4 + 2 * this.size);
      const old = this.signalledUsed;
      const now = this.nextUsed;
      this.signalledUsed = now;
      if (old === null) return true;
      // Interrupt if used_event lies in (old, now]: the driver asked to hear about that entry.
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }) ?? false;
  }

  /**
   * Ask the driver for available-buffer notifications again (avail_event under EVENT_IDX,
   * else clear NO_NOTIFY). Returns whether chains arrived meanwhile, so the device can loop
   * instead of missing them.
   */
  enableNotification(): boolean {
    this.notificationsEnabled = true;
    if (!this.usable) return false;
    return this.guard(() => {
      const memory = this.memory!;
      if (this.eventIdx) this.writeAvailEvent();
      else memory.writeU16(this.usedRing, memory.readU16(this.usedRing) & ~VIRTQ_USED_F_NO_NOTIFY);
      return this.pending() > 0;
    }) ?? false;
  }

  /** Tell the driver notifications are not needed while the device is busy with the queue. */
  disableNotification(): void {
    this.notificationsEnabled = false;
    if (!this.usable) return;
    // Under EVENT_IDX the used flags must stay 0; simply not advancing avail_event suppresses kicks.
    if (this.eventIdx) return;
    this.guard(() => {
      const memory = this.memory!;
      memory.writeU16(this.usedRing, memory.readU16(this.usedRing) | VIRTQ_USED_F_NO_NOTIFY);
    });
  }

  save(): VirtqueueState {
    return {
      version: 1,
      maxSize: this.maxSize,
      size: this.size,
      ready: this.ready,
      descTable: this.descTable,
      availRing: this.availRing,
      usedRing: this.usedRing,
      nextAvail: this.nextAvail,
      nextUsed: this.nextUsed,
      eventIdx: this.eventIdx,
      indirectDesc: this.indirectDesc,
      notificationsEnabled: this.notificationsEnabled,
      signalledUsed: this.signalledUsed,
      error: this.error && { kind: this.error.kind, message: this.error.message },
    };
  }

  /**
   * Load a snapshot from {@link save}; throws RangeError if it is malformed or for a queue of a
   * different max size. The queue is left inactive: the transport re-{@link activate}s it.
   */
  restore(state: VirtqueueState): void {
    const bad = (what: string): never => {
      throw new RangeError(`virtqueue state: ${what}`);
    };
    if (state.version !== 1) bad(`unknown version ${String(state.version)}`);
    if (state.maxSize !== this.maxSize) bad(`max size ${String(state.maxSize)} does not match this queue's ${this.maxSize}`);
    const u16 = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffff;
    if (!u16(state.size) || !u16(state.nextAvail) || !u16(state.nextUsed)) bad('size and indices must be 16-bit integers');
    if (![state.descTable, state.availRing, state.usedRing].every(isAddress)) bad('ring addresses must be non-negative integers');
    if (state.signalledUsed !== null && !u16(state.signalledUsed)) bad('signalledUsed must be null or a 16-bit integer');
    this.reset();
    this.size = state.size;
    this.ready = Boolean(state.ready);
    this.descTable = state.descTable;
    this.availRing = state.availRing;
    this.usedRing = state.usedRing;
    this.nextAvail = state.nextAvail;
    this.nextUsed = state.nextUsed;
    this.eventIdx = Boolean(state.eventIdx);
    this.indirectDesc = Boolean(state.indirectDesc);
    this.notificationsEnabled = Boolean(state.notificationsEnabled);
    this.signalledUsed = state.signalledUsed;
    // No onError call: the transport restores its own NEEDS_RESET status.
    this.error = state.error && new VirtqueueError(state.error.kind, state.error.message);
  }

  // Chains the driver has published beyond nextAvail; more than a ring's worth is a lie.
  private pending(): number {
    const availIdx = this.memory!.readU16(this.availRing + 2);
    const n = (availIdx - this.nextAvail) & 0xffff;
    if (n > this.size) {
      this.fail('AvailIndex', `available index ${availIdx} is ${n} entries ahead of ${this.nextAvail} in a queue of ${this.size}`);
      return 0;
    }
    return n;
  }

  private writeAvailEvent(): void {
    this.memory!.writeU16(this.usedRing + 4 + 8 * this.size, this.nextAvail);
  }

  // Any fault reaching guest memory (a slot removed under the queue) becomes a queue error.
  private guard<T>(op: () => T): T | undefined {
    try {
      return op();
    } catch (e) {
      this.fail('MemoryFault', `guest memory access failed: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
  }

  private walk(memory: GuestMemory, head: number): DescriptorChain | null {
    if (head >= this.size) {
      this.fail('HeadIndex', `available ring entry ${this.nextAvail} names descriptor ${head} in a table of ${this.size}`);
      return null;
    }
    const d = this.desc;
    let table = this.descTable;
    let tableLen = this.size;
    let index = head;
    let steps = 0; // descriptors visited in the current table: a loop cannot outrun this
    let indirect = false;
    let count = 0;
    let readable = 0;
    let total = 0;
    for (;;) {
      if (++steps > tableLen) {
        this.fail('ChainTooLong', `chain at head ${head} visits more than the ${tableLen} descriptors of its table (a loop?)`);
        return null;
      }
      memory.read(table + VIRTQ_DESC_SIZE * index, this.descBytes);
      const addrLow = d.getUint32(0, true);
      const addrHigh = d.getUint32(4, true);
      const len = d.getUint32(8, true);
      const flags = d.getUint16(12, true);
      const next = d.getUint16(14, true);
      const addr = addrHigh * 2 ** 32 + addrLow;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirectDesc) return this.failNull('IndirectNotNegotiated', `descriptor ${index} is indirect but VIRTIO_F_RING_INDIRECT_DESC was not negotiated`);
        if (indirect) return this.failNull('NestedIndirect', `indirect table of chain ${head} contains another indirect descriptor`);
        if (flags & VIRTQ_DESC_F_NEXT) return this.failNull('IndirectTable', `indirect descriptor ${index} also has NEXT set`);
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0 || len / VIRTQ_DESC_SIZE > VIRTQUEUE_MAX_CHAIN) {
          return this.failNull('IndirectTable', `indirect table length ${len} is not a non-zero multiple of 16 up to ${VIRTQUEUE_MAX_CHAIN} entries`);
        }
        if (!isGuestRange(memory, addr, len)) return this.failNull('BufferOutsideMemory', `indirect table ${hex(addr)}+${hex(len)} is outside guest memory`);
        table = addr;
        tableLen = len / VIRTQ_DESC_SIZE;
        index = 0;
        steps = 0;
        indirect = true;
        continue;
      }
      if (flags & VIRTQ_DESC_F_WRITE) {
        // (writable segments are counted from `readable` on)
      } else if (count > readable) {
        return this.failNull('DescriptorOrder', `chain at head ${head} has a device-readable buffer after a device-writable one`);
      } else {
        readable++;
      }
      if (count >= VIRTQUEUE_MAX_CHAIN) return this.failNull('ChainTooLong', `chain at head ${head} has more than ${VIRTQUEUE_MAX_CHAIN} buffers`);
      if (len > 0 && !isGuestRange(memory, addr, len)) return this.failNull('BufferOutsideMemory', `buffer ${hex(addr)}+${hex(len)} of chain ${head} is outside guest memory`);
      total += len;
      if (total > 0xffffffff) return this.failNull('ChainTooLarge', `chain at head ${head} describes more than 4 GiB`);
      this.segAddr[count] = addr;
      this.segLen[count] = len;
      count++;
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableLen) return this.failNull('NextIndex', `descriptor ${index} of chain ${head} links to ${next}, past the ${tableLen}-entry table`);
      index = next;
    }
    return new DescriptorChain(head, this.segAddr.slice(0, count), this.segLen.slice(0, count), readable);
  }

  private failNull(kind: VirtqueueErrorKind, message: string): null {
    this.fail(kind, message);
    return null;
  }
}
