/**
 * Fuzzing the destination side: valid snapshot streams of a small real kvm-core VM, mutated
 * (truncations, byte flips, inserted/deleted bytes, corrupt lengths/section types/version/magic,
 * swapped/dropped/duplicated sections, and re-checksummed edits of JSON and RAM records), fed to
 * `loadStream` (in-memory reader), `restoreSnapshot` (a file) and `receiveMigration` (a duplex
 * connection). Every case must end in a MigrationError (or, for a harmless mutation, a load whose
 * RAM is byte-identical), within a per-case timeout, and without leaving a built machine open or
 * any machine running after a failure. The PRNG seed is fixed: a failure names its case number,
 * and `FUZZ_SEED` / `FUZZ_CASES` replay or widen the run.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, Readable, Writable } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  MigrationError, PAGE_SIZE, PageKind, Section, encodeFrame, encodeHeader, jsonPayload, loadStream, receiveMigration,
  restoreSnapshot, writeSnapshot, type Frame, type MigrationErrorKind,
} from '../src/index.js';
import { TestMachine, blankLike, closeAll, type TestMachineOptions } from './guest.js';
import { Collector, frames, readerOf } from './util.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x6b766d74);
const CASES = Number(process.env.FUZZ_CASES ?? 1000);
const CASE_TIMEOUT_MS = 5_000;
const KINDS: readonly MigrationErrorKind[] = ['truncated', 'corrupt', 'version', 'config-mismatch', 'io', 'connection', 'remote', 'protocol', 'timeout', 'aborted', 'restore'];

const dir = mkdtempSync(join(tmpdir(), 'kvmts-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(closeAll);

/** mulberry32: small, fast, good enough to pick mutations. */
function prng(seed: number): { u32(): number; int(n: number): number; pick<T>(a: readonly T[]): T; chance(p: number): boolean } {
  let s = seed >>> 0;
  const u32 = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const int = (n: number): number => (n <= 0 ? 0 : u32() % n);
  return { u32, int, pick: (a) => a[int(a.length)]!, chance: (p) => u32() / 2 ** 32 < p };
}
type Rng = ReturnType<typeof prng>;

function rebuild(fs: readonly { type: number; payload: Uint8Array }[]): Uint8Array {
  return new Uint8Array(Buffer.concat([encodeHeader(), ...fs.map((f) => encodeFrame(f.type as never, f.payload))]));
}

/** A base stream: the machine shape, the stream, its sections, and the source's RAM. */
interface Base {
  name: string;
  opts: TestMachineOptions;
  bytes: Uint8Array;
  frames: Frame[];
  ram: Uint8Array;
}

async function makeBase(name: string, opts: TestMachineOptions, deflate: boolean, rng: Rng): Promise<Base> {
  const a = new TestMachine(opts);
  // The guest's working set is 0x100000 + hotPages pages; give the stream some non-zero pages
  // elsewhere too (compressible ones for DEFLATE records, random ones for RAW).
  for (let p = 300; p < 312; p++) for (let i = 0; i < PAGE_SIZE; i += 4) a.ram[p * PAGE_SIZE + i] = p & 0x0f;
  for (let i = 320 * PAGE_SIZE; i < 328 * PAGE_SIZE; i++) a.ram[i] = rng.u32() & 0xff;
  a.run({ untilCount: 2, maxExits: 100_000 });
  a.run({ maxExits: 5 });
  const c = new Collector();
  await writeSnapshot(a, c, { deflate });
  const bytes = c.bytes();
  const base = { name, opts, bytes, frames: frames(bytes), ram: a.ram.slice() };
  a.close();
  return base;
}

/** One mutation: the bytes, a description, and whether only well-framed content changed (CRCs recomputed). */
interface Mutant {
  what: string;
  bytes: Uint8Array;
  /** Non-RAM content only changed: a load that succeeds must have the source's RAM. */
  ramIntact: boolean;
  /** The result must be a rejection of this kind (for truncations). */
  mustFail?: MigrationErrorKind;
}

const JSON_VALUES: unknown[] = [null, 0, -1, 1, 0.5, 2 ** 53, 1e308, -1e308, '', 'x', 'AAAA', true, false, [], {}, [1, 2, 3], { a: 1 }];

/** Edits one value somewhere in a JSON tree (in place); returns the path. */
function mutateJson(root: unknown, rng: Rng): string {
  const paths: { parent: Record<string, unknown> | unknown[]; key: string | number; path: string }[] = [];
  const walk = (v: unknown, path: string): void => {
    if (Array.isArray(v)) v.forEach((x, i) => (paths.push({ parent: v, key: i, path: `${path}[${i}]` }), walk(x, `${path}[${i}]`)));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) (paths.push({ parent: v as Record<string, unknown>, key: k, path: `${path}.${k}` }), walk(x, `${path}.${k}`));
  };
  walk(root, '$');
  if (paths.length === 0) return '(empty)';
  const t = rng.pick(paths);
  const parent = t.parent as Record<string | number, unknown>;
  const old = parent[t.key];
  const op = rng.int(4);
  if (op === 0 && !Array.isArray(t.parent)) {
    delete parent[t.key];
    return `delete ${t.path}`;
  }
  if (op === 1 && typeof old === 'number') {
    parent[t.key] = old + rng.pick([-1, 1, 2 ** 31, -(2 ** 31), 4096]);
    return `nudge ${t.path}`;
  }
  if (op === 2 && typeof old === 'string' && old.length > 0) {
    const at = rng.int(old.length);
    parent[t.key] = old.slice(0, at) + String.fromCharCode(33 + rng.int(90)) + old.slice(at + 1);
    return `edit string ${t.path}`;
  }
  parent[t.key] = rng.pick(JSON_VALUES);
  return `set ${t.path} = ${JSON.stringify(parent[t.key])}`;
}

/** Edits one RAM record header field (kind, slot, first page, count) or one record length, CRC recomputed. */
function mutateRam(payload: Uint8Array, rng: Rng): { payload: Uint8Array; what: string } {
  const p = payload.slice();
  const dv = new DataView(p.buffer);
  const recs: { at: number; kind: number }[] = [];
  for (let i = 0; i + 10 <= p.length; ) {
    const kind = p[i]!;
    const count = dv.getUint32(i + 6);
    recs.push({ at: i, kind });
    if (kind === PageKind.Zero) i += 10;
    else if (kind === PageKind.Raw) i += 10 + count * PAGE_SIZE;
    else i += 14 + dv.getUint32(i + 10);
  }
  const r = rng.pick(recs);
  switch (rng.int(6)) {
    case 0:
      p[r.at] = rng.int(6);
      return { payload: p, what: `record@${r.at} kind ${r.kind} -> ${p[r.at]}` };
    case 1:
      p[r.at + 1] = rng.pick([1, 2, 255]);
      return { payload: p, what: `record@${r.at} slot -> ${p[r.at + 1]}` };
    case 2: {
      const v = rng.pick([0, 1, dv.getUint32(r.at + 2) + 1, 511, 512, 0xffffffff, 0x80000000]);
      dv.setUint32(r.at + 2, v);
      return { payload: p, what: `record@${r.at} first page -> ${v}` };
    }
    case 3: {
      const v = rng.pick([0, 1, dv.getUint32(r.at + 6) + 1, Math.max(0, dv.getUint32(r.at + 6) - 1), 0xffffffff, 0x100000]);
      dv.setUint32(r.at + 6, v);
      return { payload: p, what: `record@${r.at} count -> ${v}` };
    }
    case 4:
      if (r.kind === PageKind.Xbzrle || r.kind === PageKind.Deflate) {
        const v = rng.pick([0, 1, dv.getUint32(r.at + 10) - 1, dv.getUint32(r.at + 10) + 1, 0xffffffff]);
        dv.setUint32(r.at + 10, v >>> 0);
        return { payload: p, what: `record@${r.at} length -> ${v >>> 0}` };
      }
      return cutRam(p, r.at, rng);
    default:
      return cutRam(p, r.at, rng);
  }
}

/** Cuts a RAM payload inside a record (the frame stays valid). */
function cutRam(p: Uint8Array, at: number, rng: Rng): { payload: Uint8Array; what: string } {
  const cut = Math.min(at + 1 + rng.int(Math.min(p.length - at, 20_000)), p.length - 1);
  return { payload: p.subarray(0, cut), what: `RAM payload cut at ${cut}` };
}

function mutate(base: Base, rng: Rng): Mutant {
  const b = base.bytes;
  const fs = base.frames;
  const n = b.length;
  const withBytes = (what: string, bytes: Uint8Array, ramIntact = false, mustFail?: MigrationErrorKind): Mutant => ({ what, bytes, ramIntact, ...(mustFail ? { mustFail } : {}) });
  const op = rng.int(17);
  switch (op) {
    case 0: {
      const at = rng.chance(0.2) ? rng.int(64) : rng.int(n);
      return withBytes(`truncate at ${at}`, b.subarray(0, at), false, 'truncated');
    }
    case 1: {
      const c = b.slice();
      const k = 1 + rng.int(4);
      const where: number[] = [];
      for (let j = 0; j < k; j++) {
        const at = rng.int(n);
        c[at] = c[at]! ^ (1 << rng.int(8));
        where.push(at);
      }
      return withBytes(`flip bits at ${where.join(',')}`, c);
    }
    case 2: {
      const c = b.slice();
      const at = rng.int(n);
      c[at] = rng.int(256);
      return withBytes(`set byte ${at}`, c);
    }
    case 3: {
      const at = rng.int(n + 1);
      const ins = new Uint8Array(1 + rng.int(16)).map(() => rng.int(256));
      return withBytes(`insert ${ins.length} bytes at ${at}`, new Uint8Array(Buffer.concat([b.subarray(0, at), ins, b.subarray(at)])));
    }
    case 4: {
      const at = rng.int(n);
      const len = 1 + rng.int(Math.min(64, n - at));
      return withBytes(`delete ${len} bytes at ${at}`, new Uint8Array(Buffer.concat([b.subarray(0, at), b.subarray(at + len)])));
    }
    case 5: {
      const c = b.slice();
      const at = rng.int(8);
      c[at] = (c[at]! + 1 + rng.int(255)) & 0xff;
      return withBytes(`magic byte ${at}`, c);
    }
    case 6: {
      const c = b.slice();
      const v = rng.pick([0, 2, 0xffffffff, 0x01000000, 0x100, rng.u32()]);
      new DataView(c.buffer).setUint32(8, v);
      return withBytes(`version ${v}`, c);
    }
    case 7: {
      // A section's length field, CRC left alone or recomputed.
      const f = rng.pick(fs);
      const c = b.slice();
      const dv = new DataView(c.buffer);
      const len = f.payload.length;
      const v = rng.pick([0, 1, len - 1, len + 1, len + 4096, 64 << 20, (64 << 20) + 1, 0xffffffff, rng.u32()]) >>> 0;
      dv.setUint32(f.offset + 1, v);
      return withBytes(`length of section #${f.index} ${len} -> ${v}`, c);
    }
    case 8: {
      // A section's type byte, CRC recomputed half the time (then only the content checks catch it).
      const f = rng.pick(fs);
      const t = rng.pick([0, 1, 2, 3, 4, 5, 6, 0x10, 0x11, 0x12, 0x13, 0x7f, 0xff]);
      if (rng.chance(0.5)) {
        const c = b.slice();
        c[f.offset] = t;
        return withBytes(`type of section #${f.index} -> 0x${t.toString(16)} (CRC stale)`, c);
      }
      const list = fs.map((x) => ({ type: x.type as number, payload: x.payload }));
      list[f.index] = { type: t, payload: f.payload };
      return withBytes(`type of section #${f.index} -> 0x${t.toString(16)} (CRC recomputed)`, rebuild(list), f.type !== Section.Ram && t !== Section.Ram);
    }
    case 9: {
      const i = rng.int(fs.length);
      const j = rng.int(fs.length);
      const list = fs.slice();
      [list[i], list[j]] = [list[j]!, list[i]!];
      return withBytes(`swap sections #${i} and #${j}`, rebuild(list), i === j);
    }
    case 10: {
      const i = rng.int(fs.length);
      const list = fs.slice();
      list.splice(i, 1);
      return withBytes(`drop section #${i}`, rebuild(list));
    }
    case 11: {
      const i = rng.int(fs.length);
      const at = rng.int(fs.length + 1);
      const list: Frame[] = fs.slice();
      list.splice(at, 0, fs[i]!);
      return withBytes(`duplicate section #${i} at #${at}`, rebuild(list), fs[i]!.type !== Section.Ram);
    }
    case 12:
    case 13: {
      // Well-framed JSON edits of CONFIG, STATE or END.
      const js = fs.filter((f) => f.type !== Section.Ram);
      const f = rng.pick(js);
      const v = JSON.parse(new TextDecoder().decode(f.payload)) as unknown;
      const what = mutateJson(v, rng);
      const list = fs.map((x) => ({ type: x.type as number, payload: x.payload }));
      list[f.index] = { type: f.type, payload: jsonPayload(v) };
      return withBytes(`section #${f.index} JSON: ${what}`, rebuild(list), true);
    }
    case 14: {
      // Not JSON / not UTF-8 in a JSON section, well framed.
      const js = fs.filter((f) => f.type !== Section.Ram);
      const f = rng.pick(js);
      const p = f.payload.slice();
      const at = rng.int(p.length);
      p[at] = rng.pick([0x00, 0x22, 0x7b, 0x7d, 0xc3, 0xff, 0x80]);
      const list = fs.map((x) => ({ type: x.type as number, payload: x.payload }));
      list[f.index] = { type: f.type, payload: p };
      return withBytes(`section #${f.index} JSON byte ${at} -> 0x${p[at]!.toString(16)}`, rebuild(list), true);
    }
    case 15: {
      // Well-framed RAM record edits.
      const rams = fs.filter((f) => f.type === Section.Ram);
      const f = rng.pick(rams);
      const m = mutateRam(f.payload, rng);
      const list = fs.map((x) => ({ type: x.type as number, payload: x.payload }));
      list[f.index] = { type: f.type, payload: m.payload };
      return withBytes(`section #${f.index} ${m.what}`, rebuild(list));
    }
    default: {
      // Garbage, a valid frame, or a second stream after END.
      const tail = rng.pick([
        () => new Uint8Array(1 + rng.int(32)).map(() => rng.int(256)),
        () => encodeFrame(Section.Round, jsonPayload({ round: 1 })),
        () => b.subarray(0, 5 + rng.int(40)),
        () => encodeHeader(),
      ])();
      return withBytes(`append ${tail.length} bytes after END`, new Uint8Array(Buffer.concat([b, tail])), true);
    }
  }
}

type Mode = 'load' | 'load-into' | 'file' | 'incoming';

/** A Duplex whose readable side is `bytes` in chunks and whose writable side swallows replies. */
function connection(bytes: Uint8Array, chunk: number): Duplex {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += chunk) parts.push(bytes.subarray(i, i + chunk));
  return Duplex.from({ readable: Readable.from(parts), writable: new Writable({ write: (_c, _e, cb) => cb() }) });
}

interface Outcome {
  ok: boolean;
  kind?: MigrationErrorKind;
}

async function runCase(base: Base, m: Mutant, mode: Mode, chunk: number, caseNo: number): Promise<Outcome> {
  const built: TestMachine[] = [];
  const build = (): TestMachine => {
    const t = blankLike(base.opts);
    built.push(t);
    return t;
  };
  const given = mode === 'load-into' ? blankLike(base.opts) : undefined;
  // Count resumes of the caller's machine: loadStream must never resume it.
  let resumed = 0;
  if (given) {
    const resume = given.resume.bind(given);
    given.resume = () => {
      resumed++;
      resume();
    };
  }
  const ctx = `case ${caseNo} [${base.name}, ${mode}, chunk ${chunk}]: ${m.what}`;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${ctx}: no result within ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
  });
  let machine: TestMachine | undefined;
  let error: unknown;
  try {
    const work = (async (): Promise<TestMachine> => {
      switch (mode) {
        case 'load':
          return (await loadStream(readerOf(m.bytes, chunk), build)).machine;
        case 'load-into':
          return (await loadStream(readerOf(m.bytes, chunk), given!)).machine;
        case 'file': {
          const file = join(dir, `c${caseNo}.snap`);
          writeFileSync(file, m.bytes);
          try {
            return (await restoreSnapshot(file, build, { paused: true })).machine;
          } finally {
            rmSync(file, { force: true });
          }
        }
        case 'incoming': {
          const bytes = Buffer.concat([m.bytes, encodeFrame(Section.Commit, jsonPayload({}))]);
          return (await receiveMigration(connection(bytes, chunk), build, { commitTimeoutMs: 1000 })).machine;
        }
      }
    })();
    machine = await Promise.race([work, timeout]);
  } catch (err) {
    error = err;
  } finally {
    clearTimeout(timer);
  }
  try {
    if (error !== undefined) {
      if (!(error instanceof MigrationError)) throw new Error(`${ctx}: not a MigrationError: ${String((error as Error)?.stack ?? error)}`);
      expect(KINDS, `${ctx}: kind ${error.kind}`).toContain(error.kind);
      if (m.mustFail) expect(error.kind, `${ctx}: ${error.message}`).toBe(m.mustFail);
      // Nothing half-started: every machine built for the failed stream is closed, and a machine
      // the caller handed in is left paused (never resumed with partial state).
      for (const t of built) expect(t.closed, `${ctx}: a machine built for a rejected stream is still open (${error.message})`).toBe(true);
      if (given) {
        // Paused before anything was written into it, and never resumed: untouched, or paused.
        expect(resumed, `${ctx}: the caller's machine was resumed`).toBe(0);
        if (!given.paused) expect(given.ram.every((x) => x === 0), `${ctx}: RAM written into a machine that is not paused`).toBe(true);
        expect(given.closed).toBe(false);
      }
      return { ok: false, kind: error.kind };
    }
    if (m.mustFail) throw new Error(`${ctx}: loaded, but a ${m.mustFail} error was expected`);
    expect(machine, ctx).toBeDefined();
    expect(machine!.closed, `${ctx}: the loaded machine is closed`).toBe(false);
    // Only the one machine that was loaded exists; loadStream/restoreSnapshot leave it paused.
    for (const t of built) if (t !== machine) expect(t.closed, ctx).toBe(true);
    if (given) expect(resumed, ctx).toBe(0);
    if (mode !== 'incoming') expect(machine!.paused, `${ctx}: the loaded machine is not paused`).toBe(true);
    if (m.ramIntact) expect(Buffer.compare(machine!.ram, base.ram), `${ctx}: loaded, but RAM differs from the source`).toBe(0);
    return { ok: true };
  } finally {
    for (const t of built) t.close();
    given?.close();
  }
}

describe('fuzzing the stream loader', () => {
  it(`rejects ${CASES} mutated streams cleanly (seed 0x${SEED.toString(16)})`, async () => {
    const t0 = performance.now();
    const rng = prng(SEED);
    const bases = [
      await makeBase('2MiB', { memSize: 2 << 20, hotPages: 8 }, false, rng),
      await makeBase('2MiB+irqchip+deflate', { memSize: 2 << 20, hotPages: 8, irqchip: true }, true, rng),
    ];
    for (const b of bases) expect(b.frames.map((f) => f.type)).toContain(Section.Ram);
    expect(bases[1]!.frames.some((f) => f.type === Section.Ram && f.payload[0] !== undefined)).toBe(true);

    // Sanity: the unmutated streams load, through every path, with identical RAM.
    for (const b of bases) {
      for (const mode of ['load', 'load-into', 'file', 'incoming'] as const) {
        expect(await runCase(b, { what: 'unmutated', bytes: b.bytes, ramIntact: true }, mode, 65536, -1)).toEqual({ ok: true });
      }
    }

    const stats = new Map<string, number>();
    const bump = (k: string): void => void stats.set(k, (stats.get(k) ?? 0) + 1);
    const modeMs = new Map<Mode, number>();
    const modes: Mode[] = ['load', 'load', 'load', 'load-into', 'file', 'incoming'];
    const chunks = [64, 997, 4096, 7919, 65536, 1 << 22];
    for (let i = 0; i < CASES; i++) {
      const base = bases[i % bases.length]!;
      const m = mutate(base, rng);
      const mode = rng.pick(modes);
      const chunk = rng.pick(chunks);
      const c0 = performance.now();
      const r = await runCase(base, m, mode, chunk, i);
      modeMs.set(mode, (modeMs.get(mode) ?? 0) + performance.now() - c0);
      bump(r.ok ? 'loaded' : `rejected:${r.kind}`);
    }
    const ms = performance.now() - t0;
    const summary = [...stats].sort().map(([k, v]) => `${k}=${v}`).join(' ');
    const perMode = [...modeMs].map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`).join(', ');
    console.log(`stream fuzz: ${CASES} mutated streams (seed 0x${SEED.toString(16)}) in ${(ms / 1000).toFixed(1)} s (${perMode}): ${summary}`);
    expect(stats.get('loaded') ?? 0).toBeLessThan(CASES / 2);
  }, 120_000);
});
