/**
 * A descriptor chain popped from a virtqueue: the buffers of one request, already checked to
 * lie inside guest memory, device-readable ones first (VirtIO 1.2, 2.7.4.2: the driver places
 * device-writable descriptors after the readable ones).
 * @module
 */

import type { GuestMemory } from '@kvmts/kvm-core';

/**
 * One request's scatter-gather list. Segment `i` is `lengths[i]` bytes at guest-physical
 * `addresses[i]`; segments `0..readableCount-1` are for the device to read, the rest for it to
 * write. The copy helpers treat each side as one contiguous byte stream.
 */
export class DescriptorChain {
  /** Head descriptor index: what {@link Virtqueue.addUsed} returns to the driver. */
  readonly head: number;
  readonly addresses: Float64Array;
  readonly lengths: Uint32Array;
  /** How many leading segments are device-readable. */
  readonly readableCount: number;
  /** Total bytes the device may read. */
  readonly readableLength: number;
  /** Total bytes the device may write. */
  readonly writableLength: number;

  constructor(head: number, addresses: Float64Array, lengths: Uint32Array, readableCount: number) {
    this.head = head;
    this.addresses = addresses;
    this.lengths = lengths;
    this.readableCount = readableCount;
    let readable = 0;
    let writable = 0;
    for (let i = 0; i < lengths.length; i++) {
      if (i < readableCount) readable += lengths[i]!;
      else writable += lengths[i]!;
    }
    this.readableLength = readable;
    this.writableLength = writable;
  }

  /** Number of segments. */
  get segmentCount(): number {
    return this.lengths.length;
  }

  /**
   * Copy device-readable bytes, starting `offset` bytes into the readable stream, into `dst`.
   * Returns how many bytes were copied (less than `dst.length` when the stream ends first).
   */
  read(memory: GuestMemory, offset: number, dst: Uint8Array): number {
    return this.copy(memory, 0, this.readableCount, offset, dst, false);
  }

  /**
   * Copy `src` into the device-writable bytes, starting `offset` bytes into the writable
   * stream. Returns how many bytes were written (less than `src.length` if the buffers end).
   */
  write(memory: GuestMemory, offset: number, src: Uint8Array): number {
    return this.copy(memory, this.readableCount, this.lengths.length, offset, src, true);
  }

  private copy(memory: GuestMemory, first: number, end: number, offset: number, buf: Uint8Array, toGuest: boolean): number {
    let skip = offset;
    let done = 0;
    for (let i = first; i < end && done < buf.length; i++) {
      const len = this.lengths[i]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, buf.length - done);
      const gpa = this.addresses[i]! + skip;
      const part = buf.subarray(done, done + n);
      if (toGuest) memory.write(gpa, part);
      else memory.read(gpa, part);
      done += n;
      skip = 0;
    }
    return done;
  }
}
