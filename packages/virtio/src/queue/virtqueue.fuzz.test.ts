/**
 * Seeded fuzz test of the split virtqueue against malicious guest memory: descriptor loops,
 * addresses outside RAM (near and past 2^32, in the gap between slots), address+length
 * overflow, nested indirect tables, indirect tables of bad length, zero-length chains,
 * available indices that run ahead, and random bytes in every ring field. Half of it drives
 * the queue directly, the rest drives virtio-rng through the MMIO transport.
 *
 * Every case checks: nothing is thrown, the driver loop terminates within its bound, the
 * outcome is either a clean queue error (with DEVICE_NEEDS_RESET through the transport) or
 * chains whose every segment lies in guest RAM, and guest memory changed only in the used
 * ring (and, for the device, inside the writable buffers of the chains it popped). RAM is
 * slot 0; slot 1 is a guard slot ending exactly at 4 GiB, so addresses near 2^32 are real
 * memory the test can watch, and anything past it is unbacked.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { GuestMemory } from '@kvmts/kvm-core';
import { makeVm, mmioNegotiate } from '../test-driver.js';
import { VirtioMmioTransport } from '../transport/mmio.js';
import { TRANSPORT_FEATURES, VIRTIO_STATUS_DEVICE_NEEDS_RESET } from '../constants.js';
import { VirtioRng } from '../rng/rng.js';
import type { DescriptorChain } from './chain.js';
import {
  VIRTQ_DESC_F_INDIRECT as F_INDIRECT,
  VIRTQ_DESC_F_NEXT as F_NEXT,
  VIRTQ_DESC_F_WRITE as F_WRITE,
  VIRTQUEUE_MAX_CHAIN,
  Virtqueue,
  VirtqueueError,
  type VirtqueueErrorKind,
} from './virtqueue.js';

const SEED = 0x6b766d74; // "kvmt"
const QUEUE_CASES_PER_IT = 30_000;
const QUEUE_ITS = 3;
const DEVICE_CASES = 12_000;

const RAM = 0x20000; // slot 0: [0, 128 KiB)
const GUARD = 0xffff0000; // slot 1: [4 GiB - 64 KiB, 4 GiB)
const GUARD_SIZE = 0x10000;
const TOP = 2 ** 32;
const QBASE = 0x1000; // rings (queue size <= 16 keeps them under 0x1200)
const IND = 0x3000; // indirect tables [0x3000, 0x5000)
const DATA = 0x5000; // buffers [0x5000, 0x10000); [0x10000, RAM) is pure canary
const SIZES = [1, 2, 4, 8, 16];

let totalCases = 0;
afterAll(() => {
  console.log(`virtqueue fuzz: ${totalCases} cases (seed 0x${SEED.toString(16)})`);
});

/** mulberry32: small, fast, deterministic. */
function prng(seed: number) {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / TOP;
  };
  const int = (n: number): number => Math.floor(next() * n);
  return {
    u32: (): number => Math.floor(next() * TOP),
    int,
    bool: (p = 0.5): boolean => next() < p,
    pick: <T>(a: readonly T[]): T => a[int(a.length)]!,
  };
}
type Rng = ReturnType<typeof prng>;

/** Oracle: every byte of [addr, addr+len) is in slot 0 or slot 1. Zero length is always fine. */
const inGuest = (addr: number, len: number): boolean =>
  len === 0 || addr + len <= RAM || (addr >= GUARD && addr + len <= TOP);

/** A VM with RAM and a guard slot, both filled with a fixed pattern. */
function makeGuestVm() {
  const { vm, ram, dv } = makeVm(RAM);
  const guardBuf = new ArrayBuffer(GUARD_SIZE);
  vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: GUARD, memorySize: GUARD_SIZE, userspaceAddr: guardBuf });
  const guard = new Uint8Array(guardBuf);
  const r = prng(SEED ^ 0x5a5a);
  for (let i = 0; i < RAM; i++) ram[i] = r.int(256);
  for (let i = 0; i < GUARD_SIZE; i++) guard[i] = r.int(256);
  return { vm, ram, dv, guard, baseline: ram.slice(), guardBaseline: guard.slice() };
}

interface Layout {
  size: number;
  desc: number;
  avail: number;
  used: number;
  usedEnd: number;
}

function layout(size: number): Layout {
  const desc = QBASE;
  const avail = desc + 16 * size;
  const used = (avail + 6 + 2 * size + 3) & ~3;
  return { size, desc, avail, used, usedEnd: used + 6 + 8 * size };
}

/** Addresses a hostile driver likes: RAM edges, the gap, the guard slot, 2^32 and beyond. */
function nastyAddr(r: Rng): number {
  switch (r.int(10)) {
    case 0: return RAM - r.int(64);
    case 1: return RAM + r.int(0x1000);
    case 2: return GUARD - 1 - r.int(64);
    case 3: return TOP - 1 - r.int(64);
    case 4: return TOP + r.int(0x1000);
    case 5: return r.u32() * TOP + r.u32(); // anywhere in 64 bits (doubles above 2^53 round: still far away)
    case 6: return 0xffffffff * TOP + 0xfffff000 + r.int(0x1000);
    case 7: return GUARD + r.int(GUARD_SIZE);
    case 8: return r.u32();
    default: return DATA + r.int(0xb000);
  }
}

function nastyLen(r: Rng): number {
  switch (r.int(8)) {
    case 0: return 0;
    case 1: return 0xffffffff - r.int(16);
    case 2: return 0x80000000 + r.int(0x1000);
    case 3: return r.u32();
    case 4: return RAM + r.int(16);
    case 5: return 1 + r.int(GUARD_SIZE);
    default: return 1 + r.int(0x400);
  }
}

/** What a case expects: a specific set of error kinds, success, or anything clean. */
type Expect = { kinds: VirtqueueErrorKind[] } | 'ok' | 'any';

/**
 * Write one scenario into guest memory (the rings at `l`, indirect tables, available index
 * starting at `nextAvail`). `indirect` says whether INDIRECT_DESC is negotiated.
 */
function writeCase(r: Rng, dv: DataView, ram: Uint8Array, l: Layout, nextAvail: number, indirect: boolean): Expect {
  const setDesc = (table: number, i: number, addr: number, len: number, flags: number, next: number): void => {
    const at = table + 16 * i;
    dv.setUint32(at, addr % TOP, true);
    dv.setUint32(at + 4, Math.floor(addr / TOP) % TOP, true);
    dv.setUint32(at + 8, len >>> 0, true);
    dv.setUint16(at + 12, flags, true);
    dv.setUint16(at + 14, next, true);
  };
  const publish = (heads: number[], idx = nextAvail + heads.length): void => {
    heads.forEach((h, k) => dv.setUint16(l.avail + 4 + 2 * ((nextAvail + k) % l.size), h, true));
    dv.setUint16(l.avail + 2, idx & 0xffff, true);
  };
  const validBuf = (): [number, number] => {
    const len = 1 + r.int(0x200);
    return [DATA + r.int(0xb000 - len), len];
  };
  // A well-formed linear chain of n descriptors from `head` (wrapping); `w` writable at the end.
  const linear = (head: number, n: number, w: number): void => {
    for (let k = 0; k < n; k++) {
      const i = (head + k) % l.size;
      const [a, len] = validBuf();
      setDesc(l.desc, i, a, len, (k < n - 1 ? F_NEXT : 0) | (k >= n - w ? F_WRITE : 0), (i + 1) % l.size);
    }
  };
  const ringBytes = l.usedEnd - l.desc;
  const kind = r.int(14);
  switch (kind) {
    case 0: {
      // Random bytes in every ring field.
      for (let i = 0; i < ringBytes; i++) ram[l.desc + i] = r.int(256);
      for (let i = 0; i < 0x200; i++) ram[IND + i] = r.int(256);
      return 'any';
    }
    case 1: {
      // Well-formed chains, possibly indirect: must all pop.
      const heads: number[] = [];
      let at = 0;
      while (at < l.size && heads.length < l.size && r.bool(0.8)) {
        const n = 1 + r.int(Math.min(4, l.size - at));
        if (indirect && r.bool(0.3)) {
          const m = 1 + r.int(8);
          const table = IND + 0x100 * heads.length;
          for (let k = 0; k < m; k++) {
            const [a, len] = validBuf();
            setDesc(table, k, a, len, (k < m - 1 ? F_NEXT : 0) | (k >= m - 1 ? F_WRITE : 0), k + 1);
          }
          setDesc(l.desc, at, table, 16 * m, F_INDIRECT, r.int(0x10000));
          heads.push(at);
          at += 1;
        } else {
          linear(at, n, r.int(n + 1));
          heads.push(at);
          at += n;
        }
      }
      publish(heads);
      return 'ok';
    }
    case 2: {
      // Descriptor loop (possibly through every entry, or inside an indirect table).
      if (indirect && r.bool(0.4)) {
        const m = 1 + r.int(16);
        for (let k = 0; k < m; k++) {
          const [a, len] = validBuf();
          setDesc(IND, k, a, len, F_NEXT | (r.bool(0.5) ? F_WRITE : 0), k === m - 1 ? r.int(m) : k + 1);
        }
        // All writable or all readable so the loop, not the order rule, is what trips.
        for (let k = 0; k < m; k++) dv.setUint16(IND + 16 * k + 12, F_NEXT, true);
        setDesc(l.desc, 0, IND, 16 * m, F_INDIRECT, 0);
        publish([0]);
      } else {
        const start = r.int(l.size);
        for (let k = 0; k < l.size; k++) {
          const [a, len] = validBuf();
          setDesc(l.desc, k, a, len, F_NEXT, (k + 1) % l.size);
        }
        publish([start]);
      }
      return { kinds: ['ChainTooLong'] };
    }
    case 3: {
      // A buffer at a hostile address with a hostile length, somewhere in a chain.
      const n = 1 + r.int(l.size);
      linear(0, n, 0);
      const bad = r.int(n);
      const addr = nastyAddr(r);
      const len = nastyLen(r);
      dv.setUint32(l.desc + 16 * bad, addr % TOP, true);
      dv.setUint32(l.desc + 16 * bad + 4, Math.floor(addr / TOP) % TOP, true);
      dv.setUint32(l.desc + 16 * bad + 8, len, true);
      publish([0]);
      const exact = dv.getUint32(l.desc + 16 * bad + 4, true) * TOP + dv.getUint32(l.desc + 16 * bad, true);
      return inGuest(exact, len) ? 'ok' : { kinds: ['BufferOutsideMemory'] };
    }
    case 4: {
      // Address + length wrapping past 2^32 (or 2^64).
      const addr = r.pick([TOP - 1 - r.int(0x100), GUARD + r.int(GUARD_SIZE), r.int(RAM), 0xffffffff * TOP + 0xffffffff]);
      const len = 0xffffffff - r.int(Math.max(1, addr % TOP > 0xffff0000 ? 0x100 : 0x10000));
      setDesc(l.desc, 0, addr, len, r.bool() ? F_WRITE : 0, 0);
      publish([0]);
      return { kinds: ['BufferOutsideMemory'] };
    }
    case 5: {
      // Indirect inside indirect.
      const inner = IND + 0x800;
      const [a, len] = validBuf();
      setDesc(inner, 0, a, len, 0, 0);
      const m = 1 + r.int(4);
      const at = r.int(m);
      for (let k = 0; k < m; k++) {
        const [b, blen] = validBuf();
        setDesc(IND, k, b, blen, k < m - 1 ? F_NEXT : 0, k + 1);
      }
      setDesc(IND, at, inner, 16, F_INDIRECT | (at < m - 1 ? F_NEXT : 0), at + 1);
      setDesc(l.desc, 0, IND, 16 * m, F_INDIRECT, 0);
      publish([0]);
      if (!indirect) return { kinds: ['IndirectNotNegotiated'] };
      return { kinds: ['NestedIndirect', 'IndirectTable'] };
    }
    case 6: {
      // Indirect table with a bad length or address, or with NEXT also set.
      const choice = r.int(6);
      let addr = IND;
      let len = 16 * (1 + r.int(8));
      let flags = F_INDIRECT;
      if (choice === 0) len = 0;
      else if (choice === 1) len = 1 + r.int(0x400) * 16 + r.int(15); // not a multiple of 16
      else if (choice === 2) len = r.pick([16 * (VIRTQUEUE_MAX_CHAIN + 1), 0xfffffff0, 0xffffffff, r.u32() | 1]);
      else if (choice === 3) addr = nastyAddr(r);
      else if (choice === 4) flags |= F_NEXT;
      else addr = RAM - len + 16 * (1 + r.int(4)); // straddles the end of RAM
      for (let k = 0; k < 16; k++) {
        const [b, blen] = validBuf();
        setDesc(IND, k, b, blen, k < 15 ? F_NEXT : 0, k + 1);
      }
      setDesc(l.desc, 0, addr, len, flags, 0);
      publish([0]);
      if (!indirect) return { kinds: ['IndirectNotNegotiated'] };
      const lenOk = len > 0 && len % 16 === 0 && len / 16 <= VIRTQUEUE_MAX_CHAIN;
      if (choice === 4 && lenOk) return { kinds: ['IndirectTable'] };
      if (!lenOk) return { kinds: ['IndirectTable'] };
      const exact = Math.floor(addr / TOP) % TOP * TOP + (addr % TOP);
      if (!inGuest(exact, len)) return { kinds: ['BufferOutsideMemory'] };
      return 'any'; // table landed on guest memory of arbitrary content
    }
    case 7: {
      // Zero-length chains at any address: allowed, nothing to range-check.
      const n = 1 + r.int(l.size);
      for (let k = 0; k < n; k++) setDesc(l.desc, k, nastyAddr(r), 0, (k < n - 1 ? F_NEXT : 0) | (r.bool() ? F_WRITE : 0), k + 1);
      // Writable then readable is still an order violation, even at length 0.
      let seenWrite = false;
      let order = true;
      for (let k = 0; k < n; k++) {
        const w = (dv.getUint16(l.desc + 16 * k + 12, true) & F_WRITE) !== 0;
        if (!w && seenWrite) order = false;
        seenWrite ||= w;
      }
      publish([0]);
      return order ? 'ok' : { kinds: ['DescriptorOrder'] };
    }
    case 8: {
      // Available index more than a ring ahead.
      linear(0, 1, 0);
      const jump = l.size + 1 + r.int(0x10000 - l.size - 1);
      publish([0], nextAvail + jump);
      return { kinds: ['AvailIndex'] };
    }
    case 9: {
      // Head or next index past the table.
      if (r.bool()) {
        publish([l.size + r.int(0x10000 - l.size)]);
        return { kinds: ['HeadIndex'] };
      }
      const n = 1 + r.int(l.size);
      linear(0, n, 0);
      dv.setUint16(l.desc + 16 * (n - 1) + 12, F_NEXT, true);
      dv.setUint16(l.desc + 16 * (n - 1) + 14, l.size + r.int(0x10000 - l.size), true);
      publish([0]);
      return { kinds: ['NextIndex'] };
    }
    case 10: {
      // Readable after writable.
      const n = 2 + r.int(Math.max(1, l.size - 1));
      if (n > l.size) {
        linear(0, 1, 0);
        publish([0]);
        return 'ok';
      }
      linear(0, n, 0);
      const w = r.int(n - 1);
      dv.setUint16(l.desc + 16 * w + 12, F_NEXT | F_WRITE, true);
      publish([0]);
      return { kinds: ['DescriptorOrder'] };
    }
    case 11: {
      // Many chains, the whole ring, with a random subset of bytes flipped afterwards.
      for (let k = 0; k < l.size; k++) linear(k, 1, r.int(2));
      publish(Array.from({ length: l.size }, (_, k) => k));
      const flips = 1 + r.int(8);
      for (let f = 0; f < flips; f++) ram[l.desc + r.int(ringBytes)] = r.int(256);
      return 'any';
    }
    case 12: {
      // Huge indirect table (1024 entries) with random flags: exercises the segment limits.
      if (!indirect) {
        setDesc(l.desc, 0, IND, 16, F_INDIRECT, 0);
        publish([0]);
        return { kinds: ['IndirectNotNegotiated'] };
      }
      const m = r.pick([VIRTQUEUE_MAX_CHAIN, 0x200, 64]);
      for (let k = 0; k < m; k++) {
        const [b, blen] = validBuf();
        setDesc(IND, k, b, r.bool(0.9) ? blen : 0, F_NEXT | (r.bool(0.01) ? F_WRITE : 0), r.bool(0.98) ? k + 1 : r.int(0x10000));
      }
      setDesc(l.desc, 0, IND, 16 * m, F_INDIRECT, 0);
      publish([0]);
      return 'any';
    }
    default: {
      // Structured chain, then random garbage over a few whole descriptors / ring entries.
      const n = 1 + r.int(l.size);
      linear(0, n, r.int(n + 1));
      publish([0]);
      for (let k = 0; k < 1 + r.int(3); k++) {
        const at = l.desc + 16 * r.int(l.size);
        for (let b = 0; b < 16; b++) if (r.bool(0.3)) ram[at + b] = r.int(256);
      }
      if (r.bool(0.3)) dv.setUint16(l.avail + 2, r.int(0x10000), true);
      return 'any';
    }
  }
}

/** Everything a successfully popped chain must satisfy, whatever the ring held. */
function checkChain(c: DescriptorChain, size: number, ctx: string): void {
  if (!(c.head >= 0 && c.head < size)) throw new Error(`${ctx}: head ${c.head} outside queue of ${size}`);
  if (c.segmentCount > VIRTQUEUE_MAX_CHAIN) throw new Error(`${ctx}: ${c.segmentCount} segments`);
  if (c.readableCount > c.segmentCount) throw new Error(`${ctx}: readableCount > segments`);
  for (let i = 0; i < c.segmentCount; i++) {
    if (!inGuest(c.addresses[i]!, c.lengths[i]!)) {
      throw new Error(`${ctx}: segment ${i} 0x${c.addresses[i]!.toString(16)}+0x${c.lengths[i]!.toString(16)} outside guest memory`);
    }
  }
  if (c.readableLength + c.writableLength > 0xffffffff) throw new Error(`${ctx}: chain larger than 4 GiB`);
}

/** Bytes of `now` that differ from `before` in [from, to), which must all satisfy `allowed`. */
function checkUnchanged(now: Uint8Array, before: Uint8Array, from: number, to: number, allowed: (gpa: number) => boolean, base: number, ctx: string): void {
  if (to <= from) return;
  if (Buffer.compare(now.subarray(from, to), before.subarray(from, to)) === 0) return;
  for (let i = from; i < to; i++) {
    if (now[i] !== before[i] && !allowed(base + i)) throw new Error(`${ctx}: guest byte 0x${(base + i).toString(16)} changed outside the used ring / writable buffers`);
  }
}

/** Cheap assertion for the hot loop (vitest's expect costs microseconds per call). */
function eq(actual: unknown, expected: unknown, ctx: string, what: string): void {
  if (!Object.is(actual, expected)) throw new Error(`${ctx}: ${what}: expected ${String(expected)}, got ${String(actual)}`);
}

const KINDS = new Set<VirtqueueErrorKind>([
  'InvalidSize', 'RingOutsideMemory', 'RingMisaligned', 'AvailIndex', 'HeadIndex', 'NextIndex', 'ChainTooLong',
  'ChainTooLarge', 'BufferOutsideMemory', 'DescriptorOrder', 'IndirectNotNegotiated', 'IndirectTable', 'NestedIndirect',
  'UsedIndex', 'MemoryFault', 'DeviceError',
]);

describe('Virtqueue fuzz (seeded)', () => {
  const g = makeGuestVm();
  const memory: GuestMemory = g.vm.memory;
  const q = new Virtqueue(16);
  const errors: VirtqueueError[] = [];
  q.onError = (e) => errors.push(e);

  function runQueueCase(r: Rng, caseNo: number): void {
    const size = r.pick(SIZES);
    const l = layout(size);
    const indirect = r.bool(0.8);
    const nextAvail = r.bool(0.5) ? 0 : r.int(0x10000);
    const nextUsed = r.bool(0.5) ? nextAvail : r.int(0x10000);
    g.ram.set(g.baseline);
    g.ram.fill(0, l.desc, l.usedEnd);
    g.ram.fill(0, IND, DATA);
    const expected = writeCase(r, g.dv, g.ram, l, nextAvail, indirect);
    const before = g.ram.slice();
    const ctx = `case ${caseNo} (size ${size})`;

    q.reset();
    errors.length = 0;
    q.size = size;
    q.descTable = l.desc;
    q.availRing = l.avail;
    q.usedRing = l.used;
    q.ready = true;
    q.eventIdx = r.bool();
    q.indirectDesc = indirect;
    // A few cases with a bad ring configuration: activate must refuse cleanly.
    let badConfig = false;
    if (r.bool(0.03)) {
      badConfig = true;
      const which = r.int(4);
      if (which === 0) q.size = r.pick([0, 3, 6, 32, 0xffff, 1024]);
      else if (which === 1) q.descTable = l.desc + 1 + r.int(15);
      else if (which === 2) q.usedRing = r.pick([RAM - 8, TOP - 4, GUARD - 4, TOP * 7]);
      else q.availRing = r.pick([l.avail + 1, RAM - 2, TOP - 2]);
    }
    const activated = q.activate(memory);
    if (badConfig) {
      eq(activated, false, ctx, 'activated');
      eq(q.usable, false, ctx, 'q.usable');
      eq(q.pop(), null, ctx, 'pop after error');
    } else eq(activated, true, ctx, 'activated');
    q.nextAvail = nextAvail;
    q.nextUsed = nextUsed;

    // Drive it like a device would, with a hard bound on iterations.
    let pops = 0;
    const bound = size + 2;
    let iter = 0;
    for (; iter < bound; iter++) {
      if (r.bool(0.2)) q.disableNotification();
      const avail = q.availableCount();
      if (!(avail >= 0 && avail <= size)) throw new Error(`${ctx}: availableCount ${avail}`);
      const c = q.pop();
      if (c === null) break;
      pops++;
      checkChain(c, size, ctx);
      if (r.bool(0.2)) {
        const again = q.chainAt(c.head);
        if (again !== null) checkChain(again, size, ctx);
      }
      const buf = new Uint8Array(Math.min(64, c.readableLength));
      eq(c.read(memory, 0, buf), buf.length, ctx, 'c.read(memory, 0, buf)');
      eq(q.addUsed(c.head, r.u32()), q.error === null, ctx, 'q.addUsed(c.head, r.u32())');
      q.needsNotification();
      if (r.bool(0.3)) q.enableNotification();
    }
    if (iter === bound) throw new Error(`${ctx}: queue kept producing chains past ${size} pops`);

    // Outcome: a clean error, reported once, or the expected successes.
    if (q.error !== null) {
      eq(q.error instanceof VirtqueueError, true, ctx, 'error is a VirtqueueError');
      eq(KINDS.has(q.error.kind), true, ctx, 'KINDS.has(q.error.kind)');
      eq(errors.length, 1, ctx, 'errors.length');
      eq(errors[0], q.error, ctx, 'errors[0]');
      eq(q.usable, false, ctx, 'q.usable');
      eq(q.pop(), null, ctx, 'pop after error');
      eq(q.addUsed(0, 0), false, ctx, 'q.addUsed(0, 0)');
    } else {
      eq(errors.length, 0, ctx, 'errors.length');
      eq(g.dv.getUint16(l.used + 2, true), pops === 0 ? g.dv.getUint16(l.used + 2, true) : q.nextUsed, ctx, 'g.dv.getUint16(l.used + 2, true)');
      eq(q.nextAvail, (nextAvail + pops) & 0xffff, ctx, 'q.nextAvail');
    }
    if (expected === 'ok' && !badConfig) {
      if (q.error !== null) throw new Error(`${ctx}: expected success, got ${q.error.kind}: ${q.error.message}`);
    } else if (expected !== 'any' && expected !== 'ok' && !badConfig) {
      if (q.error === null || !expected.kinds.includes(q.error.kind)) {
        throw new Error(`${ctx}: expected ${expected.kinds.join('|')}, got ${q.error ? `${q.error.kind}: ${q.error.message}` : `success (${pops} pops)`}`);
      }
    }

    // chainAt with an arbitrary head (as from a corrupt device snapshot): null or a sound chain.
    if (r.bool(0.1)) {
      const c = q.chainAt(r.int(0x10000));
      if (c !== null) checkChain(c, size, ctx);
    }
    // A device returning a head it never popped is the device's bug: refused, never written.
    if (r.bool(0.05)) eq(q.addUsed(r.pick([size, -1, 0.5, 0x10000]), 0), false, ctx, 'q.addUsed(r.pick([size, -1, 0.5, 0x10000]), 0)');

    // Guest memory: only the used ring may have changed; the guard slot never.
    const usedOnly = (): boolean => false;
    checkUnchanged(g.ram, before, 0, l.used, usedOnly, 0, ctx);
    checkUnchanged(g.ram, before, l.usedEnd, RAM, usedOnly, 0, ctx);
    checkUnchanged(g.guard, g.guardBaseline, 0, GUARD_SIZE, usedOnly, GUARD, ctx);
  }

  for (let k = 0; k < QUEUE_ITS; k++) {
    it(`queue: ${QUEUE_CASES_PER_IT} malicious rings (batch ${k})`, () => {
      const r = prng(SEED + k);
      for (let i = 0; i < QUEUE_CASES_PER_IT; i++) {
        try {
          runQueueCase(r, k * QUEUE_CASES_PER_IT + i);
        } catch (e) {
          throw new Error(`seed 0x${(SEED + k).toString(16)} case ${i}: ${e instanceof Error ? e.message : String(e)}`);
        }
        totalCases++;
      }
    }, 60_000);
  }

  it(`virtio-rng over MMIO: ${DEVICE_CASES} malicious rings`, () => {
    const r = prng(SEED ^ 0xdec1);
    let fillByte = 0;
    const rng = new VirtioRng({ queueSize: 16, fill: (b) => b.fill(++fillByte & 0xff) });
    const irqs: boolean[] = [];
    const t = new VirtioMmioTransport(rng, { memory, irq: (lv) => irqs.push(lv) });
    const d4 = new Uint8Array(4);
    const reg = (off: number, v: number): void => {
      new DataView(d4.buffer).setUint32(0, v >>> 0, true);
      t.write(off, d4);
    };
    const vq = t.core.queues[0]!;
    const popped: DescriptorChain[] = [];
    const origPop = vq.pop.bind(vq);
    vq.pop = () => {
      const c = origPop();
      if (c !== null) popped.push(c);
      return c;
    };
    let needsReset = 0;
    let completed = 0;
    for (let i = 0; i < DEVICE_CASES; i++) {
      const ctx = `device case ${i}`;
      try {
        const size = r.pick(SIZES);
        const l = layout(size);
        g.ram.set(g.baseline);
        g.ram.fill(0, l.desc, l.usedEnd);
        g.ram.fill(0, IND, DATA);
        // Bring the device up as Linux would (every offered feature accepted).
        const offered = rng.features | TRANSPORT_FEATURES;
        const indirect = r.bool(0.8);
        const accepted = indirect ? offered : offered & ~(1n << 28n);
        mmioNegotiate(reg, accepted);
        reg(0x030, 0);
        reg(0x038, size);
        reg(0x080, l.desc);
        reg(0x090, l.avail);
        reg(0x0a0, l.used);
        reg(0x044, 1);
        reg(0x070, 0xf);
        expect(t.core.status, ctx).toBe(0xf);
        expect(vq.indirectDesc, ctx).toBe(indirect);
        const expected = writeCase(r, g.dv, g.ram, l, 0, indirect);
        const before = g.ram.slice();
        popped.length = 0;
        reg(0x050, 0); // notify
        if (r.bool(0.2)) reg(0x050, 0);

        if (vq.error !== null) {
          needsReset++;
          expect(t.core.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET, ctx).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
          expect(t.core.failure, ctx).toContain(vq.error.message);
          if (expected === 'ok') throw new Error(`expected success, got ${vq.error.kind}: ${vq.error.message}`);
        } else {
          completed++;
          expect(t.core.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET, ctx).toBe(0);
          expect(vq.nextUsed, ctx).toBe(popped.length & 0xffff);
          if (popped.length > 0) expect(g.dv.getUint16(l.used + 2, true), ctx).toBe(vq.nextUsed);
          if (expected !== 'ok' && expected !== 'any') throw new Error(`expected ${expected.kinds.join('|')}, got success`);
        }
        if (popped.length > size) throw new Error(`device popped ${popped.length} chains from a queue of ${size}`);
        for (const c of popped) checkChain(c, size, ctx);
        // Changed bytes: used ring, or inside a writable segment of a chain the device popped.
        const allowed = (gpa: number): boolean => {
          if (gpa >= l.used && gpa < l.usedEnd) return true;
          for (const c of popped) {
            for (let s = c.readableCount; s < c.segmentCount; s++) {
              if (gpa >= c.addresses[s]! && gpa < c.addresses[s]! + c.lengths[s]!) return true;
            }
          }
          return false;
        };
        checkUnchanged(g.ram, before, 0, RAM, allowed, 0, ctx);
        checkUnchanged(g.guard, g.guardBaseline, 0, GUARD_SIZE, allowed, GUARD, ctx);
        g.guard.set(g.guardBaseline);
      } catch (e) {
        throw new Error(`${ctx} (seed 0x${(SEED ^ 0xdec1).toString(16)}): ${e instanceof Error ? e.message : String(e)}`);
      }
      totalCases++;
    }
    console.log(`virtio-rng fuzz: ${completed} completed/ignored, ${needsReset} NEEDS_RESET`);
    expect(needsReset).toBeGreaterThan(DEVICE_CASES / 10);
    expect(completed).toBeGreaterThan(DEVICE_CASES / 10);
  }, 60_000);

  it('ran at least 100,000 cases', () => {
    expect(totalCases).toBeGreaterThanOrEqual(100_000);
  });
});
