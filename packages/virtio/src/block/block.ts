/**
 * virtio-blk (VirtIO 1.2, 5.2) backed by a regular file through `fs/promises`.
 *
 * Each request is a chain: a 16-byte device-readable header (type, reserved, sector), data
 * buffers, and a final device-writable status byte. Requests run asynchronously: popping a
 * chain starts the file operation, and when it settles the completion writes the data (for
 * reads) and the status byte into guest memory, puts the chain on the used ring and interrupts
 * the driver. Several requests may be in flight and complete in any order, as virtio allows.
 *
 * A reset (or the driver going away) bumps a generation counter, so completions that arrive
 * afterwards are dropped instead of writing into memory the driver has reused. Saving the
 * state records the heads of requests still in flight; restoring re-reads those chains from
 * guest memory and runs them again (reads and writes of the same data are idempotent).
 *
 * DISCARD is accepted and validated but does not deallocate anything (Node has no portable
 * hole punching); the data stays readable, which the spec allows. WRITE_ZEROES writes zeroes.
 * @module
 */

import { type FileHandle, open } from 'node:fs/promises';
import type { GuestMemory } from '@kvmts/kvm-core';
import { VIRTIO_ID_BLOCK, featureBit } from '../constants.js';
import type { VirtioActivation, VirtioDevice } from '../device.js';
import type { DescriptorChain } from '../queue/chain.js';
import type { Virtqueue } from '../queue/virtqueue.js';

// Feature bits (5.2.3).
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// Request types (5.2.6).
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

// Request status values.
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Sector size of capacity and request offsets, whatever blk_size says. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** Length of the GET_ID serial string (not NUL-terminated when it fills all 20 bytes). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Bytes of struct virtio_blk_config up to and including write_zeroes_may_unmap and its padding. */
export const VIRTIO_BLK_CONFIG_SIZE = 0x3c;
/** Unmap flag of a discard / write-zeroes segment. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

// struct virtio_blk_config offsets (5.2.4).
const CFG_CAPACITY = 0x00;
const CFG_SIZE_MAX = 0x08;
const CFG_SEG_MAX = 0x0c;
const CFG_BLK_SIZE = 0x14;
const CFG_NUM_QUEUES = 0x22;
const CFG_MAX_DISCARD_SECTORS = 0x24;
const CFG_MAX_DISCARD_SEG = 0x28;
const CFG_DISCARD_SECTOR_ALIGNMENT = 0x2c;
const CFG_MAX_WRITE_ZEROES_SECTORS = 0x30;
const CFG_MAX_WRITE_ZEROES_SEG = 0x34;

const HEADER_SIZE = 16;
const SEGMENT_SIZE = 16; // struct virtio_blk_discard_write_zeroes
/** Largest segment the driver may use (SIZE_MAX): Linux's default maximum segment size. */
const SIZE_MAX = 0x10000;
const MAX_DISCARD_SECTORS = 0x400000; // 2 GiB: discard is free
const MAX_DISCARD_SEG = 32;
const DISCARD_ALIGNMENT_SECTORS = 8; // 4 KiB
const MAX_WRITE_ZEROES_SECTORS = 0x10000; // 32 MiB of zeroes per request
const ZERO_CHUNK = 0x100000;

/** Why a block device could not be created. */
export type VirtioBlockErrorKind = 'NotFound' | 'NotAFile' | 'PermissionDenied' | 'InvalidOption' | 'Io';

/** Creating or restoring a {@link VirtioBlock} failed; `kind` says why, the message names the file. */
export class VirtioBlockError extends Error {
  readonly kind: VirtioBlockErrorKind;
  constructor(kind: VirtioBlockErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VirtioBlockError';
    this.kind = kind;
  }
}

/** Options for {@link VirtioBlock.open}. */
export interface VirtioBlockOptions {
  /** Offer VIRTIO_BLK_F_RO and fail writes with IOERR; the file is opened read-only. */
  readOnly?: boolean;
  /** GET_ID answer: up to 20 ASCII bytes (default: empty). */
  serial?: string;
  /** Queue size, a power of two from 4 to 1024 (default 256). */
  queueSize?: number;
  /** Offer DISCARD (default true unless read-only). */
  discard?: boolean;
  /** Offer WRITE_ZEROES (default true unless read-only). */
  writeZeroes?: boolean;
}

/** Plain, JSON-able snapshot of a {@link VirtioBlock}. */
export interface VirtioBlockState {
  version: 1;
  /** Disk size in sectors, to catch restoring onto a different image. */
  capacity: number;
  readOnly: boolean;
  /** Head indices of requests that were in flight: they run again after restore. */
  inFlight: number[];
}

interface Outcome {
  status: number;
  /** Bytes to copy into the writable buffers before the status byte (reads, GET_ID). */
  data?: Uint8Array;
}

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

/** A virtio block device over a disk image file. Create it with {@link VirtioBlock.open}. */
export class VirtioBlock implements VirtioDevice<VirtioBlockState> {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly configSize = VIRTIO_BLK_CONFIG_SIZE;
  readonly path: string;
  readonly readOnly: boolean;
  /** Disk size in 512-byte sectors (a partial last sector of the file is not exposed). */
  readonly capacity: number;

  private readonly file: FileHandle;
  private readonly serial: Uint8Array;
  private readonly config = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
  private readonly segMax: number;
  private readonly discard: boolean;
  private readonly writeZeroes: boolean;
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly statusByte = new Uint8Array(1);
  private memory: GuestMemory | null = null;
  private queue: Virtqueue | null = null;
  private activation: VirtioActivation | null = null;
  // Bumped by reset: completions of an older generation are dropped.
  private generation = 0;
  private readonly inFlight = new Map<number, Promise<void>>();
  private resubmit: number[] = [];
  private closed = false;

  /**
   * Open `path` as a disk image. Throws {@link VirtioBlockError} if the file is missing
   * ('NotFound'), not a regular file ('NotAFile'), not accessible ('PermissionDenied') or an
   * option is invalid ('InvalidOption').
   */
  static async open(path: string, options: VirtioBlockOptions = {}): Promise<VirtioBlock> {
    const readOnly = options.readOnly ?? false;
    const queueSize = options.queueSize ?? 256;
    if (!Number.isInteger(queueSize) || queueSize < 4 || queueSize > 1024 || (queueSize & (queueSize - 1)) !== 0) {
      throw new VirtioBlockError('InvalidOption', `virtio-blk queue size ${String(queueSize)} is not a power of two from 4 to 1024`);
    }
    const serial = Buffer.from(options.serial ?? '', 'latin1');
    if (serial.length > VIRTIO_BLK_ID_BYTES) throw new VirtioBlockError('InvalidOption', `virtio-blk serial "${options.serial}" is longer than ${VIRTIO_BLK_ID_BYTES} bytes`);
    let file: FileHandle;
    try {
      file = await open(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      const code = errnoOf(e);
      if (code === 'ENOENT') throw new VirtioBlockError('NotFound', `disk image ${path} does not exist`, { cause: e });
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new VirtioBlockError('PermissionDenied', `disk image ${path} cannot be opened ${readOnly ? 'for reading' : 'for reading and writing (use readOnly?)'}: ${code}`, { cause: e });
      }
      if (code === 'EISDIR') throw new VirtioBlockError('NotAFile', `disk image ${path} is a directory`, { cause: e });
      throw new VirtioBlockError('Io', `disk image ${path} cannot be opened: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    try {
      const st = await file.stat();
      if (!st.isFile()) throw new VirtioBlockError('NotAFile', `disk image ${path} is not a regular file`);
      return new VirtioBlock(file, path, st.size, readOnly, serial, queueSize, options);
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  private constructor(file: FileHandle, path: string, bytes: number, readOnly: boolean, serial: Uint8Array, queueSize: number, options: VirtioBlockOptions) {
    this.file = file;
    this.path = path;
    this.readOnly = readOnly;
    this.capacity = Math.floor(bytes / VIRTIO_BLK_SECTOR_SIZE);
    this.serial = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.serial.set(serial);
    this.queueMaxSizes = [queueSize];
    this.segMax = queueSize - 2; // room for the header and status descriptors
    this.discard = !readOnly && (options.discard ?? true);
    this.writeZeroes = !readOnly && (options.writeZeroes ?? true);
    let f = featureBit(VIRTIO_BLK_F_SIZE_MAX) | featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE) | featureBit(VIRTIO_BLK_F_FLUSH);
    if (readOnly) f |= featureBit(VIRTIO_BLK_F_RO);
    if (this.discard) f |= featureBit(VIRTIO_BLK_F_DISCARD);
    if (this.writeZeroes) f |= featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    this.features = f;
    const v = new DataView(this.config.buffer);
    v.setBigUint64(CFG_CAPACITY, BigInt(this.capacity), true);
    v.setUint32(CFG_SIZE_MAX, SIZE_MAX, true);
    v.setUint32(CFG_SEG_MAX, this.segMax, true);
    v.setUint32(CFG_BLK_SIZE, VIRTIO_BLK_SECTOR_SIZE, true);
    v.setUint16(CFG_NUM_QUEUES, 1, true);
    if (this.discard) {
      v.setUint32(CFG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS, true);
      v.setUint32(CFG_MAX_DISCARD_SEG, MAX_DISCARD_SEG, true);
      v.setUint32(CFG_DISCARD_SECTOR_ALIGNMENT, DISCARD_ALIGNMENT_SECTORS, true);
    }
    if (this.writeZeroes) {
      v.setUint32(CFG_MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SECTORS, true);
      v.setUint32(CFG_MAX_WRITE_ZEROES_SEG, 1, true);
    }
  }

  /** Requests submitted to the file and not yet completed. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Resolves once no request is in flight (before saving state, or to wait in tests). */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight.values()]);
  }

  /** Wait for in-flight requests, then close the file. The device must not be used afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.drain();
    this.closed = true;
    await this.file.close();
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  /** Nothing in the config is writable without CONFIG_WCE, which is not offered. */
  writeConfig(): void {}

  activate(activation: VirtioActivation): void {
    this.activation = activation;
    this.memory = activation.memory;
    this.queue = activation.queues[0] ?? null;
    const again = this.resubmit;
    this.resubmit = [];
    for (const head of again) {
      const chain = this.queue?.chainAt(head);
      if (chain) this.submit(chain);
    }
  }

  processQueue(index: number): void {
    const q = this.queue;
    if (index !== 0 || q === null) return;
    do {
      q.disableNotification();
      for (let chain = q.pop(); chain !== null; chain = q.pop()) this.submit(chain);
    } while (q.enableNotification());
  }

  reset(): void {
    this.generation++;
    this.activation = null;
    this.memory = null;
    this.queue = null;
    this.inFlight.clear(); // their completions see the new generation and drop themselves
    this.resubmit = [];
  }

  save(): VirtioBlockState {
    return { version: 1, capacity: this.capacity, readOnly: this.readOnly, inFlight: [...this.inFlight.keys()] };
  }

  restore(state: VirtioBlockState): void {
    if (state.version !== 1) throw new RangeError(`virtio-blk state: unknown version ${String(state.version)}`);
    if (state.capacity !== this.capacity) throw new RangeError(`virtio-blk state: saved disk had ${String(state.capacity)} sectors, ${this.path} has ${this.capacity}`);
    if (Boolean(state.readOnly) !== this.readOnly) throw new RangeError(`virtio-blk state: saved disk was ${state.readOnly ? 'read-only' : 'writable'}`);
    if (!Array.isArray(state.inFlight) || !state.inFlight.every((h) => Number.isInteger(h) && h >= 0 && h <= 0xffff)) {
      throw new RangeError('virtio-blk state: inFlight must list descriptor indices');
    }
    this.resubmit = [...state.inFlight];
  }

  private submit(chain: DescriptorChain): void {
    const memory = this.memory!;
    const activation = this.activation!;
    // Header (16 readable bytes) and status (1 writable byte) are the least a request has.
    if (chain.readableLength < HEADER_SIZE || chain.writableLength < 1) {
      this.queue!.fail('DeviceError', `virtio-blk request ${chain.head} lacks a header or a status byte`);
      return;
    }
    chain.read(memory, 0, this.header);
    const type = this.headerView.getUint32(0, true);
    const sector = Number(this.headerView.getBigUint64(8, true));
    const generation = this.generation;
    const head = chain.head;
    const op = this.execute(type, sector, chain, memory)
      .catch((): Outcome => ({ status: VIRTIO_BLK_S_IOERR }))
      .then((outcome) => {
        if (generation !== this.generation) return;
        this.inFlight.delete(head);
        this.complete(chain, outcome, activation);
      });
    this.inFlight.set(head, op);
  }

  private complete(chain: DescriptorChain, outcome: Outcome, activation: VirtioActivation): void {
    const memory = activation.memory;
    const statusAt = chain.writableLength - 1;
    let written = 0;
    try {
      if (outcome.data) written = chain.write(memory, 0, outcome.data.subarray(0, Math.min(outcome.data.length, statusAt)));
      this.statusByte[0] = outcome.status;
      chain.write(memory, statusAt, this.statusByte);
    } catch (e) {
      activation.interrupt.fail(`virtio-blk: completing request ${chain.head} failed: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (this.queue?.addUsed(chain.head, written + 1)) activation.interrupt.signalUsed(0);
  }

  private async execute(type: number, sector: number, chain: DescriptorChain, memory: GuestMemory): Promise<Outcome> {
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        const len = chain.writableLength - 1;
        if (!this.dataRangeOk(sector, len)) return { status: VIRTIO_BLK_S_IOERR };
        const data = new Uint8Array(len);
        await this.readFully(data, sector * VIRTIO_BLK_SECTOR_SIZE);
        return { status: VIRTIO_BLK_S_OK, data };
      }
      case VIRTIO_BLK_T_OUT: {
        const len = chain.readableLength - HEADER_SIZE;
        if (this.readOnly || !this.dataRangeOk(sector, len)) return { status: VIRTIO_BLK_S_IOERR };
        // Gather now: the buffers are the device's until it returns the chain.
        const data = new Uint8Array(len);
        chain.read(memory, HEADER_SIZE, data);
        await this.writeFully(data, sector * VIRTIO_BLK_SECTOR_SIZE);
        return { status: VIRTIO_BLK_S_OK };
      }
      case VIRTIO_BLK_T_FLUSH:
        if (!this.readOnly) await this.file.datasync();
        return { status: VIRTIO_BLK_S_OK };
      case VIRTIO_BLK_T_GET_ID:
        return { status: VIRTIO_BLK_S_OK, data: this.serial };
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.discardOrZero(type === VIRTIO_BLK_T_DISCARD, chain, memory);
      default:
        return { status: VIRTIO_BLK_S_UNSUPP };
    }
  }

  private async discardOrZero(discard: boolean, chain: DescriptorChain, memory: GuestMemory): Promise<Outcome> {
    if (!(discard ? this.discard : this.writeZeroes)) return { status: VIRTIO_BLK_S_UNSUPP };
    const payload = chain.readableLength - HEADER_SIZE;
    const count = payload / SEGMENT_SIZE;
    const maxSeg = discard ? MAX_DISCARD_SEG : 1;
    const maxSectors = discard ? MAX_DISCARD_SECTORS : MAX_WRITE_ZEROES_SECTORS;
    if (payload === 0 || !Number.isInteger(count) || count > maxSeg) return { status: VIRTIO_BLK_S_IOERR };
    const segs = new Uint8Array(payload);
    chain.read(memory, HEADER_SIZE, segs);
    const v = new DataView(segs.buffer);
    const ranges: [number, number][] = [];
    for (let i = 0; i < count; i++) {
      const sector = Number(v.getBigUint64(i * SEGMENT_SIZE, true));
      const sectors = v.getUint32(i * SEGMENT_SIZE + 8, true);
      const flags = v.getUint32(i * SEGMENT_SIZE + 12, true);
      // Unknown flags, or unmap on a discard, are not supported (5.2.6.2).
      if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP || (discard && flags !== 0)) return { status: VIRTIO_BLK_S_UNSUPP };
      if (sectors > maxSectors || sector + sectors > this.capacity) return { status: VIRTIO_BLK_S_IOERR };
      ranges.push([sector, sectors]);
    }
    if (!discard) {
      for (const [sector, sectors] of ranges) await this.zero(sector * VIRTIO_BLK_SECTOR_SIZE, sectors * VIRTIO_BLK_SECTOR_SIZE);
    }
    return { status: VIRTIO_BLK_S_OK };
  }

  // Data must be whole sectors, inside the disk, and no bigger than seg_max * size_max.
  private dataRangeOk(sector: number, len: number): boolean {
    if (len < 0 || len % VIRTIO_BLK_SECTOR_SIZE !== 0 || len > this.segMax * SIZE_MAX) return false;
    return sector + len / VIRTIO_BLK_SECTOR_SIZE <= this.capacity;
  }

  private async readFully(buf: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await this.file.read(buf, done, buf.length - done, position + done);
      if (bytesRead === 0) throw new Error(`unexpected end of ${this.path}`);
      done += bytesRead;
    }
  }

  private async writeFully(buf: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.file.write(buf, done, buf.length - done, position + done);
      done += bytesWritten;
    }
  }

  private async zero(position: number, len: number): Promise<void> {
    const zeroes = new Uint8Array(Math.min(len, ZERO_CHUNK));
    for (let done = 0; done < len; done += zeroes.length) {
      await this.writeFully(zeroes.subarray(0, Math.min(zeroes.length, len - done)), position + done);
    }
  }
}
