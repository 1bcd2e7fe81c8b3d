/**
 * Framing: encoding sections, and a push parser that turns arbitrary chunks back into
 * validated sections.
 * @module
 */
import { MigrationError } from '../errors.js';
import { crc32 } from './crc32.js';
import { FORMAT_VERSION, FRAME_OVERHEAD, HEADER_SIZE, MAGIC, MAX_SECTION_BYTES, isSectionType, sectionName, type Frame, type SectionType } from './format.js';

/** The stream header. */
export function encodeHeader(version = FORMAT_VERSION): Uint8Array {
  const h = new Uint8Array(HEADER_SIZE);
  h.set(MAGIC);
  new DataView(h.buffer).setUint32(8, version);
  return h;
}

/** One section: type, length, payload, CRC. */
export function encodeFrame(type: SectionType, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.length + FRAME_OVERHEAD);
  const dv = new DataView(out.buffer);
  out[0] = type;
  dv.setUint32(1, payload.length);
  out.set(payload, 5);
  dv.setUint32(5 + payload.length, crc32(out.subarray(0, 5 + payload.length)));
  return out;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** A JSON section's payload. */
export function jsonPayload(value: unknown): Uint8Array {
  return utf8.encode(JSON.stringify(value));
}

/** Parses a JSON section's payload; a MigrationError names the section when it is not JSON. */
export function parseJson(frame: Frame): unknown {
  try {
    return JSON.parse(utf8Decoder.decode(frame.payload));
  } catch (err) {
    throw new MigrationError('corrupt', `corrupt stream: ${sectionName(frame.type)} section #${frame.index} at byte ${frame.offset} is not valid JSON (${(err as Error).message})`);
  }
}

/**
 * Turns chunks into sections. `push()` chunks as they come, `next()` until it returns null
 * (it needs more bytes), and `end()` when the input ends: it throws if the input stopped
 * inside the header or a section. Every problem is a {@link MigrationError} naming the byte
 * offset and section.
 */
export class FrameParser {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private headerDone: boolean;
  /** Bytes consumed so far (the offset of the next section). */
  offset = 0;
  /** Sections parsed so far. */
  sections = 0;
  /** The stream's format version (after the header). */
  version = 0;

  /** @param header whether the input starts with the stream header (the reply direction has none) */
  constructor(header = true, private readonly what = 'stream') {
    this.headerDone = !header;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * The first `n` buffered bytes as one array, copying only when they span chunks, and then
   * only the chunks that hold them: a reader that fell behind may have many megabytes queued,
   * and joining all of them for every section would make catching up quadratic.
   */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    let size = 0;
    let k = 0;
    while (size < n) size += this.chunks[k++]!.length;
    const joined = new Uint8Array(size);
    let o = 0;
    for (let i = 0; i < k; i++) {
      joined.set(this.chunks[i]!, o);
      o += this.chunks[i]!.length;
    }
    this.chunks.splice(0, k, joined);
    return joined.subarray(0, n);
  }

  private consume(n: number): void {
    this.buffered -= n;
    this.offset += n;
    while (n > 0) {
      const c = this.chunks[0]!;
      if (c.length <= n) {
        n -= c.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
  }

  /** The next complete section, or null when more input is needed. */
  next(): Frame | null {
    if (!this.headerDone) {
      if (this.buffered < HEADER_SIZE) {
        // Reject a wrong magic as soon as its first bytes are in.
        if (this.buffered > 0) this.checkMagic(this.peek(Math.min(this.buffered, MAGIC.length)));
        return null;
      }
      const h = this.peek(HEADER_SIZE);
      this.checkMagic(h.subarray(0, MAGIC.length));
      const version = new DataView(h.buffer, h.byteOffset, HEADER_SIZE).getUint32(8);
      if (version !== FORMAT_VERSION) {
        throw new MigrationError('version', `unsupported ${this.what} format version ${version}: this build reads version ${FORMAT_VERSION} only`);
      }
      this.version = version;
      this.consume(HEADER_SIZE);
      this.headerDone = true;
    }
    if (this.buffered < 5) return null;
    const head = this.peek(5);
    const type = head[0]!;
    const len = new DataView(head.buffer, head.byteOffset, 5).getUint32(1);
    if (!isSectionType(type)) {
      throw new MigrationError('corrupt', `corrupt ${this.what}: unknown section type 0x${type.toString(16)} at byte ${this.offset} (section #${this.sections})`);
    }
    if (len > MAX_SECTION_BYTES) {
      throw new MigrationError('corrupt', `corrupt ${this.what}: ${sectionName(type)} section #${this.sections} at byte ${this.offset} claims ${len} bytes (limit ${MAX_SECTION_BYTES})`);
    }
    const total = len + FRAME_OVERHEAD;
    if (this.buffered < total) return null;
    const raw = this.peek(total);
    const dv = new DataView(raw.buffer, raw.byteOffset, total);
    const want = dv.getUint32(5 + len);
    const got = crc32(raw.subarray(0, 5 + len));
    if (want !== got) {
      throw new MigrationError(
        'corrupt',
        `checksum mismatch in ${sectionName(type)} section #${this.sections} at byte ${this.offset}: stored CRC-32 0x${want.toString(16).padStart(8, '0')}, computed 0x${got.toString(16).padStart(8, '0')}`,
      );
    }
    // Copy the payload out: the chunk it lives in may be reused by the caller's source.
    const payload = raw.slice(5, 5 + len);
    const frame: Frame = { type, payload, offset: this.offset, index: this.sections };
    this.consume(total);
    this.sections++;
    return frame;
  }

  private checkMagic(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== MAGIC[i]) {
        throw new MigrationError('corrupt', `not a kvmts migration ${this.what}: bad magic ${hexBytes(bytes)} (expected ${hexBytes(MAGIC.subarray(0, bytes.length))})`);
      }
    }
  }

  /** Whether input stopped between sections (nothing partial is buffered). */
  get idle(): boolean {
    return this.headerDone && this.buffered === 0;
  }

  /** Throws a 'truncated' error if the input ended inside the header or a section. */
  end(): void {
    if (!this.headerDone) {
      if (this.buffered === 0) throw new MigrationError('truncated', `truncated ${this.what}: it is empty`);
      throw new MigrationError('truncated', `truncated ${this.what}: it ended after ${this.buffered} bytes, inside the ${HEADER_SIZE}-byte header`);
    }
    if (this.buffered === 0) return;
    let what = 'a section header';
    if (this.buffered >= 5) {
      const h = this.peek(5);
      const len = new DataView(h.buffer, h.byteOffset, 5).getUint32(1);
      what = `${sectionName(h[0]!)} section #${this.sections} (${this.buffered} of ${len + FRAME_OVERHEAD} bytes)`;
    }
    throw new MigrationError('truncated', `truncated ${this.what}: it ended at byte ${this.offset + this.buffered}, inside ${what}`);
  }
}

function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}
