/**
 * virtio-balloon, the traditional memory balloon (VirtIO 1.2, 5.5), with the statistics queue
 * and free page reporting.
 *
 * **Target and actual.** The host sets how much memory it wants back ({@link VirtioBalloon.setTarget},
 * config `num_pages`, a config-change interrupt tells the driver); the driver inflates or
 * deflates and writes `actual`, which the host reads back ({@link VirtioBalloon.actualBytes}).
 *
 * **Released pages.** Pages the guest puts in the balloon (inflate queue) or reports as free
 * (reporting queue) are *released* by the host: zeroed in guest memory and recorded in a
 * bitmap of 4 KiB pages. A released page is host memory that holds nothing: a migration or
 * snapshot need not copy it (see {@link VirtioBalloon.releasedPages}), and a restore zeroes it
 * on the other side. The deflate queue takes pages back out of the set. Node cannot return an
 * ArrayBuffer's pages to the OS, so the saving is in what the VMM copies, not in RSS.
 *
 * Zeroing bypasses the dirty log on purpose: a released page's content is, by definition,
 * zero on both sides of a migration (restore zeroes it), so there is nothing to resend, and a
 * dirty bit set by the zeroing would look like a guest write to the hook below.
 *
 * **Guest writes to released pages** (a guest without MUST_TELL_HOST, or one re-using pages it
 * reported as free, writes them without telling the device) are detected *on demand*: a
 * released page is one the host knows to be all zeroes, so a page that still reads as zeroes
 * may stay released whatever the guest did (keeping it released changes nothing), and one that
 * does not is un-released when looked at. {@link VirtioBalloon.isReleased},
 * {@link VirtioBalloon.releasedPages} and {@link VirtioBalloon.save} look; a VMM that reads a
 * dirty log can keep {@link VirtioBalloon.stats} current by passing it to
 * {@link VirtioBalloon.noteDirtyPages}, which only looks at the released pages it marks.
 *
 * **Queues.** inflateq and deflateq, then statsq if STATS_VQ was negotiated, then reporting_vq
 * if PAGE_REPORTING was: a queue that does not exist takes no index, as Linux numbers them
 * (FREE_PAGE_HINT is not offered). **Statistics**: the driver posts one buffer of
 * `{le16 tag; le64 val}` records; the device parses it, keeps it, and hands it back when the
 * host wants fresh numbers ({@link VirtioBalloon.requestStats}, or every
 * {@link VirtioBalloon.setStatsPollingInterval} ms), which makes the driver refill and re-post it.
 * @module
 */

import type { GuestMemory, MemorySlot } from '@kvmts/kvm-core';
import { GUEST_PHYS_LIMIT, KVM_MEM_READONLY } from '@kvmts/kvm-core';
import { VIRTIO_ID_BALLOON, featureBit } from '../constants.js';
import type { VirtioActivation, VirtioDevice } from '../device.js';
import type { DescriptorChain } from '../queue/chain.js';

/** The driver must tell the host before re-using a ballooned page (not offered). */
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 0;
/** A statistics queue is present. */
export const VIRTIO_BALLOON_F_STATS_VQ = 1;
/** The guest deflates the balloon when it runs out of memory. */
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2;
/** Free page hinting for migration (not offered). */
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3;
/** The guest poisons free pages (not offered: released pages read back as zeroes). */
export const VIRTIO_BALLOON_F_PAGE_POISON = 4;
/** A free page reporting queue is present. */
export const VIRTIO_BALLOON_F_PAGE_REPORTING = 5;

/** Balloon PFNs are in 4 KiB units whatever the guest's page size (VIRTIO_BALLOON_PFN_SHIFT 12). */
export const VIRTIO_BALLOON_PAGE_SIZE = 4096;
/** Bytes of config exposed: num_pages, actual. */
export const VIRTIO_BALLOON_CONFIG_SIZE = 8;
/** One packed statistics record: le16 tag, le64 value. */
export const VIRTIO_BALLOON_STAT_SIZE = 10;
/** Most statistics records parsed from one buffer (Linux sends 10 to 16). */
export const VIRTIO_BALLOON_MAX_STATS = 64;

// Statistics tags (5.5.6.3; 10 and up are Linux 6.12 additions).
export const VIRTIO_BALLOON_S_SWAP_IN = 0;
export const VIRTIO_BALLOON_S_SWAP_OUT = 1;
export const VIRTIO_BALLOON_S_MAJFLT = 2;
export const VIRTIO_BALLOON_S_MINFLT = 3;
export const VIRTIO_BALLOON_S_MEMFREE = 4;
export const VIRTIO_BALLOON_S_MEMTOT = 5;
export const VIRTIO_BALLOON_S_AVAIL = 6;
export const VIRTIO_BALLOON_S_CACHES = 7;
export const VIRTIO_BALLOON_S_HTLB_PGALLOC = 8;
export const VIRTIO_BALLOON_S_HTLB_PGFAIL = 9;
export const VIRTIO_BALLOON_S_OOM_KILL = 10;
export const VIRTIO_BALLOON_S_ALLOC_STALL = 11;
export const VIRTIO_BALLOON_S_ASYNC_SCAN = 12;
export const VIRTIO_BALLOON_S_DIRECT_SCAN = 13;
export const VIRTIO_BALLOON_S_ASYNC_RECLAIM = 14;
export const VIRTIO_BALLOON_S_DIRECT_RECLAIM = 15;

/** The guest's memory statistics by name; a field is present only if the guest reported it. Sizes in bytes, the rest counts. */
export interface BalloonGuestStats {
  swapIn?: number;
  swapOut?: number;
  majorFaults?: number;
  minorFaults?: number;
  freeMemory?: number;
  totalMemory?: number;
  availableMemory?: number;
  diskCaches?: number;
  hugetlbAllocations?: number;
  hugetlbFailures?: number;
  oomKills?: number;
  allocStalls?: number;
  asyncScans?: number;
  directScans?: number;
  asyncReclaims?: number;
  directReclaims?: number;
}

/** Statistics tag → name in {@link BalloonGuestStats}. */
export const VIRTIO_BALLOON_STAT_NAMES: Readonly<Record<number, keyof BalloonGuestStats>> = {
  [VIRTIO_BALLOON_S_SWAP_IN]: 'swapIn',
  [VIRTIO_BALLOON_S_SWAP_OUT]: 'swapOut',
  [VIRTIO_BALLOON_S_MAJFLT]: 'majorFaults',
  [VIRTIO_BALLOON_S_MINFLT]: 'minorFaults',
  [VIRTIO_BALLOON_S_MEMFREE]: 'freeMemory',
  [VIRTIO_BALLOON_S_MEMTOT]: 'totalMemory',
  [VIRTIO_BALLOON_S_AVAIL]: 'availableMemory',
  [VIRTIO_BALLOON_S_CACHES]: 'diskCaches',
  [VIRTIO_BALLOON_S_HTLB_PGALLOC]: 'hugetlbAllocations',
  [VIRTIO_BALLOON_S_HTLB_PGFAIL]: 'hugetlbFailures',
  [VIRTIO_BALLOON_S_OOM_KILL]: 'oomKills',
  [VIRTIO_BALLOON_S_ALLOC_STALL]: 'allocStalls',
  [VIRTIO_BALLOON_S_ASYNC_SCAN]: 'asyncScans',
  [VIRTIO_BALLOON_S_DIRECT_SCAN]: 'directScans',
  [VIRTIO_BALLOON_S_ASYNC_RECLAIM]: 'asyncReclaims',
  [VIRTIO_BALLOON_S_DIRECT_RECLAIM]: 'directReclaims',
};

/** The latest statistics the guest sent. */
export interface BalloonStatsReport {
  /** When the device received them, in ms since the epoch (the `now` option's clock). */
  timestamp: number;
  stats: BalloonGuestStats;
  /** Records with tags this device does not know, by tag number. */
  unknown: Record<string, number>;
}

/** A run of `count` consecutive 4 KiB pages starting at page frame `pfn`. */
export interface BalloonPageRange {
  pfn: number;
  count: number;
}

/** Host-side numbers (JSON-able), for the VMM's statistics and the monitor. */
export interface VirtioBalloonStats {
  /** Balloon size the host asked for, in bytes (`num_pages`). */
  targetBytes: number;
  /** Balloon size the driver reports, in bytes (`actual`). */
  actualBytes: number;
  /** Pages the host holds as released (zero, not present): at most this many, see {@link VirtioBalloon.noteDirtyPages}. */
  releasedPages: number;
  releasedBytes: number;
  /** PFNs received on the inflate queue since creation. */
  inflatedPages: number;
  /** PFNs received on the deflate queue since creation. */
  deflatedPages: number;
  /** Pages released through free page reporting since creation. */
  reportedPages: number;
  /** Released pages found written by the guest and so un-released. */
  rewrittenPages: number;
  /** PFNs outside guest RAM (or in ROM) that were ignored. */
  invalidPfns: number;
  /** Statistics buffers received. */
  statsUpdates: number;
}

/** Options for {@link VirtioBalloon}. */
export interface VirtioBalloonOptions {
  /** Size of every queue (default 128). */
  queueSize?: number;
  /** Offer the statistics queue (VIRTIO_BALLOON_F_STATS_VQ; default true). */
  statsQueue?: boolean;
  /** Ask the guest for statistics every this many ms (default 0: only on {@link VirtioBalloon.requestStats}). */
  statsPollingIntervalMs?: number;
  /** Offer free page reporting (VIRTIO_BALLOON_F_PAGE_REPORTING; default true). */
  pageReporting?: boolean;
  /** Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM (default false): the guest may deflate by itself under memory pressure. */
  deflateOnOom?: boolean;
  /**
   * Guest memory, so that released pages can be checked and zeroed (after a restore) before the
   * driver starts; without it that waits for activation. Pass `vm.memory`.
   */
  memory?: GuestMemory;
  /** Clock for statistics timestamps (default `Date.now`). */
  now?: () => number;
}

/** Plain, JSON-able snapshot of a {@link VirtioBalloon}. */
export interface VirtioBalloonState {
  version: 1;
  targetPages: number;
  actualPages: number;
  /** Released pages, checked to still be zero when saved; a restore zeroes them. */
  released: BalloonPageRange[];
  /** Head of the statistics buffer the device holds, if any. */
  statsBufferHead: number | null;
  statsPollingIntervalMs: number;
  latestStats: BalloonStatsReport | null;
}

type QueueRole = 'inflate' | 'deflate' | 'stats' | 'reporting';

/** Page frames in the 32-bit guest-physical space: the size of the released bitmap. */
const PFN_LIMIT = GUEST_PHYS_LIMIT / VIRTIO_BALLOON_PAGE_SIZE;
const MAX_U32 = 0xffffffff;

/**
 * Parse a statistics buffer: packed `{le16 tag; le64 val}` records (a trailing partial record is
 * ignored, as are records past {@link VIRTIO_BALLOON_MAX_STATS}). Values above 2^53 lose precision.
 */
export function parseBalloonStats(bytes: Uint8Array, timestamp: number): BalloonStatsReport {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stats: BalloonGuestStats = {};
  const unknown: Record<string, number> = {};
  const records = Math.min(Math.floor(bytes.length / VIRTIO_BALLOON_STAT_SIZE), VIRTIO_BALLOON_MAX_STATS);
  for (let i = 0; i < records; i++) {
    const at = i * VIRTIO_BALLOON_STAT_SIZE;
    const tag = view.getUint16(at, true);
    const value = Number(view.getBigUint64(at + 2, true));
    const name = VIRTIO_BALLOON_STAT_NAMES[tag];
    if (name !== undefined) stats[name] = value;
    else unknown[String(tag)] = value;
  }
  return { timestamp, stats, unknown };
}

/** The memory balloon device. */
export class VirtioBalloon implements VirtioDevice<VirtioBalloonState> {
  readonly deviceType = VIRTIO_ID_BALLOON;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly configSize = VIRTIO_BALLOON_CONFIG_SIZE;
  /** Called when the driver writes a new `actual` (bytes), e.g. for a BALLOON_CHANGE event. */
  onActualChange: ((actualBytes: number) => void) | undefined;

  private readonly config = new Uint8Array(VIRTIO_BALLOON_CONFIG_SIZE);
  private readonly configView = new DataView(this.config.buffer);
  /** One bit per 4 KiB page of the 4 GiB guest-physical space. */
  private readonly released = new Uint8Array(PFN_LIMIT / 8);
  private releasedCount = 0;
  private readonly counters = { inflatedPages: 0, deflatedPages: 0, reportedPages: 0, rewrittenPages: 0, invalidPfns: 0, statsUpdates: 0 };
  private readonly now: () => number;
  private readonly fixedMemory: GuestMemory | undefined;
  private activation: VirtioActivation | null = null;
  /** Queue index → role, fixed at activation from the negotiated features. */
  private roles: QueueRole[] = [];
  private statsHead: number | null = null;
  private latest: BalloonStatsReport | null = null;
  private pollingMs = 0;
  private pollTimer: ReturnType<typeof setInterval> | undefined;
  /** Released pages restored from a snapshot but not yet zeroed (no memory known yet). */
  private zeroPending = false;
  private readonly pfnChunk = new Uint8Array(4096);

  constructor(options: VirtioBalloonOptions = {}) {
    const size = options.queueSize ?? 128;
    const stats = options.statsQueue ?? true;
    const reporting = options.pageReporting ?? true;
    this.features =
      (stats ? featureBit(VIRTIO_BALLOON_F_STATS_VQ) : 0n) |
      (reporting ? featureBit(VIRTIO_BALLOON_F_PAGE_REPORTING) : 0n) |
      (options.deflateOnOom ? featureBit(VIRTIO_BALLOON_F_DEFLATE_ON_OOM) : 0n);
    this.queueMaxSizes = Array.from({ length: 2 + (stats ? 1 : 0) + (reporting ? 1 : 0) }, () => size);
    this.now = options.now ?? Date.now;
    this.fixedMemory = options.memory;
    this.setStatsPollingInterval(options.statsPollingIntervalMs ?? 0);
  }

  // ---- Host controls ----

  /** Balloon size the host asked for, in bytes. */
  get targetBytes(): number {
    return this.configView.getUint32(0, true) * VIRTIO_BALLOON_PAGE_SIZE;
  }

  /** Balloon size the driver reports (`actual`), in bytes. */
  get actualBytes(): number {
    return this.configView.getUint32(4, true) * VIRTIO_BALLOON_PAGE_SIZE;
  }

  /**
   * Ask the guest to hold `bytes` in the balloon (rounded down to 4 KiB pages); 0 deflates it
   * completely. The driver hears about it through a config-change interrupt. Throws RangeError
   * for a negative or non-integer size, or one beyond the 32-bit page count.
   */
  setTarget(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`balloon target ${String(bytes)} is not a non-negative number of bytes`);
    const pages = Math.floor(bytes / VIRTIO_BALLOON_PAGE_SIZE);
    if (pages > MAX_U32) throw new RangeError(`balloon target ${bytes} bytes exceeds 2^32 pages`);
    if (pages === this.configView.getUint32(0, true)) return;
    this.configView.setUint32(0, pages, true);
    this.activation?.interrupt.signalConfigChange();
  }

  /** Host-side numbers, JSON-able. `releasedPages` may count pages the guest rewrote since they were last looked at. */
  get stats(): VirtioBalloonStats {
    return {
      targetBytes: this.targetBytes,
      actualBytes: this.actualBytes,
      releasedPages: this.releasedCount,
      releasedBytes: this.releasedCount * VIRTIO_BALLOON_PAGE_SIZE,
      ...this.counters,
    };
  }

  /** The guest's latest memory statistics, or null before the first buffer. */
  get latestStats(): BalloonStatsReport | null {
    return this.latest;
  }

  /** How often the device asks for statistics, in ms (0: never by itself). */
  get statsPollingIntervalMs(): number {
    return this.pollingMs;
  }

  /**
   * Hand the statistics buffer back to the guest every `ms` milliseconds so that it sends fresh
   * numbers; 0 stops polling. The timer does not keep Node alive. Throws RangeError for a
   * negative or non-integer interval.
   */
  setStatsPollingInterval(ms: number): void {
    if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError(`statistics polling interval ${String(ms)} is not a non-negative number of ms`);
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    this.pollingMs = ms;
    if (ms > 0) {
      this.pollTimer = setInterval(() => this.requestStats(), ms);
      this.pollTimer.unref?.();
    }
  }

  /**
   * Ask the guest for fresh statistics now: return the buffer it posted, which it refills and
   * posts again. False when the device holds no buffer (driver not started, no STATS_VQ, or a
   * request is already out).
   */
  requestStats(): boolean {
    const a = this.activation;
    const index = this.roles.indexOf('stats');
    const q = a?.queues[index];
    const head = this.statsHead;
    if (!a || !q || head === null) return false;
    this.statsHead = null;
    if (q.addUsed(head, 0)) a.interrupt.signalUsed(index);
    return true;
  }

  /** Stop the polling timer. The device keeps working; polling can be set again. */
  dispose(): void {
    this.setStatsPollingInterval(0);
  }

  // ---- Released pages ----

  /**
   * Whether page frame `pfn` is released (host-side zero, not present). Looks at the page: one
   * the guest has written non-zero data to is un-released here.
   */
  isReleased(pfn: number): boolean {
    if (!this.bit(pfn)) return false;
    const memory = this.memory();
    if (memory !== undefined && !this.stillZero(memory, pfn)) {
      this.unrelease(pfn);
      this.counters.rewrittenPages++;
      return false;
    }
    return true;
  }

  /**
   * The released pages as sorted ranges, after un-releasing those the guest has written to
   * (which reads every released page: O(released bytes)). For migration: these pages need not
   * be sent, as the destination zeroes them when it restores this device.
   */
  releasedPages(): BalloonPageRange[] {
    this.checkReleasedPages();
    const ranges: BalloonPageRange[] = [];
    let start = -1;
    for (let byte = 0; byte < this.released.length; byte++) {
      const bits = this.released[byte]!;
      // Whole bytes of 0 or 0xff are the common case; only mixed bytes are walked bit by bit.
      if (bits === 0 && start < 0) continue;
      if (bits === 0xff && start >= 0) continue;
      for (let b = 0; b < 8; b++) {
        const pfn = byte * 8 + b;
        const set = (bits & (1 << b)) !== 0;
        if (set && start < 0) start = pfn;
        else if (!set && start >= 0) {
          ranges.push({ pfn: start, count: pfn - start });
          start = -1;
        }
      }
    }
    if (start >= 0) ranges.push({ pfn: start, count: PFN_LIMIT - start });
    return ranges;
  }

  /**
   * The released pages of one memory slot as a bitmap in the dirty log's layout (bit `i` of byte
   * `j` is page `8j + i` of the slot; whole 64-bit words), after un-releasing pages the guest
   * wrote to; undefined when none of the slot's pages is released. This is what
   * `@kvmts/migration`'s `releasedPages(slot)` hook returns: those pages are not sent.
   */
  releasedBitmap(slot: { readonly guestPhysAddr: number; readonly size: number }): Uint8Array | undefined {
    if (this.releasedCount === 0) return undefined;
    const firstPfn = Math.floor(slot.guestPhysAddr / VIRTIO_BALLOON_PAGE_SIZE);
    const pages = Math.floor(slot.size / VIRTIO_BALLOON_PAGE_SIZE);
    const memory = this.memory();
    let bitmap: Uint8Array | undefined;
    let rewritten = 0;
    for (let i = 0; i < pages; i++) {
      const pfn = firstPfn + i;
      // Skip whole clear bytes of the released set quickly (the common case).
      if ((pfn & 7) === 0 && this.released[pfn >>> 3] === 0 && i + 8 <= pages) {
        i += 7;
        continue;
      }
      if (!this.bit(pfn)) continue;
      if (memory !== undefined && !this.stillZero(memory, pfn)) {
        this.unrelease(pfn);
        rewritten++;
        continue;
      }
      bitmap ??= new Uint8Array(Math.ceil(pages / 64) * 8);
      bitmap[i >>> 3]! |= 1 << (i & 7);
    }
    this.counters.rewrittenPages += rewritten;
    return bitmap;
  }

  /**
   * Un-release every released page that no longer reads as zeroes. Returns how many were
   * un-released. Without guest memory (device never activated, no `memory` option) it does nothing.
   */
  checkReleasedPages(): number {
    const memory = this.memory();
    if (memory === undefined || this.releasedCount === 0) return 0;
    let found = 0;
    for (let byte = 0; byte < this.released.length; byte++) {
      const bits = this.released[byte]!;
      if (bits === 0) continue;
      for (let b = 0; b < 8; b++) {
        const pfn = byte * 8 + b;
        if (bits & (1 << b) && !this.stillZero(memory, pfn)) {
          this.unrelease(pfn);
          found++;
        }
      }
    }
    this.counters.rewrittenPages += found;
    return found;
  }

  /**
   * The dirty-log hook: bit `i` of `bitmap` (LSB first, as KVM_GET_DIRTY_LOG fills it) says page
   * `firstPfn + i` was written. Released pages among them that no longer read as zeroes are
   * un-released; returns how many. For a slot: `noteDirtyPages(slot.guestPhysAddr / 4096, log)`.
   */
  noteDirtyPages(firstPfn: number, bitmap: Uint8Array): number {
    const memory = this.memory();
    if (memory === undefined || this.releasedCount === 0) return 0;
    let found = 0;
    for (let byte = 0; byte < bitmap.length; byte++) {
      const bits = bitmap[byte]!;
      if (bits === 0) continue;
      for (let b = 0; b < 8; b++) {
        const pfn = firstPfn + byte * 8 + b;
        if (bits & (1 << b) && this.bit(pfn) && !this.stillZero(memory, pfn)) {
          this.unrelease(pfn);
          found++;
        }
      }
    }
    this.counters.rewrittenPages += found;
    return found;
  }

  // ---- VirtioDevice ----

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  /** Only `actual` (bytes 4-7) is the driver's to write. */
  writeConfig(offset: number, data: Uint8Array): void {
    const before = this.configView.getUint32(4, true);
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      if (at >= 4 && at < 8) this.config[at] = data[i]!;
    }
    if (this.configView.getUint32(4, true) !== before) this.onActualChange?.(this.actualBytes);
  }

  activate(activation: VirtioActivation): void {
    this.activation = activation;
    const has = (bit: number): boolean => (activation.features & featureBit(bit)) !== 0n;
    this.roles = ['inflate', 'deflate'];
    if (has(VIRTIO_BALLOON_F_STATS_VQ)) this.roles.push('stats');
    if (has(VIRTIO_BALLOON_F_PAGE_REPORTING)) this.roles.push('reporting');
    if (this.zeroPending) this.zeroReleased(activation.memory);
    // Linux posts (and kicks) its first statistics buffer in probe, before DRIVER_OK, when the
    // transport drops notifications: take whatever is already available now.
    for (let i = 0; i < this.roles.length; i++) if (activation.queues[i]?.hasAvailable()) this.processQueue(i);
  }

  processQueue(index: number): void {
    const a = this.activation;
    const q = a?.queues[index];
    const role = this.roles[index];
    if (!a || !q || role === undefined) return;
    let used = false;
    do {
      q.disableNotification();
      for (let chain = q.pop(); chain !== null; chain = q.pop()) {
        if (role === 'stats') {
          this.receiveStats(a.memory, chain);
          // The buffer stays with the device; a second one replaces (and returns) the first.
          if (this.statsHead !== null) used = q.addUsed(this.statsHead, 0) || used;
          this.statsHead = chain.head;
          continue;
        }
        if (role === 'inflate') this.forEachPfn(a.memory, chain, (pfn) => this.inflate(a.memory, pfn));
        else if (role === 'deflate') this.forEachPfn(a.memory, chain, (pfn) => this.deflate(pfn));
        else this.report(a.memory, chain);
        used = q.addUsed(chain.head, 0) || used;
      }
    } while (q.enableNotification());
    if (used) a.interrupt.signalUsed(index);
  }

  /** Driver reset: `actual` and the held statistics buffer go; the target, released pages and polling stay. */
  reset(): void {
    this.activation = null;
    this.roles = [];
    this.statsHead = null;
    this.configView.setUint32(4, 0, true);
  }

  save(): VirtioBalloonState {
    return {
      version: 1,
      targetPages: this.configView.getUint32(0, true),
      actualPages: this.configView.getUint32(4, true),
      released: this.releasedPages(),
      statsBufferHead: this.statsHead,
      statsPollingIntervalMs: this.pollingMs,
      latestStats: this.latest && { timestamp: this.latest.timestamp, stats: { ...this.latest.stats }, unknown: { ...this.latest.unknown } },
    };
  }

  restore(state: VirtioBalloonState): void {
    const bad = (what: string): never => {
      throw new RangeError(`virtio-balloon state: ${what}`);
    };
    if (state.version !== 1) bad(`unknown version ${String(state.version)}`);
    const u32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_U32;
    if (!u32(state.targetPages) || !u32(state.actualPages)) bad('targetPages and actualPages must be 32-bit integers');
    if (!Array.isArray(state.released)) bad('released must be a list of page ranges');
    for (const r of state.released) {
      if (!Number.isInteger(r?.pfn) || !Number.isInteger(r?.count) || r.pfn < 0 || r.count < 1 || r.pfn + r.count > PFN_LIMIT) {
        bad(`released range ${JSON.stringify(r)} is outside the 4 GiB physical space`);
      }
    }
    if (state.statsBufferHead !== null && !(Number.isInteger(state.statsBufferHead) && state.statsBufferHead >= 0 && state.statsBufferHead <= 0xffff)) {
      bad('statsBufferHead must be null or a descriptor index');
    }
    if (!Number.isSafeInteger(state.statsPollingIntervalMs) || state.statsPollingIntervalMs < 0) bad('statsPollingIntervalMs must be a non-negative integer');
    const latest = state.latestStats;
    if (latest !== null && (typeof latest !== 'object' || typeof latest.timestamp !== 'number' || typeof latest.stats !== 'object' || typeof latest.unknown !== 'object')) {
      bad('latestStats must be null or a statistics report');
    }
    this.configView.setUint32(0, state.targetPages, true);
    this.configView.setUint32(4, state.actualPages, true);
    this.released.fill(0);
    this.releasedCount = 0;
    for (const r of state.released) for (let pfn = r.pfn; pfn < r.pfn + r.count; pfn++) this.setBit(pfn);
    this.statsHead = state.statsBufferHead;
    this.latest = latest && { timestamp: latest.timestamp, stats: { ...latest.stats }, unknown: { ...latest.unknown } };
    this.setStatsPollingInterval(state.statsPollingIntervalMs);
    // Memory was restored before the device; the destination may hold stale data for these pages.
    this.zeroPending = this.releasedCount > 0;
    if (this.fixedMemory !== undefined && this.zeroPending) this.zeroReleased(this.fixedMemory);
  }

  // ---- Internals ----

  private memory(): GuestMemory | undefined {
    return this.activation?.memory ?? this.fixedMemory;
  }

  private bit(pfn: number): boolean {
    return Number.isInteger(pfn) && pfn >= 0 && pfn < PFN_LIMIT && (this.released[pfn >>> 3]! & (1 << (pfn & 7))) !== 0;
  }

  private setBit(pfn: number): void {
    if (this.released[pfn >>> 3]! & (1 << (pfn & 7))) return;
    this.released[pfn >>> 3]! |= 1 << (pfn & 7);
    this.releasedCount++;
  }

  private unrelease(pfn: number): void {
    if (!(this.released[pfn >>> 3]! & (1 << (pfn & 7)))) return;
    this.released[pfn >>> 3]! &= ~(1 << (pfn & 7));
    this.releasedCount--;
  }

  /** The writable RAM slot holding all of page `pfn`, and the page's offset in it. */
  private ramPage(memory: GuestMemory, pfn: number): { slot: MemorySlot; offset: number } | undefined {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= PFN_LIMIT) return undefined;
    const gpa = pfn * VIRTIO_BALLOON_PAGE_SIZE;
    const slot = memory.findSlot(gpa);
    // Slots are page-aligned, so a page inside one is entirely inside it.
    if (slot === undefined || slot.flags & KVM_MEM_READONLY) return undefined;
    return { slot, offset: gpa - slot.guestPhysAddr };
  }

  private stillZero(memory: GuestMemory, pfn: number): boolean {
    const page = this.ramPage(memory, pfn);
    if (page === undefined) return true; // unmapped since: nothing there to be non-zero
    const { bytes } = page.slot;
    // Slot memory is page-aligned in its buffer, so a 32-bit view of the page is aligned too.
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset + page.offset, VIRTIO_BALLOON_PAGE_SIZE / 4);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }

  /** Zero page `pfn` without dirty-logging it; false if it is not RAM. */
  private zeroPage(memory: GuestMemory, pfn: number): boolean {
    const page = this.ramPage(memory, pfn);
    if (page === undefined) return false;
    page.slot.bytes.fill(0, page.offset, page.offset + VIRTIO_BALLOON_PAGE_SIZE);
    // Not dirty-logged (see the module comment), but vCPUs must drop code compiled from the page.
    for (const listener of memory.writeListeners) listener(page.slot, page.offset, VIRTIO_BALLOON_PAGE_SIZE);
    return true;
  }

  /** Zero page `pfn` and record it as released; false (and counted) if it is not RAM. */
  private release(memory: GuestMemory, pfn: number): boolean {
    if (!this.zeroPage(memory, pfn)) {
      this.counters.invalidPfns++;
      return false;
    }
    this.setBit(pfn);
    return true;
  }

  /** After a restore: zero every released page; forget those that are no longer RAM. */
  private zeroReleased(memory: GuestMemory): void {
    this.zeroPending = false;
    for (let byte = 0; byte < this.released.length; byte++) {
      const bits = this.released[byte]!;
      if (bits === 0) continue;
      for (let b = 0; b < 8; b++) {
        const pfn = byte * 8 + b;
        if (bits & (1 << b) && !this.zeroPage(memory, pfn)) this.unrelease(pfn);
      }
    }
  }

  private inflate(memory: GuestMemory, pfn: number): void {
    this.counters.inflatedPages++;
    this.release(memory, pfn);
  }

  private deflate(pfn: number): void {
    this.counters.deflatedPages++;
    if (pfn >= PFN_LIMIT) this.counters.invalidPfns++;
    else this.unrelease(pfn);
  }

  /**
   * Call `each` for every le32 PFN in the chain's readable bytes (a trailing partial one is
   * ignored). At most one PFN per page of the 4 GiB space is read, so a guest cannot make the
   * host walk gigabytes of nonsense.
   */
  private forEachPfn(memory: GuestMemory, chain: DescriptorChain, each: (pfn: number) => void): void {
    const chunk = this.pfnChunk;
    const view = new DataView(chunk.buffer);
    const total = Math.min(chain.readableLength - (chain.readableLength % 4), 4 * PFN_LIMIT);
    for (let done = 0; done < total; ) {
      const n = chain.read(memory, done, chunk.subarray(0, Math.min(chunk.length, total - done)));
      if (n === 0) break;
      for (let at = 0; at + 4 <= n; at += 4) each(view.getUint32(at, true));
      done += n;
    }
  }

  /** Free page reporting: every segment describes free guest memory; release the whole pages in it. */
  private report(memory: GuestMemory, chain: DescriptorChain): void {
    for (let i = 0; i < chain.segmentCount; i++) {
      const start = chain.addresses[i]!;
      const end = start + chain.lengths[i]!;
      const first = Math.ceil(start / VIRTIO_BALLOON_PAGE_SIZE);
      const last = Math.floor(end / VIRTIO_BALLOON_PAGE_SIZE);
      for (let pfn = first; pfn < last; pfn++) {
        if (this.release(memory, pfn)) this.counters.reportedPages++;
      }
    }
  }

  private receiveStats(memory: GuestMemory, chain: DescriptorChain): void {
    const len = Math.min(chain.readableLength, VIRTIO_BALLOON_MAX_STATS * VIRTIO_BALLOON_STAT_SIZE);
    const bytes = new Uint8Array(len);
    chain.read(memory, 0, bytes);
    this.latest = parseBalloonStats(bytes, this.now());
    this.counters.statsUpdates++;
  }
}

