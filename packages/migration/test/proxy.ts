/**
 * A TCP proxy between a migration source and destination that cuts or corrupts the stream at
 * a chosen place: a byte offset, or a fraction into the n-th section of a type.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { FRAME_OVERHEAD, HEADER_SIZE, Section } from '../src/index.js';

export interface CutSpec {
  /** Cut at this stream offset. */
  byte?: number;
  /** Cut into the `nth` (default 0) section of this type, `into` (0..1) of the way through it. */
  type?: number;
  nth?: number;
  /** Count `nth` only among sections after this many ROUND markers. */
  afterRounds?: number;
  into?: number;
  /** Flip a byte there instead of cutting. */
  corrupt?: boolean;
  /** Never forward the destination's replies (and cut once the point is reached). */
  dropReplies?: boolean;
}

export class CutProxy {
  private server!: Server;
  port = 0;
  /** Stream bytes forwarded source → destination. */
  forwarded = 0;
  triggered = false;
  private src?: Socket;
  private dst?: Socket;
  // Section tracking.
  private nextFrame = HEADER_SIZE;
  private head: number[] = [];
  private rounds = 0;
  private seen = new Map<number, number>();
  private cutAt = -1;

  constructor(private readonly spec: CutSpec, private readonly target: number) {
    if (spec.byte !== undefined) this.cutAt = spec.byte;
  }

  async listen(): Promise<void> {
    this.server = createServer((src) => this.accept(src));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
  }

  private accept(src: Socket): void {
    this.src = src;
    const dst = (this.dst = connect({ host: '127.0.0.1', port: this.target }));
    src.on('error', () => undefined);
    dst.on('error', () => undefined);
    src.on('close', () => dst.destroy());
    dst.on('close', () => src.destroy());
    dst.on('data', (d: Buffer) => {
      if (!this.spec.dropReplies) src.write(d);
    });
    src.on('data', (d: Buffer) => this.forward(d));
  }

  /** Watches section boundaries in [offset, offset+len) to find the cut point. */
  private track(chunk: Buffer, base: number): void {
    for (let i = 0; i < chunk.length && this.cutAt < 0; ) {
      const off = base + i;
      if (off < this.nextFrame) {
        i += Math.min(chunk.length - i, this.nextFrame - off);
        continue;
      }
      this.head.push(chunk[i]!);
      i++;
      if (this.head.length < 5) continue;
      const type = this.head[0]!;
      const len = Buffer.from(this.head).readUInt32BE(1);
      const start = this.nextFrame;
      this.nextFrame = start + len + FRAME_OVERHEAD;
      this.head = [];
      if (this.spec.type !== undefined && type === this.spec.type && this.rounds >= (this.spec.afterRounds ?? 0)) {
        const n = this.seen.get(type) ?? 0;
        this.seen.set(type, n + 1);
        if (n === (this.spec.nth ?? 0)) this.cutAt = start + Math.floor((this.spec.into ?? 0) * (len + FRAME_OVERHEAD));
      }
      if (type === Section.Round) this.rounds++;
    }
  }

  private forward(d: Buffer): void {
    if (this.triggered && !this.spec.corrupt) return;
    this.track(d, this.forwarded);
    const start = this.forwarded;
    if (this.cutAt >= 0 && !this.triggered && this.cutAt <= start + d.length) {
      this.triggered = true;
      const k = Math.max(0, this.cutAt - start);
      if (this.spec.corrupt) {
        const c = Buffer.from(d);
        const at = Math.min(k, c.length - 1);
        c[at] = c[at]! ^ 0x40;
        this.forwarded += d.length;
        this.dst!.write(c);
        return;
      }
      this.forwarded += k;
      this.dst!.write(d.subarray(0, k), () => {
        this.dst!.destroy();
        this.src!.destroy();
      });
      return;
    }
    this.forwarded += d.length;
    this.dst!.write(d);
  }

  close(): void {
    this.server.close();
    this.src?.destroy();
    this.dst?.destroy();
  }
}
