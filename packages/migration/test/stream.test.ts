import { describe, expect, it, afterEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  FORMAT_VERSION, MigrationError, PAGE_SIZE, PageKind, RamEncoder, Section, applyRamSection, crc32, crc32Portable,
  emptyRamStats, encodeFrame, encodeHeader, jsonPayload, loadStream, writeSnapshot, xbzrleDecode, xbzrleEncode, type Frame,
} from '../src/index.js';
import { TestMachine, blankLike, closeAll } from './guest.js';
import { Collector, frames, readerOf } from './util.js';

afterEach(closeAll);

function rebuild(fs: { type: number; payload: Uint8Array }[]): Uint8Array {
  const parts = [encodeHeader(), ...fs.map((f) => encodeFrame(f.type as never, f.payload))];
  return new Uint8Array(Buffer.concat(parts));
}

async function snapshotBytes(m: TestMachine, deflate = false): Promise<Uint8Array> {
  const c = new Collector();
  await writeSnapshot(m, c, { deflate });
  return c.bytes();
}

async function loadError(bytes: Uint8Array, opts: ConstructorParameters<typeof TestMachine>[0] = { memSize: 4 << 20 }): Promise<{ err: MigrationError; target: TestMachine | undefined }> {
  let target: TestMachine | undefined;
  try {
    await loadStream(readerOf(bytes), () => (target = blankLike(opts)));
  } catch (err) {
    expect(err).toBeInstanceOf(MigrationError);
    // A machine built for a stream that failed to load is discarded.
    if (target) expect(target.closed).toBe(true);
    return { err: err as MigrationError, target };
  }
  throw new Error('the stream loaded');
}

describe('CRC-32', () => {
  it('zlib and the portable implementation agree', () => {
    const d = randomBytes(10_000);
    expect(crc32(d)).toBe(crc32Portable(d));
    expect(crc32Portable(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(d.subarray(5000), crc32(d.subarray(0, 5000)))).toBe(crc32(d));
  });
});

describe('XBZRLE', () => {
  it('round-trips sparse, dense and boundary changes', () => {
    const out = new Uint8Array(PAGE_SIZE * 2);
    for (let t = 0; t < 200; t++) {
      const prev = new Uint8Array(randomBytes(PAGE_SIZE));
      const cur = prev.slice();
      const n = t % 50;
      for (let i = 0; i < n; i++) {
        const at = (i * 977 + t * 31) % PAGE_SIZE;
        cur[at] = cur[at]! ^ (1 + (i % 255));
      }
      if (t % 7 === 0) cur[0] = cur[0]! ^ 0xff;
      if (t % 5 === 0) cur[PAGE_SIZE - 1] = cur[PAGE_SIZE - 1]! ^ 0x55;
      const len = xbzrleEncode(prev, cur, out);
      expect(len).toBeGreaterThanOrEqual(0);
      const page = prev.slice();
      xbzrleDecode(out.subarray(0, len), page);
      expect(Buffer.compare(page, cur)).toBe(0);
    }
  });

  it('encodes an unchanged page as nothing and gives up past the limit', () => {
    const a = new Uint8Array(PAGE_SIZE).fill(7);
    const out = new Uint8Array(PAGE_SIZE);
    expect(xbzrleEncode(a, a.slice(), out)).toBe(0);
    const b = new Uint8Array(randomBytes(PAGE_SIZE));
    expect(xbzrleEncode(a, b, out, 3000)).toBe(-1);
  });

  it('a small change costs a few bytes', () => {
    const a = new Uint8Array(randomBytes(PAGE_SIZE));
    const b = a.slice();
    new DataView(b.buffer).setUint32(2048, 0xdeadbeef, true);
    expect(xbzrleEncode(a, b, new Uint8Array(PAGE_SIZE))).toBeLessThanOrEqual(8);
  });

  it('rejects malformed deltas', () => {
    const page = new Uint8Array(PAGE_SIZE);
    expect(() => xbzrleDecode(new Uint8Array([0x80]), page)).toThrow(/ends inside a run length/);
    expect(() => xbzrleDecode(new Uint8Array([0, 0]), page)).toThrow(/empty changed run/);
    expect(() => xbzrleDecode(new Uint8Array([0xff, 0x1f, 2, 9, 9]), page)).toThrow(/past the end of the page/);
    expect(() => xbzrleDecode(new Uint8Array([0, 5, 1, 2]), page)).toThrow(/ends inside a changed run/);
  });
});

describe('RAM records', () => {
  it('zero pages are a flag, raw runs are merged, re-sent pages become deltas', () => {
    const ram = new Uint8Array(64 * PAGE_SIZE);
    ram.fill(1, 10 * PAGE_SIZE, 13 * PAGE_SIZE);
    const enc = new RamEncoder();
    for (let p = 0; p < 64; p++) enc.page(0, ram, p);
    const first = enc.take()!;
    // 61 zero pages in two runs, 3 raw pages in one: far less than 64 pages.
    expect(first.length).toBeLessThan(3 * PAGE_SIZE + 100);
    expect(enc.stats).toMatchObject({ zeroPages: 61, rawPages: 3 });
    ram[11 * PAGE_SIZE + 100] = 42;
    enc.page(0, ram, 11);
    const second = enc.take()!;
    expect(second[0]).toBe(PageKind.Xbzrle);
    expect(second.length).toBeLessThan(30);
    const dest = new Uint8Array(64 * PAGE_SIZE).fill(0xee);
    const slots = new Map([[0, dest]]);
    const stats = emptyRamStats();
    applyRamSection({ type: Section.Ram, payload: first, offset: 0, index: 0 }, slots, stats);
    applyRamSection({ type: Section.Ram, payload: second, offset: 0, index: 1 }, slots, stats);
    expect(Buffer.compare(dest, ram)).toBe(0);
    expect(stats).toMatchObject({ zeroPages: 61, rawPages: 3, xbzrlePages: 1 });
  });

  it('deflates compressible runs when asked', () => {
    const ram = new Uint8Array(32 * PAGE_SIZE);
    for (let i = 0; i < ram.length; i++) ram[i] = (i >> 3) & 0x0f;
    const enc = new RamEncoder({ deflate: true, xbzrle: false });
    for (let p = 0; p < 32; p++) enc.page(0, ram, p);
    const payload = enc.take()!;
    expect(payload[0]).toBe(PageKind.Deflate);
    expect(payload.length).toBeLessThan(ram.length / 4);
    const dest = new Uint8Array(ram.length);
    applyRamSection({ type: Section.Ram, payload, offset: 0, index: 0 }, new Map([[0, dest]]));
    expect(Buffer.compare(dest, ram)).toBe(0);
  });

  it('rejects records outside the slot, for missing slots, of unknown kinds, or cut short', () => {
    const slots = new Map([[0, new Uint8Array(4 * PAGE_SIZE)]]);
    const rec = (kind: number, slot: number, page: number, count: number, data: number[] = []): Frame => {
      const b = new Uint8Array(10 + data.length);
      const dv = new DataView(b.buffer);
      b[0] = kind;
      b[1] = slot;
      dv.setUint32(2, page);
      dv.setUint32(6, count);
      b.set(data, 10);
      return { type: Section.Ram, payload: b, offset: 99, index: 3 };
    };
    expect(() => applyRamSection(rec(PageKind.Zero, 0, 3, 2), slots)).toThrow(/pages 3\.\.4 are outside slot 0 \(4 pages\)/);
    expect(() => applyRamSection(rec(PageKind.Zero, 5, 0, 1), slots)).toThrow(/slot 5, which the machine does not have/);
    expect(() => applyRamSection(rec(9, 0, 0, 1), slots)).toThrow(/unknown page record kind 9/);
    expect(() => applyRamSection(rec(PageKind.Raw, 0, 0, 1, [1, 2, 3]), slots)).toThrow(/cut short/);
    expect(() => applyRamSection(rec(PageKind.Xbzrle, 0, 0, 2), slots)).toThrow(/covers 2 pages/);
    expect(() => applyRamSection(rec(PageKind.Deflate, 0, 0, 1, [0, 0, 0, 3, 1, 2, 3]), slots)).toThrow(/do not inflate/);
  });
});

describe('snapshot stream round trip', () => {
  it('restores memory, vCPU and device state into a fresh machine that continues identically', async () => {
    for (const irqchip of [false, true]) {
      const a = new TestMachine({ irqchip });
      a.run({ untilCount: 3, maxExits: 100_000 });
      a.run({ maxExits: 7 }); // stop somewhere between reports
      const bytes = await snapshotBytes(a);
      expect(bytes.length).toBeLessThan(3 << 20); // zero pages cost nothing
      const loaded = await loadStream(readerOf(bytes), () => blankLike({ irqchip }));
      const b = loaded.machine;
      expect(b.paused).toBe(true);
      b.resume();
      expect(b.checksum()).toBe(a.checksum());
      expect(b.outlog.save()).toEqual(a.outlog.save());
      a.run({ untilCount: 10 });
      b.run({ untilCount: 10 });
      expect(b.counter()).toBe(10 * 1024);
      expect(b.checksum()).toBe(a.checksum());
      expect(b.vcpu.getRegs()).toEqual(a.vcpu.getRegs());
    }
  });

  it('with deflate the stream is smaller and loads the same', async () => {
    const a = new TestMachine();
    a.run({ untilCount: 2 });
    const plain = await snapshotBytes(a);
    const z = await snapshotBytes(a, true);
    expect(z.length).toBeLessThan(plain.length);
    const b = (await loadStream(readerOf(z, 65536), () => blankLike({}))).machine;
    expect(b.checksum()).toBe(a.checksum());
  });
});

describe('strict validation', () => {
  let cached: Uint8Array | undefined;
  async function good(): Promise<Uint8Array> {
    if (!cached) {
      const a = new TestMachine();
      a.run({ untilCount: 2 });
      cached = await snapshotBytes(a);
      a.close();
    }
    return cached.slice();
  }

  it('bad magic', async () => {
    const b = await good();
    b[0] = 0x50;
    expect((await loadError(b)).err.message).toMatch(/not a kvmts migration stream: bad magic 50 56/);
  });

  it('unsupported format version', async () => {
    const b = await good();
    new DataView(b.buffer).setUint32(8, FORMAT_VERSION + 1);
    const { err } = await loadError(b);
    expect(err.kind).toBe('version');
    expect(err.message).toMatch(/format version 2: this build reads version 1/);
  });

  it('truncated at every kind of place', async () => {
    const b = await good();
    const fs = frames(b);
    const ramFrame = fs.find((f) => f.type === Section.Ram)!;
    const stateFrame = fs.find((f) => f.type === Section.State)!;
    const endFrame = fs.find((f) => f.type === Section.End)!;
    const cases: [number, RegExp][] = [
      [0, /truncated stream: it is empty/],
      [5, /inside the 12-byte header/],
      [12, /before its CONFIG section/],
      [14, /inside a section header/],
      [ramFrame.offset + 100, /inside RAM section #\d+ \(100 of \d+ bytes\)/],
      [ramFrame.offset, /before its STATE section/],
      [stateFrame.offset + 20, /inside STATE section/],
      [endFrame.offset, /before its END section/],
      [b.length - 1, /inside END section/],
    ];
    for (const [at, re] of cases) {
      const { err } = await loadError(b.subarray(0, at));
      expect(err.kind, `cut at ${at}`).toBe('truncated');
      expect(err.message, `cut at ${at}`).toMatch(re);
    }
  });

  it('corrupt bytes anywhere in a section are checksum errors naming the section', async () => {
    const b = await good();
    const fs = frames(b);
    for (const f of fs) {
      const c = b.slice();
      const at = f.offset + 5 + Math.floor(f.payload.length / 2);
      c[at] = c[at]! ^ 0x10;
      const { err } = await loadError(c);
      expect(err.kind).toBe('corrupt');
      expect(err.message).toContain(`checksum mismatch in ${['', 'CONFIG', 'RAM', 'STATE', 'ROUND', 'END'][f.type]} section #${f.index} at byte ${f.offset}`);
    }
    // A flipped CRC byte, too.
    const c = b.slice();
    c[b.length - 1] = c[b.length - 1]! ^ 1;
    expect((await loadError(c)).err.message).toMatch(/checksum mismatch in END section/);
  });

  it('a corrupt length or type is caught before anything is buffered', async () => {
    const b = await good();
    const fs = frames(b);
    const c = b.slice();
    new DataView(c.buffer).setUint32(fs[1]!.offset + 1, 0x7fffffff);
    expect((await loadError(c)).err.message).toMatch(/claims 2147483647 bytes \(limit 67108864\)/);
    const d = b.slice();
    d[fs[1]!.offset] = 0x7f;
    expect((await loadError(d)).err.message).toMatch(/unknown section type 0x7f at byte \d+ \(section #1\)/);
  });

  it('well-framed but wrong content: order, JSON, END counts, missing STATE', async () => {
    const b = await good();
    const fs = frames(b);
    const cfg = fs[0]!;
    const rams = fs.filter((f) => f.type === Section.Ram);
    const state = fs.find((f) => f.type === Section.State)!;
    const end = (sections: number, pages: number) => ({ type: Section.End, payload: jsonPayload({ sections, pages }) });
    const pages = 1024;
    expect((await loadError(rebuild([rams[0]!, cfg]))).err.message).toMatch(/first section is RAM, expected CONFIG/);
    expect((await loadError(rebuild([{ type: Section.Config, payload: new TextEncoder().encode('{nope') }]))).err.message).toMatch(/CONFIG section #0 at byte 12 is not valid JSON/);
    expect((await loadError(rebuild([cfg, ...rams, state, end(3, pages)]))).err.message).toMatch(/END says 3 sections and 1024 pages came before it, but \d+ sections and 1024 pages were read/);
    expect((await loadError(rebuild([cfg, ...rams.slice(1), state, end(rams.length + 1, pages)]))).err.message).toMatch(/pages came before it, but/);
    expect((await loadError(rebuild([cfg, ...rams, end(rams.length + 1, pages)]))).err.message).toMatch(/END \(section #\d+\) without a STATE section/);
    expect((await loadError(rebuild([cfg, ...rams, state, state]))).err.message).toMatch(/a second STATE section/);
    expect((await loadError(rebuild([cfg, state, ...rams]))).err.message).toMatch(/RAM section #2 after the STATE section/);
    expect((await loadError(rebuild([cfg, { type: Section.Ack, payload: jsonPayload({}) }]))).err.message).toMatch(/unexpected ACK section #1/);
    const badState = { type: Section.State, payload: jsonPayload({ vm: { clockNs: 1 }, vcpus: [{}], devices: [] }) };
    expect((await loadError(rebuild([cfg, ...rams, badState, end(rams.length + 2, pages)]))).err.message).toMatch(/vCPU 0 state is malformed/);
  });

  it('configuration mismatches name the difference', async () => {
    const b = await good();
    const cases: [ConstructorParameters<typeof TestMachine>[0], RegExp][] = [
      [{ memSize: 8 << 20 }, /configuration mismatch: memory size is 4 MiB in the stream but 8 MiB here/],
      [{ irqchip: true }, /configuration mismatch: option 'irqchip' is false in the stream but true here/],
      [{ hotPages: 8 }, /option 'hotPages' is 64 in the stream but 8 here/],
    ];
    for (const [opts, re] of cases) {
      const { err } = await loadError(b, opts);
      expect(err.kind).toBe('config-mismatch');
      expect(err.message).toMatch(re);
    }
  });

  it('device lists and versions must match', async () => {
    const b = await good();
    const fs = frames(b);
    const cfg = JSON.parse(new TextDecoder().decode(fs[0]!.payload));
    const withDevices = (devices: unknown) => rebuild([{ type: Section.Config, payload: jsonPayload({ ...cfg, devices }) }, ...fs.slice(1)]);
    expect((await loadError(withDevices([{ name: 'outlog', version: 2 }]))).err.message).toMatch(/device 'outlog' has state version 2 in the stream but version 1 here/);
    expect((await loadError(withDevices([{ name: 'outlog', version: 1 }, { name: 'virtio-blk0', version: 1 }]))).err.message).toMatch(/device 'virtio-blk0' is in the stream but not in this machine/);
    expect((await loadError(withDevices([]))).err.message).toMatch(/device 'outlog' is in this machine but not in the stream/);
  });
});
