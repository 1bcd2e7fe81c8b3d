/**
 * virtio-console with a single port (VirtIO 1.2, 5.3; no MULTIPORT): queue 0 (receiveq)
 * carries host input to the guest, queue 1 (transmitq) guest output to the host. Linux shows
 * it as /dev/hvc0 (`console=hvc0`).
 *
 * Offered features: CONSOLE_F_SIZE (the config space carries columns and rows; {@link
 * VirtioConsole.resize} changes them and tells the driver) and CONSOLE_F_EMERG_WRITE (a byte
 * written to the `emerg_wr` config field is output at once, even before the queues work).
 *
 * Input sent before the driver posts receive buffers waits in a bounded buffer; past
 * {@link VIRTIO_CONSOLE_INPUT_LIMIT} bytes the newest input is dropped, like a full UART FIFO.
 * @module
 */

import { VIRTIO_ID_CONSOLE, featureBit } from '../constants.js';
import type { VirtioActivation, VirtioDevice } from '../device.js';

/** Config has cols and rows. */
export const VIRTIO_CONSOLE_F_SIZE = 0;
/** Multiple ports and a control queue (not offered). */
export const VIRTIO_CONSOLE_F_MULTIPORT = 1;
/** Config has emerg_wr. */
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2;
/** Bytes of struct virtio_console_config: cols, rows (u16), max_nr_ports, emerg_wr (u32). */
export const VIRTIO_CONSOLE_CONFIG_SIZE = 12;
/** Most input bytes held while the guest has no receive buffers. */
export const VIRTIO_CONSOLE_INPUT_LIMIT = 0x10000;

const RECEIVEQ = 0;
const TRANSMITQ = 1;
const CFG_EMERG_WR = 8;
/** Most bytes taken from one transmit chain (a guest cannot make the host copy gigabytes). */
const MAX_OUTPUT_CHAIN = 0x10000;

/** Options for {@link VirtioConsole}. */
export interface VirtioConsoleOptions {
  /** Receives everything the guest writes to the console. */
  output?: (data: Uint8Array) => void;
  /** Terminal size reported to the guest (default 80 x 25). */
  cols?: number;
  rows?: number;
  /** Size of both queues (default 256). */
  queueSize?: number;
}

/** Plain, JSON-able snapshot of a {@link VirtioConsole}. */
export interface VirtioConsoleState {
  version: 1;
  cols: number;
  rows: number;
  /** Input not yet delivered, as bytes. */
  pendingInput: number[];
}

const u16 = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 0xffff;

/** A single-port virtio console. */
export class VirtioConsole implements VirtioDevice<VirtioConsoleState> {
  readonly deviceType = VIRTIO_ID_CONSOLE;
  readonly queueMaxSizes: readonly number[];
  readonly features = featureBit(VIRTIO_CONSOLE_F_SIZE) | featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE);
  readonly configSize = VIRTIO_CONSOLE_CONFIG_SIZE;

  private readonly output: (data: Uint8Array) => void;
  private readonly config = new Uint8Array(VIRTIO_CONSOLE_CONFIG_SIZE);
  private readonly configView = new DataView(this.config.buffer);
  private input = new Uint8Array(0);
  private activation: VirtioActivation | null = null;
  private readonly outScratch = new Uint8Array(4096);

  constructor(options: VirtioConsoleOptions = {}) {
    const size = options.queueSize ?? 256;
    this.queueMaxSizes = [size, size];
    this.output = options.output ?? (() => {});
    this.setSize(options.cols ?? 80, options.rows ?? 25);
  }

  /** Terminal size reported to the guest. */
  get cols(): number {
    return this.configView.getUint16(0, true);
  }
  get rows(): number {
    return this.configView.getUint16(2, true);
  }

  /** Input bytes waiting for receive buffers. */
  get pendingInput(): number {
    return this.input.length;
  }

  /** Send host input (a keyboard, a pipe) to the guest. Returns how many bytes were accepted. */
  sendInput(data: Uint8Array | string): number {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const take = Math.min(bytes.length, VIRTIO_CONSOLE_INPUT_LIMIT - this.input.length);
    if (take <= 0) return 0;
    const next = new Uint8Array(this.input.length + take);
    next.set(this.input);
    next.set(bytes.subarray(0, take), this.input.length);
    this.input = next;
    this.deliverInput();
    return take;
  }

  /** Change the terminal size and tell the driver (a configuration change interrupt). */
  resize(cols: number, rows: number): void {
    this.setSize(cols, rows);
    this.activation?.interrupt.signalConfigChange();
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  /** Only emerg_wr is writable: its low byte is output at once. */
  writeConfig(offset: number, data: Uint8Array): void {
    if (offset === CFG_EMERG_WR && data.length >= 1) this.output(data.slice(0, 1));
  }

  activate(activation: VirtioActivation): void {
    this.activation = activation;
    this.deliverInput();
  }

  processQueue(index: number): void {
    if (index === RECEIVEQ) this.deliverInput();
    else if (index === TRANSMITQ) this.drainOutput();
  }

  reset(): void {
    this.activation = null;
  }

  save(): VirtioConsoleState {
    return { version: 1, cols: this.cols, rows: this.rows, pendingInput: Array.from(this.input) };
  }

  restore(state: VirtioConsoleState): void {
    const bad = (what: string): never => {
      throw new RangeError(`virtio-console state: ${what}`);
    };
    if (state.version !== 1) bad(`unknown version ${String(state.version)}`);
    if (!u16(state.cols) || !u16(state.rows)) bad('cols and rows must be 16-bit integers');
    if (!Array.isArray(state.pendingInput) || state.pendingInput.length > VIRTIO_CONSOLE_INPUT_LIMIT || !state.pendingInput.every((b) => Number.isInteger(b) && b >= 0 && b <= 0xff)) {
      bad('pendingInput must be bytes');
    }
    this.setSize(state.cols, state.rows);
    this.input = Uint8Array.from(state.pendingInput);
  }

  private setSize(cols: number, rows: number): void {
    if (!u16(cols) || !u16(rows)) throw new RangeError(`console size ${String(cols)}x${String(rows)} is not two 16-bit integers`);
    this.configView.setUint16(0, cols, true);
    this.configView.setUint16(2, rows, true);
  }

  private deliverInput(): void {
    const a = this.activation;
    const q = a?.queues[RECEIVEQ];
    if (!a || !q) return;
    let used = false;
    while (this.input.length > 0) {
      const chain = q.pop();
      if (chain === null) break;
      const n = chain.write(a.memory, 0, this.input);
      this.input = this.input.slice(n);
      used = q.addUsed(chain.head, n) || used;
    }
    if (used) a.interrupt.signalUsed(RECEIVEQ);
  }

  private drainOutput(): void {
    const a = this.activation;
    const q = a?.queues[TRANSMITQ];
    if (!a || !q) return;
    let used = false;
    do {
      q.disableNotification();
      for (let chain = q.pop(); chain !== null; chain = q.pop()) {
        const len = Math.min(chain.readableLength, MAX_OUTPUT_CHAIN);
        for (let done = 0; done < len; ) {
          const part = this.outScratch.subarray(0, Math.min(this.outScratch.length, len - done));
          const n = chain.read(a.memory, done, part);
          this.output(part.slice(0, n));
          done += n;
        }
        used = q.addUsed(chain.head, 0) || used;
      }
    } while (q.enableNotification());
    if (used) a.interrupt.signalUsed(TRANSMITQ);
  }
}
