import { Readable, Writable } from 'node:stream';
import { FrameParser, StreamReader, type Frame } from '../src/index.js';

/** A Writable that collects everything written to it. */
export class Collector extends Writable {
  chunks: Buffer[] = [];
  constructor(highWaterMark = 16 * 1024) {
    super({ highWaterMark });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    setImmediate(cb);
  }
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

/** A reader over `bytes`, delivered in chunks of `chunk` bytes. */
export function readerOf(bytes: Uint8Array, chunk = 7919): StreamReader {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += chunk) parts.push(bytes.slice(i, i + chunk));
  return new StreamReader(Readable.from(parts));
}

/** Every section of a whole stream, parsed at once. */
export function frames(bytes: Uint8Array): Frame[] {
  const p = new FrameParser();
  p.push(bytes);
  const out: Frame[] = [];
  for (let f = p.next(); f; f = p.next()) out.push(f);
  p.end();
  return out;
}
