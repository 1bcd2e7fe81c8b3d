/**
 * The virtio-pci transport, modern (non-transitional) only (VirtIO 1.2, 4.1): PCI vendor
 * 1AF4h, device 1040h + device type, revision 1, and vendor-specific capabilities that point
 * the driver at four structures inside one memory BAR:
 *
 * | BAR offset | structure                                              |
 * |-----------:|--------------------------------------------------------|
 * | 0x0000     | common configuration (features, status, queue setup)   |
 * | 0x1000     | ISR status (one byte, cleared by reading it)           |
 * | 0x2000     | device-specific configuration                          |
 * | 0x3000     | notifications: queue n at 0x3000 + n * 4               |
 *
 * Interrupts use INTx (the Interrupt Pin register says INTA#). There is no MSI-X capability,
 * so drivers fall back to the shared line; the MSI-X vector registers read NO_VECTOR.
 *
 * The BAR decodes wherever the guest programs it. Either give the transport the MMIO bus
 * (`mmio` option) and it maps and unmaps {@link VirtioPciTransport.bar} itself, or watch
 * `onBarChange` and do it in the VMM.
 * @module
 */

import { PCI_INTA, PciConfigSpace, type PciConfigState, type PciDevice } from '@kvmts/devices';
import type { BusDevice, GuestMemory, MmioBus } from '@kvmts/kvm-core';
import { VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_NET, VIRTIO_ID_RNG, VIRTIO_VENDOR_ID } from '../constants.js';
import type { VirtioDevice } from '../device.js';
import { VirtioTransportCore, type VirtioTransportState } from './core.js';

/** PCI device ID of a modern virtio device: 1040h + device type. */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
/** Revision ID of non-transitional devices (at least 1). */
export const VIRTIO_PCI_REVISION = 1;
/** Vendor-specific capability ID that virtio structures use. */
export const PCI_CAP_ID_VNDR = 0x09;

// virtio_pci_cap cfg_type values (4.1.4).
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;

/** Size of the one memory BAR. */
export const VIRTIO_PCI_BAR_SIZE = 0x4000;
/** Offsets of the structures inside the BAR. */
export const VIRTIO_PCI_COMMON_OFFSET = 0x0000;
export const VIRTIO_PCI_ISR_OFFSET = 0x1000;
export const VIRTIO_PCI_DEVICE_OFFSET = 0x2000;
export const VIRTIO_PCI_NOTIFY_OFFSET = 0x3000;
const REGION_SIZE = 0x1000;
/** Bytes between the notify addresses of consecutive queues. */
export const VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER = 4;
/** MSI-X "no vector" value. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

// struct virtio_pci_common_cfg field offsets (4.1.4.3).
export const VIRTIO_PCI_COMMON_DFSELECT = 0x00;
export const VIRTIO_PCI_COMMON_DF = 0x04;
export const VIRTIO_PCI_COMMON_GFSELECT = 0x08;
export const VIRTIO_PCI_COMMON_GF = 0x0c;
export const VIRTIO_PCI_COMMON_MSIX = 0x10;
export const VIRTIO_PCI_COMMON_NUMQ = 0x12;
export const VIRTIO_PCI_COMMON_STATUS = 0x14;
export const VIRTIO_PCI_COMMON_CFGGENERATION = 0x15;
export const VIRTIO_PCI_COMMON_Q_SELECT = 0x16;
export const VIRTIO_PCI_COMMON_Q_SIZE = 0x18;
export const VIRTIO_PCI_COMMON_Q_MSIX = 0x1a;
export const VIRTIO_PCI_COMMON_Q_ENABLE = 0x1c;
export const VIRTIO_PCI_COMMON_Q_NOFF = 0x1e;
export const VIRTIO_PCI_COMMON_Q_DESCLO = 0x20;
export const VIRTIO_PCI_COMMON_Q_DESCHI = 0x24;
export const VIRTIO_PCI_COMMON_Q_AVAILLO = 0x28;
export const VIRTIO_PCI_COMMON_Q_AVAILHI = 0x2c;
export const VIRTIO_PCI_COMMON_Q_USEDLO = 0x30;
export const VIRTIO_PCI_COMMON_Q_USEDHI = 0x34;
/** Size of the common configuration structure including the 1.2 notif_config_data and queue_reset fields. */
const COMMON_CFG_SIZE = 0x3c;

/** Options for {@link VirtioPciTransport}. */
export interface VirtioPciOptions {
  /** The VM's guest memory (`vm.memory`), for the queues. */
  memory: GuestMemory;
  /** Drives INTA# of this function: high while the ISR has a cause and INTx is not disabled. */
  irq?: (level: boolean) => void;
  /** Which BAR holds the structures (default 0). */
  barIndex?: number;
  /** 32-bit (default, suits guests without 64-bit addressing) or 64-bit memory BAR. */
  barKind?: 'mem32' | 'mem64';
  /** If given, the transport maps {@link VirtioPciTransport.bar} here whenever the guest programs the BAR. */
  mmio?: MmioBus;
  /** Told when the BAR starts decoding at an address, moves, or stops decoding (null). */
  onBarChange?: (address: number | null) => void;
  /** PCI subsystem ID (default 1100h, with subsystem vendor 1AF4h). */
  subsystemId?: number;
  /** PCI class code (default by device type: 010000h block, 020000h net, 078000h console, 00FF00h other). */
  classCode?: number;
}

/** Plain, JSON-able snapshot of a {@link VirtioPciTransport}. */
export interface VirtioPciState<S = unknown> {
  version: 1;
  config: PciConfigState;
  transport: VirtioTransportState<S>;
}

const CLASS_BY_TYPE = new Map<number, number>([
  [VIRTIO_ID_NET, 0x020000],
  [VIRTIO_ID_BLOCK, 0x010000],
  [VIRTIO_ID_CONSOLE, 0x078000],
  [VIRTIO_ID_RNG, 0x00ff00],
]);

const le32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

/**
 * A virtio device behind the modern PCI transport: attach it with
 * `hostBridge.attach(transport, slot)` and route {@link VirtioPciOptions.irq} through the
 * PIIX (`piix.setIntx(slot, 0, PCI_INTA, level)` or however the machine does it).
 */
export class VirtioPciTransport<S = unknown> implements PciDevice {
  readonly core: VirtioTransportCore<S>;
  /** Type-0 configuration space with the BAR and the virtio capabilities. */
  readonly config: PciConfigSpace;
  /** The BAR's registers, relative to the BAR base; {@link VIRTIO_PCI_BAR_SIZE} bytes. */
  readonly bar: BusDevice;
  readonly barIndex: number;

  private readonly irq: ((level: boolean) => void) | undefined;
  private readonly mmio: MmioBus | undefined;
  private readonly barListener: ((address: number | null) => void) | undefined;
  private mappedAt: number | null = null;
  private level = false;
  // Scratch image of the common configuration structure for reads of any width.
  private readonly common = new Uint8Array(COMMON_CFG_SIZE);
  private readonly commonView = new DataView(this.common.buffer);

  constructor(device: VirtioDevice<S>, options: VirtioPciOptions) {
    this.core = new VirtioTransportCore(device, options.memory);
    this.core.onInterrupt = () => this.updateIrq();
    this.irq = options.irq;
    this.mmio = options.mmio;
    this.barListener = options.onBarChange;
    const barIndex = options.barIndex ?? 0;
    this.barIndex = barIndex;
    this.config = new PciConfigSpace({
      vendorId: VIRTIO_VENDOR_ID,
      deviceId: VIRTIO_PCI_DEVICE_ID_BASE + device.deviceType,
      classCode: options.classCode ?? CLASS_BY_TYPE.get(device.deviceType) ?? 0x00ff00,
      revision: VIRTIO_PCI_REVISION,
      subsystemVendorId: VIRTIO_VENDOR_ID,
      subsystemId: options.subsystemId ?? 0x1100,
      interruptPin: PCI_INTA,
    });
    this.config.addBar(barIndex, { kind: options.barKind ?? 'mem32', size: VIRTIO_PCI_BAR_SIZE });
    const cap = (cfgType: number, offset: number, length: number, extra: number[] = []): void => {
      // struct virtio_pci_cap after cap_vndr and cap_next: cap_len, cfg_type, bar, id, padding[2], offset, length.
      const body = [16 + extra.length, cfgType, barIndex, 0, 0, 0, ...le32(offset), ...le32(length), ...extra];
      this.config.addCapability(PCI_CAP_ID_VNDR, body);
    };
    cap(VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFFSET, REGION_SIZE);
    cap(VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFFSET, REGION_SIZE);
    cap(VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFFSET, REGION_SIZE);
    cap(VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFFSET, REGION_SIZE, le32(VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER));
    this.config.onBarChange = (index, address) => {
      if (index === this.barIndex) this.barMoved(address);
    };
    this.bar = {
      read: (offset, data) => this.barRead(offset, data),
      write: (offset, data) => this.barWrite(offset, data),
    };
  }

  /** The device behind the transport. */
  get device(): VirtioDevice<S> {
    return this.core.device;
  }

  /** Whether INTA# is asserted. */
  get irqLevel(): boolean {
    return this.level;
  }

  /** Where the BAR is mapped on the `mmio` bus (null when not decoding or not mapped). */
  get barAddress(): number | null {
    return this.mmio ? this.mappedAt : this.config.barAddress(this.barIndex);
  }

  readConfig(offset: number, data: Uint8Array): void {
    this.config.readConfig(offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    this.config.writeConfig(offset, data);
    this.updateIrq(); // the command register's INTx disable bit may have changed
  }

  save(): VirtioPciState<S> {
    return { version: 1, config: this.config.save(), transport: this.core.save() };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. Remaps the BAR and drives INTA#. */
  restore(state: VirtioPciState<S>): void {
    if (state.version !== 1) throw new RangeError(`virtio-pci state: unknown version ${String(state.version)}`);
    this.config.restore(state.config);
    this.core.restore(state.transport);
    this.updateIrq();
  }

  private barMoved(address: number | null): void {
    const bus = this.mmio;
    if (bus) {
      if (this.mappedAt !== null) bus.remove(this.mappedAt);
      this.mappedAt = null;
      if (address !== null) {
        try {
          bus.insert(this.bar, address, VIRTIO_PCI_BAR_SIZE);
          this.mappedAt = address;
        } catch {
          // The guest put the BAR over another device: real hardware would decode garbage there; leave it unmapped.
        }
      }
    }
    this.barListener?.(address);
  }

  private barRead(offset: number, data: Uint8Array): void {
    const region = offset - (offset % REGION_SIZE);
    const off = offset - region;
    data.fill(0);
    if (off + data.length > REGION_SIZE) return;
    switch (region) {
      case VIRTIO_PCI_COMMON_OFFSET:
        if (off + data.length <= COMMON_CFG_SIZE) {
          this.fillCommon();
          data.set(this.common.subarray(off, off + data.length));
        }
        return;
      case VIRTIO_PCI_ISR_OFFSET:
        if (off === 0) {
          // Reading the ISR acknowledges it (4.1.4.5).
          data[0] = this.core.interruptStatus;
          this.core.ackInterrupt(0xff);
        }
        return;
      case VIRTIO_PCI_DEVICE_OFFSET:
        this.core.readConfig(off, data);
        return;
      default:
        return;
    }
  }

  private barWrite(offset: number, data: Uint8Array): void {
    const region = offset - (offset % REGION_SIZE);
    const off = offset - region;
    if (off + data.length > REGION_SIZE) return;
    switch (region) {
      case VIRTIO_PCI_COMMON_OFFSET:
        this.writeCommon(off, data);
        return;
      case VIRTIO_PCI_DEVICE_OFFSET:
        this.core.writeConfig(off, data);
        return;
      case VIRTIO_PCI_NOTIFY_OFFSET:
        // queue_notify_off is the queue index, so the address says which queue; the value is not needed.
        if (off % VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER === 0) this.core.notify(off / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
        return;
      default:
        return; // the ISR is read-only
    }
  }

  private fillCommon(): void {
    const c = this.core;
    const v = this.commonView;
    const q = c.selectedQueue;
    const split = (at: number, addr: number): void => {
      v.setUint32(at, addr % 2 ** 32, true);
      v.setUint32(at + 4, Math.floor(addr / 2 ** 32) >>> 0, true);
    };
    v.setUint32(VIRTIO_PCI_COMMON_DFSELECT, c.deviceFeaturesSel, true);
    v.setUint32(VIRTIO_PCI_COMMON_DF, c.deviceFeaturesWord(), true);
    v.setUint32(VIRTIO_PCI_COMMON_GFSELECT, c.driverFeaturesSel, true);
    v.setUint32(VIRTIO_PCI_COMMON_GF, c.driverFeaturesWord(), true);
    v.setUint16(VIRTIO_PCI_COMMON_MSIX, VIRTIO_MSI_NO_VECTOR, true);
    v.setUint16(VIRTIO_PCI_COMMON_NUMQ, c.queues.length, true);
    v.setUint8(VIRTIO_PCI_COMMON_STATUS, c.status);
    v.setUint8(VIRTIO_PCI_COMMON_CFGGENERATION, c.configGeneration & 0xff);
    v.setUint16(VIRTIO_PCI_COMMON_Q_SELECT, c.queueSel, true);
    // A queue that does not exist reads size 0 (4.1.4.3.2).
    v.setUint16(VIRTIO_PCI_COMMON_Q_SIZE, q ? q.size : 0, true);
    v.setUint16(VIRTIO_PCI_COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR, true);
    v.setUint16(VIRTIO_PCI_COMMON_Q_ENABLE, q?.ready ? 1 : 0, true);
    v.setUint16(VIRTIO_PCI_COMMON_Q_NOFF, q ? c.queueSel : 0, true);
    split(VIRTIO_PCI_COMMON_Q_DESCLO, q?.descTable ?? 0);
    split(VIRTIO_PCI_COMMON_Q_AVAILLO, q?.availRing ?? 0);
    split(VIRTIO_PCI_COMMON_Q_USEDLO, q?.usedRing ?? 0);
    v.setUint32(0x38, 0, true); // queue_notif_config_data and queue_reset: features not offered
  }

  private writeCommon(off: number, data: Uint8Array): void {
    const c = this.core;
    let v = 0;
    for (let i = data.length - 1; i >= 0; i--) v = v * 256 + data[i]!;
    const size = data.length;
    const q = c.queueConfigWritable ? c.selectedQueue : undefined;
    // Each field takes an access of its own width; 64-bit addresses also take their dword halves.
    const setAddr = (field: 'descTable' | 'availRing' | 'usedRing', base: number): void => {
      if (!q) return;
      const cur = q[field];
      if (size === 8 && off === base) q[field] = v;
      else if (size === 4 && off === base) q[field] = Math.floor(cur / 2 ** 32) * 2 ** 32 + v;
      else if (size === 4 && off === base + 4) q[field] = v * 2 ** 32 + (cur % 2 ** 32);
    };
    switch (off) {
      case VIRTIO_PCI_COMMON_DFSELECT: if (size === 4) c.deviceFeaturesSel = v; return;
      case VIRTIO_PCI_COMMON_GFSELECT: if (size === 4) c.driverFeaturesSel = v; return;
      case VIRTIO_PCI_COMMON_GF: if (size === 4) c.writeDriverFeaturesWord(v); return;
      case VIRTIO_PCI_COMMON_STATUS: if (size === 1) c.writeStatus(v); return;
      case VIRTIO_PCI_COMMON_Q_SELECT: if (size === 2) c.queueSel = v; return;
      case VIRTIO_PCI_COMMON_Q_SIZE: if (size === 2 && q) q.size = v; return;
      // The driver enables a queue by writing 1 and must not write 0 (4.1.4.3.2).
      case VIRTIO_PCI_COMMON_Q_ENABLE: if (size === 2 && q && v === 1) q.ready = true; return;
      case VIRTIO_PCI_COMMON_Q_DESCLO:
      case VIRTIO_PCI_COMMON_Q_DESCHI: setAddr('descTable', VIRTIO_PCI_COMMON_Q_DESCLO); return;
      case VIRTIO_PCI_COMMON_Q_AVAILLO:
      case VIRTIO_PCI_COMMON_Q_AVAILHI: setAddr('availRing', VIRTIO_PCI_COMMON_Q_AVAILLO); return;
      case VIRTIO_PCI_COMMON_Q_USEDLO:
      case VIRTIO_PCI_COMMON_Q_USEDHI: setAddr('usedRing', VIRTIO_PCI_COMMON_Q_USEDLO); return;
      default: return; // MSI-X vectors (no MSI-X), read-only fields
    }
  }

  private updateIrq(): void {
    const pending = this.core.interruptStatus !== 0;
    this.config.setInterruptStatus(pending);
    const level = pending && !this.config.intxDisabled;
    if (level === this.level) return;
    this.level = level;
    this.irq?.(level);
  }
}
