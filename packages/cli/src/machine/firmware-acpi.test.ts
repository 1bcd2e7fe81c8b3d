import { afterEach, describe, expect, it } from 'vitest';
import { ACPI_RSDP_FILE, ACPI_TABLES_FILE, relocatableAcpi } from './firmware-acpi.js';
import { PcMachine } from './pc.js';

const machines: PcMachine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.close();
});

const name = (b: Uint8Array, at: number): string => new TextDecoder().decode(b.subarray(at, at + 56)).replace(/\0+$/, '');
const sum = (b: Uint8Array): number => b.reduce((a, x) => (a + x) & 0xff, 0);

/** Runs an `etc/table-loader` script the way firmware does, loading files at the given addresses; returns the memory. */
function runLoader(loader: Uint8Array, files: Record<string, Uint8Array>, addresses: Record<string, number>): Map<string, { addr: number; bytes: Uint8Array }> {
  const loaded = new Map<string, { addr: number; bytes: Uint8Array }>();
  const view = new DataView(loader.buffer, loader.byteOffset, loader.byteLength);
  for (let at = 0; at < loader.length; at += 128) {
    const kind = view.getUint32(at, true);
    const cmd = loader.subarray(at + 4, at + 128);
    const cv = new DataView(cmd.buffer, cmd.byteOffset, cmd.byteLength);
    if (kind === 1) {
      const file = name(cmd, 0);
      const align = cv.getUint32(56, true);
      expect(addresses[file]! % align).toBe(0);
      loaded.set(file, { addr: addresses[file]!, bytes: Uint8Array.from(files[file]!) });
    } else if (kind === 2) {
      const dest = loaded.get(name(cmd, 0))!;
      const src = loaded.get(name(cmd, 56))!;
      const offset = cv.getUint32(112, true);
      const size = cmd[116]!;
      const dv = new DataView(dest.bytes.buffer);
      if (size === 4) dv.setUint32(offset, dv.getUint32(offset, true) + src.addr, true);
      else dv.setBigUint64(offset, dv.getBigUint64(offset, true) + BigInt(src.addr), true);
    } else if (kind === 3) {
      const file = loaded.get(name(cmd, 0))!;
      const offset = cv.getUint32(56, true);
      const start = cv.getUint32(60, true);
      const length = cv.getUint32(64, true);
      file.bytes[offset] = (file.bytes[offset]! - sum(file.bytes.subarray(start, start + length))) & 0xff;
    } else {
      throw new Error(`unknown loader command ${kind}`);
    }
  }
  return loaded;
}

describe("the machine's ACPI tables for third-party firmware (etc/table-loader)", () => {
  it('relocate wherever the firmware loads them, with pointers and checksums fixed up', () => {
    const m = new PcMachine({ memSize: 64 << 20, clockMode: 'instructions', startTime: 0 });
    machines.push(m);
    const acpi = m.acpiTables(64 << 20);
    const files = relocatableAcpi(acpi);
    const tablesAt = 0x3ff0000;
    const loaded = runLoader(files.loader, { [ACPI_TABLES_FILE]: files.tables, [ACPI_RSDP_FILE]: files.rsdp }, { [ACPI_TABLES_FILE]: tablesAt, [ACPI_RSDP_FILE]: 0xf5a10 });
    const rsdp = loaded.get(ACPI_RSDP_FILE)!.bytes;
    const tables = loaded.get(ACPI_TABLES_FILE)!.bytes;
    expect(new TextDecoder().decode(rsdp.subarray(0, 8))).toBe('RSD PTR ');
    expect(sum(rsdp.subarray(0, 20))).toBe(0);
    expect(sum(rsdp)).toBe(0);

    /** The table at guest address `addr` in the loaded file, checked against the original table of that signature. */
    const tableAt = (addr: number): { signature: string; bytes: Uint8Array; view: DataView } => {
      const off = addr - tablesAt;
      expect(off).toBeGreaterThanOrEqual(0);
      const length = new DataView(tables.buffer).getUint32(off + 4, true);
      const bytes = tables.subarray(off, off + length);
      const signature = new TextDecoder().decode(bytes.subarray(0, 4));
      if (signature !== 'FACS') expect(sum(bytes), signature).toBe(0);
      return { signature, bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
    };
    const rv = new DataView(rsdp.buffer);
    const xsdt = tableAt(Number(rv.getBigUint64(24, true)));
    const rsdt = tableAt(rv.getUint32(16, true));
    expect([xsdt.signature, rsdt.signature]).toEqual(['XSDT', 'RSDT']);
    const listed = (t: { bytes: Uint8Array; view: DataView }, width: 4 | 8): string[] =>
      Array.from({ length: (t.bytes.length - 36) / width }, (_, i) =>
        tableAt(width === 4 ? t.view.getUint32(36 + 4 * i, true) : Number(t.view.getBigUint64(36 + 8 * i, true))).signature,
      );
    expect(listed(xsdt, 8)).toEqual(['FACP', 'APIC']);
    expect(listed(rsdt, 4)).toEqual(['FACP', 'APIC']);
    const fadt = tableAt(xsdt.view.getUint32(36, true));
    const dsdt = tableAt(fadt.view.getUint32(40, true));
    const facs = tableAt(fadt.view.getUint32(36, true));
    expect([dsdt.signature, facs.signature]).toEqual(['DSDT', 'FACS']);
    expect((fadt.view.getUint32(36, true) - tablesAt) % 64).toBe(0);
    // The DSDT has no pointers: it is loaded byte for byte.
    expect(dsdt.bytes).toEqual(new Uint8Array(acpi.blob.subarray(acpi.tables.DSDT.address - acpi.address, acpi.tables.DSDT.address - acpi.address + acpi.tables.DSDT.length)));
  });
});
