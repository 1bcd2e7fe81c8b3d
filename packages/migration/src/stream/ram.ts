/**
 * RAM sections: {@link RamEncoder} turns pages into records (zero runs, raw runs, XBZRLE
 * deltas, optionally deflated runs) packed into sections of bounded size; {@link applyRamSection}
 * validates a section and writes its pages into the destination's slots.
 * @module
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { MigrationError } from '../errors.js';
import { PAGE_SIZE, PageKind, RECORD_HEADER, type Frame } from './format.js';
import { xbzrleDecode, xbzrleEncode } from './xbzrle.js';

/** How pages were encoded; the sum of `pages*` is the pages sent. */
export interface RamStats {
  zeroPages: number;
  rawPages: number;
  xbzrlePages: number;
  deflatePages: number;
  /** Pages skipped because a balloon released them. */
  skippedPages: number;
  /** Bytes of RAM payload (record headers included). */
  payloadBytes: number;
}

export function emptyRamStats(): RamStats {
  return { zeroPages: 0, rawPages: 0, xbzrlePages: 0, deflatePages: 0, skippedPages: 0, payloadBytes: 0 };
}

/** Options of {@link RamEncoder}. */
export interface RamEncoderOptions {
  /** Target payload size of one RAM section (default 1 MiB). */
  sectionBytes?: number;
  /** Delta-encode re-sent pages against the copy sent before (default true). */
  xbzrle?: boolean;
  /** Bytes of previously sent page copies kept for XBZRLE (default 64 MiB); least recently sent go first. */
  xbzrleCacheBytes?: number;
  /** Deflate raw runs at level 1 when that saves at least 1/8 (default false; see the README's measurements). */
  deflate?: boolean;
}

function isZeroPage(bytes: Uint8Array, off: number): boolean {
  if ((bytes.byteOffset + off) % 4 === 0) {
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset + off, PAGE_SIZE >>> 2);
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < PAGE_SIZE; i++) if (bytes[off + i] !== 0) return false;
  return true;
}

/**
 * Encodes pages into RAM section payloads. Call {@link page} for each page to send, in any
 * order; whenever {@link full} is true (and at the end), {@link take} the payload.
 */
export class RamEncoder {
  readonly stats = emptyRamStats();
  private readonly sectionBytes: number;
  private readonly xbzrle: boolean;
  private readonly cacheLimit: number;
  private readonly deflate: boolean;
  /** slot*2^32 + page → the copy last sent; insertion order is recency. */
  private readonly cache = new Map<number, Uint8Array>();
  private buf: Uint8Array;
  private dv: DataView;
  private len = 0;
  /** The open run record: its header offset, kind, slot and next page, or -1. */
  private runAt = -1;
  private runKind = -1;
  private runSlot = -1;
  private runNext = -1;
  private readonly scratch = new Uint8Array(PAGE_SIZE);

  constructor(options: RamEncoderOptions = {}) {
    this.sectionBytes = options.sectionBytes ?? 1 << 20;
    this.xbzrle = options.xbzrle ?? true;
    this.cacheLimit = this.xbzrle ? Math.floor((options.xbzrleCacheBytes ?? 64 << 20) / PAGE_SIZE) : 0;
    this.deflate = options.deflate ?? false;
    this.buf = new Uint8Array(this.sectionBytes + PAGE_SIZE + 64);
    this.dv = new DataView(this.buf.buffer);
  }

  /** Bytes in the open section. */
  get size(): number {
    return this.len;
  }

  /** Whether the open section reached its target size. */
  get full(): boolean {
    return this.len >= this.sectionBytes;
  }

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    const n = new Uint8Array(Math.max(this.buf.length * 2, this.len + extra));
    n.set(this.buf.subarray(0, this.len));
    this.buf = n;
    this.dv = new DataView(n.buffer);
  }

  private header(kind: number, slot: number, page: number, count: number): number {
    this.ensure(RECORD_HEADER);
    const at = this.len;
    this.buf[at] = kind;
    this.buf[at + 1] = slot;
    this.dv.setUint32(at + 2, page);
    this.dv.setUint32(at + 6, count);
    this.len += RECORD_HEADER;
    return at;
  }

  /** Counts a page a balloon released (nothing is sent). */
  skip(count = 1): void {
    this.stats.skippedPages += count;
  }

  /** Encodes page `page` of slot `slot`, whose bytes are `bytes` (the whole slot). */
  page(slot: number, bytes: Uint8Array, page: number): void {
    const off = page * PAGE_SIZE;
    const key = slot * 0x1_0000_0000 + page;
    if (isZeroPage(bytes, off)) {
      this.cache.delete(key);
      this.stats.zeroPages++;
      this.extendRun(PageKind.Zero, slot, page, null);
      return;
    }
    const cur = bytes.subarray(off, off + PAGE_SIZE);
    const prev = this.cacheLimit > 0 ? this.cache.get(key) : undefined;
    if (prev) {
      // Worth it only if the delta is clearly smaller than the page.
      const n = xbzrleEncode(prev, cur, this.scratch, PAGE_SIZE - PAGE_SIZE / 8);
      if (n >= 0) {
        this.closeRun();
        this.header(PageKind.Xbzrle, slot, page, 1);
        this.ensure(4 + n);
        this.dv.setUint32(this.len, n);
        this.buf.set(this.scratch.subarray(0, n), this.len + 4);
        this.len += 4 + n;
        this.stats.xbzrlePages++;
        this.remember(key, cur, prev);
        return;
      }
    }
    this.stats.rawPages++;
    this.extendRun(PageKind.Raw, slot, page, cur);
    if (this.cacheLimit > 0) this.remember(key, cur, prev);
  }

  private remember(key: number, cur: Uint8Array, prev: Uint8Array | undefined): void {
    let copy = prev;
    if (copy) this.cache.delete(key);
    else if (this.cache.size >= this.cacheLimit) {
      const oldest = this.cache.keys().next().value as number;
      copy = this.cache.get(oldest);
      this.cache.delete(oldest);
    }
    copy ??= new Uint8Array(PAGE_SIZE);
    copy.set(cur);
    this.cache.set(key, copy);
  }

  private extendRun(kind: number, slot: number, page: number, data: Uint8Array | null): void {
    if (!(this.runAt >= 0 && this.runKind === kind && this.runSlot === slot && this.runNext === page && !this.full)) {
      this.closeRun();
      this.runAt = this.header(kind, slot, page, 0);
      this.runKind = kind;
      this.runSlot = slot;
    }
    this.runNext = page + 1;
    this.dv.setUint32(this.runAt + 6, this.dv.getUint32(this.runAt + 6) + 1);
    if (data) {
      this.ensure(PAGE_SIZE);
      this.buf.set(data, this.len);
      this.len += PAGE_SIZE;
    }
  }

  private closeRun(): void {
    if (this.runAt < 0) return;
    if (this.deflate && this.runKind === PageKind.Raw) {
      const dataAt = this.runAt + RECORD_HEADER;
      const raw = this.buf.subarray(dataAt, this.len);
      const z = deflateRawSync(raw, { level: 1 });
      if (z.length + 4 <= raw.length - raw.length / 8) {
        const count = this.dv.getUint32(this.runAt + 6);
        this.buf[this.runAt] = PageKind.Deflate;
        this.dv.setUint32(dataAt, z.length);
        this.buf.set(z, dataAt + 4);
        this.len = dataAt + 4 + z.length;
        this.stats.rawPages -= count;
        this.stats.deflatePages += count;
      }
    }
    this.runAt = -1;
    this.runKind = -1;
  }

  /** The open section's payload (null if empty); starts a new one. */
  take(): Uint8Array | null {
    this.closeRun();
    if (this.len === 0) return null;
    const out = this.buf.slice(0, this.len);
    this.stats.payloadBytes += this.len;
    this.len = 0;
    return out;
  }
}

/** The destination's view of a slot: where its pages go. */
export interface RamTarget {
  /** The slot's bytes (written directly: the destination VM is not running). */
  bytes: Uint8Array;
}

/**
 * Validates a RAM section and writes its pages into `slots` (slot id → bytes). Throws a
 * MigrationError naming the record for anything malformed; pages of records before the bad
 * one may already be written (the destination is discarded on any error).
 */
export function applyRamSection(frame: Frame, slots: ReadonlyMap<number, Uint8Array>, stats: RamStats = emptyRamStats()): RamStats {
  const p = frame.payload;
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const where = `RAM section #${frame.index} at byte ${frame.offset}`;
  let i = 0;
  while (i < p.length) {
    if (i + RECORD_HEADER > p.length) throw new MigrationError('corrupt', `corrupt stream: ${where} ends inside a record header (offset ${i})`);
    const kind = p[i]!;
    const slot = p[i + 1]!;
    const first = dv.getUint32(i + 2);
    const count = dv.getUint32(i + 6);
    i += RECORD_HEADER;
    const bytes = slots.get(slot);
    if (!bytes) throw new MigrationError('corrupt', `corrupt stream: ${where} has pages for slot ${slot}, which the machine does not have`);
    const pages = bytes.length / PAGE_SIZE;
    if (count === 0 || first + count > pages) {
      throw new MigrationError('corrupt', `corrupt stream: ${where}: pages ${first}..${first + count - 1} are outside slot ${slot} (${pages} pages)`);
    }
    const off = first * PAGE_SIZE;
    const size = count * PAGE_SIZE;
    switch (kind) {
      case PageKind.Zero:
        bytes.fill(0, off, off + size);
        stats.zeroPages += count;
        break;
      case PageKind.Raw:
        if (i + size > p.length) throw new MigrationError('corrupt', `corrupt stream: ${where}: a raw run of ${count} pages is cut short`);
        bytes.set(p.subarray(i, i + size), off);
        i += size;
        stats.rawPages += count;
        break;
      case PageKind.Xbzrle:
      case PageKind.Deflate: {
        if (kind === PageKind.Xbzrle && count !== 1) throw new MigrationError('corrupt', `corrupt stream: ${where}: an XBZRLE record covers ${count} pages (must be 1)`);
        if (i + 4 > p.length) throw new MigrationError('corrupt', `corrupt stream: ${where} ends inside a record length`);
        const n = dv.getUint32(i);
        i += 4;
        if (i + n > p.length) throw new MigrationError('corrupt', `corrupt stream: ${where}: a ${n}-byte record runs past the section's end`);
        const data = p.subarray(i, i + n);
        i += n;
        if (kind === PageKind.Xbzrle) {
          xbzrleDecode(data, bytes.subarray(off, off + PAGE_SIZE), `slot ${slot} page ${first}`);
          stats.xbzrlePages++;
        } else {
          let raw: Uint8Array;
          try {
            raw = inflateRawSync(data, { maxOutputLength: size + 1 });
          } catch (err) {
            throw new MigrationError('corrupt', `corrupt stream: ${where}: deflated pages ${first}..${first + count - 1} do not inflate (${(err as Error).message})`);
          }
          if (raw.length !== size) throw new MigrationError('corrupt', `corrupt stream: ${where}: deflated run inflates to ${raw.length} bytes, expected ${size}`);
          bytes.set(raw, off);
          stats.deflatePages += count;
        }
        break;
      }
      default:
        throw new MigrationError('corrupt', `corrupt stream: ${where}: unknown page record kind ${kind} at offset ${i - RECORD_HEADER}`);
    }
  }
  stats.payloadBytes += p.length;
  return stats;
}
