import { KVM_MEM_LOG_DIRTY_PAGES } from '@kvmts/kvm-core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { VIRTIO_INT_CONFIG_CHANGE } from '../constants.js';
import { TestQueueDriver, makeVm, startMmioDevice } from '../test-driver.js';
import { VirtioMmioTransport, type VirtioMmioState } from '../transport/mmio.js';
import {
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_PAGE_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
  VIRTIO_BALLOON_S_AVAIL,
  VIRTIO_BALLOON_S_MEMFREE,
  VIRTIO_BALLOON_S_MEMTOT,
  VIRTIO_BALLOON_S_SWAP_IN,
  VirtioBalloon,
  type VirtioBalloonState,
  parseBalloonStats,
} from './balloon.js';

const PAGE = 4096;
const RAM = 0x200000; // 2 MiB: pages 0..511
const PFN_BUF = 0x80000; // where the driver writes its PFN arrays
const STATS_BUF = 0x90000;
const DATA_PFN = 0x100; // test pages from 1 MiB up

const isZero = (ram: Uint8Array, pfn: number): boolean => ram.subarray(pfn * PAGE, (pfn + 1) * PAGE).every((b) => b === 0);

function balloonVm(options: ConstructorParameters<typeof VirtioBalloon>[0] = {}, flags = 0) {
  const balloon = new VirtioBalloon({ now: () => 1_700_000_000_000, ...options });
  const m = flags === 0 ? startMmioDevice(balloon, 16, RAM) : startMmioDeviceWithFlags(balloon, flags);
  let pfnAt = PFN_BUF;
  /** Send PFNs on queue `index` (one readable buffer of le32), kick, return the head. */
  const sendPfns = (index: number, pfns: number[]): number => {
    for (let i = 0; i < pfns.length; i++) m.dv.setUint32(pfnAt + 4 * i, pfns[i]!, true);
    const q = m.queues[index]!;
    const head = q.addChain([{ addr: pfnAt, len: 4 * pfns.length }]);
    q.publish(head);
    pfnAt += 0x1000;
    m.notify(index);
    return head;
  };
  /** Fill page `pfn` with a recognisable non-zero pattern. */
  const scribble = (pfn: number, value = 0xa5): void => {
    m.ram.fill(value, pfn * PAGE, (pfn + 1) * PAGE);
  };
  /** Post a statistics buffer of [tag, value] records on queue `index`. */
  const postStats = (index: number, records: [number, bigint][]): number => {
    records.forEach(([tag, value], i) => {
      m.dv.setUint16(STATS_BUF + 10 * i, tag, true);
      m.dv.setBigUint64(STATS_BUF + 10 * i + 2, value, true);
    });
    const q = m.queues[index]!;
    const head = q.addChain([{ addr: STATS_BUF, len: 10 * records.length }]);
    q.publish(head);
    m.notify(index);
    return head;
  };
  return { balloon, ...m, sendPfns, scribble, postStats };
}

/** startMmioDevice with RAM slot flags, and a hook that runs after queue setup but before DRIVER_OK. */
function startMmioDeviceWithFlags(balloon: VirtioBalloon, flags: number, beforeDriverOk?: (dv: DataView, queues: TestQueueDriver[], notify: (i: number) => void) => void) {
  const { vm, ram, dv } = makeVm(RAM, flags);
  const irqs: boolean[] = [];
  const t = new VirtioMmioTransport(balloon, { memory: vm.memory, irq: (l) => irqs.push(l) });
  const reg = (off: number, v: number): void => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    t.write(off, d);
  };
  const offered = t.core.offeredFeatures;
  for (const [off, v] of [[0x070, 0], [0x070, 3], [0x024, 0], [0x020, Number(offered & 0xffffffffn)], [0x024, 1], [0x020, Number(offered >> 32n)], [0x070, 0xb]] as const) reg(off, v);
  const queues = balloon.queueMaxSizes.map((_, i) => {
    const q = new TestQueueDriver(dv, 0x10000 * (i + 1), 16);
    for (const [off, v] of [[0x030, i], [0x038, 16], [0x080, q.desc], [0x090, q.avail], [0x0a0, q.used], [0x044, 1]] as const) reg(off, v);
    return q;
  });
  const notify = (i: number): void => reg(0x050, i);
  beforeDriverOk?.(dv, queues, notify);
  reg(0x070, 0xf);
  return { vm, ram, dv, t, irqs, queues, notify };
}

let devices: VirtioBalloon[] = [];
afterEach(() => {
  for (const d of devices) d.dispose();
  devices = [];
  vi.useRealTimers();
});
const track = <T extends { balloon: VirtioBalloon }>(x: T): T => {
  devices.push(x.balloon);
  return x;
};

describe('VirtioBalloon', () => {
  it('offers its features and queues: inflate, deflate, stats, reporting', () => {
    const b = new VirtioBalloon();
    expect(b.deviceType).toBe(5);
    expect(b.features).toBe((1n << BigInt(VIRTIO_BALLOON_F_STATS_VQ)) | (1n << BigInt(VIRTIO_BALLOON_F_PAGE_REPORTING)));
    expect(b.queueMaxSizes).toEqual([128, 128, 128, 128]);
    const small = new VirtioBalloon({ statsQueue: false, pageReporting: false, deflateOnOom: true, queueSize: 64 });
    expect(small.features).toBe(1n << BigInt(VIRTIO_BALLOON_F_DEFLATE_ON_OOM));
    expect(small.queueMaxSizes).toEqual([64, 64]);
  });

  it('sets num_pages from the host target with a config interrupt, and reads actual back', () => {
    const m = track(balloonVm());
    const cfg = new Uint8Array(8);
    m.balloon.setTarget(10 * PAGE + 100); // rounded down to pages
    m.t.read(0x100, cfg);
    expect(new DataView(cfg.buffer).getUint32(0, true)).toBe(10);
    expect(m.balloon.targetBytes).toBe(10 * PAGE);
    expect(m.t.core.interruptStatus & VIRTIO_INT_CONFIG_CHANGE).toBe(VIRTIO_INT_CONFIG_CHANGE);
    expect(m.irqs.at(-1)).toBe(true);
    const generation = m.t.core.configGeneration;
    m.balloon.setTarget(10 * PAGE); // unchanged: no new interrupt
    expect(m.t.core.configGeneration).toBe(generation);

    const changes: number[] = [];
    m.balloon.onActualChange = (bytes) => changes.push(bytes);
    const actual = new Uint8Array(4);
    new DataView(actual.buffer).setUint32(0, 7, true);
    m.t.write(0x104, actual); // the driver writes `actual`
    m.t.write(0x100, new Uint8Array(4).fill(0xff)); // num_pages is read-only for it
    expect(m.balloon.actualBytes).toBe(7 * PAGE);
    expect(m.balloon.targetBytes).toBe(10 * PAGE);
    expect(changes).toEqual([7 * PAGE]);
    expect(m.balloon.stats).toMatchObject({ targetBytes: 10 * PAGE, actualBytes: 7 * PAGE });
    expect(() => m.balloon.setTarget(-1)).toThrow(RangeError);
    expect(() => m.balloon.setTarget(1.5)).toThrow(RangeError);
    expect(() => m.balloon.setTarget(2 ** 32 * PAGE)).toThrow(RangeError);
  });

  it('releases inflated pages: zeroes them and counts them as not present', () => {
    const m = track(balloonVm());
    for (const pfn of [DATA_PFN, DATA_PFN + 1, DATA_PFN + 5]) m.scribble(pfn);
    m.scribble(DATA_PFN + 2); // not inflated: must keep its data
    const head = m.sendPfns(0, [DATA_PFN, DATA_PFN + 1, DATA_PFN + 5, 0x7fffffff /* beyond RAM */]);
    expect(m.queues[0]!.usedIdx()).toBe(1);
    expect(m.queues[0]!.usedElem(0)).toEqual({ id: head, len: 0 });
    expect(m.irqs.at(-1)).toBe(true);
    expect(isZero(m.ram, DATA_PFN)).toBe(true);
    expect(isZero(m.ram, DATA_PFN + 1)).toBe(true);
    expect(isZero(m.ram, DATA_PFN + 5)).toBe(true);
    expect(m.ram[(DATA_PFN + 2) * PAGE]).toBe(0xa5);
    expect(m.balloon.isReleased(DATA_PFN)).toBe(true);
    expect(m.balloon.isReleased(DATA_PFN + 2)).toBe(false);
    expect(m.balloon.isReleased(-1)).toBe(false);
    expect(m.balloon.releasedPages()).toEqual([
      { pfn: DATA_PFN, count: 2 },
      { pfn: DATA_PFN + 5, count: 1 },
    ]);
    expect(m.balloon.stats).toMatchObject({ releasedPages: 3, releasedBytes: 3 * PAGE, inflatedPages: 4, invalidPfns: 1 });
    expect(m.t.core.failure).toBeNull();
  });

  it('deflate takes pages out of the released set without touching them', () => {
    const m = track(balloonVm());
    m.sendPfns(0, [DATA_PFN, DATA_PFN + 1, DATA_PFN + 2]);
    m.sendPfns(1, [DATA_PFN + 1, DATA_PFN + 9 /* never inflated */]);
    expect(m.queues[1]!.usedIdx()).toBe(1);
    expect(m.balloon.releasedPages()).toEqual([
      { pfn: DATA_PFN, count: 1 },
      { pfn: DATA_PFN + 2, count: 1 },
    ]);
    expect(m.balloon.stats).toMatchObject({ releasedPages: 2, deflatedPages: 2 });
  });

  it('un-releases a released page the guest wrote to, on demand', () => {
    const m = track(balloonVm());
    m.sendPfns(0, [DATA_PFN, DATA_PFN + 1, DATA_PFN + 2]);
    m.ram[DATA_PFN * PAGE + 100] = 1; // the guest re-uses a page without telling the host
    expect(m.balloon.stats.releasedPages).toBe(3); // not looked at yet
    expect(m.balloon.isReleased(DATA_PFN)).toBe(false);
    m.ram[(DATA_PFN + 2) * PAGE + PAGE - 1] = 9;
    expect(m.balloon.checkReleasedPages()).toBe(1);
    expect(m.balloon.releasedPages()).toEqual([{ pfn: DATA_PFN + 1, count: 1 }]);
    expect(m.balloon.stats).toMatchObject({ releasedPages: 1, rewrittenPages: 2 });
  });

  it('zeroes without dirty-logging, and the dirty-log hook un-releases only rewritten pages', () => {
    const m = track(balloonVm({}, KVM_MEM_LOG_DIRTY_PAGES));
    const log = new Uint8Array(RAM / PAGE / 8);
    m.scribble(DATA_PFN);
    m.scribble(DATA_PFN + 1); // written before it is inflated: its dirty bit is stale
    m.vm.memory.getDirtyLog(0, log);
    m.scribble(DATA_PFN + 1);
    m.vm.memory.markDirty(m.vm.memory.getSlot(0)!, (DATA_PFN + 1) * PAGE, PAGE); // as the vCPU would
    m.sendPfns(0, [DATA_PFN, DATA_PFN + 1]);
    m.vm.memory.getDirtyLog(0, log);
    const dirty = (pfn: number): boolean => (log[pfn >> 3]! & (1 << (pfn & 7))) !== 0;
    expect(dirty(DATA_PFN)).toBe(false); // the device's zeroing is not a guest write
    expect(dirty(DATA_PFN + 1)).toBe(true);
    expect(m.balloon.noteDirtyPages(0, log)).toBe(0); // still zero: stays released
    expect(m.balloon.stats.releasedPages).toBe(2);
    m.ram[(DATA_PFN + 1) * PAGE] = 0x42; // now the guest really writes it
    expect(m.balloon.noteDirtyPages(0, log)).toBe(1);
    expect(m.balloon.releasedPages()).toEqual([{ pfn: DATA_PFN, count: 1 }]);
  });

  it('gives migration a per-slot bitmap of released pages (dirty-log layout)', () => {
    const m = track(balloonVm());
    const high = new ArrayBuffer(0x100000);
    m.vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0x400000, memorySize: high.byteLength, userspaceAddr: high });
    const slot0 = m.vm.memory.getSlot(0)!;
    const slot1 = m.vm.memory.getSlot(1)!;
    expect(m.balloon.releasedBitmap(slot0)).toBeUndefined();
    m.sendPfns(0, [DATA_PFN, DATA_PFN + 9, 0x400 + 3, 0x400 + 255]);
    const bm0 = m.balloon.releasedBitmap(slot0)!;
    expect(bm0.length).toBe(RAM / PAGE / 8);
    const set = (bm: Uint8Array): number[] => [...bm].flatMap((byte, j) => [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => byte & (1 << i)).map((i) => 8 * j + i));
    expect(set(bm0)).toEqual([DATA_PFN, DATA_PFN + 9]);
    expect(set(m.balloon.releasedBitmap(slot1)!)).toEqual([3, 255]);
    new Uint8Array(high)[3 * PAGE + 17] = 1; // the guest re-used one
    expect(set(m.balloon.releasedBitmap(slot1)!)).toEqual([255]);
    new Uint8Array(high)[255 * PAGE] = 1;
    expect(m.balloon.releasedBitmap(slot1)).toBeUndefined();
    expect(m.balloon.stats.releasedPages).toBe(2);
  });

  it('releases free page reports (whole pages of each range) and returns the buffers', () => {
    const m = track(balloonVm());
    for (let pfn = DATA_PFN; pfn < DATA_PFN + 8; pfn++) m.scribble(pfn);
    const q = m.queues[3]!; // reporting_vq after inflate, deflate and stats
    // Linux posts reports as device-writable buffers: [4 pages], [a range not page-aligned at either end].
    const head = q.addChain([
      { addr: DATA_PFN * PAGE, len: 4 * PAGE, write: true },
      { addr: (DATA_PFN + 5) * PAGE - 1, len: 2 * PAGE + 2, write: true },
    ]);
    q.publish(head);
    m.notify(3);
    expect(q.usedElem(0)).toEqual({ id: head, len: 0 });
    for (let pfn = DATA_PFN; pfn < DATA_PFN + 4; pfn++) expect(isZero(m.ram, pfn)).toBe(true);
    expect(isZero(m.ram, DATA_PFN + 4)).toBe(false); // only its last byte was reported
    expect(isZero(m.ram, DATA_PFN + 5)).toBe(true);
    expect(isZero(m.ram, DATA_PFN + 6)).toBe(true);
    expect(isZero(m.ram, DATA_PFN + 7)).toBe(false);
    expect(m.balloon.releasedPages()).toEqual([
      { pfn: DATA_PFN, count: 4 },
      { pfn: DATA_PFN + 5, count: 2 },
    ]);
    expect(m.balloon.stats).toMatchObject({ reportedPages: 6, releasedBytes: 6 * PAGE });
  });

  it('numbers queues as Linux does when a queue does not exist: reporting follows deflate', () => {
    const m = track(balloonVm({ statsQueue: false }));
    expect(m.queues.length).toBe(3);
    m.scribble(DATA_PFN);
    const q = m.queues[2]!;
    q.publish(q.addChain([{ addr: DATA_PFN * PAGE, len: PAGE, write: true }]));
    m.notify(2);
    expect(q.usedIdx()).toBe(1);
    expect(m.balloon.isReleased(DATA_PFN)).toBe(true);
    expect(m.balloon.requestStats()).toBe(false);
  });

  it('keeps the statistics buffer, parses it, and hands it back when the host asks', () => {
    let now = 1000;
    const m = track(balloonVm({ now: () => now }));
    expect(m.balloon.latestStats).toBeNull();
    expect(m.balloon.requestStats()).toBe(false); // nothing posted yet
    const head = m.postStats(2, [
      [VIRTIO_BALLOON_S_SWAP_IN, 3n],
      [VIRTIO_BALLOON_S_MEMFREE, 100n * 1024n * 1024n],
      [VIRTIO_BALLOON_S_MEMTOT, 2n ** 40n],
      [99, 7n],
    ]);
    const q = m.queues[2]!;
    expect(q.usedIdx()).toBe(0); // held, not returned
    expect(m.balloon.latestStats).toEqual({ timestamp: 1000, stats: { swapIn: 3, freeMemory: 100 * 1024 * 1024, totalMemory: 2 ** 40 }, unknown: { '99': 7 } });
    expect(m.balloon.requestStats()).toBe(true);
    expect(q.usedIdx()).toBe(1);
    expect(q.usedElem(0)).toEqual({ id: head, len: 0 });
    expect(m.irqs.at(-1)).toBe(true);
    expect(m.balloon.requestStats()).toBe(false); // the buffer is with the guest now
    now = 2000;
    m.postStats(2, [[VIRTIO_BALLOON_S_AVAIL, 5n]]); // the guest refills and re-posts it
    expect(m.balloon.latestStats).toEqual({ timestamp: 2000, stats: { availableMemory: 5 }, unknown: {} });
    expect(m.balloon.stats.statsUpdates).toBe(2);
  });

  it('takes the statistics buffer Linux posts before DRIVER_OK', () => {
    const balloon = new VirtioBalloon({ now: () => 42 });
    devices.push(balloon);
    const m = startMmioDeviceWithFlags(balloon, 0, (dv, queues, notify) => {
      dv.setUint16(STATS_BUF, VIRTIO_BALLOON_S_MEMTOT, true);
      dv.setBigUint64(STATS_BUF + 2, 123n, true);
      queues[2]!.publish(queues[2]!.addChain([{ addr: STATS_BUF, len: 10 }]));
      notify(2); // dropped by the transport: the device is not running yet
    });
    expect(balloon.latestStats).toEqual({ timestamp: 42, stats: { totalMemory: 123 }, unknown: {} });
    expect(m.queues[2]!.usedIdx()).toBe(0); // held
    expect(balloon.requestStats()).toBe(true);
    expect(m.queues[2]!.usedIdx()).toBe(1);
  });

  it('polls for statistics on the interval the host chooses', () => {
    vi.useFakeTimers();
    const m = track(balloonVm());
    m.postStats(2, [[VIRTIO_BALLOON_S_MEMFREE, 1n]]);
    const q = m.queues[2]!;
    m.balloon.setStatsPollingInterval(1000);
    expect(m.balloon.statsPollingIntervalMs).toBe(1000);
    vi.advanceTimersByTime(999);
    expect(q.usedIdx()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.usedIdx()).toBe(1);
    m.postStats(2, [[VIRTIO_BALLOON_S_MEMFREE, 2n]]);
    m.balloon.setStatsPollingInterval(0);
    vi.advanceTimersByTime(5000);
    expect(q.usedIdx()).toBe(1);
    expect(() => m.balloon.setStatsPollingInterval(-5)).toThrow(RangeError);
  });

  it('parses statistics buffers defensively', () => {
    const bytes = new Uint8Array(10 * 2 + 3); // two records and a partial third
    const v = new DataView(bytes.buffer);
    v.setUint16(0, VIRTIO_BALLOON_S_SWAP_IN, true);
    v.setBigUint64(2, 42n, true);
    v.setUint16(10, VIRTIO_BALLOON_S_SWAP_IN, true); // a repeated tag: the last one wins
    v.setBigUint64(12, 43n, true);
    expect(parseBalloonStats(bytes, 5)).toEqual({ timestamp: 5, stats: { swapIn: 43 }, unknown: {} });
    expect(parseBalloonStats(new Uint8Array(0), 0).stats).toEqual({});
  });

  it('a reset forgets actual and the statistics buffer but keeps the released pages and target', () => {
    const m = track(balloonVm());
    m.balloon.setTarget(4 * PAGE);
    m.sendPfns(0, [DATA_PFN]);
    m.postStats(2, [[VIRTIO_BALLOON_S_MEMFREE, 1n]]);
    m.t.write(0x104, Uint8Array.of(1, 0, 0, 0));
    m.t.write(0x070, new Uint8Array(4)); // status 0: reset
    expect(m.balloon.actualBytes).toBe(0);
    expect(m.balloon.targetBytes).toBe(4 * PAGE);
    expect(m.balloon.requestStats()).toBe(false);
    expect(m.balloon.isReleased(DATA_PFN)).toBe(true);
    expect(m.balloon.latestStats?.stats).toEqual({ freeMemory: 1 });
  });

  it('survives save/restore: released pages are zeroed on the destination, the stats buffer is kept', () => {
    const src = track(balloonVm());
    src.balloon.setTarget(3 * PAGE);
    src.scribble(DATA_PFN);
    src.sendPfns(0, [DATA_PFN, DATA_PFN + 1, DATA_PFN + 2]);
    src.ram[(DATA_PFN + 2) * PAGE] = 7; // rewritten by the guest: must not be saved as released
    src.t.write(0x104, Uint8Array.of(3, 0, 0, 0));
    const statsHead = src.postStats(2, [[VIRTIO_BALLOON_S_MEMTOT, 64n]]);
    src.balloon.setStatsPollingInterval(60_000);
    const state = JSON.parse(JSON.stringify(src.t.save())) as VirtioMmioState<VirtioBalloonState>;
    expect(state.transport.device).toMatchObject({
      version: 1,
      targetPages: 3,
      actualPages: 3,
      released: [{ pfn: DATA_PFN, count: 2 }],
      statsBufferHead: statsHead,
      statsPollingIntervalMs: 60_000,
    });

    // The destination got an early copy of the page, before it was inflated.
    const { vm, ram } = makeVm(RAM);
    ram.set(src.ram);
    ram.fill(0xee, DATA_PFN * PAGE, (DATA_PFN + 1) * PAGE);
    const balloon = new VirtioBalloon();
    devices.push(balloon);
    const irqs: boolean[] = [];
    const t = new VirtioMmioTransport(balloon, { memory: vm.memory, irq: (l) => irqs.push(l) });
    t.restore(state);
    expect(isZero(ram, DATA_PFN)).toBe(true);
    expect(ram[(DATA_PFN + 2) * PAGE]).toBe(7);
    expect(balloon.releasedPages()).toEqual([{ pfn: DATA_PFN, count: 2 }]);
    expect(balloon.targetBytes).toBe(3 * PAGE);
    expect(balloon.actualBytes).toBe(3 * PAGE);
    expect(balloon.statsPollingIntervalMs).toBe(60_000);
    expect(balloon.latestStats?.stats).toEqual({ totalMemory: 64 });
    // The held buffer goes back to the guest on the destination.
    expect(balloon.requestStats()).toBe(true);
    const q = new TestQueueDriver(new DataView(ram.buffer), 0x30000, 16);
    expect(q.usedElem(0)).toEqual({ id: statsHead, len: 0 });

    const bad = (patch: Partial<VirtioBalloonState>) => () => new VirtioBalloon().restore({ ...state.transport.device, ...patch });
    expect(bad({ version: 2 as 1 })).toThrow(RangeError);
    expect(bad({ released: [{ pfn: 2 ** 20, count: 1 }] })).toThrow(/outside/);
    expect(bad({ targetPages: -1 })).toThrow(RangeError);
    expect(bad({ statsBufferHead: 1.5 })).toThrow(RangeError);
  });

  it('zeroes restored released pages at once when given guest memory', () => {
    const { vm, ram } = makeVm(RAM);
    ram.fill(0x11, DATA_PFN * PAGE, (DATA_PFN + 1) * PAGE);
    const balloon = new VirtioBalloon({ memory: vm.memory });
    balloon.restore({ version: 1, targetPages: 0, actualPages: 0, released: [{ pfn: DATA_PFN, count: 1 }, { pfn: 0xfff00, count: 1 }], statsBufferHead: null, statsPollingIntervalMs: 0, latestStats: null });
    expect(isZero(ram, DATA_PFN)).toBe(true);
    expect(balloon.releasedPages()).toEqual([{ pfn: DATA_PFN, count: 1 }]); // the page beyond RAM is forgotten
    balloon.dispose();
  });

  it('survives a malformed PFN buffer (odd length, spanning descriptors)', () => {
    const m = track(balloonVm());
    m.dv.setUint32(PFN_BUF, DATA_PFN, true);
    m.dv.setUint16(PFN_BUF + 0x100, DATA_PFN + 1, true); // PFN split over two descriptors
    m.dv.setUint16(PFN_BUF + 0x200, 0, true);
    const q = m.queues[0]!;
    q.publish(q.addChain([{ addr: PFN_BUF, len: 4 }, { addr: PFN_BUF + 0x100, len: 2 }, { addr: PFN_BUF + 0x200, len: 3 }]));
    m.notify(0);
    expect(q.usedIdx()).toBe(1);
    expect(m.balloon.releasedPages()).toEqual([{ pfn: DATA_PFN, count: 2 }]);
    expect(m.t.core.failure).toBeNull();
  });
});
