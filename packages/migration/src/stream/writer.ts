/**
 * Writing a stream to a Node Writable with backpressure: {@link StreamWriter.section} reports
 * whether the writable wants the writer to wait, and {@link StreamWriter.drain} waits.
 * @module
 */
import type { Writable } from 'node:stream';
import { MigrationError } from '../errors.js';
import { encodeFrame, encodeHeader, jsonPayload } from './frame.js';
import type { SectionType } from './format.js';

/** Writes the header and sections; counts bytes; surfaces the writable's errors. */
export class StreamWriter {
  /** Bytes handed to the writable. */
  bytes = 0;
  /** Bytes the writable has reported written (its callbacks ran). */
  flushedBytes = 0;
  /** Sections written. */
  sections = 0;
  private failure: Error | null = null;
  private closed = false;
  private readonly onError = (err: Error): void => {
    this.failure ??= err;
  };
  private readonly onClose = (): void => {
    this.closed = true;
  };

  constructor(readonly out: Writable) {
    out.on('error', this.onError);
    out.on('close', this.onClose);
  }

  /** The writable's error, if it failed. */
  get error(): Error | null {
    return this.failure;
  }

  /** Whether the writable is over its high-water mark: wait for {@link drain} before writing more. */
  get needsDrain(): boolean {
    return this.out.writableNeedDrain;
  }

  private check(): void {
    if (this.failure) throw new MigrationError('connection', `writing the stream failed: ${this.failure.message}`, { cause: this.failure });
    if (this.closed || this.out.destroyed || this.out.writableEnded) throw new MigrationError('connection', 'writing the stream failed: the connection or file is closed');
  }

  private lastWrite: Promise<Error | null> = Promise.resolve(null);

  private put(bytes: Uint8Array): boolean {
    this.check();
    const n = bytes.length;
    this.bytes += n;
    let ok = true;
    this.lastWrite = new Promise((resolve) => {
      ok = this.out.write(bytes, (err) => {
        if (err) this.failure ??= err;
        else this.flushedBytes += n;
        resolve(err ?? null);
      });
    });
    return ok;
  }

  /** The stream header. */
  header(): boolean {
    return this.put(encodeHeader());
  }

  /** One section; false when the caller should {@link drain} before writing more. */
  section(type: SectionType, payload: Uint8Array): boolean {
    this.sections++;
    return this.put(encodeFrame(type, payload));
  }

  /** A JSON section. */
  json(type: SectionType, value: unknown): boolean {
    return this.section(type, jsonPayload(value));
  }

  /** Waits until the writable wants more (immediately if it does); rejects if it fails or closes. */
  drain(): Promise<void> {
    this.check();
    if (!this.out.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        this.out.off('drain', onDrain);
        this.out.off('error', onErr);
        this.out.off('close', onClose);
        if (err) reject(new MigrationError('connection', `writing the stream failed: ${err.message}`, { cause: err }));
        else resolve();
      };
      const onDrain = (): void => done();
      const onErr = (err: Error): void => done(err);
      const onClose = (): void => done(this.failure ?? new Error('the connection or file closed'));
      this.out.on('drain', onDrain);
      this.out.on('error', onErr);
      this.out.on('close', onClose);
    });
  }

  /** Waits until everything written so far has been handed to the OS. */
  async flush(): Promise<void> {
    this.check();
    const err = await this.lastWrite;
    if (err) throw new MigrationError('connection', `writing the stream failed: ${err.message}`, { cause: err });
    this.check();
  }

  /** Stops listening to the writable. */
  detach(): void {
    this.out.off('error', this.onError);
    this.out.off('close', this.onClose);
  }
}
