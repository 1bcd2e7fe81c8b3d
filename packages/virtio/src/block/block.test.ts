import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VirtioMmioTransport, type VirtioMmioState } from '../transport/mmio.js';
import { TestQueueDriver, makeVm, startMmioDevice } from '../test-driver.js';
import {
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VirtioBlock,
  VirtioBlockError,
  type VirtioBlockOptions,
  type VirtioBlockState,
} from './block.js';

const SECTORS = 64;
const HDR = 0x80000; // request headers
const DATA = 0x90000; // data buffers
const STATUS = 0xa0000; // status bytes

let dir: string;
let image: string;

/** Sector n of the test image is filled with byte n + 1. */
const pattern = (): Uint8Array => {
  const b = new Uint8Array(SECTORS * 512);
  for (let s = 0; s < SECTORS; s++) b.fill(s + 1, s * 512, (s + 1) * 512);
  return b;
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvmts-virtio-blk-'));
  image = join(dir, 'disk.img');
  await writeFile(image, pattern());
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function start(options: VirtioBlockOptions = {}) {
  const blk = await VirtioBlock.open(image, options);
  const m = startMmioDevice(blk, 16);
  let slot = 0;
  /**
   * Queue one request as Linux's virtio_blk does (header, data buffers, status), kick the
   * queue and return where its status byte will land.
   */
  const request = (type: number, sector: number, data: { len: number; write?: boolean; bytes?: Uint8Array }[] = [], opts: { indirect?: boolean } = {}) => {
    const n = slot++;
    const hdr = HDR + n * 16;
    m.dv.setUint32(hdr, type, true);
    m.dv.setUint32(hdr + 4, 0, true);
    m.dv.setBigUint64(hdr + 8, BigInt(sector), true);
    let at = DATA + n * 0x2000;
    const bufs = [{ addr: hdr, len: 16 }];
    for (const d of data) {
      if (d.bytes) m.ram.set(d.bytes, at);
      bufs.push({ addr: at, len: d.len, write: d.write ?? false } as { addr: number; len: number; write: boolean });
      at += d.len;
    }
    const status = STATUS + n;
    m.ram[status] = 0xff;
    bufs.push({ addr: status, len: 1, write: true } as { addr: number; len: number; write: boolean });
    const q = m.queues[0]!;
    const head = opts.indirect ? q.addIndirect(0xc0000 + n * 0x400, bufs) : q.addChain(bufs);
    q.publish(head);
    m.notify(0);
    return { head, status, data: DATA + n * 0x2000 };
  };
  return { blk, ...m, q: m.queues[0]!, request, status: (r: { status: number }) => m.ram[r.status] };
}

const seg = (sector: number, sectors: number, flags = 0): Uint8Array => {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return b;
};

describe('VirtioBlock', () => {
  it('reports capacity, limits and features in its config space', async () => {
    const { blk, t } = await start({ serial: 'disk0' });
    const cfg = (off: number, size: number): number => {
      const d = new Uint8Array(size);
      t.read(0x100 + off, d);
      return d.reduceRight((a, b) => a * 256 + b, 0);
    };
    expect(blk.capacity).toBe(SECTORS);
    expect(cfg(0x00, 8)).toBe(SECTORS);
    expect(cfg(0x08, 4)).toBe(0x10000); // size_max
    expect(cfg(0x0c, 4)).toBe(254); // seg_max = max queue size - 2
    expect(cfg(0x14, 4)).toBe(512); // blk_size
    expect(cfg(0x24, 4)).toBeGreaterThan(0); // max_discard_sectors
    expect(cfg(0x28, 4)).toBe(32); // max_discard_seg
    expect(cfg(0x30, 4)).toBeGreaterThan(0); // max_write_zeroes_sectors
    expect(cfg(0x34, 4)).toBe(1); // max_write_zeroes_seg
    const f = blk.features;
    for (const bit of [VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES]) expect((f >> BigInt(bit)) & 1n).toBe(1n);
    expect((f >> BigInt(VIRTIO_BLK_F_RO)) & 1n).toBe(0n);
    await blk.close();
  });

  it('reads sectors asynchronously: status, data and used ring appear when the I/O completes', async () => {
    const { blk, q, ram, request, status, irqs } = await start();
    const r = request(VIRTIO_BLK_T_IN, 3, [{ len: 512, write: true }, { len: 1024, write: true }]);
    expect(q.usedIdx()).toBe(0); // not yet: the file read is in flight
    expect(blk.inFlightCount).toBe(1);
    expect(irqs).toEqual([]);
    await blk.drain();
    expect(status(r)).toBe(VIRTIO_BLK_S_OK);
    expect(q.usedIdx()).toBe(1);
    expect(q.usedElem(0)).toEqual({ id: r.head, len: 1536 + 1 });
    expect(ram[r.data]).toBe(4);
    expect(ram[r.data + 511]).toBe(4);
    expect(ram[r.data + 512]).toBe(5);
    expect(ram[r.data + 1535]).toBe(6);
    expect(irqs).toEqual([true]);
    await blk.close();
  });

  it('writes sectors to the file, and reads them back (also through an indirect table)', async () => {
    const { blk, request, status, ram } = await start();
    const bytes = new Uint8Array(1024).map((_, i) => (i * 7) & 0xff);
    const w = request(VIRTIO_BLK_T_OUT, 10, [{ len: 1024, bytes }], { indirect: true });
    await blk.drain();
    expect(status(w)).toBe(VIRTIO_BLK_S_OK);
    const file = await readFile(image);
    expect([...file.subarray(10 * 512, 12 * 512)]).toEqual([...bytes]);
    expect(file[9 * 512 + 511]).toBe(10);
    expect(file[12 * 512]).toBe(13);
    const r = request(VIRTIO_BLK_T_IN, 10, [{ len: 1024, write: true }], { indirect: true });
    await blk.drain();
    expect(status(r)).toBe(VIRTIO_BLK_S_OK);
    expect([...ram.subarray(r.data, r.data + 1024)]).toEqual([...bytes]);
    await blk.close();
  });

  it('flushes, returns the serial for GET_ID, and rejects unknown types with UNSUPP', async () => {
    const { blk, request, status, ram, q } = await start({ serial: 'kvmts-serial-0001' });
    const f = request(VIRTIO_BLK_T_FLUSH, 0);
    const id = request(VIRTIO_BLK_T_GET_ID, 0, [{ len: 20, write: true }]);
    const bad = request(99, 0);
    await blk.drain();
    expect([status(f), status(id), status(bad)]).toEqual([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP]);
    expect(Buffer.from(ram.subarray(id.data, id.data + 20)).toString('latin1')).toBe('kvmts-serial-0001\0\0\0');
    expect(q.usedIdx()).toBe(3);
    const lens = new Map([0, 1, 2].map((i) => [q.usedElem(i).id, q.usedElem(i).len]));
    expect(lens.get(id.head)).toBe(21);
    expect(lens.get(f.head)).toBe(1);
    await blk.close();
  });

  it('fails out-of-range and misshapen transfers with IOERR without touching the file', async () => {
    const { blk, request, status } = await start();
    const reqs = [
      request(VIRTIO_BLK_T_IN, SECTORS - 1, [{ len: 1024, write: true }]), // runs past the end
      request(VIRTIO_BLK_T_IN, SECTORS, [{ len: 512, write: true }]),
      request(VIRTIO_BLK_T_OUT, 2 ** 40, [{ len: 512, bytes: new Uint8Array(512) }]),
      request(VIRTIO_BLK_T_OUT, 0, [{ len: 100, bytes: new Uint8Array(100) }]), // not whole sectors
      request(VIRTIO_BLK_T_IN, 0, [{ len: 300, write: true }]),
    ];
    await blk.drain();
    expect(reqs.map(status)).toEqual(reqs.map(() => VIRTIO_BLK_S_IOERR));
    expect(Buffer.compare(await readFile(image), Buffer.from(pattern()))).toBe(0);
    await blk.close();
  });

  it('accepts DISCARD (validated, data kept) and WRITE_ZEROES (zeroes the range)', async () => {
    const { blk, request, status } = await start();
    const d = request(VIRTIO_BLK_T_DISCARD, 0, [{ len: 32, bytes: new Uint8Array([...seg(0, 8), ...seg(16, 8)]) }]);
    const dUnmap = request(VIRTIO_BLK_T_DISCARD, 0, [{ len: 16, bytes: seg(0, 8, 1) }]);
    const dRange = request(VIRTIO_BLK_T_DISCARD, 0, [{ len: 16, bytes: seg(60, 8) }]);
    const z = request(VIRTIO_BLK_T_WRITE_ZEROES, 0, [{ len: 16, bytes: seg(4, 3, 1) }]);
    const zFlags = request(VIRTIO_BLK_T_WRITE_ZEROES, 0, [{ len: 16, bytes: seg(4, 3, 2) }]);
    const zTwo = request(VIRTIO_BLK_T_WRITE_ZEROES, 0, [{ len: 32, bytes: new Uint8Array([...seg(0, 1), ...seg(2, 1)]) }]);
    const zShort = request(VIRTIO_BLK_T_WRITE_ZEROES, 0, [{ len: 8, bytes: new Uint8Array(8) }]);
    await blk.drain();
    expect([d, dUnmap, dRange, z, zFlags, zTwo, zShort].map(status)).toEqual([
      VIRTIO_BLK_S_OK,
      VIRTIO_BLK_S_UNSUPP,
      VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_OK,
      VIRTIO_BLK_S_UNSUPP,
      VIRTIO_BLK_S_IOERR, // max_write_zeroes_seg is 1
      VIRTIO_BLK_S_IOERR,
    ]);
    const file = await readFile(image);
    expect(file[3 * 512 + 511]).toBe(4);
    expect(file.subarray(4 * 512, 7 * 512).every((b) => b === 0)).toBe(true);
    expect(file[7 * 512]).toBe(8);
    expect(file[0]).toBe(1); // discarded data is still there
    await blk.close();
  });

  it('in read-only mode offers RO and fails writes with IOERR', async () => {
    const { blk, request, status, ram } = await start({ readOnly: true });
    expect((blk.features >> BigInt(VIRTIO_BLK_F_RO)) & 1n).toBe(1n);
    expect((blk.features >> BigInt(VIRTIO_BLK_F_DISCARD)) & 1n).toBe(0n);
    const w = request(VIRTIO_BLK_T_OUT, 0, [{ len: 512, bytes: new Uint8Array(512).fill(0xee) }]);
    const z = request(VIRTIO_BLK_T_WRITE_ZEROES, 0, [{ len: 16, bytes: seg(0, 1) }]);
    const r = request(VIRTIO_BLK_T_IN, 1, [{ len: 512, write: true }]);
    const f = request(VIRTIO_BLK_T_FLUSH, 0);
    await blk.drain();
    expect([status(w), status(z), status(r), status(f)]).toEqual([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK]);
    expect(ram[r.data]).toBe(2);
    expect(Buffer.compare(await readFile(image), Buffer.from(pattern()))).toBe(0);
    await blk.close();
  });

  it('throws VirtioBlockError for a missing file, a directory or bad options', async () => {
    await expect(VirtioBlock.open(join(dir, 'nope.img'))).rejects.toMatchObject({ name: 'VirtioBlockError', kind: 'NotFound' });
    await expect(VirtioBlock.open(join(dir, 'nope.img'))).rejects.toThrow(/nope\.img does not exist/);
    await expect(VirtioBlock.open(dir)).rejects.toBeInstanceOf(VirtioBlockError);
    await expect(VirtioBlock.open(dir, { readOnly: true })).rejects.toMatchObject({ kind: 'NotAFile' });
    await expect(VirtioBlock.open(image, { serial: 'x'.repeat(21) })).rejects.toMatchObject({ kind: 'InvalidOption' });
    await expect(VirtioBlock.open(image, { queueSize: 100 })).rejects.toMatchObject({ kind: 'InvalidOption' });
  });

  it('drops completions that arrive after a reset', async () => {
    const { blk, request, status, q, t } = await start();
    const r = request(VIRTIO_BLK_T_IN, 0, [{ len: 512, write: true }]);
    t.write(0x070, new Uint8Array([0, 0, 0, 0])); // driver resets the device
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(status(r)).toBe(0xff);
    expect(q.usedIdx()).toBe(0);
    expect(blk.inFlightCount).toBe(0);
    await blk.close();
  });

  it('sets DEVICE_NEEDS_RESET for a request without a status byte', async () => {
    const { blk, q, notify, t } = await start();
    q.publish(q.addChain([{ addr: HDR, len: 16 }]));
    notify(0);
    expect(t.core.status & 0x40).toBe(0x40);
    expect(t.core.failure).toMatch(/lacks a header or a status byte/);
    await blk.close();
  });

  it('saves with a request in flight and reruns it after restore', async () => {
    const src = await start();
    const done = src.request(VIRTIO_BLK_T_IN, 5, [{ len: 512, write: true }]);
    await src.blk.drain();
    const bytes = new Uint8Array(512).fill(0x5a);
    const inflight = src.request(VIRTIO_BLK_T_OUT, 20, [{ len: 512, bytes }]);
    const state = JSON.parse(JSON.stringify(src.t.save())) as VirtioMmioState<VirtioBlockState>;
    expect(state.transport.device).toEqual({ version: 1, capacity: SECTORS, readOnly: false, inFlight: [inflight.head] });
    // Snapshot RAM now, as a migration would (the source's completion lands after this).
    const { vm, ram } = makeVm();
    ram.set(src.ram);
    await src.blk.close();
    await writeFile(image, pattern()); // pretend the source's write never reached the disk

    const blk = await VirtioBlock.open(image);
    const irqs: boolean[] = [];
    const t = new VirtioMmioTransport(blk, { memory: vm.memory, irq: (l) => irqs.push(l) });
    t.restore(state);
    expect(blk.inFlightCount).toBe(1);
    await blk.drain();
    const q = new TestQueueDriver(new DataView(ram.buffer), 0x10000, 16);
    expect(ram[done.status]).toBe(VIRTIO_BLK_S_OK);
    expect(ram[inflight.status]).toBe(VIRTIO_BLK_S_OK);
    expect(q.usedIdx()).toBe(2);
    expect(q.usedElem(1)).toEqual({ id: inflight.head, len: 1 });
    expect((await readFile(image))[20 * 512]).toBe(0x5a);
    expect(irqs.at(-1)).toBe(true);
    // A different disk is refused.
    await writeFile(join(dir, 'small.img'), new Uint8Array(512));
    const other = await VirtioBlock.open(join(dir, 'small.img'));
    expect(() => new VirtioMmioTransport(other, { memory: vm.memory }).restore(state)).toThrow(/64 sectors/);
    await other.close();
    await blk.close();
  });
});
