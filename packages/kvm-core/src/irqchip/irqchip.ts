/**
 * The in-kernel irqchip of KVM_CREATE_IRQCHIP: the 8259A pair, the I/O APIC and one local APIC
 * per vCPU, wired as on a PC, with the guest's accesses to them handled inside run().
 *
 * KVM_IRQ_LINE drives a GSI, routed as QEMU's PC sets up KVM's default routing:
 * - GSI 0–15 (ISA IRQs) go to the 8259A line of the same number (2 is the cascade and is not
 *   driven) and to the I/O APIC pin of the same number, except that GSI 0 (the PIT) goes to
 *   pin 2 — the interrupt source override the MADT and MP tables describe;
 * - GSI 16–23 go to the I/O APIC only.
 *
 * The 8259A's INTR reaches the boot vCPU through its local APIC's LINT0 (ExtINT, virtual-wire
 * mode) or directly while that APIC is disabled.
 * @module
 */

import { IoBus, MmioBus } from '../bus.js';
import type { GuestClock } from '../time/clock.js';
import type { TimerQueue } from '../time/timers.js';
import { IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE, IoApic, IoApicDeliveryMode, type IoApicMessage, type IoApicState } from './ioapic.js';
import { Lapic } from './lapic.js';
import { PIC_ELCR_BASE, PIC_MASTER_BASE, PIC_PORT_LEN, PIC_SLAVE_BASE, Pic, type PicState } from './pic.js';

/** GSIs KVM_IRQ_LINE accepts: the I/O APIC's pins. */
export const IRQCHIP_GSIS = IOAPIC_PINS;

/** KVM_GET_IRQCHIP / KVM_SET_IRQCHIP chip ids. */
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

/** What a local APIC drives on its vCPU. */
export interface IrqchipVcpu {
  kick(): void;
  injectNmi(): void;
}

/** See the module comment. */
export class KernelIrqchip {
  readonly pic: Pic;
  readonly ioapic: IoApic;
  private readonly lapics = new Map<number, Lapic>();
  private readonly vcpus = new Map<number, IrqchipVcpu>();

  constructor(
    private readonly clock: GuestClock,
    private readonly timers: TimerQueue,
  ) {
    // The PIC's INTR is sampled by the boot vCPU's APIC; a change only needs a look.
    this.pic = new Pic({ intr: () => this.vcpus.get(0)?.kick() });
    this.ioapic = new IoApic({ deliver: (msg) => this.deliver(msg) });
  }

  /** Maps the 8259A and I/O APIC registers on the VM's in-kernel buses. */
  attach(io: IoBus, mmio: MmioBus): void {
    io.insert(this.pic.master, PIC_MASTER_BASE, PIC_PORT_LEN);
    io.insert(this.pic.slave, PIC_SLAVE_BASE, PIC_PORT_LEN);
    io.insert(this.pic.elcr, PIC_ELCR_BASE, PIC_PORT_LEN);
    mmio.insert(this.ioapic, IOAPIC_BASE, IOAPIC_SIZE);
  }

  /** Creates vCPU `id`'s local APIC (KVM_CREATE_VCPU after KVM_CREATE_IRQCHIP). */
  addVcpu(id: number, vcpu: IrqchipVcpu): Lapic {
    const lapic = new Lapic({
      id,
      clock: this.clock,
      timers: this.timers,
      ...(id === 0 ? { pic: this.pic } : {}),
      kick: () => vcpu.kick(),
      nmi: () => vcpu.injectNmi(),
      eoiLevel: (vector) => this.ioapic.eoi(vector),
    });
    this.lapics.set(id, lapic);
    this.vcpus.set(id, vcpu);
    return lapic;
  }

  /** KVM_IRQ_LINE. */
  setIrqLine(gsi: number, level: boolean): void {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi >= IRQCHIP_GSIS) throw new RangeError(`GSI ${String(gsi)} is not 0..${IRQCHIP_GSIS - 1}`);
    if (gsi < 16) {
      if (gsi !== 2) this.pic.setIrq(gsi, level);
      this.ioapic.setIrq(gsi === 0 ? 2 : gsi, level);
    } else {
      this.ioapic.setIrq(gsi, level);
    }
  }

  /** An I/O APIC message to the local APICs it names (lowest priority goes to the first match). */
  private deliver(msg: IoApicMessage): void {
    const logical = msg.destMode === 'logical';
    for (const [id, lapic] of this.lapics) {
      if (!lapic.matchesDestination(logical, msg.dest)) continue;
      switch (msg.deliveryMode) {
        case IoApicDeliveryMode.Fixed:
        case IoApicDeliveryMode.LowestPriority:
          lapic.acceptFixed(msg.vector, msg.trigger === 'level');
          break;
        case IoApicDeliveryMode.NMI:
          this.vcpus.get(id)?.injectNmi();
          break;
        case IoApicDeliveryMode.ExtINT:
          // The 8259A supplies the vector at acknowledge time: make the vCPU look.
          this.vcpus.get(id)?.kick();
          break;
        default:
          // SMI and INIT are not modelled (no SMM, no application processors).
          break;
      }
      if (msg.deliveryMode === IoApicDeliveryMode.LowestPriority) return;
    }
  }

  /** KVM_GET_IRQCHIP. */
  getChip(chipId: number): PicState | IoApicState {
    if (chipId === KVM_IRQCHIP_PIC_MASTER || chipId === KVM_IRQCHIP_PIC_SLAVE) return this.pic.save();
    if (chipId === KVM_IRQCHIP_IOAPIC) return this.ioapic.save();
    throw new RangeError(`irqchip: no chip ${String(chipId)} (0 = PIC master, 1 = PIC slave, 2 = IOAPIC)`);
  }

  /** KVM_SET_IRQCHIP; a chip state of the wrong shape throws RangeError. */
  setChip(chipId: number, state: PicState | IoApicState): void {
    if (chipId === KVM_IRQCHIP_PIC_MASTER || chipId === KVM_IRQCHIP_PIC_SLAVE) this.pic.restore(state as PicState);
    else if (chipId === KVM_IRQCHIP_IOAPIC) this.ioapic.restore(state as IoApicState);
    else throw new RangeError(`irqchip: no chip ${String(chipId)} (0 = PIC master, 1 = PIC slave, 2 = IOAPIC)`);
    for (const v of this.vcpus.values()) v.kick();
  }
}
