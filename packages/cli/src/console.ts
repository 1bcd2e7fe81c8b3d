/**
 * Buffering of the guest's serial output, so the host writes lines, not single bytes.
 * @module
 */

/** Collects bytes and hands them on per line, when the buffer fills, or on `flush()`. */
export class ConsoleSink {
  private readonly buf: Uint8Array;
  private len = 0;

  constructor(
    private readonly write: (chunk: Uint8Array) => void,
    capacity = 4096,
  ) {
    this.buf = new Uint8Array(capacity);
  }

  /** Take one byte; a newline or a full buffer flushes. */
  push(byte: number): void {
    this.buf[this.len++] = byte;
    if (byte === 0x0a || this.len === this.buf.length) this.flush();
  }

  /** Hand on whatever is buffered. */
  flush(): void {
    if (this.len === 0) return;
    // A copy: the receiver may keep the chunk (stream writes do) while the buffer is reused.
    this.write(this.buf.slice(0, this.len));
    this.len = 0;
  }
}
