/**
 * virtio-net (VirtIO 1.2, 5.1) with one receive and one transmit queue, no control queue and
 * no offloads: every frame carries a 12-byte virtio_net_hdr (VERSION_1 layout, with
 * num_buffers) that the device zeroes on receive and skips on transmit. Offered features:
 * MAC (the config space holds the address) and STATUS (link up).
 *
 * Frames go to and come from a {@link NetBackend}. Received frames wait in a small backlog
 * while the guest has no receive buffers; beyond it they are dropped, as on a real NIC. A
 * receive buffer too small for a frame (the driver must post at least 1526 bytes without
 * MRG_RXBUF) drops the frame and goes back to the driver with length 0, which Linux counts
 * as a length error and recycles.
 * @module
 */

import { VIRTIO_ID_NET, featureBit } from '../constants.js';
import type { VirtioActivation, VirtioDevice } from '../device.js';
import type { NetBackend } from './backend.js';

/** Device has a MAC address in config. */
export const VIRTIO_NET_F_MAC = 5;
/** Config status field is valid. */
export const VIRTIO_NET_F_STATUS = 16;
/** Config status bit: link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** struct virtio_net_hdr with num_buffers (always present with VERSION_1). */
export const VIRTIO_NET_HDR_SIZE = 12;
/** Bytes of config exposed: mac[6], status. */
export const VIRTIO_NET_CONFIG_SIZE = 8;
/** Largest frame accepted either way (64 KiB GSO frames are not negotiated, so this is generous). */
export const VIRTIO_NET_MAX_FRAME = 65550;
/** Frames held while the guest has no receive buffers. */
export const VIRTIO_NET_RX_BACKLOG = 256;

const RXQ = 0;
const TXQ = 1;

/** Options for {@link VirtioNet}. */
export interface VirtioNetOptions {
  /** Where frames go (default: nowhere, see {@link NullNetBackend}). */
  backend?: NetBackend;
  /** MAC address as "52:54:00:12:34:56" (default 52:54:00:12:34:56). */
  mac?: string;
  /** Size of both queues (default 256). */
  queueSize?: number;
}

/** Plain, JSON-able snapshot of a {@link VirtioNet}. Frames in the backlog are not saved (the network may drop them). */
export interface VirtioNetState {
  version: 1;
  mac: string;
  linkUp: boolean;
}

const parseMac = (s: string): Uint8Array => {
  const parts = s.split(':');
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-f]{2}$/i.test(p))) throw new RangeError(`MAC address "${s}" is not six hex bytes separated by colons`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
};
const formatMac = (b: Uint8Array): string => Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, '0')).join(':');

/** A virtio network device. */
export class VirtioNet implements VirtioDevice<VirtioNetState> {
  readonly deviceType = VIRTIO_ID_NET;
  readonly queueMaxSizes: readonly number[];
  readonly features = featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS);
  readonly configSize = VIRTIO_NET_CONFIG_SIZE;
  /** Counters, for the VMM's statistics. */
  readonly stats = { rxFrames: 0, txFrames: 0, rxDropped: 0, txDropped: 0 };

  private readonly backend: NetBackend | undefined;
  private readonly config = new Uint8Array(VIRTIO_NET_CONFIG_SIZE);
  private readonly backlog: Uint8Array[] = [];
  private readonly rxHeader = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  private activation: VirtioActivation | null = null;

  constructor(options: VirtioNetOptions = {}) {
    const size = options.queueSize ?? 256;
    this.queueMaxSizes = [size, size];
    this.config.set(parseMac(options.mac ?? '52:54:00:12:34:56'));
    this.setLink(true);
    // num_buffers is 1 for every received frame without MRG_RXBUF.
    this.rxHeader[10] = 1;
    this.backend = options.backend;
    this.backend?.attach((frame) => this.receive(frame));
  }

  /** The MAC address, as "xx:xx:xx:xx:xx:xx". */
  get mac(): string {
    return formatMac(this.config);
  }

  get linkUp(): boolean {
    return (this.config[6]! & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Plug or unplug the cable; the driver hears about it through a config change. */
  setLinkUp(up: boolean): void {
    if (up === this.linkUp) return;
    this.setLink(up);
    this.activation?.interrupt.signalConfigChange();
  }

  /** A frame for the guest (the backend calls this). Queued or dropped if the guest cannot take it now. */
  receive(frame: Uint8Array): void {
    if (!this.linkUp || frame.length > VIRTIO_NET_MAX_FRAME) {
      this.stats.rxDropped++;
      return;
    }
    if (this.backlog.length >= VIRTIO_NET_RX_BACKLOG) {
      this.stats.rxDropped++;
      return;
    }
    this.backlog.push(frame);
    this.deliver();
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  /** The MAC is read-only in VirtIO 1.x; nothing else is writable. */
  writeConfig(): void {}

  activate(activation: VirtioActivation): void {
    this.activation = activation;
    this.deliver();
  }

  processQueue(index: number): void {
    if (index === RXQ) this.deliver();
    else if (index === TXQ) this.transmit();
  }

  reset(): void {
    this.activation = null;
    this.backlog.length = 0;
  }

  save(): VirtioNetState {
    return { version: 1, mac: this.mac, linkUp: this.linkUp };
  }

  restore(state: VirtioNetState): void {
    if (state.version !== 1) throw new RangeError(`virtio-net state: unknown version ${String(state.version)}`);
    const mac = parseMac(state.mac);
    this.config.set(mac);
    this.setLink(Boolean(state.linkUp));
    this.backlog.length = 0;
  }

  private setLink(up: boolean): void {
    this.config[6] = up ? VIRTIO_NET_S_LINK_UP : 0;
    this.config[7] = 0;
  }

  private deliver(): void {
    const a = this.activation;
    const q = a?.queues[RXQ];
    if (!a || !q) return;
    let used = false;
    while (this.backlog.length > 0) {
      const chain = q.pop();
      if (chain === null) break;
      const frame = this.backlog.shift()!;
      if (chain.writableLength < VIRTIO_NET_HDR_SIZE + frame.length) {
        // Hand the buffer back empty rather than keep it: it would block the ring for good.
        this.stats.rxDropped++;
        used = q.addUsed(chain.head, 0) || used;
        continue;
      }
      chain.write(a.memory, 0, this.rxHeader);
      chain.write(a.memory, VIRTIO_NET_HDR_SIZE, frame);
      this.stats.rxFrames++;
      used = q.addUsed(chain.head, VIRTIO_NET_HDR_SIZE + frame.length) || used;
    }
    if (used) a.interrupt.signalUsed(RXQ);
  }

  private transmit(): void {
    const a = this.activation;
    const q = a?.queues[TXQ];
    if (!a || !q) return;
    let used = false;
    do {
      q.disableNotification();
      for (let chain = q.pop(); chain !== null; chain = q.pop()) {
        const len = chain.readableLength - VIRTIO_NET_HDR_SIZE;
        if (len < 0 || len > VIRTIO_NET_MAX_FRAME) {
          this.stats.txDropped++;
        } else {
          const frame = new Uint8Array(len);
          chain.read(a.memory, VIRTIO_NET_HDR_SIZE, frame);
          this.stats.txFrames++;
          if (this.linkUp) this.backend?.send(frame);
        }
        used = q.addUsed(chain.head, 0) || used;
      }
    } while (q.enableNotification());
    if (used) a.interrupt.signalUsed(TXQ);
  }
}
