/**
 * Which pages to send: the slots of a VM, and a resumable queue over per-slot page bitmaps.
 * @module
 */
import { PAGE_SIZE, type VmFd } from '@kvmts/kvm-core';

/** A RAM slot as the sender sees it. */
export interface SlotRef {
  id: number;
  bytes: Uint8Array;
  pages: number;
}

/** The VM's memory slots, by id. */
export function vmSlots(vm: VmFd): SlotRef[] {
  return vm.memory
    .listSlots()
    .map((s) => ({ id: s.id, bytes: s.bytes, pages: s.size / PAGE_SIZE }))
    .sort((a, b) => a.id - b.id);
}

/** A bitmap with every page of a slot set. */
export function allPages(pages: number): Uint8Array {
  const b = new Uint8Array(Math.ceil(pages / 64) * 8);
  for (let p = 0; p < pages; p++) b[p >>> 3]! |= 1 << (p & 7);
  return b;
}

/** Number of set bits among the first `pages`. */
export function countPages(bitmap: Uint8Array, pages: number): number {
  let n = 0;
  for (let j = 0; j < bitmap.length && j * 8 < pages; j++) {
    let b = bitmap[j]!;
    while (b) {
      b &= b - 1;
      n++;
    }
  }
  return n;
}

/** `into |= from`. */
export function orBitmap(into: Uint8Array, from: Uint8Array): void {
  for (let i = 0; i < into.length && i < from.length; i++) into[i]! |= from[i]!;
}

/**
 * The pages left to send, slot by slot, as bitmaps that are consumed in page order; pages can
 * be added at any time (a page already passed is picked up on the next pass).
 */
export class PageQueue {
  private readonly maps: Map<number, Uint8Array>;
  private slotIndex = 0;
  private cursor = 0;
  /** Pages still queued. */
  remaining = 0;

  constructor(readonly slots: readonly SlotRef[]) {
    this.maps = new Map(slots.map((s) => [s.id, new Uint8Array(Math.ceil(s.pages / 64) * 8)]));
  }

  /** Queues the pages set in `bitmap` for slot `id` (minus `exclude`'s). */
  add(id: number, bitmap: Uint8Array, exclude?: Uint8Array): number {
    const m = this.maps.get(id);
    if (!m) return 0;
    const slot = this.slots.find((s) => s.id === id)!;
    let skipped = 0;
    for (let j = 0; j < m.length && j < bitmap.length; j++) {
      let add = bitmap[j]! & ~m[j]!;
      if (exclude && j < exclude.length) {
        const ex = add & exclude[j]!;
        let e = ex;
        while (e) {
          e &= e - 1;
          skipped++;
        }
        add &= ~ex;
      }
      // Bits past the end of the slot are never pages.
      if ((j + 1) * 8 > slot.pages) add &= (1 << Math.max(0, slot.pages - j * 8)) - 1;
      m[j]! |= add;
      let b = add;
      while (b) {
        b &= b - 1;
        this.remaining++;
      }
    }
    this.slotIndex = 0;
    this.cursor = 0;
    return skipped;
  }

  /** The next queued page (removing it), or null. */
  next(): { slot: SlotRef; page: number } | null {
    while (this.remaining > 0 && this.slotIndex < this.slots.length) {
      const slot = this.slots[this.slotIndex]!;
      const m = this.maps.get(slot.id)!;
      let p = this.cursor;
      while (p < slot.pages) {
        const byte = m[p >>> 3]!;
        if (byte === 0) {
          p = (p | 7) + 1;
          continue;
        }
        if (byte & (1 << (p & 7))) {
          m[p >>> 3] = byte & ~(1 << (p & 7));
          this.remaining--;
          this.cursor = p + 1;
          return { slot, page: p };
        }
        p++;
      }
      this.slotIndex++;
      this.cursor = 0;
    }
    return null;
  }
}
