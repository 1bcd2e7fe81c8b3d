/**
 * CPUID and model-specific registers. The CPU describes itself as a family-6 (P6-class)
 * processor that advertises exactly the features this emulator implements.
 */
import type { X86Cpu } from './cpu.js';
import { Vector } from './exceptions.js';

/** CPUID.1:EDX feature bits. */
export const CpuidFeature = {
  FPU: 1 << 0, VME: 1 << 1, DE: 1 << 2, PSE: 1 << 3, TSC: 1 << 4, MSR: 1 << 5, PAE: 1 << 6, MCE: 1 << 7,
  CX8: 1 << 8, APIC: 1 << 9, SEP: 1 << 11, MTRR: 1 << 12, PGE: 1 << 13, MCA: 1 << 14, CMOV: 1 << 15,
  PAT: 1 << 16, FXSR: 1 << 24,
} as const;

/**
 * Always implemented by the integer core. FPU/FXSR join when the x87 unit is present, APIC with a
 * local APIC. PAE paging has MAXPHYADDR 36: with no leaf 0x80000008 that is what software assumes
 * for a PAE CPU (SDM 4.1.4), so no leaf announces it.
 */
const BASE_FEATURES = CpuidFeature.PSE | CpuidFeature.PAE | CpuidFeature.TSC | CpuidFeature.MSR | CpuidFeature.CX8 |
  CpuidFeature.SEP | CpuidFeature.PGE | CpuidFeature.CMOV;

/**
 * Family 6, model 3, stepping 3: a P6-class part. Model >= 3 keeps Linux's Pentium Pro SEP quirk
 * away, and unlike model 5 it has no cache-size-based renaming, so guests show our brand string.
 */
export const CPUID_SIGNATURE = (6 << 8) | (3 << 4) | 3;
const BRAND = 'kvmts software i686 CPU';

/** One CPUID leaf: what KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2 carry. */
export interface CpuidEntry {
  function: number;
  index: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

function str4(s: string, at: number): number {
  let v = 0;
  for (let i = 3; i >= 0; i--) v = (v << 8) | (s.charCodeAt(at + i) || 0);
  return v >>> 0;
}

/** The leaves this CPU supports, given which optional units exist. */
export function supportedCpuid(features: { fpu: boolean; apic: boolean }, apicId = 0): CpuidEntry[] {
  const vendor = 'GenuineIntel';
  let edx = BASE_FEATURES;
  if (features.fpu) edx |= CpuidFeature.FPU | CpuidFeature.FXSR;
  if (features.apic) edx |= CpuidFeature.APIC;
  const brand = BRAND.padEnd(48, '\0');
  const entries: CpuidEntry[] = [
    { function: 0, index: 0, eax: 2, ebx: str4(vendor, 0), edx: str4(vendor, 4), ecx: str4(vendor, 8) },
    { function: 1, index: 0, eax: CPUID_SIGNATURE, ebx: (1 << 16) | (apicId << 24), ecx: 0, edx },
    // Leaf 2: one round of descriptors, all null (no cache information).
    { function: 2, index: 0, eax: 1, ebx: 0, ecx: 0, edx: 0 },
    { function: 0x80000000, index: 0, eax: 0x80000004, ebx: 0, ecx: 0, edx: 0 },
    { function: 0x80000001, index: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  ];
  for (let i = 0; i < 3; i++) {
    entries.push({
      function: 0x80000002 + i, index: 0,
      eax: str4(brand, i * 16), ebx: str4(brand, i * 16 + 4), ecx: str4(brand, i * 16 + 8), edx: str4(brand, i * 16 + 12),
    });
  }
  return entries;
}

/** Executes CPUID with the vCPU's table: leaves above the maximum return the highest basic leaf, as Intel parts do. */
export function cpuid(c: X86Cpu): void {
  const table = c.cpuidTable;
  let fn = c.r32[0]! >>> 0;
  const maxBasic = table.find((e) => e.function === 0)?.eax ?? 0;
  const maxExt = table.find((e) => e.function === 0x80000000)?.eax ?? 0;
  if (fn >= 0x80000000 ? fn > maxExt : fn > maxBasic) fn = maxBasic;
  const e = table.find((x) => x.function === fn);
  c.r32[0] = e?.eax ?? 0; c.r32[3] = e?.ebx ?? 0; c.r32[1] = e?.ecx ?? 0; c.r32[2] = e?.edx ?? 0;
}

/** MSR numbers this CPU implements. */
export const Msr = {
  TSC: 0x10,
  APIC_BASE: 0x1b,
  BIOS_SIGN_ID: 0x8b,
  SYSENTER_CS: 0x174,
  SYSENTER_ESP: 0x175,
  SYSENTER_EIP: 0x176,
} as const;

/** The MSR indices KVM_GET_MSR_INDEX_LIST reports. */
export const MSR_INDEX_LIST: readonly number[] = [Msr.TSC, Msr.APIC_BASE, Msr.BIOS_SIGN_ID, Msr.SYSENTER_CS, Msr.SYSENTER_ESP, Msr.SYSENTER_EIP];

/** Reads an MSR as a 64-bit value split in two 32-bit halves ([lo, hi]); returns false for an unknown MSR. */
export function readMsr(c: X86Cpu, index: number, out: Int32Array): boolean {
  let lo = 0, hi = 0;
  switch (index) {
    case Msr.TSC: { const t = c.readTsc(); lo = t % 0x1_0000_0000; hi = Math.floor(t / 0x1_0000_0000); break; }
    case Msr.APIC_BASE: lo = c.apicBase; break;
    case Msr.BIOS_SIGN_ID: break;
    case Msr.SYSENTER_CS: lo = c.sysenterCs; break;
    case Msr.SYSENTER_ESP: lo = c.sysenterEsp; break;
    case Msr.SYSENTER_EIP: lo = c.sysenterEip; break;
    default: return false;
  }
  out[0] = lo; out[1] = hi;
  return true;
}

/** Writes an MSR; returns false for an unknown MSR or a value it does not accept. */
export function writeMsr(c: X86Cpu, index: number, lo: number, hi: number): boolean {
  switch (index) {
    case Msr.TSC: c.writeTsc((hi >>> 0) * 0x1_0000_0000 + (lo >>> 0)); return true;
    case Msr.APIC_BASE: c.setApicBase(lo); return true;
    case Msr.BIOS_SIGN_ID: return true;
    case Msr.SYSENTER_CS: c.sysenterCs = lo & 0xffff; return true;
    case Msr.SYSENTER_ESP: c.sysenterEsp = lo; return true;
    case Msr.SYSENTER_EIP: c.sysenterEip = lo; return true;
    default: return false;
  }
}

/** RDMSR / WRMSR instructions: CPL 0 only; unknown MSRs raise #GP(0), as KVM does by default. */
export function rdmsrInstruction(c: X86Cpu): void {
  if (c.protectedMode && c.cpl !== 0) c.fault(Vector.GP, 0);
  if (!readMsr(c, c.r32[1]! >>> 0, c.msrScratch)) c.fault(Vector.GP, 0);
  c.r32[0] = c.msrScratch[0]!; c.r32[2] = c.msrScratch[1]!;
}
export function wrmsrInstruction(c: X86Cpu): void {
  if (c.protectedMode && c.cpl !== 0) c.fault(Vector.GP, 0);
  if (!writeMsr(c, c.r32[1]! >>> 0, c.r32[0]!, c.r32[2]!)) c.fault(Vector.GP, 0);
}
