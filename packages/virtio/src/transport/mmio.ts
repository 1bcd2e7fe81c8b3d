/**
 * The virtio-mmio transport, version 2 (VirtIO 1.2, 4.2): a 0x200-byte register window the
 * VMM maps on its MMIO bus, plus one interrupt line. Linux finds it through the kernel command
 * line (`virtio_mmio.device=512@0xd0000000:5`), ACPI or a device tree.
 *
 * Registers are 32 bits wide and must be accessed as aligned dwords; other accesses read as 0
 * and are ignored on write. The device configuration from 0x100 takes any width.
 * @module
 */

import type { BusDevice, GuestMemory } from '@kvmts/kvm-core';
import { VIRTIO_VENDOR_ID } from '../constants.js';
import type { VirtioDevice } from '../device.js';
import { VirtioTransportCore, type VirtioTransportState } from './core.js';

/** "virt" in little-endian. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** The version this transport implements (1 was the legacy layout). */
export const VIRTIO_MMIO_VERSION = 2;
/** Bytes to map: registers up to 0x100, then device configuration. */
export const VIRTIO_MMIO_SIZE = 0x200;

// Register offsets (4.2.2).
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION_REG = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
export const VIRTIO_MMIO_CONFIG = 0x100;

/** Options for {@link VirtioMmioTransport}. */
export interface VirtioMmioOptions {
  /** The VM's guest memory (`vm.memory`), for the queues. */
  memory: GuestMemory;
  /** Drives the device's interrupt line: high while InterruptStatus is not 0 (level-triggered). */
  irq?: (level: boolean) => void;
}

/** Plain, JSON-able snapshot of a {@link VirtioMmioTransport}. */
export interface VirtioMmioState<S = unknown> {
  version: 1;
  transport: VirtioTransportState<S>;
}

const readU32 = (d: Uint8Array): number => (d[0]! | (d[1]! << 8) | (d[2]! << 16) | (d[3]! << 24)) >>> 0;
const writeU32 = (d: Uint8Array, v: number): void => {
  d[0] = v;
  d[1] = v >>> 8;
  d[2] = v >>> 16;
  d[3] = v >>> 24;
};
/** Replace the low or high dword of a guest-physical address. */
const setHalf = (addr: number, v: number, high: boolean): number =>
  high ? (v >>> 0) * 2 ** 32 + (addr % 2 ** 32) : Math.floor(addr / 2 ** 32) * 2 ** 32 + (v >>> 0);
const half = (addr: number, high: boolean): number => (high ? Math.floor(addr / 2 ** 32) : addr % 2 ** 32) >>> 0;

/** A virtio device behind virtio-mmio registers: map it with `mmioBus.insert(t, base, VIRTIO_MMIO_SIZE)`. */
export class VirtioMmioTransport<S = unknown> implements BusDevice {
  readonly core: VirtioTransportCore<S>;
  private readonly irq: ((level: boolean) => void) | undefined;
  private level = false;

  constructor(device: VirtioDevice<S>, options: VirtioMmioOptions) {
    this.core = new VirtioTransportCore(device, options.memory);
    this.irq = options.irq;
    this.core.onInterrupt = () => this.updateIrq();
  }

  /** The device behind the transport. */
  get device(): VirtioDevice<S> {
    return this.core.device;
  }

  /** Whether the interrupt line is high. */
  get irqLevel(): boolean {
    return this.level;
  }

  read(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.core.readConfig(offset - VIRTIO_MMIO_CONFIG, data);
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      data.fill(0);
      return;
    }
    writeU32(data, this.readRegister(offset));
  }

  write(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.core.writeConfig(offset - VIRTIO_MMIO_CONFIG, data);
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) return;
    this.writeRegister(offset, readU32(data));
  }

  save(): VirtioMmioState<S> {
    return { version: 1, transport: this.core.save() };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. Drives the IRQ line to the restored level. */
  restore(state: VirtioMmioState<S>): void {
    if (state.version !== 1) throw new RangeError(`virtio-mmio state: unknown version ${String(state.version)}`);
    this.core.restore(state.transport);
  }

  private readRegister(offset: number): number {
    const c = this.core;
    const q = c.selectedQueue;
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION_REG: return VIRTIO_MMIO_VERSION;
      case VIRTIO_MMIO_DEVICE_ID: return c.device.deviceType;
      case VIRTIO_MMIO_VENDOR_ID: return VIRTIO_VENDOR_ID;
      case VIRTIO_MMIO_DEVICE_FEATURES: return c.deviceFeaturesWord();
      case VIRTIO_MMIO_QUEUE_NUM_MAX: return q?.maxSize ?? 0;
      case VIRTIO_MMIO_QUEUE_NUM: return q?.size ?? 0;
      case VIRTIO_MMIO_QUEUE_READY: return q?.ready ? 1 : 0;
      case VIRTIO_MMIO_QUEUE_DESC_LOW: return q ? half(q.descTable, false) : 0;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH: return q ? half(q.descTable, true) : 0;
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW: return q ? half(q.availRing, false) : 0;
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH: return q ? half(q.availRing, true) : 0;
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW: return q ? half(q.usedRing, false) : 0;
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH: return q ? half(q.usedRing, true) : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS: return c.interruptStatus;
      case VIRTIO_MMIO_STATUS: return c.status;
      case VIRTIO_MMIO_CONFIG_GENERATION: return c.configGeneration;
      default:
        // No shared memory regions: their length and base read as all-ones (4.2.2).
        if (offset >= VIRTIO_MMIO_SHM_LEN_LOW && offset <= VIRTIO_MMIO_SHM_BASE_HIGH) return 0xffffffff;
        return 0;
    }
  }

  private writeRegister(offset: number, v: number): void {
    const c = this.core;
    const q = c.queueConfigWritable ? c.selectedQueue : undefined;
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL: c.deviceFeaturesSel = v; break;
      case VIRTIO_MMIO_DRIVER_FEATURES: c.writeDriverFeaturesWord(v); break;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL: c.driverFeaturesSel = v; break;
      case VIRTIO_MMIO_QUEUE_SEL: c.queueSel = v; break;
      case VIRTIO_MMIO_QUEUE_NUM: if (q) q.size = v; break;
      case VIRTIO_MMIO_QUEUE_READY: if (q) q.ready = (v & 1) === 1; break;
      case VIRTIO_MMIO_QUEUE_DESC_LOW: if (q) q.descTable = setHalf(q.descTable, v, false); break;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH: if (q) q.descTable = setHalf(q.descTable, v, true); break;
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW: if (q) q.availRing = setHalf(q.availRing, v, false); break;
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH: if (q) q.availRing = setHalf(q.availRing, v, true); break;
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW: if (q) q.usedRing = setHalf(q.usedRing, v, false); break;
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH: if (q) q.usedRing = setHalf(q.usedRing, v, true); break;
      // Without VIRTIO_F_NOTIFICATION_DATA the value is just the queue index.
      case VIRTIO_MMIO_QUEUE_NOTIFY: c.notify(v & 0xffff); break;
      case VIRTIO_MMIO_INTERRUPT_ACK: c.ackInterrupt(v); break;
      case VIRTIO_MMIO_STATUS: c.writeStatus(v); break;
      default: break; // read-only or unimplemented (SHMSel, QueueReset without RING_RESET)
    }
  }

  private updateIrq(): void {
    const level = this.core.interruptStatus !== 0;
    if (level === this.level) return;
    this.level = level;
    this.irq?.(level);
  }
}
