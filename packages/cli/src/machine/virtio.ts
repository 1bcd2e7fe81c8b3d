/**
 * Virtio devices on the {@link PcMachine}, over one of two transports:
 *
 * - `'pci'` (default): each device is a modern virtio-pci function on bus 0, slots 2, 3, ...
 *   (after the PIIX3 at slot 1). INTA# goes through the PIIX3's PIRQ router, which the ACPI
 *   _PRT and the MP table describe, so Linux finds the IRQ itself. The guest (Linux assigns
 *   unprogrammed BARs from the host bridge window) programs the BAR; the transport then maps it
 *   on the machine's MMIO bus, and the queue notify registers get ioeventfds so that a kick
 *   runs the device inside KVM_RUN without an exit.
 * - `'mmio'`: virtio-mmio windows of 0x200 bytes at 0xD0000000 + n * 0x200, each with its own
 *   interrupt: I/O APIC pins 16–23 with the in-kernel irqchip (level, active high), or free ISA
 *   IRQs with the userspace PIC. Linux learns of them from an SSDT (`LNRO0005` devices, as
 *   QEMU's microvm does); without ACPI from `virtio_mmio.device=` on the kernel command line
 *   (which needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES). The notify register has an ioeventfd
 *   per queue (datamatch on the queue index).
 *
 * Devices complete some work asynchronously (virtio-blk I/O settles on Node's event loop), so
 * raising an interrupt line calls {@link PcVirtio.onInterrupt}: the run loop's host uses it
 * to end a halted vCPU's sleep.
 * @module
 */

import { PCI_INTA, PIIX_SLOT, type MmioBus, type PciHostBridge, type Piix3 } from '@kvmts/devices';
import { aml, type Aml } from '@kvmts/firmware';
import type { VmFd } from '@kvmts/kvm-core';
import {
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_SIZE,
  VIRTIO_PCI_NOTIFY_OFFSET,
  VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER,
  VirtioBlock,
  VirtioMmioTransport,
  VirtioPciTransport,
  type VirtioDevice,
} from '@kvmts/virtio';
import { acpiDevice, extendedInterrupt, memory32Fixed } from './ssdt.js';

/** How virtio devices reach the guest. */
export type VirtioTransportKind = 'pci' | 'mmio';

/** The first PCI slot for virtio functions: right after the PIIX3. */
export const VIRTIO_PCI_FIRST_SLOT = PIIX_SLOT + 1;
/** Last usable PCI slot on bus 0. */
const PCI_LAST_SLOT = 31;
/** Guest-physical address of the first virtio-mmio window: in the PCI hole, far above the BARs Linux assigns from 0xC0000000 up. */
export const VIRTIO_MMIO_BASE = 0xd000_0000;
/** Distance between virtio-mmio windows. */
export const VIRTIO_MMIO_STRIDE = VIRTIO_MMIO_SIZE;
/** virtio-mmio interrupts with the in-kernel irqchip: the I/O APIC pins no ISA device uses. */
export const VIRTIO_MMIO_GSIS = [16, 17, 18, 19, 20, 21, 22, 23] as const;
/**
 * virtio-mmio interrupts with a userspace PIC: ISA IRQs nothing on this PC uses (LPT2, floppy,
 * LPT1, and the IDE channels' 14 and 15: the PC has no IDE controller). Not 3: COM2 may be there.
 */
export const VIRTIO_MMIO_ISA_IRQS = [5, 6, 7, 14, 15] as const;
/** The ACPI _HID Linux's virtio_mmio driver matches. */
export const VIRTIO_MMIO_ACPI_HID = 'LNRO0005';

/** Virtio devices for a {@link PcMachine}. */
export interface PcVirtioOptions {
  /** Default 'pci'. */
  transport?: VirtioTransportKind;
  /** In order: PCI slots 2, 3, ... or MMIO windows 0, 1, ... */
  devices: readonly VirtioDevice[];
}

/** What of the machine the wiring needs. */
export interface PcVirtioParts {
  vm: VmFd;
  mmioBus: MmioBus;
  pci: PciHostBridge;
  piix: Piix3;
  irqchip: 'kernel' | 'userspace';
  /** Drive a GSI (the ISA IRQs through the PIC, and I/O APIC pins with the in-kernel irqchip). */
  setIrq: (gsi: number, level: boolean) => void;
}

/** A virtio-pci function and where it sits. */
export interface VirtioPciFunction {
  readonly slot: number;
  readonly transport: VirtioPciTransport;
}

/** A virtio-mmio window and its interrupt. */
export interface VirtioMmioWindow {
  readonly base: number;
  readonly size: number;
  readonly gsi: number;
  readonly transport: VirtioMmioTransport;
}

/** The machine's virtio devices, wired; see the module comment. */
export class PcVirtio {
  readonly transport: VirtioTransportKind;
  readonly devices: readonly VirtioDevice[];
  readonly pciFunctions: VirtioPciFunction[] = [];
  readonly mmioWindows: VirtioMmioWindow[] = [];
  /** Called whenever a device raises its interrupt line (possibly from Node's event loop). */
  onInterrupt: (() => void) | undefined;
  private readonly irqchip: 'kernel' | 'userspace';

  constructor(options: PcVirtioOptions, parts: PcVirtioParts) {
    this.transport = options.transport ?? 'pci';
    this.devices = options.devices;
    this.irqchip = parts.irqchip;
    // A device may have run on a previous machine (a reboot): start it from power-on.
    for (const d of options.devices) d.reset();
    if (this.transport === 'pci') this.wirePci(parts);
    else this.wireMmio(parts);
  }

  /** Whether a device has work in flight that will complete later (and may interrupt). */
  busy(): boolean {
    return this.devices.some((d) => d instanceof VirtioBlock && d.inFlightCount > 0);
  }

  /**
   * The AML that describes the virtio-mmio windows to the OS (a `Scope(\_SB)` of LNRO0005
   * devices), or null when there are none.
   */
  acpiDefinitions(): Aml | null {
    if (this.mmioWindows.length === 0) return null;
    const trigger = this.irqchip === 'kernel' ? 'level' : 'edge';
    const devices = this.mmioWindows.map((w, i) =>
      acpiDevice(`VR${i.toString(16).toUpperCase().padStart(2, '0')}`, VIRTIO_MMIO_ACPI_HID, i, [memory32Fixed(w.base, w.size), extendedInterrupt(w.gsi, trigger)]),
    );
    return aml.scope('\\_SB', ...devices);
  }

  /** `virtio_mmio.device=SIZE@BASE:IRQ` for each window, for kernels booted without ACPI. */
  kernelCmdline(): string {
    return this.mmioWindows.map((w) => `virtio_mmio.device=${w.size}@0x${w.base.toString(16)}:${w.gsi}`).join(' ');
  }

  private raised(level: boolean): void {
    if (level) this.onInterrupt?.();
  }

  private wirePci(parts: PcVirtioParts): void {
    const { vm, piix } = parts;
    if (this.devices.length > PCI_LAST_SLOT - VIRTIO_PCI_FIRST_SLOT + 1) {
      throw new RangeError(`too many virtio-pci devices: ${this.devices.length}, bus 0 has room for ${PCI_LAST_SLOT - VIRTIO_PCI_FIRST_SLOT + 1}`);
    }
    this.devices.forEach((device, i) => {
      const slot = VIRTIO_PCI_FIRST_SLOT + i;
      let notifyAt: number | null = null;
      const queues = device.queueMaxSizes.length;
      const notifiers = Array.from({ length: queues }, (_, q) => () => transport.core.notify(q));
      // ioeventfds follow the BAR: a kick is a 16-bit write of the queue index to its own address.
      const moveNotifiers = (barAddress: number | null): void => {
        if (notifyAt !== null) {
          for (let q = 0; q < queues; q++) vm.unregisterIoevent({ addr: notifyAt + q * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER, len: 2, notify: notifiers[q]! });
        }
        notifyAt = barAddress === null ? null : barAddress + VIRTIO_PCI_NOTIFY_OFFSET;
        if (notifyAt !== null) {
          for (let q = 0; q < queues; q++) vm.registerIoevent({ addr: notifyAt + q * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER, len: 2, notify: notifiers[q]! });
        }
      };
      const transport: VirtioPciTransport = new VirtioPciTransport(device, {
        memory: vm.memory,
        mmio: parts.mmioBus,
        irq: (level) => {
          piix.setIntx(slot, PCI_INTA, level);
          this.raised(level);
        },
        onBarChange: (address) => moveNotifiers(address !== null && transport.barAddress === address ? address : null),
      });
      parts.pci.attach(transport, slot);
      this.pciFunctions.push({ slot, transport });
    });
  }

  private wireMmio(parts: PcVirtioParts): void {
    const { vm } = parts;
    const lines: readonly number[] = this.irqchip === 'kernel' ? VIRTIO_MMIO_GSIS : VIRTIO_MMIO_ISA_IRQS;
    if (this.devices.length > lines.length) {
      throw new RangeError(`too many virtio-mmio devices: ${this.devices.length}, there are interrupt lines for ${lines.length}`);
    }
    this.devices.forEach((device, i) => {
      const base = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE;
      const gsi = lines[i]!;
      const transport = new VirtioMmioTransport(device, {
        memory: vm.memory,
        irq: (level) => {
          parts.setIrq(gsi, level);
          this.raised(level);
        },
      });
      parts.mmioBus.insert(transport, base, VIRTIO_MMIO_SIZE);
      // QueueNotify takes the queue index as a 32-bit write: one ioeventfd per index.
      for (let q = 0; q < device.queueMaxSizes.length; q++) {
        vm.registerIoevent({ addr: base + VIRTIO_MMIO_QUEUE_NOTIFY, len: 4, datamatch: q, notify: () => transport.core.notify(q) });
      }
      this.mmioWindows.push({ base, size: VIRTIO_MMIO_SIZE, gsi, transport });
    });
  }
}
