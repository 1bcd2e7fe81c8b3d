/**
 * The BIOS: maps the ROM, runs POST in the VMM, and serves the ROM stubs' calls. See the
 * package README ("The BIOS") for the design.
 *
 * ```ts
 * const bios = new Bios({ vm, vcpu, io: ioBus, ramSize, disks: [new FileDisk('disk.img')] });
 * bios.install();                                   // ROM at 0xF0000 and 0xFFFF0000, then POST
 * ioBus.insert(bios.callPort, BIOS_CALL_PORT, 1);   // the stubs' calls reach the BIOS
 * // run the vCPU from its reset state (F000:FFF0)
 * ```
 * @module
 */
import { KVM_MEM_READONLY, type KvmUserspaceMemoryRegion } from '@kvmts/kvm-core';
import type { AcpiTables } from '../acpi/build.js';
import { E820Type, pcE820, type E820Entry } from '../e820.js';
import { BootServices, type BootResult } from './boot.js';
import { DiskServices } from './disk.js';
import type { DiskImage } from './disk-image.js';
import { BiosCall, GuestFault, GuestRam, Ports, type BiosMemoryBackend, type BiosVcpu, type PortBus } from './guest.js';
import { Keyboard } from './keyboard.js';
import {
  BASE_MEMORY_KB, Bda, BIOS_ROM_ALIAS, BIOS_ROM_BASE, BIOS_ROM_SEGMENT, BIOS_ROM_SIZE, BIOS_RSDP_ADDRESS, COM1_PORT, EBDA_SEGMENT,
} from './layout.js';
import { PciBios, PciStatus } from './pci.js';
import { PCI_HOLE_START } from '../e820.js';

/** PCI memory BARs go below the I/O APIC's page (the top of the DSDT's PCI window). */
const PCI_MEM_LIMIT = 0xfec00000;
import { buildBiosRom, type BiosRom, type RomStub } from './rom.js';
import { SystemServices, UNSUPPORTED } from './system.js';
import { TimeServices } from './time.js';
import { Video } from './video.js';

/** A memory slot as the BIOS sees it (kvm-core's MemorySlot has this shape). */
export interface BiosSlot {
  readonly id: number;
  readonly flags: number;
  readonly guestPhysAddr: number;
  readonly size: number;
  readonly bytes: Uint8Array;
}

/** What the BIOS needs of the VM (VmFd has it). */
export interface BiosVm {
  setUserMemoryRegion(region: KvmUserspaceMemoryRegion): void;
  readonly memory: BiosMemoryBackend & { listSlots(): readonly BiosSlot[] };
}

export interface BiosOptions {
  vm: BiosVm;
  vcpu: BiosVcpu;
  /** The machine's I/O bus: the BIOS programs the PIC and PIT, reads the RTC, PCI and COM1 through it. */
  io: PortBus;
  /** Guest RAM size in bytes (RAM at guest-physical 0). */
  ramSize: number;
  /** Hard disks, numbered 0x80, 0x81, ... in this order. */
  hardDisks?: readonly DiskImage[];
  /** Diskettes, numbered 0x00, 0x01. */
  floppies?: readonly DiskImage[];
  /** BIOS drive numbers to boot from, in order (default: the hard disks, then the diskettes). */
  bootOrder?: readonly number[];
  /** ACPI tables to install; their RSDP is also copied to 0xE0000 where OSes look for it. */
  acpi?: AcpiTables;
  /** Where teletype output is mirrored (default: COM1's transmitter). */
  consoleOutput?: (byte: number) => void;
  /** The next byte typed on the console (default: COM1's receiver, when it has data). */
  consoleInput?: () => number | undefined;
  /** Guest time in ns (INT 15h AH=86h waits). */
  nowNs?: () => number;
}

const COM1_LSR = COM1_PORT + 5;
const LSR_DATA_READY = 0x01;

/** What INT 1Ah/B1h and INT 15h report when the guest's pointers are bad. */
const FAULT_STATUS: Partial<Record<number, number>> = { 0x15: UNSUPPORTED, 0x1a: PciStatus.BadRegisterNumber };

/**
 * Reserved ranges above RAM that a PC BIOS reports, so an OS or memory tester never takes them
 * for free space: the I/O APIC and local APIC register pages, and the ROM's alias below 4 GiB.
 */
const HIGH_RESERVED: readonly E820Entry[] = [
  { addr: 0xfec00000, size: 0x1000, type: E820Type.Reserved },
  { addr: 0xfee00000, size: 0x1000, type: E820Type.Reserved },
  { addr: BIOS_ROM_ALIAS, size: BIOS_ROM_SIZE, type: E820Type.Reserved },
];

export class Bios {
  readonly rom: BiosRom;
  /** The memory map INT 15h E820h reports. */
  readonly e820: E820Entry[];
  readonly ram: GuestRam;
  readonly ports: Ports;
  readonly video: Video;
  readonly disks: DiskServices;
  readonly keyboard: Keyboard;
  readonly system: SystemServices;
  readonly time: TimeServices;
  readonly pci: PciBios;
  /** What POST gave each PCI function (BAR, kind, base, size). */
  pciAssignments: ReturnType<PciBios['assignResources']> = [];
  readonly boot: BootServices;
  /** Calls that came from somewhere other than a ROM stub (ignored). */
  strayCalls = 0;

  /** The device for {@link BIOS_CALL_PORT} on the machine's I/O bus. */
  readonly callPort = {
    read: (_offset: number, data: Uint8Array): void => {
      data.fill(0xff);
    },
    write: (): void => this.handleCall(),
  };

  constructor(private readonly o: BiosOptions) {
    this.rom = buildBiosRom();
    this.ram = new GuestRam(o.vm.memory);
    this.ports = new Ports(o.io);
    const ports = this.ports;
    this.e820 = pcE820(o.ramSize, [...(o.acpi ? [o.acpi.e820Reserved] : []), ...HIGH_RESERVED]);
    this.video = new Video(this.ram, o.consoleOutput ?? ((b) => ports.outb(COM1_PORT, b)));
    const disks = new Map<number, DiskImage>();
    (o.hardDisks ?? []).forEach((d, i) => disks.set(0x80 + i, d));
    (o.floppies ?? []).forEach((d, i) => disks.set(i, d));
    this.disks = new DiskServices(this.ram, disks);
    const serialInput = (): number | undefined => ((ports.inb(COM1_LSR) & LSR_DATA_READY) !== 0 ? ports.inb(COM1_PORT) : undefined);
    this.keyboard = new Keyboard(this.ram, o.consoleInput ?? serialInput);
    this.system = new SystemServices({ e820: this.e820, ports, ...(o.nowNs ? { nowNs: o.nowNs } : {}) });
    this.time = new TimeServices(this.ram, ports);
    this.pci = new PciBios(ports);
    const bootOrder = o.bootOrder ?? [...disks.keys()].sort((a, b) => (a >= 0x80 ? a - 0x100 : a) - (b >= 0x80 ? b - 0x100 : b));
    this.boot = new BootServices(this.ram, this.disks, this.video, bootOrder);
  }

  /** The outcome of the last INT 19h (or INT 18h). */
  get bootResult(): BootResult | undefined {
    return this.boot.result;
  }

  /** Maps the ROM and runs POST; the vCPU then starts at its reset vector. */
  install(): void {
    this.mapRom();
    this.post();
  }

  /**
   * Maps the ROM read-only at 0xF0000 and at 0xFFFF0000. RAM slots over 0xF0000–0xFFFFF are
   * split around it (the same host memory stays behind the rest of RAM).
   */
  mapRom(): void {
    const { vm } = this.o;
    const romEnd = BIOS_ROM_BASE + BIOS_ROM_SIZE;
    const used = new Set(vm.memory.listSlots().map((s) => s.id));
    const freeId = (): number => {
      let id = 0;
      while (used.has(id)) id++;
      used.add(id);
      return id;
    };
    for (const s of [...vm.memory.listSlots()]) {
      const end = s.guestPhysAddr + s.size;
      if (end <= BIOS_ROM_BASE || s.guestPhysAddr >= romEnd) continue;
      vm.setUserMemoryRegion({ slot: s.id, flags: s.flags, guestPhysAddr: s.guestPhysAddr, memorySize: 0, userspaceAddr: s.bytes });
      let id: number | undefined = s.id;
      if (s.guestPhysAddr < BIOS_ROM_BASE) {
        const size = BIOS_ROM_BASE - s.guestPhysAddr;
        vm.setUserMemoryRegion({ slot: id, flags: s.flags, guestPhysAddr: s.guestPhysAddr, memorySize: size, userspaceAddr: s.bytes.subarray(0, size) });
        id = undefined;
      }
      if (end > romEnd) {
        const from = romEnd - s.guestPhysAddr;
        vm.setUserMemoryRegion({
          slot: id ?? freeId(), flags: s.flags, guestPhysAddr: romEnd, memorySize: end - romEnd, userspaceAddr: s.bytes.subarray(from),
        });
      }
    }
    const rom = new Uint8Array(new ArrayBuffer(BIOS_ROM_SIZE));
    rom.set(this.rom.bytes);
    vm.setUserMemoryRegion({ slot: freeId(), flags: KVM_MEM_READONLY, guestPhysAddr: BIOS_ROM_BASE, memorySize: BIOS_ROM_SIZE, userspaceAddr: rom });
    vm.setUserMemoryRegion({ slot: freeId(), flags: KVM_MEM_READONLY, guestPhysAddr: BIOS_ROM_ALIAS, memorySize: BIOS_ROM_SIZE, userspaceAddr: rom });
  }

  /** Power-on self test, done by the VMM: IVT, BDA, EBDA, video, PCI resources, ACPI tables (the ROM's POST code then programs the PIC and PIT). */
  post(): void {
    const ram = this.ram;
    // Interrupt vectors: a bare IRET unless the ROM has a handler.
    const ivt = new Uint8Array(256 * 4);
    const ivtView = new DataView(ivt.buffer);
    const dummy = 0xff53;
    for (let v = 0; v < 256; v++) {
      ivtView.setUint16(v * 4, this.rom.vectors.get(v) ?? dummy, true);
      ivtView.setUint16(v * 4 + 2, BIOS_ROM_SEGMENT, true);
    }
    ram.write(0, ivt);

    ram.write(Bda.base, new Uint8Array(0x100));
    ram.setU16(Bda.com1, COM1_PORT);
    ram.setU16(Bda.ebdaSegment, EBDA_SEGMENT);
    ram.setU16(Bda.memoryKb, BASE_MEMORY_KB);
    const floppies = this.disks.floppyCount;
    // Equipment: x87 present, 80×25 colour, one serial port, diskettes if any.
    let equipment = 0x0002 | 0x0020 | (1 << 9);
    if (floppies > 0) equipment |= 0x0001 | ((floppies - 1) << 6);
    ram.setU16(Bda.equipment, equipment);
    ram.setU8(Bda.hardDiskCount, this.disks.hardDiskCount);
    const ebda = new Uint8Array(1024);
    ebda[0] = 1; // size in KiB
    ram.write(EBDA_SEGMENT * 16, ebda);

    this.video.reset();
    this.keyboard.reset();
    this.time.reset();
    // PCI devices get their BARs and interrupt lines here, as an OS loaded from disk expects.
    this.pciAssignments = this.pci.assignResources(PCI_HOLE_START, PCI_MEM_LIMIT);

    const acpi = this.o.acpi;
    if (acpi) {
      for (const w of acpi.writes) ram.write(w.addr, w.bytes);
      if (acpi.rsdpAddress < BIOS_RSDP_ADDRESS || acpi.rsdpAddress >= BIOS_ROM_BASE + BIOS_ROM_SIZE) ram.write(BIOS_RSDP_ADDRESS, acpi.rsdp);
    }
  }

  /** The stub a call comes from, by the address of its `out`. */
  private stubAt(call: BiosCall): RomStub | undefined {
    const linear = (call.sregs.cs.base + call.regs.rip) >>> 0;
    for (const base of [BIOS_ROM_BASE, BIOS_ROM_ALIAS]) {
      if (linear >= base && linear < base + BIOS_ROM_SIZE) return this.rom.stubs.get(linear - base);
    }
    return undefined;
  }

  /** A write to the BIOS call port: run the service of the stub that made it. */
  handleCall(): void {
    const call = new BiosCall(this.o.vcpu, this.ram);
    const stub = this.stubAt(call);
    if (!stub) {
      this.strayCalls++;
      return;
    }
    try {
      this.dispatch(stub, call);
    } catch (err) {
      if (!(err instanceof GuestFault)) throw err;
      const status = FAULT_STATUS[stub.vector];
      if (status !== undefined) call.fail(status);
      else call.carry = true;
    }
    call.commit();
  }

  private dispatch(stub: RomStub, call: BiosCall): void {
    switch (stub.kind) {
      case 'timer':
        this.time.tick();
        return;
      case 'boot':
        call.stubCarry = !this.boot.int19(call);
        return;
      case 'no-boot':
        this.boot.int18();
        return;
      case 'service':
        break;
    }
    switch (stub.vector) {
      case 0x09:
        this.keyboard.int09(this.ports);
        return;
      case 0x10:
        this.video.int10(call);
        return;
      case 0x11:
        this.boot.int11(call);
        return;
      case 0x12:
        this.boot.int12(call);
        return;
      case 0x13:
        this.disks.int13(call);
        return;
      case 0x15:
        this.system.int15(call);
        return;
      case 0x16:
        this.keyboard.int16(call);
        return;
      case 0x1a:
        if (call.ah === 0xb1) this.pci.int1a(call);
        else if (!this.time.int1a(call)) call.carry = true;
        return;
      default:
        call.carry = true;
    }
  }
}
