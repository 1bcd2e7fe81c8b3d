/**
 * virtio-rng, the entropy device (VirtIO 1.2, 5.4): one queue of device-writable buffers,
 * each filled with random bytes from the host (`crypto.randomFillSync`). No features, no
 * configuration. Requests are answered synchronously; at most {@link VIRTIO_RNG_MAX_REQUEST}
 * bytes go into one buffer so a guest cannot make the host generate gigabytes at once.
 * @module
 */

import { randomFillSync } from 'node:crypto';
import { VIRTIO_ID_RNG } from '../constants.js';
import type { VirtioActivation, VirtioDevice } from '../device.js';

/** Most bytes returned per request (Linux asks for at most a page or so). */
export const VIRTIO_RNG_MAX_REQUEST = 0x10000;

/** Options for {@link VirtioRng}. */
export interface VirtioRngOptions {
  /** Queue size (default 256). */
  queueSize?: number;
  /** Where the bytes come from (default `crypto.randomFillSync`); for tests or a different source. */
  fill?: (buf: Uint8Array) => void;
}

/** Plain, JSON-able snapshot of a {@link VirtioRng} (it has no state of its own). */
export interface VirtioRngState {
  version: 1;
}

/** The entropy device. */
export class VirtioRng implements VirtioDevice<VirtioRngState> {
  readonly deviceType = VIRTIO_ID_RNG;
  readonly queueMaxSizes: readonly number[];
  readonly features = 0n;
  readonly configSize = 0;
  /** Bytes handed to the guest since creation. */
  bytesServed = 0;

  private readonly fill: (buf: Uint8Array) => void;
  private readonly scratch = new Uint8Array(4096);
  private activation: VirtioActivation | null = null;

  constructor(options: VirtioRngOptions = {}) {
    this.queueMaxSizes = [options.queueSize ?? 256];
    this.fill = options.fill ?? ((buf) => randomFillSync(buf));
  }

  readConfig(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  writeConfig(): void {}

  activate(activation: VirtioActivation): void {
    this.activation = activation;
  }

  processQueue(index: number): void {
    const a = this.activation;
    const q = a?.queues[index];
    if (!a || !q || index !== 0) return;
    let used = false;
    do {
      q.disableNotification();
      for (let chain = q.pop(); chain !== null; chain = q.pop()) {
        const want = Math.min(chain.writableLength, VIRTIO_RNG_MAX_REQUEST);
        let done = 0;
        while (done < want) {
          const part = this.scratch.subarray(0, Math.min(this.scratch.length, want - done));
          this.fill(part);
          done += chain.write(a.memory, done, part);
        }
        this.bytesServed += done;
        used = q.addUsed(chain.head, done) || used;
      }
    } while (q.enableNotification());
    if (used) a.interrupt.signalUsed(0);
  }

  reset(): void {
    this.activation = null;
  }

  save(): VirtioRngState {
    return { version: 1 };
  }

  restore(state: VirtioRngState): void {
    if (state.version !== 1) throw new RangeError(`virtio-rng state: unknown version ${String(state.version)}`);
  }
}
