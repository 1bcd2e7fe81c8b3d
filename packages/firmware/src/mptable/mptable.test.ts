import { describe, expect, it } from 'vitest';
import { CPUID_SIGNATURE, CpuidFeature } from '@kvmts/kvm-core';
import { BootError } from '../errors.js';
import { byteSum, prtEntries } from '../acpi/tables.js';
import {
  MP_ALL_LOCAL_APICS, MP_TABLE_ADDRESS, MpEntryType, MpInterruptType, MpSize, buildMpTables, type MpTableOptions, type MpTables,
} from './mptable.js';

const FEATURES = CpuidFeature.FPU | CpuidFeature.TSC | CpuidFeature.CX8 | CpuidFeature.APIC;
const base: MpTableOptions = { vcpus: 1, cpuSignature: CPUID_SIGNATURE, featureFlags: FEATURES };

interface Parsed {
  floatingPointer: number;
  specRev: number;
  oem: string;
  product: string;
  lapicAddress: number;
  processors: { apicId: number; version: number; flags: number; signature: number; features: number }[];
  buses: { id: number; type: string }[];
  ioapics: { id: number; version: number; flags: number; address: number }[];
  ioIrqs: { type: number; flags: number; bus: number; irq: number; apic: number; pin: number }[];
  localIrqs: { type: number; flags: number; bus: number; irq: number; apic: number; lint: number }[];
}

/**
 * Finds and decodes the tables in 1 MiB of low memory the way Linux's mpparse does: scan the
 * first KiB, the last KiB of base memory and the BIOS area on 16-byte boundaries for a valid
 * "_MP_" structure, then check the "PCMP" header (checksum, revision, APIC address) and walk
 * the entries by type, failing on anything it would reject.
 */
function parseLikeLinux(mem: Uint8Array): Parsed {
  const dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const text = (at: number, n: number) => String.fromCharCode(...mem.subarray(at, at + n));
  let mpf = -1;
  for (const [start, len] of [[0, 0x400], [639 * 0x400, 0x400], [0xf0000, 0x10000]] as const) {
    for (let p = start; p < start + len && mpf < 0; p += 16) {
      if (text(p, 4) === '_MP_' && mem[p + 8] === 1 && byteSum(mem, p, p + 16) === 0 && (mem[p + 9] === 1 || mem[p + 9] === 4)) mpf = p;
    }
    if (mpf >= 0) break;
  }
  if (mpf < 0) throw new Error('no MP floating pointer found');
  if (mem[mpf + 11] !== 0) throw new Error('default configuration, no table');
  const mpc = dv.getUint32(mpf + 4, true);
  if (text(mpc, 4) !== 'PCMP') throw new Error('bad PCMP signature');
  const length = dv.getUint16(mpc + 4, true);
  if (byteSum(mem, mpc, mpc + length) !== 0) throw new Error('PCMP checksum');
  if (mem[mpc + 6] !== 1 && mem[mpc + 6] !== 4) throw new Error('bad table version');
  const lapicAddress = dv.getUint32(mpc + 36, true);
  if (lapicAddress === 0) throw new Error('no local APIC address');
  const count = dv.getUint16(mpc + 34, true);
  const out: Parsed = {
    floatingPointer: mpf, specRev: mem[mpf + 9]!, oem: text(mpc + 8, 8), product: text(mpc + 16, 12), lapicAddress,
    processors: [], buses: [], ioapics: [], ioIrqs: [], localIrqs: [],
  };
  let p = mpc + MpSize.HEADER;
  let lastType = -1;
  for (let i = 0; i < count; i++) {
    const type = mem[p]!;
    if (type < lastType) throw new Error(`entry ${i} (type ${type}) out of order`);
    lastType = type;
    switch (type) {
      case MpEntryType.PROCESSOR:
        out.processors.push({ apicId: mem[p + 1]!, version: mem[p + 2]!, flags: mem[p + 3]!, signature: dv.getUint32(p + 4, true), features: dv.getUint32(p + 8, true) });
        p += 20;
        break;
      case MpEntryType.BUS:
        out.buses.push({ id: mem[p + 1]!, type: text(p + 2, 6) });
        p += 8;
        break;
      case MpEntryType.IOAPIC:
        out.ioapics.push({ id: mem[p + 1]!, version: mem[p + 2]!, flags: mem[p + 3]!, address: dv.getUint32(p + 4, true) });
        p += 8;
        break;
      case MpEntryType.IO_INTERRUPT:
        out.ioIrqs.push({ type: mem[p + 1]!, flags: dv.getUint16(p + 2, true), bus: mem[p + 4]!, irq: mem[p + 5]!, apic: mem[p + 6]!, pin: mem[p + 7]! });
        p += 8;
        break;
      case MpEntryType.LOCAL_INTERRUPT:
        out.localIrqs.push({ type: mem[p + 1]!, flags: dv.getUint16(p + 2, true), bus: mem[p + 4]!, irq: mem[p + 5]!, apic: mem[p + 6]!, lint: mem[p + 7]! });
        p += 8;
        break;
      default:
        throw new Error(`unknown entry type ${type}`);
    }
    if (p > mpc + length) throw new Error('entries run past the table length');
  }
  if (p !== mpc + length) throw new Error(`entries end at ${p - mpc}, the table says ${length}`);
  return out;
}

function lowMemoryWith(t: MpTables): Uint8Array {
  const mem = new Uint8Array(0x100000);
  for (const w of t.writes) mem.set(w.bytes, w.addr);
  return mem;
}

describe('buildMpTables', () => {
  it('has valid signatures and checksums at the default place in the BIOS area', () => {
    const t = buildMpTables(base);
    expect(t.floatingPointerAddress).toBe(MP_TABLE_ADDRESS);
    expect(t.floatingPointerAddress).toBe(0xf0000);
    expect(t.configTableAddress).toBe(0xf0010);
    expect(t.writes).toHaveLength(1);
    const b = t.writes[0]!.bytes;
    expect(t.writes[0]!.addr).toBe(0xf0000);
    expect(String.fromCharCode(...b.subarray(0, 4))).toBe('_MP_');
    expect(byteSum(b, 0, 16)).toBe(0);
    expect(b[8]).toBe(1);
    expect(b[9]).toBe(4);
    expect(new DataView(b.buffer).getUint32(4, true)).toBe(t.configTableAddress);
    expect(String.fromCharCode(...b.subarray(16, 20))).toBe('PCMP');
    const length = new DataView(b.buffer).getUint16(16 + 4, true);
    expect(16 + length).toBe(b.length);
    expect(byteSum(b, 16, b.length)).toBe(0);
    expect(Array.from(b.subarray(16))).toEqual(Array.from(t.configTable));
    // Corrupting any byte breaks a checksum.
    const bad = b.slice();
    bad[16 + 50]! ^= 1;
    expect(byteSum(bad, 16, bad.length)).not.toBe(0);
  });

  it('describes one CPU, the ISA bus, the I/O APIC and the PC interrupt wiring as Linux reads them', () => {
    const p = parseLikeLinux(lowMemoryWith(buildMpTables(base)));
    expect(p.floatingPointer).toBe(0xf0000);
    expect(p.specRev).toBe(4);
    expect(p.oem).toBe('KVMTS   ');
    expect(p.product).toBe('KVMTS PC    ');
    expect(p.lapicAddress).toBe(0xfee00000);
    expect(p.processors).toEqual([{ apicId: 0, version: 0x14, flags: 3, signature: CPUID_SIGNATURE, features: FEATURES }]);
    expect(p.buses).toEqual([{ id: 0, type: 'ISA   ' }]);
    expect(p.ioapics).toEqual([{ id: 1, version: 0x11, flags: 1, address: 0xfec00000 }]);
    // ExtINT on pin 0, IRQ0 on pin 2, no IRQ2 (cascade), 1 and 3-15 identity; SCI (9) level/active-high.
    expect(p.ioIrqs[0]).toEqual({ type: MpInterruptType.EXTINT, flags: 0, bus: 0, irq: 0, apic: 1, pin: 0 });
    expect(p.ioIrqs.slice(1).map((e) => [e.irq, e.pin])).toEqual([[0, 2], [1, 1], ...Array.from({ length: 13 }, (_, i) => [i + 3, i + 3])]);
    expect(p.ioIrqs.slice(1).every((e) => e.type === MpInterruptType.INT && e.apic === 1 && e.bus === 0)).toBe(true);
    expect(p.ioIrqs.find((e) => e.irq === 9)!.flags).toBe(0x0d);
    expect(p.ioIrqs.find((e) => e.irq === 4)!.flags).toBe(0);
    expect(p.localIrqs).toEqual([
      { type: MpInterruptType.EXTINT, flags: 0, bus: 0, irq: 0, apic: MP_ALL_LOCAL_APICS, lint: 0 },
      { type: MpInterruptType.NMI, flags: 0, bus: 0, irq: 0, apic: MP_ALL_LOCAL_APICS, lint: 1 },
    ]);
    expect(buildMpTables(base).entryCount).toBe(1 + 1 + 1 + 16 + 2);
  });

  it('lists every vCPU with only the first as bootstrap processor, and adds a PCI bus with its routes', () => {
    const route = (slot: number, pin: number) => 16 + ((slot + pin) & 3);
    const pciRoutes = prtEntries(route, Array.from({ length: 31 }, (_, i) => i + 1));
    const t = buildMpTables({ ...base, vcpus: 4, apicIds: [0, 2, 4, 6], pciRoutes });
    expect(t.entryCount).toBe(4 + 2 + 1 + 16 + 124 + 2);
    const p = parseLikeLinux(lowMemoryWith(t));
    expect(p.processors.map((c) => [c.apicId, c.flags])).toEqual([[0, 3], [2, 1], [4, 1], [6, 1]]);
    expect(p.ioapics[0]!.id).toBe(7);
    expect(p.buses).toEqual([{ id: 0, type: 'PCI   ' }, { id: 1, type: 'ISA   ' }]);
    const pci = p.ioIrqs.filter((e) => e.bus === 0);
    expect(pci).toHaveLength(124);
    // Slot 3 INTC: source IRQ = 3 << 2 | 2, level-triggered and active-low.
    expect(pci.find((e) => e.irq === ((3 << 2) | 2))).toEqual({ type: 0, flags: 0x0f, bus: 0, irq: 14, apic: 7, pin: 16 + ((3 + 2) & 3) });
    expect(p.ioIrqs.filter((e) => e.bus === 1)).toHaveLength(16);
  });

  it('leaves out ISA IRQs whose I/O APIC pin a PCI route takes (as when PIRQs share IRQ 10 and 11)', () => {
    const pciRoutes = [{ slot: 1, pin: 0, gsi: 10 }, { slot: 2, pin: 0, gsi: 11 }];
    const p = parseLikeLinux(lowMemoryWith(buildMpTables({ ...base, pciRoutes })));
    const isa = p.ioIrqs.filter((e) => e.bus === 1 && e.type === MpInterruptType.INT).map((e) => e.irq);
    expect(isa).not.toContain(10);
    expect(isa).not.toContain(11);
    expect(isa).toContain(12);
    expect(p.ioIrqs.filter((e) => e.pin === 10)).toEqual([{ type: 0, flags: 0x0f, bus: 0, irq: 4, apic: 1, pin: 10 }]);
  });

  it('can sit in the EBDA, and refuses places OSes do not scan or where the tables do not fit', () => {
    const t = buildMpTables({ ...base, address: 0x9fc00 });
    expect(parseLikeLinux(lowMemoryWith(t)).floatingPointer).toBe(0x9fc00);
    expect(() => buildMpTables({ ...base, address: 0x9000 })).toThrow(BootError);
    expect(() => buildMpTables({ ...base, address: 0xf0008 })).toThrow(/16-byte aligned/);
    const routes = prtEntries(() => 16, Array.from({ length: 31 }, (_, i) => i + 1));
    expect(() => buildMpTables({ ...base, address: 0x9fc00, pciRoutes: routes })).toThrow(/no room/);
    expect(() => buildMpTables({ ...base, address: 0xfff80 })).toThrow(/no room/);
    // Pointer in the EBDA, the big table elsewhere (as with a BIOS ROM in the F segment).
    const apart = buildMpTables({ ...base, address: 0x9fc00, configTableAddress: 0xe1000, pciRoutes: routes });
    expect(apart.writes.map((w) => [w.addr, w.bytes.length])).toEqual([[0x9fc00, 16], [0xe1000, apart.configTable.length]]);
    const p = parseLikeLinux(lowMemoryWith(apart));
    expect(p.floatingPointer).toBe(0x9fc00);
    expect(p.ioIrqs.filter((e) => e.bus === 0)).toHaveLength(124);
    expect(() => buildMpTables({ ...base, address: 0xf0000, configTableAddress: 0xeffff })).toThrow(/overlaps/);
  });

  it('rejects inconsistent APIC IDs and pins', () => {
    expect(() => buildMpTables({ ...base, vcpus: 2, apicIds: [0] })).toThrow(/2 vCPUs/);
    expect(() => buildMpTables({ ...base, vcpus: 2, apicIds: [1, 1] })).toThrow(/unique/);
    expect(() => buildMpTables({ ...base, ioapicId: 0 })).toThrow(/also a local APIC/);
    expect(() => buildMpTables({ ...base, pciRoutes: [{ slot: 1, pin: 0, gsi: 24 }] })).toThrow(/pin 24/);
    expect(() => buildMpTables({ ...base, pciRoutes: [{ slot: 1, pin: 4, gsi: 16 }] })).toThrow(/INTA-INTD/);
  });
});
