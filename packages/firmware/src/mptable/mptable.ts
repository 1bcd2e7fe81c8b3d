/**
 * Intel MultiProcessor Specification 1.4 tables: the MP floating pointer structure and the MP
 * configuration table (chapter 4), for OSes that look for APICs without ACPI (Linux with
 * `acpi=off`, older kernels, hobby OSes).
 *
 * **Placement.** The floating pointer must lie on a 16-byte boundary in the first KiB of the
 * EBDA, the last KiB of base memory, or 0xF0000–0xFFFFF; OSes scan those three places. With
 * PCI interrupt entries for 31 slots × 4 pins the configuration table alone is over 1 KiB, so
 * it does not fit in our 1 KiB EBDA (0x9FC00–0x9FFFF). The default is therefore the BIOS area:
 * the floating pointer at {@link MP_TABLE_ADDRESS} (0xF0000, where scanners start) and the
 * configuration table right after it. `pcE820` already reports 0xF0000–0xFFFFF as reserved,
 * so no extra E820 entry is needed and the OS leaves the tables alone. That suits direct
 * kernel boot, where the F segment is plain RAM; when a BIOS ROM occupies it, put the pointer
 * in the EBDA (`address: 0x9fc00`) and the table in reserved RAM (`configTableAddress`).
 * @module
 */
import { EBDA_START, LOW_RESERVED_START, HIGH_MEMORY_START } from '../e820.js';
import { BootError } from '../errors.js';
import type { PrtEntry } from '../acpi/aml.js';
import {
  IOAPIC_ADDRESS, LOCAL_APIC_ADDRESS, MpsIntiFlags, acpiChecksum, pcInterruptOverrides, type InterruptOverride,
} from '../acpi/tables.js';

/** Default guest address of the floating pointer (the configuration table follows it). */
export const MP_TABLE_ADDRESS = 0xf0000;
/** Where OSes scan for the floating pointer besides the EBDA/last KiB of base memory. */
export const MP_BIOS_AREA_START = 0xf0000;

/** Version numbers an integrated local APIC and an 82093AA-style I/O APIC report. */
export const MP_LOCAL_APIC_VERSION = 0x14;
export const MP_IOAPIC_VERSION = 0x11;
/** Inputs of one I/O APIC (the 82093AA has 24). */
export const MP_IOAPIC_PINS = 24;
/** SPEC_REV for version 1.4. */
export const MP_SPEC_REV = 4;

/** Sizes of the fixed structures (MP spec 1.4, tables 4-1 and 4-2). */
export const MpSize = { FLOATING_POINTER: 16, HEADER: 44, PROCESSOR: 20, OTHER_ENTRY: 8 } as const;

/** Base configuration table entry types (table 4-3). */
export const MpEntryType = { PROCESSOR: 0, BUS: 1, IOAPIC: 2, IO_INTERRUPT: 3, LOCAL_INTERRUPT: 4 } as const;

/** Interrupt types of I/O and local interrupt entries (table 4-7). */
export const MpInterruptType = { INT: 0, NMI: 1, SMI: 2, EXTINT: 3 } as const;

/** Processor entry CPU flags: EN (usable) and BP (the bootstrap processor). */
export const MpCpuFlags = { ENABLED: 1, BOOTSTRAP: 2 } as const;

/** Destination local APIC ID meaning "every local APIC" in a local interrupt entry. */
export const MP_ALL_LOCAL_APICS = 0xff;

/** The two LINT inputs of each local APIC. */
export const MP_LINT0 = 0;
export const MP_LINT1 = 1;

/** The ISA IRQ the slave 8259 cascades through: never an interrupt of its own. */
const ISA_CASCADE_IRQ = 2;

export interface MpTableOptions {
  vcpus: number;
  /** Local APIC ID of each vCPU. Default 0..vcpus-1. vCPU 0 is the bootstrap processor. */
  apicIds?: readonly number[];
  /** CPUID.1:EAX (family, model, stepping) for the processor entries, e.g. `CPUID_SIGNATURE`. */
  cpuSignature: number;
  /** CPUID.1:EDX feature flags for the processor entries. */
  featureFlags: number;
  localApicAddress?: number;
  localApicVersion?: number;
  /**
   * The I/O APIC's ID: must differ from every local APIC ID (they share the APIC bus) and
   * match the I/O APIC's ID register. Default: one above the highest local APIC ID.
   */
  ioapicId?: number;
  ioapicAddress?: number;
  ioapicVersion?: number;
  /**
   * ISA IRQs that do not arrive on the I/O APIC pin of the same number, with their MPS INTI
   * flags: the same list the MADT gets. Default {@link pcInterruptOverrides} (IRQ0 on pin 2,
   * the SCI level-triggered).
   */
  overrides?: readonly InterruptOverride[];
  /**
   * PCI INTx wiring: slot, pin (0 = INTA) and the I/O APIC pin (`gsi`) it reaches, e.g.
   * `prtEntries(route, slots)`. With routes the table gets a PCI bus (ID 0, the ISA bus is 1);
   * ISA IRQs whose pin a PCI route uses are left out, since that pin is a level-triggered PCI line.
   */
  pciRoutes?: readonly PrtEntry[];
  /** Guest address of the floating pointer (16-byte aligned). Default {@link MP_TABLE_ADDRESS}. */
  address?: number;
  /**
   * Guest address of the configuration table, if not right after the floating pointer (e.g.
   * pointer in the EBDA, table in reserved RAM, when a BIOS ROM fills 0xF0000–0xFFFFF). The
   * caller then makes sure the E820 map reserves it.
   */
  configTableAddress?: number;
  /** Eight characters, space-padded. Default "KVMTS". */
  oemId?: string;
  /** Twelve characters, space-padded. Default "KVMTS PC". */
  productId?: string;
}

export interface MpTables {
  floatingPointerAddress: number;
  /** The 16-byte MP floating pointer structure. */
  floatingPointer: Uint8Array;
  configTableAddress: number;
  /** The configuration table: header and base entries. */
  configTable: Uint8Array;
  /** What to write into guest memory: one block when the table follows the pointer, else two. */
  writes: { addr: number; bytes: Uint8Array }[];
  /** Number of base configuration table entries. */
  entryCount: number;
}

function ascii(dst: Uint8Array, at: number, s: string, len: number, what: string): void {
  if (s.length > len || !/^[\x20-\x7e]*$/.test(s)) throw new RangeError(`MP table ${what} "${s}" is not up to ${len} printable ASCII characters`);
  const padded = s.padEnd(len, ' ');
  for (let i = 0; i < len; i++) dst[at + i] = padded.charCodeAt(i);
}

function byteValue(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`MP table: ${what} ${String(v)} is not 0-255`);
  return v;
}

function u32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`MP table: ${what} 0x${v.toString(16)} does not fit in 32 bits`);
  return v >>> 0;
}

/** An 8-byte I/O (type 3) or local (type 4) interrupt assignment entry (figures 4-7 and 4-8). */
function interruptEntry(
  type: number, interruptType: number, flags: number, sourceBus: number, sourceIrq: number, destinationId: number, destinationPin: number,
): Uint8Array {
  return Uint8Array.of(type, interruptType, flags & 0xff, (flags >> 8) & 0xff, sourceBus, sourceIrq, destinationId, destinationPin);
}

function busEntry(id: number, name: 'ISA' | 'PCI'): Uint8Array {
  const e = new Uint8Array(MpSize.OTHER_ENTRY);
  e[0] = MpEntryType.BUS;
  e[1] = id;
  ascii(e, 2, name, 6, 'bus type');
  return e;
}

/** Is [address, address + size) inside one of the areas the spec lets the floating pointer live in? */
function placementProblem(address: number, size: number): string | undefined {
  if (!Number.isInteger(address) || address % 16 !== 0) return 'is not 16-byte aligned';
  const areas = [
    { start: EBDA_START, end: LOW_RESERVED_START, name: 'the EBDA / last KiB of base memory (0x9fc00-0x9ffff)' },
    { start: MP_BIOS_AREA_START, end: HIGH_MEMORY_START, name: 'the BIOS area (0xf0000-0xfffff)' },
  ];
  const area = areas.find((a) => address >= a.start && address < a.end);
  if (area === undefined) return 'is not in the EBDA / last KiB of base memory or in 0xf0000-0xfffff, where OSes look for it';
  if (address + size > area.end) return `leaves no room for the ${size} bytes of tables in ${area.name}`;
  return undefined;
}

/**
 * Builds the MP floating pointer and configuration table for a PC with `vcpus` processors,
 * one I/O APIC, an ISA bus (and a PCI bus with `pciRoutes`).
 */
export function buildMpTables(o: MpTableOptions): MpTables {
  if (!Number.isInteger(o.vcpus) || o.vcpus < 1 || o.vcpus > 254) throw new RangeError(`MP table: ${String(o.vcpus)} vCPUs (1-254)`);
  const apicIds = o.apicIds ?? Array.from({ length: o.vcpus }, (_, i) => i);
  if (apicIds.length !== o.vcpus) throw new RangeError(`MP table: ${apicIds.length} APIC IDs for ${o.vcpus} vCPUs`);
  apicIds.forEach((id) => byteValue(id, 'local APIC ID'));
  const ioapicId = byteValue(o.ioapicId ?? Math.max(...apicIds) + 1, 'I/O APIC ID');
  if (apicIds.includes(ioapicId)) throw new RangeError(`MP table: I/O APIC ID ${ioapicId} is also a local APIC ID`);
  if (new Set(apicIds).size !== apicIds.length) throw new RangeError('MP table: local APIC IDs are not unique');

  const pciRoutes = o.pciRoutes ?? [];
  const hasPci = pciRoutes.length > 0;
  const pciBus = 0;
  const isaBus = hasPci ? 1 : 0;

  // Entries must come sorted by type: processors, buses, I/O APICs, I/O and local interrupts.
  const entries: Uint8Array[] = [];
  apicIds.forEach((id, i) => {
    const e = new Uint8Array(MpSize.PROCESSOR);
    const dv = new DataView(e.buffer);
    e[0] = MpEntryType.PROCESSOR;
    e[1] = id;
    e[2] = byteValue(o.localApicVersion ?? MP_LOCAL_APIC_VERSION, 'local APIC version');
    e[3] = MpCpuFlags.ENABLED | (i === 0 ? MpCpuFlags.BOOTSTRAP : 0);
    dv.setUint32(4, u32(o.cpuSignature, 'CPU signature'), true);
    dv.setUint32(8, u32(o.featureFlags, 'feature flags'), true);
    entries.push(e);
  });
  // Bus IDs ascend.
  if (hasPci) entries.push(busEntry(pciBus, 'PCI'));
  entries.push(busEntry(isaBus, 'ISA'));

  const ioapic = new Uint8Array(MpSize.OTHER_ENTRY);
  ioapic[0] = MpEntryType.IOAPIC;
  ioapic[1] = ioapicId;
  ioapic[2] = byteValue(o.ioapicVersion ?? MP_IOAPIC_VERSION, 'I/O APIC version');
  ioapic[3] = 1; // EN
  new DataView(ioapic.buffer).setUint32(4, u32(o.ioapicAddress ?? IOAPIC_ADDRESS, 'I/O APIC address'), true);
  entries.push(ioapic);

  const checkPin = (pin: number, what: string): number => {
    if (!Number.isInteger(pin) || pin < 0 || pin >= MP_IOAPIC_PINS) throw new RangeError(`MP table: ${what} goes to I/O APIC pin ${String(pin)}, not 0-${MP_IOAPIC_PINS - 1}`);
    return pin;
  };
  const pciPins = new Set(pciRoutes.map((r) => checkPin(r.gsi, `PCI slot ${r.slot} pin ${r.pin}`)));
  const usedPins = new Set<number>();
  const ioInterrupt = (type: number, flags: number, bus: number, irq: number, pin: number) =>
    interruptEntry(MpEntryType.IO_INTERRUPT, type, flags, bus, irq, ioapicId, pin);

  // The 8259's INTR output on pin 0: the "virtual wire" through the I/O APIC.
  entries.push(ioInterrupt(MpInterruptType.EXTINT, MpsIntiFlags.CONFORMS, isaBus, 0, 0));
  usedPins.add(0);
  const overrides = o.overrides ?? pcInterruptOverrides();
  for (let irq = 0; irq < 16; irq++) {
    const override = overrides.find((ov) => ov.source === irq);
    // IRQ2 is the 8259 cascade, unless an override says where it really goes.
    if (irq === ISA_CASCADE_IRQ && override === undefined) continue;
    const pin = checkPin(override?.gsi ?? irq, `ISA IRQ ${irq}`);
    if (pciPins.has(pin) || usedPins.has(pin)) continue;
    usedPins.add(pin);
    entries.push(ioInterrupt(MpInterruptType.INT, override?.flags ?? MpsIntiFlags.CONFORMS, isaBus, irq, pin));
  }
  for (const r of pciRoutes) {
    if (!Number.isInteger(r.slot) || r.slot < 0 || r.slot > 31) throw new RangeError(`MP table: PCI slot ${String(r.slot)} is not 0-31`);
    if (!Number.isInteger(r.pin) || r.pin < 0 || r.pin > 3) throw new RangeError(`MP table: PCI pin ${String(r.pin)} is not 0-3 (INTA-INTD)`);
    // Source IRQ of a PCI bus: device number in bits 6:2, INTA-INTD in bits 1:0. PCI lines are level/active-low.
    entries.push(ioInterrupt(MpInterruptType.INT, MpsIntiFlags.ACTIVE_LOW | MpsIntiFlags.LEVEL, pciBus, (r.slot << 2) | r.pin, r.gsi));
  }
  // Every local APIC: LINT0 takes the 8259 (ExtINT), LINT1 the NMI.
  entries.push(interruptEntry(MpEntryType.LOCAL_INTERRUPT, MpInterruptType.EXTINT, MpsIntiFlags.CONFORMS, isaBus, 0, MP_ALL_LOCAL_APICS, MP_LINT0));
  entries.push(interruptEntry(MpEntryType.LOCAL_INTERRUPT, MpInterruptType.NMI, MpsIntiFlags.CONFORMS, isaBus, 0, MP_ALL_LOCAL_APICS, MP_LINT1));

  const tableLength = MpSize.HEADER + entries.reduce((n, e) => n + e.length, 0);
  const address = o.address ?? MP_TABLE_ADDRESS;
  const adjacent = o.configTableAddress === undefined;
  const problem = placementProblem(address, MpSize.FLOATING_POINTER + (adjacent ? tableLength : 0));
  if (problem !== undefined) throw new BootError(`the MP floating pointer at 0x${address.toString(16)} ${problem}`);
  const configTableAddress = o.configTableAddress ?? address + MpSize.FLOATING_POINTER;
  if (!adjacent) {
    const end = configTableAddress + tableLength;
    if (!Number.isInteger(configTableAddress) || configTableAddress < 0 || end > 0x1_0000_0000) throw new BootError(`the MP configuration table at 0x${configTableAddress.toString(16)} is not below 4 GiB`);
    if (configTableAddress < address + MpSize.FLOATING_POINTER && address < end) throw new BootError('the MP configuration table overlaps the floating pointer');
  }

  // Floating pointer (table 4-1): feature byte 1 = 0 (a configuration table is present),
  // feature byte 2 = 0 (no IMCR: the board runs in virtual wire mode).
  const floatingPointer = new Uint8Array(MpSize.FLOATING_POINTER);
  ascii(floatingPointer, 0, '_MP_', 4, 'signature');
  new DataView(floatingPointer.buffer).setUint32(4, configTableAddress, true);
  floatingPointer[8] = 1; // length in 16-byte paragraphs
  floatingPointer[9] = MP_SPEC_REV;
  floatingPointer[10] = acpiChecksum(floatingPointer);

  // Configuration table header (table 4-2); no OEM table, no extended entries.
  const configTable = new Uint8Array(tableLength);
  const dv = new DataView(configTable.buffer);
  ascii(configTable, 0, 'PCMP', 4, 'signature');
  dv.setUint16(4, tableLength, true);
  configTable[6] = MP_SPEC_REV;
  ascii(configTable, 8, o.oemId ?? 'KVMTS', 8, 'OEM ID');
  ascii(configTable, 16, o.productId ?? 'KVMTS PC', 12, 'product ID');
  dv.setUint16(34, entries.length, true);
  dv.setUint32(36, u32(o.localApicAddress ?? LOCAL_APIC_ADDRESS, 'local APIC address'), true);
  let at = MpSize.HEADER;
  for (const e of entries) {
    configTable.set(e, at);
    at += e.length;
  }
  configTable[7] = acpiChecksum(configTable);

  let writes: MpTables['writes'];
  if (adjacent) {
    const block = new Uint8Array(MpSize.FLOATING_POINTER + tableLength);
    block.set(floatingPointer);
    block.set(configTable, MpSize.FLOATING_POINTER);
    writes = [{ addr: address, bytes: block }];
  } else {
    writes = [{ addr: address, bytes: floatingPointer }, { addr: configTableAddress, bytes: configTable }];
  }
  return { floatingPointerAddress: address, floatingPointer, configTableAddress, configTable, writes, entryCount: entries.length };
}
