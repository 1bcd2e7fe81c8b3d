/**
 * A PC: one VM with RAM at guest-physical 0, one vCPU, and the PC devices wired as on a PIIX3
 * board.
 *
 * The interrupt controllers and the PIT run in one of two ways, as with QEMU on KVM:
 * - `irqchip: 'kernel'` (default): kvm-core's in-kernel irqchip (8259A pair, I/O APIC at
 *   0xFEC00000, a local APIC at 0xFEE00000 that CPUID announces) and in-kernel PIT with port
 *   0x61; devices raise their lines with KVM_IRQ_LINE and the guest's accesses to those chips
 *   never leave run(). Linux runs in APIC mode.
 * - `irqchip: 'userspace'`: the 8259A pair, PIT and port 0x61 on the machine's own I/O bus, the
 *   run loop injecting the PIC's vector with KVM_INTERRUPT. No local APIC: PIC mode.
 *
 * | device                     | ports                 | IRQ                       |
 * | -------------------------- | --------------------- | ------------------------- |
 * | 8259A pair + ELCR          | 0x20, 0xA0, 0x4D0     | INTR → the vCPU           |
 * | 8254 PIT                   | 0x40–0x43             | 0                         |
 * | i8042 (keyboard, mouse)    | 0x60, 0x64            | 1, 12                     |
 * | port B (PIT ch. 2, speaker)| 0x61                  |                           |
 * | MC146818 RTC + CMOS        | 0x70–0x71             | 8                         |
 * | POST port                  | 0x80                  |                           |
 * | port A (fast A20, reset)   | 0x92                  |                           |
 * | COM1 16550A                | 0x3F8–0x3FF           | 4                         |
 * | COM2 16550A (if asked)     | 0x2F8–0x2FF           | 3                         |
 * | PCI host bridge (440FX)    | 0xCF8, 0xCFC–0xCFF    |                           |
 * | PIIX3 reset control        | 0xCF9                 | PCI INTx → PIRQ → ISA     |
 * | ACPI PM block              | 0x600 (PM_BASE_DEFAULT)| SCI on 9                 |
 * | debug exit (optional)      | 0xF4                  |                           |
 * | virtio (optional)          | PCI slots 2+ or MMIO 0xD0000000 | PIRQ, or GSI 16+  |
 *
 * Ways the guest ends or restarts the machine become a {@link MachineStop}: ACPI S5 is a
 * power-off; the i8042's 0xFE pulse, 0xCF9, port 0x92 bit 0 and the ACPI reset register are
 * resets; a debug-exit write is reported with its value. The run loop ({@link PcRunLoop})
 * notices the request after the exit that caused it.
 *
 * Virtio devices ({@link PcMachineOptions.virtio}) are wired by {@link PcVirtio} (virtio.ts).
 * @module
 */

import { buildAcpiTables, buildMpTables, pcInterruptOverrides, prtEntries, type AcpiTables, type MpTables } from '@kvmts/firmware';
import { CPUID_SIGNATURE, KVM_IRQCHIP_IOAPIC, Kvm, LapicReg, type VcpuFd, type VmFd } from '@kvmts/kvm-core';
import {
  ACPI_SLP_TYP_S5,
  AcpiPm,
  COM1_BASE,
  COM1_IRQ,
  COM2_BASE,
  COM2_IRQ,
  DEBUG_EXIT_PORT,
  DEBUG_EXIT_SIZE,
  DebugExit,
  I8042,
  I8042_AUX_IRQ,
  I8042_COMMAND_PORT,
  I8042_DATA_PORT,
  I8042_KBD_IRQ,
  IoBus,
  MmioBus,
  PIC_ELCR_BASE,
  PIC_MASTER_BASE,
  PIC_PORT_LEN,
  PIC_SLAVE_BASE,
  PIIX_SLOT,
  PIIX_PIRQRC,
  PIT_BASE,
  PIT_IRQ,
  PIT_PORT_LEN,
  PM_BASE_DEFAULT,
  PORT61_PORT,
  PORT80_PORT,
  PORT92_PORT,
  PciHostBridge,
  Pic,
  Piix3,
  Pit,
  Port61,
  Port80,
  Port92,
  RTC_BASE,
  RTC_IRQ,
  RTC_PORT_LEN,
  Rtc,
  SERIAL_PORT_LEN,
  Serial,
} from '@kvmts/devices';
import { PcVirtio, type PcVirtioOptions } from './virtio.js';
import { withSsdt } from './ssdt.js';

/** The ISA IRQ of the ACPI SCI, as in QEMU's and most boards' FADT (SCI_INT = 9). */
export const ACPI_SCI_IRQ = 9;
/**
 * The I/O APIC's ID, as firmware programs it: one above the vCPU's local APIC ID, since both
 * share the APIC bus (the MP table requires them to differ).
 */
export const IOAPIC_ID = 1;
/** PCI slots whose INTx routing the MP table lists (as the DSDT's _PRT does). */
const PCI_ROUTED_SLOTS = Array.from({ length: 31 }, (_, i) => i + 1);
/** ISA IRQs behind PIRQA–D: the PCI interrupt lines the firmware's _PRT describes. */
export const PIRQ_IRQS = [10, 10, 11, 11] as const;

/** Why the machine asks the run loop to stop. */
export type MachineStop =
  /** ACPI S5 through PM1_CNT. */
  | { readonly kind: 'poweroff' }
  /** A reset request; `source` names the mechanism (for messages). */
  | { readonly kind: 'reset'; readonly source: string }
  /** The guest wrote `value` to the debug-exit port. */
  | { readonly kind: 'debug-exit'; readonly value: number };

/** Configuration of a {@link PcMachine}. */
export interface PcMachineOptions {
  /** Guest RAM in bytes, at guest-physical 0 (a multiple of 4K). */
  memSize: number;
  /** Receives each byte the guest sends through COM1. */
  serialOutput?: (byte: number) => void;
  /** Map a second UART as COM2; it receives each byte the guest sends there. */
  serial2Output?: (byte: number) => void;
  /** Guest time: the host's monotonic clock (default) or retired instructions (deterministic). */
  clockMode?: 'host' | 'instructions';
  /** Map the debug-exit device at 0xF4 (default false: a plain PC has nothing there). */
  debugExit?: boolean;
  /** What the RTC shows at power-on (default: now). */
  startTime?: Date | number;
  /** Where the PIC, I/O APIC, local APIC and PIT run (default 'kernel'; see the module comment). */
  irqchip?: 'kernel' | 'userspace';
  /** Virtio devices and their transport (see virtio.ts). */
  virtio?: PcVirtioOptions;
}

/** The PC's VM, vCPU and devices, wired together. */
export class PcMachine {
  readonly kvm: Kvm;
  readonly vm: VmFd;
  readonly vcpu: VcpuFd;
  readonly ram: ArrayBuffer;
  readonly ioBus = new IoBus();
  readonly mmioBus = new MmioBus();
  /** The in-kernel irqchip, or for 'userspace' the machine's own 8259A pair, PIT and port 0x61. */
  readonly irqchip: 'kernel' | 'userspace';
  readonly pic: Pic | undefined;
  readonly pit: Pit | undefined;
  readonly port61: Port61 | undefined;
  readonly rtc: Rtc;
  readonly port92: Port92;
  readonly port80: Port80;
  readonly i8042: I8042;
  readonly serial: Serial;
  /** COM2, when {@link PcMachineOptions.serial2Output} asked for it. */
  readonly serial2: Serial | undefined;
  readonly pci: PciHostBridge;
  readonly piix: Piix3;
  readonly pm: AcpiPm;
  readonly debugExit: DebugExit | undefined;
  /** The virtio devices, if any were asked for. */
  readonly virtio: PcVirtio | undefined;
  private stopRequest: MachineStop | null = null;

  constructor(options: PcMachineOptions) {
    this.kvm = new Kvm();
    this.vm = this.kvm.createVm();
    try {
      this.ram = new ArrayBuffer(options.memSize);
      this.vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: options.memSize, userspaceAddr: this.ram });
      // The clock mode is chosen before any device takes the VM's timer queue (it replaces it).
      if (options.clockMode === 'instructions') this.vm.setClockMode('instructions');
      this.irqchip = options.irqchip ?? 'kernel';
      if (this.irqchip === 'kernel') {
        this.vm.createIrqchip();
        this.vm.createPit2();
      }
      this.vcpu = this.vm.createVcpu(0);
      if (this.irqchip === 'kernel') this.enterVirtualWireMode();
    } catch (err) {
      this.vm.close();
      this.kvm.close();
      throw err;
    }
    const timers = this.vm.timers;
    const clock = this.vm.clock;
    const io = this.ioBus;

    // An ISA IRQ line (and the PCI lines routed onto them) for the chosen irqchip.
    let setIrq: (irq: number, level: boolean) => void;
    if (this.irqchip === 'kernel') {
      const vm = this.vm;
      setIrq = (irq, level) => vm.irqLine(irq, level);
    } else {
      const pic = (this.pic = new Pic());
      io.insert(pic.master, PIC_MASTER_BASE, PIC_PORT_LEN);
      io.insert(pic.slave, PIC_SLAVE_BASE, PIC_PORT_LEN);
      io.insert(pic.elcr, PIC_ELCR_BASE, PIC_PORT_LEN);
      this.pit = new Pit({ timers, clock, irq0: (level) => pic.setIrq(PIT_IRQ, level) });
      io.insert(this.pit, PIT_BASE, PIT_PORT_LEN);
      this.port61 = new Port61({ pit: this.pit });
      io.insert(this.port61, PORT61_PORT, 1);
      setIrq = (irq, level) => pic.setIrq(irq, level);
    }

    this.i8042 = new I8042({
      reset: () => this.requestStop({ kind: 'reset', source: 'keyboard controller' }),
      irq1: (level) => setIrq(I8042_KBD_IRQ, level),
      irq12: (level) => setIrq(I8042_AUX_IRQ, level),
    });
    io.insert(this.i8042.data, I8042_DATA_PORT, 1);
    io.insert(this.i8042.command, I8042_COMMAND_PORT, 1);

    this.rtc = new Rtc({
      timers,
      clock,
      irq8: (level) => setIrq(RTC_IRQ, level),
      ...(options.startTime !== undefined ? { startTime: options.startTime } : {}),
    });
    this.rtc.setMemorySize(options.memSize);
    io.insert(this.rtc, RTC_BASE, RTC_PORT_LEN);

    this.port80 = new Port80();
    io.insert(this.port80, PORT80_PORT, 1);
    // RAM is not gated by A20 here (kvm-core has no A20 mask); the A20 bit is only stored.
    this.port92 = new Port92({ reset: () => this.requestStop({ kind: 'reset', source: 'port 0x92' }) });
    io.insert(this.port92, PORT92_PORT, 1);

    this.serial = new Serial({
      ...(options.serialOutput ? { output: options.serialOutput } : {}),
      irq: (level) => setIrq(COM1_IRQ, level),
    });
    io.insert(this.serial, COM1_BASE, SERIAL_PORT_LEN);
    if (options.serial2Output) {
      this.serial2 = new Serial({ output: options.serial2Output, irq: (level) => setIrq(COM2_IRQ, level) });
      io.insert(this.serial2, COM2_BASE, SERIAL_PORT_LEN);
    }

    this.pci = new PciHostBridge();
    this.pci.mapPorts(io);
    this.piix = new Piix3({
      isaIrq: (irq, level) => setIrq(irq, level),
      reset: () => this.requestStop({ kind: 'reset', source: 'PCI reset control (0xcf9)' }),
    });
    this.pci.attach(this.piix, PIIX_SLOT);
    this.piix.mapPorts(io);
    // Program the PIRQ router as firmware would, so that it agrees with the ACPI _PRT.
    PIRQ_IRQS.forEach((irq, i) => this.piix.config.set8(PIIX_PIRQRC + i, irq));

    this.pm = new AcpiPm({
      clock,
      timers,
      base: PM_BASE_DEFAULT,
      sci: (level) => setIrq(ACPI_SCI_IRQ, level),
      onSleep: (slpTyp) => {
        if (slpTyp === ACPI_SLP_TYP_S5) this.requestStop({ kind: 'poweroff' });
      },
      reset: () => this.requestStop({ kind: 'reset', source: 'ACPI reset register' }),
    });
    io.insert(this.pm, this.pm.layout.base, this.pm.layout.length);

    if (options.debugExit) {
      this.debugExit = new DebugExit((value) => this.requestStop({ kind: 'debug-exit', value }));
      io.insert(this.debugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE);
    }

    if (options.virtio && options.virtio.devices.length > 0) {
      this.virtio = new PcVirtio(options.virtio, {
        vm: this.vm,
        mmioBus: this.mmioBus,
        pci: this.pci,
        piix: this.piix,
        irqchip: this.irqchip,
        setIrq,
      });
    }
  }

  /**
   * The ACPI tables for this machine (one vCPU, the PM block, PCI INTx routed through the
   * PIIX3), placed at the top of low RAM: write `writes` into guest memory and hand
   * `e820Reserved` and `rsdpAddress` to the loader.
   */
  acpiTables(ramSize: number): AcpiTables {
    const options = {
      ramSize,
      vcpus: 1,
      ioapicId: IOAPIC_ID,
      pm: this.pm.layout,
      sciInt: ACPI_SCI_IRQ,
      route: this.pciRoute,
    };
    // Devices outside PCI (virtio-mmio windows) are described by an SSDT of their own.
    const extra = this.virtio?.acpiDefinitions();
    return extra ? withSsdt(options, extra) : buildAcpiTables(options);
  }

  /**
   * The MP tables (MP spec 1.4) for firmware-less boots with a local APIC, at 0xF0000 (RAM that
   * the E820 map reserves): what Linux uses for APIC mode when it has no ACPI. `undefined`
   * with a userspace irqchip, which has no APICs to describe.
   */
  mpTables(): MpTables | undefined {
    if (this.irqchip !== 'kernel') return undefined;
    const leaf1 = this.vcpu.getCpuid2().find((e) => e.function === 1);
    return buildMpTables({
      vcpus: 1,
      cpuSignature: CPUID_SIGNATURE,
      featureFlags: leaf1?.edx ?? 0,
      ioapicId: IOAPIC_ID,
      overrides: pcInterruptOverrides(ACPI_SCI_IRQ),
      pciRoutes: prtEntries(this.pciRoute, PCI_ROUTED_SLOTS),
    });
  }

  /** PCI slot and pin (0 = INTA) to the ISA IRQ / I/O APIC pin the PIIX3 routes it to. */
  private readonly pciRoute = (slot: number, pin: number): number => this.piix.routeIntx(slot, pin + 1) ?? 0;

  /**
   * Leaves the local APIC as PC firmware does after POST (MP spec 1.4, 3.6.2.2 virtual-wire
   * mode): software-enabled, LINT0 taking the 8259A's ExtINT and LINT1 the NMI line, so that PIC
   * interrupts reach the CPU until the OS sets up the APIC itself.
   */
  private enterVirtualWireMode(): void {
    const regs = this.vcpu.getLapic();
    const view = new DataView(regs.buffer, regs.byteOffset, regs.byteLength);
    view.setUint32(LapicReg.SVR, 0x1ff, true);
    view.setUint32(LapicReg.LVT_LINT0, 0x700, true);
    view.setUint32(LapicReg.LVT_LINT1, 0x400, true);
    this.vcpu.setLapic(regs);
    const ioapic = this.vm.getIrqchip(KVM_IRQCHIP_IOAPIC);
    this.vm.setIrqchip(KVM_IRQCHIP_IOAPIC, { ...ioapic, id: IOAPIC_ID, arbitrationId: IOAPIC_ID });
  }

  /** Ask the run loop to stop after the current exit; the first request wins. */
  requestStop(stop: MachineStop): void {
    this.stopRequest ??= stop;
  }

  /** The pending stop request, clearing it. */
  takeStop(): MachineStop | null {
    const s = this.stopRequest;
    this.stopRequest = null;
    return s;
  }

  /** Close the vCPU, VM and /dev/kvm descriptors. */
  close(): void {
    this.vcpu.close();
    this.vm.close();
    this.kvm.close();
  }
}
