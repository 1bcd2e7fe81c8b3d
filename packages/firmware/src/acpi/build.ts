/**
 * Lays out the PC's ACPI tables in one blob for guest RAM: FACS, DSDT, FADT, MADT, RSDT, XSDT
 * and the RSDP, with every pointer between them resolved for the blob's guest address.
 * @module
 */
import { E820Type, HIGH_MEMORY_START, PCI_HOLE_START, type E820Entry } from '../e820.js';
import { BootError } from '../errors.js';
import {
  buildDsdt, buildFacs, buildFadt, buildMadt, buildRsdp, buildRsdt, buildXsdt, Fadt,
  type AcpiOem, type AcpiPmRegisters, type InterruptOverride, type PciIrqRoute,
} from './tables.js';

const PAGE = 4096;
/** The BIOS read-only area Linux and other OSes scan for "RSD PTR " on 16-byte boundaries. */
export const RSDP_SCAN_START = 0xe0000;
export const RSDP_SCAN_END = 0x100000;

export interface AcpiBuildOptions {
  /** Guest RAM size (RAM at guest-physical 0; below 4 GiB it stops at the PCI hole). */
  ramSize: number;
  vcpus: number;
  /** The PM block's registers: pass `pmLayout()` from `@kvmts/devices`. */
  pm: AcpiPmRegisters;
  /** The GSI of each PCI slot's INTA–INTD (pin 0–3): the platform's interrupt router wiring. */
  route: PciIrqRoute;
  /** Guest address of the blob (4 KiB-aligned). Default: the last pages of RAM below the PCI hole. */
  address?: number;
  /**
   * Put the RSDP here instead of in the blob, e.g. 0xE0000 so an OS scanning the BIOS area
   * finds it (16-byte aligned). Default: inside the blob, which then must be announced
   * another way (boot_params.acpi_rsdp_addr for direct Linux boot).
   */
  rsdpAddress?: number;
  /** SCI interrupt; default 9. */
  sciInt?: number;
  /** SLP_TYP for \_S5; default `pm.slpTypS5`, else 5. */
  slpTypS5?: number;
  ioapicId?: number;
  apicIds?: readonly number[];
  overrides?: readonly InterruptOverride[];
  pciWindow?: { base: number; end: number };
  isaBridgeAdr?: number;
  ps2Mouse?: boolean;
  pci0Adr?: boolean;
  vgaWindow?: boolean;
  /** FADT revision: 3 (default) or 6. */
  fadtRevision?: 3 | 6;
  /** CMOS century index for the FADT, 0 for none. Default 0x32. */
  century?: number;
  oem?: AcpiOem;
}

/** Where each table landed. */
export interface AcpiTableLocation {
  address: number;
  length: number;
}

export interface AcpiTables {
  /** Guest address of the blob. */
  address: number;
  /** Bytes to write at `address`. */
  blob: Uint8Array;
  /** Guest address of the RSDP (inside the blob unless `rsdpAddress` was given). */
  rsdpAddress: number;
  /** The RSDP's bytes (already in `blob` when it lives there). */
  rsdp: Uint8Array;
  /** Everything to write: the blob, plus the RSDP when it lives apart. */
  writes: { addr: number; bytes: Uint8Array }[];
  /** The blob's pages, to mark as ACPI reclaimable in the E820 map. */
  e820Reserved: E820Entry;
  tables: Record<'FACS' | 'DSDT' | 'FACP' | 'APIC' | 'RSDT' | 'XSDT' | 'RSDP', AcpiTableLocation>;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/** Builds the tables for a PC with `vcpus` processors and places them at one guest address. */
export function buildAcpiTables(o: AcpiBuildOptions): AcpiTables {
  const sciInt = o.sciInt ?? 9;
  const fadtRevision = o.fadtRevision ?? 3;
  const facs = buildFacs();
  const dsdt = buildDsdt({
    vcpus: o.vcpus, route: o.route, slpTypS5: o.slpTypS5 ?? o.pm.slpTypS5 ?? 5, pciWindow: o.pciWindow,
    isaBridgeAdr: o.isaBridgeAdr, ps2Mouse: o.ps2Mouse, pci0Adr: o.pci0Adr, vgaWindow: o.vgaWindow, oem: o.oem,
  });
  const madt = buildMadt({ vcpus: o.vcpus, apicIds: o.apicIds, ioapicId: o.ioapicId, overrides: o.overrides, sciInt, oem: o.oem });
  const separateRsdp = o.rsdpAddress !== undefined;

  // Offsets: the FACS first (64-byte alignment), then 8-byte-aligned tables, the RSDP 16-aligned.
  const off = { FACS: 0, DSDT: 64 } as Record<keyof AcpiTables['tables'], number>;
  const fadtLen = fadtRevision === 3 ? Fadt.SIZE_REV3 : Fadt.SIZE_REV6;
  off.FACP = align(off.DSDT + dsdt.length, 8);
  off.APIC = align(off.FACP + fadtLen, 8);
  off.RSDT = align(off.APIC + madt.length, 8);
  const rsdtLen = 36 + 4 * 2;
  off.XSDT = align(off.RSDT + rsdtLen, 8);
  const xsdtLen = 36 + 8 * 2;
  off.RSDP = align(off.XSDT + xsdtLen, 16);
  const size = separateRsdp ? off.XSDT + xsdtLen : off.RSDP + 36;

  const lowTop = Math.floor(Math.min(o.ramSize, PCI_HOLE_START) / PAGE) * PAGE;
  const address = o.address ?? lowTop - align(size, PAGE);
  if (!Number.isInteger(address) || address % PAGE !== 0) throw new BootError(`ACPI tables address 0x${address.toString(16)} is not 4 KiB-aligned`);
  const inBiosArea = o.address !== undefined && address >= RSDP_SCAN_START && address + size <= RSDP_SCAN_END;
  if (!inBiosArea && (address < HIGH_MEMORY_START || address + size > lowTop)) {
    throw new BootError(`the ACPI tables (${size} bytes at 0x${address.toString(16)}) are not in RAM between 1 MiB and 0x${lowTop.toString(16)}: give the VM more memory or place them elsewhere`);
  }
  const at = (k: keyof AcpiTables['tables']) => address + off[k];

  const fadt = buildFadt({
    facsAddress: at('FACS'), dsdtAddress: at('DSDT'), pm: o.pm, sciInt, revision: fadtRevision, century: o.century, oem: o.oem,
  });
  const rsdt = buildRsdt([at('FACP'), at('APIC')], o.oem);
  const xsdt = buildXsdt([at('FACP'), at('APIC')], o.oem);
  const rsdpAddress = o.rsdpAddress ?? at('RSDP');
  if (!Number.isInteger(rsdpAddress) || rsdpAddress % 16 !== 0) throw new BootError(`RSDP address 0x${rsdpAddress.toString(16)} is not 16-byte aligned`);
  const rsdp = buildRsdp({ rsdtAddress: at('RSDT'), xsdtAddress: at('XSDT'), revision: 2, oemId: o.oem?.oemId });

  const blob = new Uint8Array(size);
  const parts: [keyof AcpiTables['tables'], Uint8Array][] = [['FACS', facs], ['DSDT', dsdt], ['FACP', fadt], ['APIC', madt], ['RSDT', rsdt], ['XSDT', xsdt]];
  if (!separateRsdp) parts.push(['RSDP', rsdp]);
  const tables = {} as AcpiTables['tables'];
  for (const [k, bytes] of parts) {
    blob.set(bytes, off[k]);
    tables[k] = { address: at(k), length: bytes.length };
  }
  tables.RSDP = { address: rsdpAddress, length: rsdp.length };

  const writes: AcpiTables['writes'] = [{ addr: address, bytes: blob }];
  if (separateRsdp) writes.push({ addr: rsdpAddress, bytes: rsdp });
  return {
    address,
    blob,
    rsdpAddress,
    rsdp,
    writes,
    e820Reserved: { addr: address, size: align(size, PAGE), type: E820Type.Acpi },
    tables,
  };
}
