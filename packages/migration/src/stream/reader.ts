/**
 * Reading a stream section by section from a Node Readable (a file, a socket) or any async
 * iterable of chunks. Sections are pulled one at a time, so a slow consumer applies
 * backpressure to the source.
 * @module
 */
import { MigrationError } from '../errors.js';
import { FrameParser } from './frame.js';
import type { Frame } from './format.js';

/** Pulls validated sections out of a byte source. */
export class StreamReader {
  private readonly parser: FrameParser;
  private readonly it: AsyncIterator<Uint8Array | string>;
  private ended = false;

  constructor(source: AsyncIterable<Uint8Array | string>, what = 'stream') {
    this.parser = new FrameParser(true, what);
    this.it = source[Symbol.asyncIterator]();
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.parser.offset;
  }

  /** Sections read so far. */
  get sections(): number {
    return this.parser.sections;
  }

  /**
   * The next section; null when the input ended cleanly between sections. Throws a
   * MigrationError for corrupt or truncated input, or when the source fails.
   */
  async next(): Promise<Frame | null> {
    for (;;) {
      const f = this.parser.next();
      if (f) return f;
      if (this.ended) return null;
      let r: IteratorResult<Uint8Array | string>;
      try {
        r = await this.it.next();
      } catch (err) {
        throw new MigrationError('connection', `reading the stream failed at byte ${this.parser.offset}: ${(err as Error).message}`, { cause: err });
      }
      if (r.done) {
        this.ended = true;
        this.parser.end();
        return null;
      }
      const v = r.value;
      this.parser.push(typeof v === 'string' ? new TextEncoder().encode(v) : v);
    }
  }

  /** The next section, which must exist: the end of input here is a truncation. */
  async expect(context: string): Promise<Frame> {
    const f = await this.next();
    if (!f) throw new MigrationError('truncated', `truncated stream: it ended at byte ${this.offset} after ${this.sections} sections, ${context}`);
    return f;
  }

  /** Stops reading (releases the source's iterator, which destroys a Node stream). */
  async close(): Promise<void> {
    try {
      await this.it.return?.();
    } catch {
      // The source may already have failed.
    }
  }
}
