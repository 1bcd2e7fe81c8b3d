/**
 * The transport-independent half of a virtio transport (VirtIO 1.2, 2 and 3): device status
 * handshake, feature negotiation, queue configuration, interrupt status, configuration
 * generation and reset. {@link VirtioMmioTransport} and {@link VirtioPciTransport} are
 * register layouts over this one state machine.
 * @module
 */

import type { GuestMemory } from '@kvmts/kvm-core';
import {
  TRANSPORT_FEATURES,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_INT_CONFIG_CHANGE,
  VIRTIO_INT_USED_BUFFER,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK,
  featureBit,
} from '../constants.js';
import type { VirtioActivation, VirtioDevice } from '../device.js';
import { Virtqueue, type VirtqueueState } from '../queue/virtqueue.js';

/** Plain, JSON-able snapshot of a {@link VirtioTransportCore}. */
export interface VirtioTransportState<S = unknown> {
  version: 1;
  status: number;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  /** Negotiated (driver-written) features as a hex string: JSON has no 64-bit integers. */
  driverFeatures: string;
  queueSel: number;
  interruptStatus: number;
  configGeneration: number;
  activated: boolean;
  /** Why the device set DEVICE_NEEDS_RESET, if it did. */
  failure: string | null;
  queues: VirtqueueState[];
  device: S;
}

const U32 = 0xffffffffn;

/**
 * Status, features, queues and interrupt state of one virtio device. The transport turns
 * register accesses into calls here and drives its interrupt line from {@link onInterrupt}.
 */
export class VirtioTransportCore<S = unknown> {
  readonly device: VirtioDevice<S>;
  readonly queues: readonly Virtqueue[];
  /** Features offered to the driver: the device's plus the transport's. */
  readonly offeredFeatures: bigint;
  /** Called whenever {@link interruptStatus} changes. */
  onInterrupt: (() => void) | undefined;

  status = 0;
  deviceFeaturesSel = 0;
  driverFeaturesSel = 0;
  driverFeatures = 0n;
  queueSel = 0;
  /** Pending interrupt causes: {@link VIRTIO_INT_USED_BUFFER} | {@link VIRTIO_INT_CONFIG_CHANGE}. */
  interruptStatus = 0;
  configGeneration = 0;
  /** Why DEVICE_NEEDS_RESET was set (for the VMM's logs), or null. */
  failure: string | null = null;

  private readonly memory: GuestMemory;
  private activated = false;

  constructor(device: VirtioDevice<S>, memory: GuestMemory) {
    this.device = device;
    this.memory = memory;
    this.offeredFeatures = device.features | TRANSPORT_FEATURES;
    this.queues = device.queueMaxSizes.map((max, i) => {
      const q = new Virtqueue(max);
      q.onError = (e) => this.needsReset(`queue ${i}: ${e.message}`);
      return q;
    });
  }

  /** The driver set DRIVER_OK and the device is running. */
  get isActivated(): boolean {
    return this.activated;
  }

  /** The queue QueueSel / queue_select points at, if it exists. */
  get selectedQueue(): Virtqueue | undefined {
    return this.queues[this.queueSel];
  }

  /** Whether queue registers may still change: not after DRIVER_OK. */
  get queueConfigWritable(): boolean {
    return (this.status & VIRTIO_STATUS_DRIVER_OK) === 0;
  }

  /** The 32-bit page of offered features that deviceFeaturesSel selects. */
  deviceFeaturesWord(): number {
    return this.featureWord(this.offeredFeatures, this.deviceFeaturesSel);
  }

  /** The 32-bit page of driver features that driverFeaturesSel selects. */
  driverFeaturesWord(): number {
    return this.featureWord(this.driverFeatures, this.driverFeaturesSel);
  }

  /** Driver writes a page of its features; frozen once FEATURES_OK is set. */
  writeDriverFeaturesWord(value: number): void {
    if (this.status & VIRTIO_STATUS_FEATURES_OK) return;
    const sel = this.driverFeaturesSel;
    if (sel > 1) return; // only 64 feature bits exist so far
    const shift = BigInt(32 * sel);
    this.driverFeatures = (this.driverFeatures & ~(U32 << shift)) | (BigInt(value >>> 0) << shift);
  }

  /**
   * The driver writes the device status. 0 resets the device. Otherwise the driver may only
   * add bits (3.1.1); FEATURES_OK sticks only if the features are acceptable (a subset of the
   * offer, with VERSION_1), and DRIVER_OK after FEATURES_OK activates the device.
   */
  writeStatus(value: number): void {
    value &= 0xff;
    if (value === 0) {
      this.reset();
      return;
    }
    const deviceBits = this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    const current = this.status & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    const requested = value & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    if ((requested & current) !== current) return; // clearing a bit: not allowed
    let added = requested & ~current;
    if (added & VIRTIO_STATUS_FEATURES_OK && !this.featuresAcceptable()) added &= ~VIRTIO_STATUS_FEATURES_OK;
    if (added & VIRTIO_STATUS_DRIVER_OK && !((current | added) & VIRTIO_STATUS_FEATURES_OK)) added &= ~VIRTIO_STATUS_DRIVER_OK;
    this.status = current | added | deviceBits;
    if (added & VIRTIO_STATUS_DRIVER_OK) this.activate();
  }

  /** The driver notified queue `index`. Ignored unless running, healthy and the queue is usable. */
  notify(index: number): void {
    if (!this.activated || this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) return;
    const q = this.queues[index];
    if (q === undefined || !q.usable) return;
    try {
      this.device.processQueue(index);
    } catch (e) {
      this.needsReset(`device failed processing queue ${index}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Clear interrupt causes the driver acknowledged. */
  ackInterrupt(bits: number): void {
    const next = this.interruptStatus & ~bits;
    if (next === this.interruptStatus) return;
    this.interruptStatus = next;
    this.onInterrupt?.();
  }

  /** Set interrupt causes. */
  raiseInterrupt(bits: number): void {
    const next = this.interruptStatus | bits;
    if (next === this.interruptStatus) return;
    this.interruptStatus = next;
    this.onInterrupt?.();
  }

  /** Device configuration read, kept inside the device's config size (outside reads 0). */
  readConfig(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset + data.length > this.device.configSize) {
      data.fill(0);
      return;
    }
    this.device.readConfig(offset, data);
  }

  /** Device configuration write, kept inside the device's config size. */
  writeConfig(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset + data.length > this.device.configSize) return;
    this.device.writeConfig(offset, data);
  }

  /**
   * The device cannot go on: set DEVICE_NEEDS_RESET and, once the driver is running, send a
   * configuration change interrupt so it notices (2.1.2).
   */
  needsReset(reason: string): void {
    if (this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) return;
    this.failure = reason;
    this.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    if (this.status & VIRTIO_STATUS_DRIVER_OK) this.raiseInterrupt(VIRTIO_INT_CONFIG_CHANGE);
  }

  /** Device reset: the device forgets everything, queues go back to their reset values. */
  reset(): void {
    this.device.reset();
    for (const q of this.queues) q.reset();
    this.activated = false;
    this.status = 0;
    this.deviceFeaturesSel = this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.failure = null;
    this.ackInterrupt(0xffffffff);
  }

  save(): VirtioTransportState<S> {
    return {
      version: 1,
      status: this.status,
      deviceFeaturesSel: this.deviceFeaturesSel,
      driverFeaturesSel: this.driverFeaturesSel,
      driverFeatures: `0x${this.driverFeatures.toString(16)}`,
      queueSel: this.queueSel,
      interruptStatus: this.interruptStatus,
      configGeneration: this.configGeneration,
      activated: this.activated,
      failure: this.failure,
      queues: this.queues.map((q) => q.save()),
      device: this.device.save(),
    };
  }

  /**
   * Load a snapshot from {@link save} (guest memory must already be restored): queues and
   * device state, then re-activation if the device was running. Throws RangeError if the
   * snapshot is malformed or has a different number of queues.
   */
  restore(state: VirtioTransportState<S>): void {
    const bad = (what: string): never => {
      throw new RangeError(`virtio transport state: ${what}`);
    };
    if (state.version !== 1) bad(`unknown version ${String(state.version)}`);
    if (!Array.isArray(state.queues) || state.queues.length !== this.queues.length) bad(`expected ${this.queues.length} queues`);
    const u32 = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
    for (const k of ['status', 'deviceFeaturesSel', 'driverFeaturesSel', 'queueSel', 'interruptStatus', 'configGeneration'] as const) {
      if (!u32(state[k])) bad(`${k} = ${String(state[k])}`);
    }
    if (typeof state.driverFeatures !== 'string' || !/^0x[0-9a-f]+$/i.test(state.driverFeatures)) bad(`driverFeatures = ${String(state.driverFeatures)}`);
    // Restore into scratch queues first, so a malformed queue leaves this transport untouched.
    this.queues.forEach((q, i) => new Virtqueue(q.maxSize).restore(state.queues[i]!));
    this.device.reset();
    this.device.restore(state.device);
    this.queues.forEach((q, i) => q.restore(state.queues[i]!));
    this.status = state.status & 0xff;
    this.deviceFeaturesSel = state.deviceFeaturesSel;
    this.driverFeaturesSel = state.driverFeaturesSel;
    this.driverFeatures = BigInt(state.driverFeatures);
    this.queueSel = state.queueSel;
    this.configGeneration = state.configGeneration;
    this.failure = state.failure ?? null;
    this.activated = false;
    if (state.activated) this.activate();
    this.interruptStatus = state.interruptStatus & (VIRTIO_INT_USED_BUFFER | VIRTIO_INT_CONFIG_CHANGE);
    this.onInterrupt?.();
  }

  private featureWord(features: bigint, sel: number): number {
    if (sel > 1) return 0;
    return Number((features >> BigInt(32 * sel)) & U32);
  }

  private featuresAcceptable(): boolean {
    const f = this.driverFeatures;
    return (f & ~this.offeredFeatures) === 0n && (f & featureBit(VIRTIO_F_VERSION_1)) !== 0n;
  }

  private activate(): void {
    const features = this.driverFeatures;
    const eventIdx = (features & featureBit(VIRTIO_F_RING_EVENT_IDX)) !== 0n;
    const indirect = (features & featureBit(VIRTIO_F_RING_INDIRECT_DESC)) !== 0n;
    for (const q of this.queues) {
      q.eventIdx = eventIdx;
      q.indirectDesc = indirect;
      q.activate(this.memory); // a bad ring reports through onError
    }
    this.activated = true;
    const activation: VirtioActivation = {
      memory: this.memory,
      queues: this.queues,
      features,
      interrupt: {
        signalUsed: (queueIndex) => {
          if (this.activated && this.queues[queueIndex]?.needsNotification()) this.raiseInterrupt(VIRTIO_INT_USED_BUFFER);
        },
        signalConfigChange: () => {
          this.configGeneration = (this.configGeneration + 1) >>> 0;
          if (this.activated) this.raiseInterrupt(VIRTIO_INT_CONFIG_CHANGE);
        },
        fail: (reason) => this.needsReset(reason),
      },
    };
    try {
      this.device.activate(activation);
    } catch (e) {
      this.needsReset(`device failed to activate: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
