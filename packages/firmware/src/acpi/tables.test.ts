import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { E820Type, pcE820 } from '../e820.js';
import { BootParams, buildBootParams } from '../linux/boot-params.js';
import { eisaIdAml, prt } from './aml.js';
import { buildAcpiTables } from './build.js';
import { buildDsdtAml, buildFadt, buildMadt, buildRsdp, byteSum, prtEntries, type AcpiPmRegisters } from './tables.js';

// The devices package's pmLayout() at its default base 0x600, written out (firmware must not import devices).
const PM: AcpiPmRegisters = {
  pm1aEvt: { port: 0x600, width: 4 },
  pm1aCnt: { port: 0x604, width: 2 },
  pmTmr: { port: 0x608, width: 4 },
  pmTmrBits: 24,
  gpe0: { port: 0x60c, width: 4 },
  resetReg: { port: 0x610, width: 1, value: 0x01 },
  slpTypS5: 5,
};
// A PIIX-style swizzle onto PIRQA..D = IRQ 10, 11, 10, 11 (any function of slot and pin will do here).
const ROUTE = (slot: number, pin: number) => [10, 11][(slot + pin) % 2]!;
const RAM = 256 * 1024 * 1024;

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const sig = (b: Uint8Array, at = 0, n = 4) => String.fromCharCode(...b.subarray(at, at + n));
const u64 = (v: DataView, at: number) => v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
function indexOf(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function build(over: Partial<Parameters<typeof buildAcpiTables>[0]> = {}) {
  return buildAcpiTables({ ramSize: RAM, vcpus: 4, pm: PM, route: ROUTE, ...over });
}
/** The table at guest address `addr` (inside the blob). */
function tableAt(t: ReturnType<typeof build>, addr: number): Uint8Array {
  const off = addr - t.address;
  expect(off).toBeGreaterThanOrEqual(0);
  const len = dv(t.blob).getUint32(off + 4, true);
  expect(off + len).toBeLessThanOrEqual(t.blob.length);
  return t.blob.subarray(off, off + len);
}
function checkHeader(table: Uint8Array, signature: string, revision: number): void {
  expect(sig(table)).toBe(signature);
  expect(dv(table).getUint32(4, true)).toBe(table.length);
  expect(table[8]).toBe(revision);
  expect(byteSum(table)).toBe(0);
  expect(sig(table, 10, 6)).toBe('KVMTS ');
}

describe('RSDP', () => {
  it('has the ACPI 1.0 form: 20 bytes, revision 0, one checksum', () => {
    const r = buildRsdp({ rsdtAddress: 0x1234560, revision: 0 });
    expect(r.length).toBe(20);
    expect(sig(r, 0, 8)).toBe('RSD PTR ');
    expect(r[15]).toBe(0);
    expect(byteSum(r)).toBe(0);
    expect(dv(r).getUint32(16, true)).toBe(0x1234560);
  });
  it('has the ACPI 2.0 form: 36 bytes, both checksums, the XSDT address', () => {
    const r = buildRsdp({ rsdtAddress: 0x1000, xsdtAddress: 0x1_2345_6780 });
    expect(r.length).toBe(36);
    expect(r[15]).toBe(2);
    expect(sig(r, 9, 6)).toBe('KVMTS ');
    expect(byteSum(r, 0, 20)).toBe(0);
    expect(byteSum(r)).toBe(0);
    expect(dv(r).getUint32(20, true)).toBe(36);
    expect(u64(dv(r), 24)).toBe(0x1_2345_6780);
  });
});

describe('buildAcpiTables', () => {
  const t = build();

  it('places the blob in the last pages of RAM and reserves them as ACPI memory', () => {
    expect(t.address % 4096).toBe(0);
    expect(t.e820Reserved).toEqual({ addr: t.address, size: RAM - t.address, type: E820Type.Acpi });
    expect(t.e820Reserved.size).toBeGreaterThanOrEqual(t.blob.length);
    expect(t.writes).toEqual([{ addr: t.address, bytes: t.blob }]);
    const map = pcE820(RAM, [t.e820Reserved]);
    expect(map.at(-1)).toEqual(t.e820Reserved);
    expect(map.find((e) => e.type === E820Type.Ram && e.addr + e.size > t.address)).toBeUndefined();
  });

  it('links RSDP → RSDT/XSDT → FADT/MADT → FACS/DSDT, every table with its length and checksum', () => {
    const rsdp = t.blob.subarray(t.rsdpAddress - t.address, t.rsdpAddress - t.address + 36);
    expect(t.rsdpAddress % 16).toBe(0);
    expect(sig(rsdp, 0, 8)).toBe('RSD PTR ');
    expect(byteSum(rsdp, 0, 20)).toBe(0);
    expect(byteSum(rsdp)).toBe(0);
    const rsdt = tableAt(t, dv(rsdp).getUint32(16, true));
    const xsdt = tableAt(t, u64(dv(rsdp), 24));
    checkHeader(rsdt, 'RSDT', 1);
    checkHeader(xsdt, 'XSDT', 1);
    const fromRsdt = [0, 1].map((i) => dv(rsdt).getUint32(36 + 4 * i, true));
    const fromXsdt = [0, 1].map((i) => u64(dv(xsdt), 36 + 8 * i));
    expect(rsdt.length).toBe(36 + 8);
    expect(xsdt.length).toBe(36 + 16);
    expect(fromXsdt).toEqual(fromRsdt);
    expect(fromRsdt.map((a) => sig(tableAt(t, a)))).toEqual(['FACP', 'APIC']);
    expect(fromRsdt).toEqual([t.tables.FACP.address, t.tables.APIC.address]);

    const fadt = tableAt(t, fromRsdt[0]!);
    checkHeader(fadt, 'FACP', 3);
    const facsAddr = dv(fadt).getUint32(36, true);
    expect(facsAddr % 64).toBe(0);
    const facs = t.blob.subarray(facsAddr - t.address, facsAddr - t.address + 64);
    expect(sig(facs)).toBe('FACS');
    expect(dv(facs).getUint32(4, true)).toBe(64);
    expect(facs[32]).toBe(2);
    const dsdt = tableAt(t, dv(fadt).getUint32(40, true));
    checkHeader(dsdt, 'DSDT', 2);
    expect(u64(dv(fadt), 140)).toBe(t.tables.DSDT.address);
    checkHeader(tableAt(t, fromRsdt[1]!), 'APIC', 4);
  });

  it('can put the RSDP apart, e.g. in the BIOS area', () => {
    const s = build({ rsdpAddress: 0xe0000 });
    expect(s.rsdpAddress).toBe(0xe0000);
    expect(s.writes).toEqual([{ addr: s.address, bytes: s.blob }, { addr: 0xe0000, bytes: s.rsdp }]);
    expect(dv(s.rsdp).getUint32(16, true)).toBe(s.tables.RSDT.address);
    expect(indexOf(s.blob, new TextEncoder().encode('RSD PTR '))).toBe(-1);
    expect(() => build({ rsdpAddress: 0xe0008 })).toThrow(/16-byte/);
  });

  it('refuses addresses outside RAM', () => {
    expect(() => build({ address: RAM })).toThrow(/not in RAM/);
    expect(() => build({ ramSize: 0x100000 })).toThrow(/not in RAM/);
    expect(() => build({ address: 0x200100 })).toThrow(/aligned/);
    expect(build({ address: 0xe0000 }).address).toBe(0xe0000);
  });

  it('stops below the PCI hole when RAM is bigger', () => {
    const big = build({ ramSize: 6 * 2 ** 30 });
    expect(big.e820Reserved.addr + big.e820Reserved.size).toBe(0xc0000000);
  });
});

describe('FADT', () => {
  const fadt = buildFadt({ facsAddress: 0x7fff000, dsdtAddress: 0x7fff040, pm: PM });
  const v = dv(fadt);

  it('is revision 3, 244 bytes, with 32-bit and X_ pointers', () => {
    expect(fadt.length).toBe(244);
    expect(fadt[8]).toBe(3);
    expect(byteSum(fadt)).toBe(0);
    expect(v.getUint32(36, true)).toBe(0x7fff000); // FIRMWARE_CTRL
    expect(v.getUint32(40, true)).toBe(0x7fff040); // DSDT
    expect(u64(v, 132)).toBe(0); // X_FIRMWARE_CTRL: 0 since FIRMWARE_CTRL is set
    expect(u64(v, 140)).toBe(0x7fff040); // X_DSDT
  });

  it('describes the PM block at its fixed offsets', () => {
    expect(v.getUint16(46, true)).toBe(9); // SCI_INT
    expect(v.getUint32(48, true)).toBe(0); // SMI_CMD: no SMM
    expect([fadt[52], fadt[53]]).toEqual([0, 0]); // ACPI_ENABLE/DISABLE
    expect(v.getUint32(56, true)).toBe(0x600); // PM1a_EVT_BLK
    expect(v.getUint32(60, true)).toBe(0); // PM1b_EVT_BLK
    expect(v.getUint32(64, true)).toBe(0x604); // PM1a_CNT_BLK
    expect(v.getUint32(72, true)).toBe(0); // PM2_CNT_BLK
    expect(v.getUint32(76, true)).toBe(0x608); // PM_TMR_BLK
    expect(v.getUint32(80, true)).toBe(0x60c); // GPE0_BLK
    expect(v.getUint32(84, true)).toBe(0); // GPE1_BLK
    expect([...fadt.subarray(88, 94)]).toEqual([4, 2, 0, 4, 4, 0]); // PM1_EVT_LEN .. GPE1_BLK_LEN
    expect(v.getUint16(96, true)).toBeGreaterThan(100); // P_LVL2_LAT: no C2
    expect(v.getUint16(98, true)).toBeGreaterThan(1000); // P_LVL3_LAT: no C3
    expect(fadt[108]).toBe(0x32); // CENTURY
  });

  it('sets the boot architecture and feature flags', () => {
    expect(v.getUint16(109, true)).toBe(0x0003); // LEGACY_DEVICES | 8042
    // WBINVD(0) | PROC_C1(2) | SLP_BUTTON(5) | FIX_RTC(6) | RESET_REG_SUP(10); PWR_BUTTON(4) and TMR_VAL_EXT(8) clear.
    expect(v.getUint32(112, true)).toBe(0x465);
  });

  it('has RESET_REG as an 8-bit I/O GAS at 116 and RESET_VALUE at 128', () => {
    expect([...fadt.subarray(116, 128)]).toEqual([1, 8, 0, 1, 0x10, 0x06, 0, 0, 0, 0, 0, 0]);
    expect(fadt[128]).toBe(1);
  });

  it('has the X_ register blocks as I/O GAS structures', () => {
    const gas = (at: number) => ({ space: fadt[at], bits: fadt[at + 1], offset: fadt[at + 2], access: fadt[at + 3], addr: u64(v, at + 4) });
    expect(gas(148)).toEqual({ space: 1, bits: 32, offset: 0, access: 2, addr: 0x600 }); // X_PM1a_EVT_BLK
    expect(gas(160)).toEqual({ space: 0, bits: 0, offset: 0, access: 0, addr: 0 }); // X_PM1b_EVT_BLK
    expect(gas(172)).toEqual({ space: 1, bits: 16, offset: 0, access: 2, addr: 0x604 }); // X_PM1a_CNT_BLK
    expect(gas(208)).toEqual({ space: 1, bits: 32, offset: 0, access: 3, addr: 0x608 }); // X_PM_TMR_BLK
    expect(gas(220)).toEqual({ space: 1, bits: 32, offset: 0, access: 1, addr: 0x60c }); // X_GPE0_BLK
    expect(gas(232)).toEqual({ space: 0, bits: 0, offset: 0, access: 0, addr: 0 }); // X_GPE1_BLK
  });

  it('follows the PM layout when the block moves', () => {
    const at = (b: number): AcpiPmRegisters => ({
      ...PM, pm1aEvt: { port: b, width: 4 }, pm1aCnt: { port: b + 4, width: 2 }, pmTmr: { port: b + 8, width: 4 },
      gpe0: { port: b + 12, width: 4 }, resetReg: { port: b + 16, width: 1, value: 1 },
    });
    const f = dv(buildFadt({ facsAddress: 0, dsdtAddress: 0, pm: at(0xb000) }));
    expect([56, 64, 76, 80].map((o) => f.getUint32(o, true))).toEqual([0xb000, 0xb004, 0xb008, 0xb00c]);
    expect(u64(f, 120)).toBe(0xb010);
    expect(u64(f, 176)).toBe(0xb004);
  });

  it('can be revision 6 (276 bytes)', () => {
    const f6 = buildFadt({ facsAddress: 0x1000, dsdtAddress: 0x2000, pm: PM, revision: 6, minorVersion: 4 });
    expect(f6.length).toBe(276);
    expect(f6[8]).toBe(6);
    expect(f6[131]).toBe(4);
    expect(byteSum(f6)).toBe(0);
    expect(build({ fadtRevision: 6 }).tables.FACP.length).toBe(276);
  });

  it('rejects a PM layout the FADT cannot express', () => {
    expect(() => buildFadt({ facsAddress: 0, dsdtAddress: 0, pm: { ...PM, pmTmr: { port: 0x608, width: 2 } } })).toThrow(RangeError);
    expect(() => buildFadt({ facsAddress: 0, dsdtAddress: 0, pm: { ...PM, pm1aEvt: { port: 0x600, width: 3 } } })).toThrow(RangeError);
  });
});

describe('MADT', () => {
  const madt = buildMadt({ vcpus: 3, ioapicId: 3 });
  const v = dv(madt);
  const entries: Uint8Array[] = [];
  for (let at = 44; at < madt.length; at += madt[at + 1]!) entries.push(madt.subarray(at, at + madt[at + 1]!));

  it('has the local APIC address, PCAT_COMPAT and entries that fill the table exactly', () => {
    expect(sig(madt)).toBe('APIC');
    expect(v.getUint32(4, true)).toBe(madt.length);
    expect(byteSum(madt)).toBe(0);
    expect(v.getUint32(36, true)).toBe(0xfee00000);
    expect(v.getUint32(40, true)).toBe(1);
    expect(entries.reduce((n, e) => n + e.length, 44)).toBe(madt.length);
    expect(entries.map((e) => e[0])).toEqual([0, 0, 0, 1, 2, 2, 4]);
  });

  it('has one enabled Processor Local APIC per vCPU', () => {
    for (let i = 0; i < 3; i++) expect([...entries[i]!]).toEqual([0, 8, i, i, 1, 0, 0, 0]);
  });

  it('has the I/O APIC at 0xFEC00000 with GSI base 0', () => {
    expect([...entries[3]!]).toEqual([1, 12, 3, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0]);
  });

  it('overrides IRQ0 → GSI 2 and makes the SCI level-triggered, active-high', () => {
    expect([...entries[4]!]).toEqual([2, 10, 0, 0, 2, 0, 0, 0, 0x00, 0x00]);
    expect([...entries[5]!]).toEqual([2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0x00]);
  });

  it('wires LINT1 of all processors to NMI', () => {
    expect([...entries[6]!]).toEqual([4, 6, 0xff, 0, 0, 1]);
  });

  it('takes explicit APIC IDs', () => {
    const m = buildMadt({ vcpus: 2, apicIds: [0, 2], lint1Nmi: false });
    expect([...m.subarray(44, 60)]).toEqual([0, 8, 0, 0, 1, 0, 0, 0, 0, 8, 1, 2, 1, 0, 0, 0]);
    expect(() => buildMadt({ vcpus: 2, apicIds: [0] })).toThrow(RangeError);
  });
});

describe('DSDT', () => {
  const aml = buildDsdtAml({ vcpus: 2, route: ROUTE });

  it('starts with Name(_S5, Package(){5, 5, 0, 0}) and takes SLP_TYP as a parameter', () => {
    expect([...aml.subarray(0, 14)]).toEqual([0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00]);
    const s7 = buildDsdtAml({ vcpus: 1, route: ROUTE, slpTypS5: 7 });
    expect([...s7.subarray(8, 12)]).toEqual([0x0a, 0x07, 0x0a, 0x07]);
  });

  it('is \\_S5 then one \\_SB scope whose PkgLength covers the rest exactly', () => {
    const at = 14;
    expect(aml[at]).toBe(0x10); // ScopeOp
    const lead = aml[at + 1]!;
    const n = lead >> 6;
    let len = n === 0 ? lead & 0x3f : lead & 0x0f;
    for (let k = 1; k <= n; k++) len += aml[at + 1 + k]! << (4 + 8 * (k - 1));
    expect(at + 1 + len).toBe(aml.length);
    expect([...aml.subarray(at + 1 + n + 1, at + 1 + n + 1 + 5)]).toEqual([0x5c, 0x5f, 0x53, 0x42, 0x5f]);
  });

  it('describes PCI0 (PNP0A03) with its _PRT from the routing callback', () => {
    const hid = new Uint8Array([0x08, 0x5f, 0x48, 0x49, 0x44, ...eisaIdAml('PNP0A03')]);
    expect(indexOf(aml, hid)).toBeGreaterThan(0);
    const entries = prtEntries(ROUTE, Array.from({ length: 31 }, (_, i) => i + 1));
    expect(entries).toHaveLength(124);
    expect(entries[0]).toEqual({ slot: 1, pin: 0, gsi: ROUTE(1, 0) });
    const named = new Uint8Array([0x08, 0x5f, 0x50, 0x52, 0x54, ...prt(entries)]);
    expect(indexOf(aml, named)).toBeGreaterThan(0);
  });

  it('has the ISA devices, the processors and the mouse only when asked', () => {
    for (const id of ['PNP0501', 'PNP0B00', 'PNP0303', 'PNP0F13']) expect(indexOf(aml, eisaIdAml(id))).toBeGreaterThan(0);
    const noMouse = buildDsdtAml({ vcpus: 2, route: ROUTE, ps2Mouse: false });
    expect(indexOf(noMouse, eisaIdAml('PNP0F13'))).toBe(-1);
    const cpu = new TextEncoder().encode('ACPI0007');
    const count = (b: Uint8Array) => { let n = 0; for (let i = indexOf(b, cpu); i >= 0; i = indexOf(b, cpu, i + 1)) n++; return n; };
    expect(count(aml)).toBe(2);
    expect(count(buildDsdtAml({ vcpus: 5, route: ROUTE }))).toBe(5);
  });

  it('puts the 32-bit PCI window in _CRS', () => {
    const custom = buildDsdtAml({ vcpus: 1, route: ROUTE, pciWindow: { base: 0xe0000000, end: 0xfebfffff } });
    expect(indexOf(custom, Uint8Array.of(0x00, 0x00, 0x00, 0xe0, 0xff, 0xff, 0xbf, 0xfe))).toBeGreaterThan(0);
    expect(indexOf(aml, Uint8Array.of(0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xbf, 0xfe))).toBeGreaterThan(0);
  });

  it('rejects a bad route', () => {
    expect(() => buildDsdtAml({ vcpus: 1, route: () => -1 })).toThrow(RangeError);
  });
});

describe('boot_params.acpi_rsdp_addr', () => {
  it('is written at 0x070 when given', () => {
    const header = new Uint8Array(0x50);
    const bp = buildBootParams({ header, cmdlineAddr: 0x20000, e820: [], rsdpAddr: 0x1_0fff_f000 });
    expect(BootParams.ACPI_RSDP_ADDR).toBe(0x070);
    expect(u64(dv(bp), 0x070)).toBe(0x1_0fff_f000);
    expect(u64(dv(buildBootParams({ header, cmdlineAddr: 0x20000, e820: [] })), 0x070)).toBe(0);
  });
});

function hasIasl(): boolean {
  try {
    execFileSync('iasl', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!hasIasl())('iasl round trip', () => {
  it('disassembles every table and recompiles the DSDT to the same AML', () => {
    const t = build({ vcpus: 2 });
    const dir = mkdtempSync(join(tmpdir(), 'kvmts-acpi-'));
    try {
      const dsl: Record<string, string> = {};
      for (const k of ['DSDT', 'FACP', 'APIC', 'FACS', 'RSDT', 'XSDT'] as const) {
        const loc = t.tables[k];
        writeFileSync(join(dir, `${k}.dat`), t.blob.subarray(loc.address - t.address, loc.address - t.address + loc.length));
        execFileSync('iasl', ['-d', `${k}.dat`], { cwd: dir, stdio: 'pipe' });
        dsl[k] = readFileSync(join(dir, `${k}.dsl`), 'latin1');
      }
      const d = dsl.DSDT!;
      expect(d).toContain('Name (_S5, Package (0x04)');
      expect(d).toContain('Name (_HID, EisaId ("PNP0A03")');
      expect(d).toContain('WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,');
      expect(d).toContain('DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,');
      expect(d).toMatch(/0xFEBFFFFF,\s+\/\/ Range Maximum/);
      expect(d).toContain('Name (_PRT, Package (0x7C)');
      expect(d).toContain('EisaId ("PNP0501")');
      expect(d).toContain('EisaId ("PNP0B00")');
      expect(d).toContain('EisaId ("PNP0303")');
      expect(d).toContain('Device (C001)');
      expect(dsl.FACP).toMatch(/PM1A Control Block Address : 00000604/);
      expect(dsl.FACP).toMatch(/SCI Interrupt : 0009/);
      expect(dsl.FACP).toMatch(/Reset Register Supported \(V2\) : 1/);
      expect(dsl.APIC).toMatch(/I\/O Apic ID : 00/);
      expect(dsl.APIC).toMatch(/Address : FEC00000/);
      expect(dsl.FACS).toMatch(/Length : 00000040/);
      for (const s of Object.values(dsl)) expect(s).not.toMatch(/Invalid|Incorrect checksum|Error/i);

      // Recompile without optimizations (which would shorten \_SB to _SB): the AML must be identical.
      const out = execFileSync('iasl', ['-oa', '-p', 'again', 'DSDT.dsl'], { cwd: dir, encoding: 'latin1', stdio: 'pipe' });
      expect(out).toMatch(/Compilation successful\. 0 Errors/);
      const again = readFileSync(join(dir, 'again.aml'));
      const mine = readFileSync(join(dir, 'DSDT.dat'));
      expect(again.subarray(36).equals(mine.subarray(36))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
