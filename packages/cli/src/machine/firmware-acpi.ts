/**
 * kvmts's ACPI tables for third-party firmware: the tables the machine would place at fixed
 * addresses (`PcMachine.acpiTables`) become two relocatable fw_cfg files, as QEMU hands them
 * to SeaBIOS — `etc/acpi/tables` (every table reachable from the RSDP) and `etc/acpi/rsdp` —
 * and an `etc/table-loader` script that has the firmware allocate them, fill in the pointers
 * between tables with the addresses they landed at, and fix the checksums.
 * @module
 */

import type { AcpiTables } from '@kvmts/firmware';
import { LoaderZone, TableLoader, type FwCfg } from '@kvmts/devices';

export const ACPI_TABLES_FILE = 'etc/acpi/tables';
export const ACPI_RSDP_FILE = 'etc/acpi/rsdp';
export const TABLE_LOADER_FILE = 'etc/table-loader';

/** The files of {@link relocatableAcpi}. */
export interface RelocatableAcpi {
  tables: Uint8Array;
  rsdp: Uint8Array;
  loader: Uint8Array;
}

/** Header fields of a system description table (ACPI 6.5, 5.2.6), and of the RSDP and FADT. */
const Sdt = { length: 4, checksum: 9, entries: 36 } as const;
const Rsdp = { checksum: 8, rsdt: 16, xsdt: 24, length: 36 } as const;
const Fadt = { facs: 36, dsdt: 40, xFacs: 132, xDsdt: 140, xDsdtEnd: 148 } as const;
const FACS_ALIGN = 64;
const TABLE_ALIGN = 8;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Reads guest-physical ranges out of the tables' `writes`. */
function reader(acpi: AcpiTables): (addr: number, length: number) => Uint8Array {
  return (addr, length) => {
    for (const w of acpi.writes) {
      if (addr >= w.addr && addr + length <= w.addr + w.bytes.length) return w.bytes.slice(addr - w.addr, addr - w.addr + length);
    }
    throw new Error(`ACPI: no table bytes at 0x${addr.toString(16)} (+${length})`);
  };
}

const u64 = (view: DataView, at: number): number => Number(view.getBigUint64(at, true));

/** The tables reachable from the RSDP, as relocatable fw_cfg files and the loader script for them. */
export function relocatableAcpi(acpi: AcpiTables): RelocatableAcpi {
  const read = reader(acpi);
  const rsdp = acpi.rsdp.slice(0, Rsdp.length);
  const rsdpView = new DataView(rsdp.buffer);

  // Every table, found from the RSDP: the RSDT and XSDT, what they list, the FADT's FACS and DSDT.
  const tables = new Map<number, Uint8Array>();
  const visit = (addr: number): void => {
    if (addr === 0 || tables.has(addr)) return;
    const length = new DataView(read(addr, 8).buffer).getUint32(Sdt.length, true);
    const bytes = read(addr, length);
    tables.set(addr, bytes);
    const view = new DataView(bytes.buffer);
    const signature = new TextDecoder().decode(bytes.subarray(0, 4));
    if (signature === 'RSDT') for (let at = Sdt.entries; at + 4 <= length; at += 4) visit(view.getUint32(at, true));
    if (signature === 'XSDT') for (let at = Sdt.entries; at + 8 <= length; at += 8) visit(u64(view, at));
    if (signature === 'FACP') {
      visit(view.getUint32(Fadt.facs, true));
      visit(view.getUint32(Fadt.dsdt, true));
      if (length >= Fadt.xDsdtEnd) {
        visit(u64(view, Fadt.xFacs));
        visit(u64(view, Fadt.xDsdt));
      }
    }
  };
  visit(rsdpView.getUint32(Rsdp.rsdt, true));
  visit(u64(rsdpView, Rsdp.xsdt));

  // Lay them out in one file, the FACS (if any) first for its 64-byte alignment.
  const isFacs = (bytes: Uint8Array): boolean => new TextDecoder().decode(bytes.subarray(0, 4)) === 'FACS';
  const order = [...tables.keys()].sort((a, b) => Number(isFacs(tables.get(b)!)) - Number(isFacs(tables.get(a)!)) || a - b);
  const offsets = new Map<number, number>();
  let size = 0;
  for (const addr of order) {
    size = align(size, isFacs(tables.get(addr)!) ? FACS_ALIGN : TABLE_ALIGN);
    offsets.set(addr, size);
    size += tables.get(addr)!.length;
  }
  const file = new Uint8Array(size);
  const fileView = new DataView(file.buffer);
  for (const addr of order) file.set(tables.get(addr)!, offsets.get(addr)!);

  const loader = new TableLoader().allocate(ACPI_RSDP_FILE, 16, LoaderZone.fseg).allocate(ACPI_TABLES_FILE, FACS_ALIGN, LoaderZone.high);
  /** Turns the pointer at `at` (in `view`, of `dest`) into an offset in the tables file plus an ADD_POINTER. */
  const relocate = (dest: string, view: DataView, at: number, size: 4 | 8): void => {
    const target = size === 4 ? view.getUint32(at, true) : u64(view, at);
    if (target === 0) return;
    const offset = offsets.get(target);
    if (offset === undefined) throw new Error(`ACPI: pointer to 0x${target.toString(16)} is not a table`);
    if (size === 4) view.setUint32(at, offset, true);
    else view.setBigUint64(at, BigInt(offset), true);
    loader.addPointer(dest, ACPI_TABLES_FILE, at, size);
  };
  for (const addr of order) {
    const base = offsets.get(addr)!;
    const bytes = tables.get(addr)!;
    const signature = new TextDecoder().decode(bytes.subarray(0, 4));
    if (signature === 'RSDT') for (let at = Sdt.entries; at + 4 <= bytes.length; at += 4) relocate(ACPI_TABLES_FILE, fileView, base + at, 4);
    if (signature === 'XSDT') for (let at = Sdt.entries; at + 8 <= bytes.length; at += 8) relocate(ACPI_TABLES_FILE, fileView, base + at, 8);
    if (signature === 'FACP') {
      relocate(ACPI_TABLES_FILE, fileView, base + Fadt.facs, 4);
      relocate(ACPI_TABLES_FILE, fileView, base + Fadt.dsdt, 4);
      if (bytes.length >= Fadt.xDsdtEnd) {
        relocate(ACPI_TABLES_FILE, fileView, base + Fadt.xFacs, 8);
        relocate(ACPI_TABLES_FILE, fileView, base + Fadt.xDsdt, 8);
      }
    }
  }
  relocate(ACPI_RSDP_FILE, rsdpView, Rsdp.rsdt, 4);
  relocate(ACPI_RSDP_FILE, rsdpView, Rsdp.xsdt, 8);
  // Checksums last, over the patched bytes (the FACS has none).
  for (const addr of order) {
    if (isFacs(tables.get(addr)!)) continue;
    const base = offsets.get(addr)!;
    loader.addChecksum(ACPI_TABLES_FILE, base + Sdt.checksum, base, tables.get(addr)!.length);
  }
  loader.addChecksum(ACPI_RSDP_FILE, Rsdp.checksum, 0, 20).addChecksum(ACPI_RSDP_FILE, 32, 0, Rsdp.length);
  return { tables: file, rsdp, loader: loader.bytes() };
}

/** Adds the machine's ACPI tables to `fwCfg` for the firmware's table loader. */
export function addAcpiFiles(fwCfg: FwCfg, acpi: AcpiTables): void {
  const files = relocatableAcpi(acpi);
  fwCfg.addFile(ACPI_TABLES_FILE, files.tables);
  fwCfg.addFile(ACPI_RSDP_FILE, files.rsdp);
  fwCfg.addFile(TABLE_LOADER_FILE, files.loader);
}
