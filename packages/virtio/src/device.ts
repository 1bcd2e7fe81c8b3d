/**
 * The contract between a virtio device model and the transport that presents it to the guest
 * (virtio-mmio or virtio-pci). A device is written once against {@link VirtioDevice}; the
 * transport owns feature negotiation, the status handshake, queue configuration, interrupts
 * and reset, and calls the device at the points where its behaviour matters.
 * @module
 */

import type { GuestMemory } from '@kvmts/kvm-core';
import type { Virtqueue } from './queue/virtqueue.js';

/** How a device interrupts the driver; given to it on activation. */
export interface VirtioInterrupt {
  /**
   * Used buffers were added to queue `queueIndex`: interrupt the driver if it wants to hear
   * about them (the queue's notification suppression decides).
   */
  signalUsed(queueIndex: number): void;
  /** The device configuration changed: bump the config generation and interrupt the driver. */
  signalConfigChange(): void;
  /**
   * The device hit an error it cannot recover from (e.g. a backend failure): set
   * DEVICE_NEEDS_RESET and tell the driver.
   */
  fail(reason: string): void;
}

/** What a device gets when the driver sets DRIVER_OK. */
export interface VirtioActivation {
  /** Guest memory; every access goes through it, so device writes are dirty-logged. */
  memory: GuestMemory;
  /** One queue per entry of {@link VirtioDevice.queueMaxSizes}; a queue the driver did not enable is not `usable`. */
  queues: readonly Virtqueue[];
  /** The negotiated feature bits (transport bits included). */
  features: bigint;
  interrupt: VirtioInterrupt;
}

/**
 * A virtio device, independent of transport. `S` is its JSON-able saved state.
 *
 * Lifecycle: the transport reads {@link features} and the config space during negotiation,
 * calls {@link activate} once the driver sets DRIVER_OK, {@link processQueue} on each
 * available-buffer notification, and {@link reset} when the driver writes status 0. A device
 * must not throw from these for anything the guest did; the transport treats a throw as a
 * device failure (DEVICE_NEEDS_RESET).
 */
export interface VirtioDevice<S = unknown> {
  /** Device ID (5: 1 net, 2 block, 3 console, 4 entropy, ...). */
  readonly deviceType: number;
  /** Maximum size of each queue, in queue order; the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Device-specific feature bits offered (the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX). */
  readonly features: bigint;
  /** Bytes of device configuration space. */
  readonly configSize: number;
  /** Fill `data` from the device configuration at `offset` (the transport keeps it inside {@link configSize}). */
  readConfig(offset: number, data: Uint8Array): void;
  /** Driver write to the device configuration (most fields are read-only: ignore those). */
  writeConfig(offset: number, data: Uint8Array): void;
  /** The driver set DRIVER_OK: start using the queues. */
  activate(activation: VirtioActivation): void;
  /** The driver notified queue `index` (only called while activated). */
  processQueue(index: number): void;
  /** Forget everything since power-on: in-flight work must not touch guest memory afterwards. */
  reset(): void;
  /** Snapshot the device-specific state (JSON-able, with its own version number). */
  save(): S;
  /**
   * Load a snapshot from {@link save}, before the transport re-activates the device with the
   * restored queues. Throws RangeError if the snapshot is malformed.
   */
  restore(state: S): void;
}
