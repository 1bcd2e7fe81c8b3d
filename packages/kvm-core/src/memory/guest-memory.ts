import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_USER_MEM_SLOTS, PAGE_SHIFT, PAGE_SIZE } from '../kvm-bindings.js';
import { KvmError } from '../error.js';
import type { KvmUserspaceMemoryRegion } from '../kvm-types.js';

/**
 * Memory slots lie below 4 GiB. PAE guests can address up to 2^36, but nothing backs that: their
 * accesses there are KVM_EXIT_MMIO like any other unbacked address.
 */
export const GUEST_PHYS_LIMIT = 0x1_0000_0000;

/** One memory slot: host bytes mapped at a guest-physical address. */
export interface MemorySlot {
  readonly id: number;
  readonly flags: number;
  readonly guestPhysAddr: number;
  readonly size: number;
  /** The host memory behind the slot (a view of the caller's buffer: no copy). */
  readonly bytes: Uint8Array;
  /** One bit per page written since the last read of the log; null when logging is off. */
  readonly dirty: Uint8Array | null;
}

function bitmapBytes(size: number): number {
  // Linux sizes the bitmap in whole 64-bit words.
  return Math.ceil(size / PAGE_SIZE / 64) * 8;
}

function backingView(addr: KvmUserspaceMemoryRegion['userspaceAddr'], size: number, slot: number): Uint8Array {
  let view: Uint8Array;
  if (addr instanceof Uint8Array) view = addr;
  else if (addr instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && addr instanceof SharedArrayBuffer)) view = new Uint8Array(addr);
  else throw new KvmError('EFAULT', `slot ${slot}: userspaceAddr must be an ArrayBuffer, SharedArrayBuffer or Uint8Array`);
  if (view.byteOffset % PAGE_SIZE !== 0) throw new KvmError('EINVAL', `slot ${slot}: userspaceAddr is not page-aligned (byteOffset ${view.byteOffset})`);
  if (view.byteLength < size) {
    throw new KvmError('EFAULT', `slot ${slot}: memorySize 0x${size.toString(16)} exceeds the ${view.byteLength}-byte backing buffer`);
  }
  return view.subarray(0, size);
}

/**
 * The guest's physical memory: the set of memory slots, their dirty bitmaps, and the accessors
 * that devices use. Every host-side write goes through {@link GuestMemory.write} and friends,
 * which mark the pages dirty exactly as guest writes do (like rust-vmm's vm-memory bitmap),
 * so DMA by a device is never missed by migration.
 */
export class GuestMemory {
  private readonly slots: (MemorySlot | undefined)[] = new Array<MemorySlot | undefined>(KVM_USER_MEM_SLOTS).fill(undefined);
  /** Slots in use, for lookups. */
  private active: MemorySlot[] = [];
  /**
   * Bumped whenever a vCPU's cached translations may be stale: a mapping changed, or a dirty
   * log was read (pages must be write-tracked again). vCPUs compare it on every `run()`.
   */
  epoch = 0;
  /** Told about every host-side write (vCPUs drop compiled code the write changes). */
  readonly writeListeners: ((slot: MemorySlot, offset: number, len: number) => void)[] = [];

  /** KVM_SET_USER_MEMORY_REGION. */
  setRegion(region: KvmUserspaceMemoryRegion): void {
    const { slot, flags, guestPhysAddr: gpa, memorySize: size } = region;
    if (!Number.isInteger(slot) || slot < 0 || slot >= KVM_USER_MEM_SLOTS) {
      throw new KvmError('EINVAL', `slot ${slot} is out of range (0..${KVM_USER_MEM_SLOTS - 1})`);
    }
    if (!Number.isInteger(flags) || (flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY)) !== 0) {
      throw new KvmError('EINVAL', `slot ${slot}: unknown flags 0x${flags.toString(16)}`);
    }
    if (!Number.isInteger(gpa) || !Number.isInteger(size) || gpa < 0 || size < 0) {
      throw new KvmError('EINVAL', `slot ${slot}: guestPhysAddr and memorySize must be non-negative integers`);
    }
    if (gpa % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0) {
      throw new KvmError('EINVAL', `slot ${slot}: guestPhysAddr 0x${gpa.toString(16)} and memorySize 0x${size.toString(16)} must be multiples of ${PAGE_SIZE}`);
    }
    const old = this.slots[slot];
    if (size === 0) {
      if (!old) throw new KvmError('EINVAL', `slot ${slot} does not exist, so it cannot be deleted`);
      this.slots[slot] = undefined;
      this.changed();
      return;
    }
    if (gpa + size > GUEST_PHYS_LIMIT) {
      throw new KvmError('EINVAL', `slot ${slot}: 0x${gpa.toString(16)}+0x${size.toString(16)} ends beyond the 4 GiB physical address space`);
    }
    const bytes = backingView(region.userspaceAddr, size, slot);
    if (old) {
      if (old.size !== size) throw new KvmError('EINVAL', `slot ${slot} exists with size 0x${old.size.toString(16)}; delete it before resizing`);
      if ((old.flags ^ flags) & KVM_MEM_READONLY) throw new KvmError('EINVAL', `slot ${slot}: KVM_MEM_READONLY cannot be changed on an existing slot`);
      if (old.bytes.buffer !== bytes.buffer || old.bytes.byteOffset !== bytes.byteOffset) {
        throw new KvmError('EINVAL', `slot ${slot}: the backing memory of an existing slot cannot be changed`);
      }
    }
    for (const other of this.active) {
      if (other.id !== slot && gpa < other.guestPhysAddr + other.size && other.guestPhysAddr < gpa + size) {
        throw new KvmError('EEXIST', `slot ${slot} [0x${gpa.toString(16)}, 0x${(gpa + size).toString(16)}) overlaps slot ${other.id} [0x${other.guestPhysAddr.toString(16)}, 0x${(other.guestPhysAddr + other.size).toString(16)})`);
      }
    }
    const logging = (flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
    // Turning logging on starts from a clean bitmap; keeping it on keeps what was logged.
    const dirty = logging ? (old?.dirty ?? new Uint8Array(bitmapBytes(size))) : null;
    this.slots[slot] = { id: slot, flags, guestPhysAddr: gpa, size, bytes, dirty };
    this.changed();
  }

  private changed(): void {
    this.active = this.slots.filter((s): s is MemorySlot => s !== undefined);
    this.epoch++;
  }

  /** The slot with this id, if any. */
  getSlot(id: number): MemorySlot | undefined {
    return this.slots[id];
  }

  /** The slots in use. */
  listSlots(): readonly MemorySlot[] {
    return this.active;
  }

  /** The slot that backs guest-physical address `gpa`, if any. */
  findSlot(gpa: number): MemorySlot | undefined {
    const a = this.active;
    for (let i = 0; i < a.length; i++) {
      const s = a[i]!;
      if (gpa >= s.guestPhysAddr && gpa < s.guestPhysAddr + s.size) return s;
    }
    return undefined;
  }

  /** Marks the pages of `[offset, offset+len)` inside `slot` dirty (no-op when logging is off). */
  markDirty(slot: MemorySlot, offset: number, len: number): void {
    const bm = slot.dirty;
    if (bm === null || len <= 0) return;
    const last = (offset + len - 1) >>> PAGE_SHIFT;
    for (let p = offset >>> PAGE_SHIFT; p <= last; p++) bm[p >>> 3]! |= 1 << (p & 7);
  }

  /** KVM_GET_DIRTY_LOG: copies the slot's bitmap into `out` and clears it. */
  getDirtyLog(slotId: number, out: Uint8Array): void {
    const slot = this.loggedSlot(slotId);
    const bm = slot.dirty!;
    if (out.length < bm.length) throw new KvmError('EFAULT', `slot ${slotId}: dirty bitmap needs ${bm.length} bytes, got ${out.length}`);
    out.set(bm);
    bm.fill(0);
    this.epoch++;
  }

  /** KVM_CLEAR_DIRTY_LOG: clears the bits set in `mask` for pages `[firstPage, firstPage+numPages)`. */
  clearDirtyLog(slotId: number, firstPage: number, numPages: number, mask: Uint8Array): void {
    const slot = this.loggedSlot(slotId);
    const pages = slot.size / PAGE_SIZE;
    if (firstPage % 64 !== 0 || firstPage < 0 || numPages < 0 || firstPage + numPages > pages) {
      throw new KvmError('EINVAL', `slot ${slotId}: firstPage ${firstPage} / numPages ${numPages} out of range (slot has ${pages} pages; firstPage must be a multiple of 64)`);
    }
    if (mask.length * 8 < numPages) throw new KvmError('EFAULT', `slot ${slotId}: bitmap of ${mask.length} bytes is too short for ${numPages} pages`);
    const bm = slot.dirty!;
    for (let i = 0; i < numPages; i++) {
      if (mask[i >>> 3]! & (1 << (i & 7))) {
        const p = firstPage + i;
        bm[p >>> 3]! &= ~(1 << (p & 7));
      }
    }
    this.epoch++;
  }

  private loggedSlot(slotId: number): MemorySlot {
    const slot = this.slots[slotId];
    if (!slot) throw new KvmError('ENOENT', `slot ${slotId} does not exist`);
    if (!slot.dirty) throw new KvmError('ENOENT', `slot ${slotId} does not have KVM_MEM_LOG_DIRTY_PAGES set`);
    return slot;
  }

  // Host-side accessors. They may span slots, but every byte must be backed.

  /** Copies guest memory at `gpa` into `dst`. */
  read(gpa: number, dst: Uint8Array): void {
    let done = 0;
    while (done < dst.length) {
      const { slot, off, n } = this.span(gpa + done, dst.length - done);
      dst.set(slot.bytes.subarray(off, off + n), done);
      done += n;
    }
  }

  /** Copies `src` into guest memory at `gpa`, marking the pages dirty. */
  write(gpa: number, src: Uint8Array): void {
    let done = 0;
    while (done < src.length) {
      const { slot, off, n } = this.span(gpa + done, src.length - done);
      slot.bytes.set(src.subarray(done, done + n), off);
      this.markDirty(slot, off, n);
      for (const l of this.writeListeners) l(slot, off, n);
      done += n;
    }
  }

  private span(gpa: number, want: number): { slot: MemorySlot; off: number; n: number } {
    const slot = this.findSlot(gpa);
    if (!slot) throw new KvmError('EFAULT', `guest-physical address 0x${gpa.toString(16)} is not backed by any memory slot`);
    const off = gpa - slot.guestPhysAddr;
    return { slot, off, n: Math.min(want, slot.size - off) };
  }

  private readonly scratch = new Uint8Array(4);
  readU8(gpa: number): number { this.read(gpa, this.scratch.subarray(0, 1)); return this.scratch[0]!; }
  readU16(gpa: number): number { const b = this.scratch; this.read(gpa, b.subarray(0, 2)); return b[0]! | (b[1]! << 8); }
  readU32(gpa: number): number { const b = this.scratch; this.read(gpa, b); return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0; }
  writeU8(gpa: number, v: number): void { const b = this.scratch; b[0] = v; this.write(gpa, b.subarray(0, 1)); }
  writeU16(gpa: number, v: number): void { const b = this.scratch; b[0] = v; b[1] = v >>> 8; this.write(gpa, b.subarray(0, 2)); }
  writeU32(gpa: number, v: number): void { const b = this.scratch; b[0] = v; b[1] = v >>> 8; b[2] = v >>> 16; b[3] = v >>> 24; this.write(gpa, b); }
}
