/**
 * ACPI table builders for the PC platform (ACPI 6.x chapter 5): RSDP, RSDT, XSDT, FADT, FACS,
 * MADT and the DSDT. Each returns the table's bytes with its length and checksum filled in;
 * addresses of other tables are parameters, so {@link buildAcpiTables} lays them out.
 * @module
 */
import {
  concat, device, dwordMemory, eisaIdAml, integer, io, irqNoFlags, name, pkg, prt,
  resourceTemplate, scope, string, wordBusNumber, wordIo, Zero, type Aml, type PrtEntry,
} from './aml.js';

/** Identification written into every table header (and the RSDP's OEM ID). */
export interface AcpiOem {
  /** Six characters, space-padded. Default "KVMTS ". */
  oemId?: string;
  /** Eight characters, space-padded. Default "KVMTS" + the table signature's first three letters. */
  oemTableId?: string;
  oemRevision?: number;
  /** Four characters. Default "KVMT". */
  creatorId?: string;
  creatorRevision?: number;
}

export const ACPI_OEM_ID = 'KVMTS ';
export const ACPI_CREATOR_ID = 'KVMT';
/** Size of the common table header (ACPI 6.x section 5.2.6). */
export const ACPI_HEADER_SIZE = 36;

function ascii(dst: Uint8Array, at: number, s: string, len: number, what: string): void {
  if (s.length > len) throw new RangeError(`ACPI ${what} "${s}" is longer than ${len} characters`);
  const p = s.padEnd(len, ' ');
  for (let i = 0; i < len; i++) {
    const c = p.charCodeAt(i);
    if (c > 0x7e || c < 0x20) throw new RangeError(`ACPI ${what} "${s}" is not printable ASCII`);
    dst[at + i] = c;
  }
}

/** The byte that makes `bytes[start, end)` sum to 0 mod 256, given that byte is currently 0. */
export function acpiChecksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum = (sum + bytes[i]!) & 0xff;
  return (0x100 - sum) & 0xff;
}

/** Sum of bytes mod 256 (0 for a valid table). */
export function byteSum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum = (sum + bytes[i]!) & 0xff;
  return sum;
}

/** Header (ACPI 6.x table 5.4) + body, with Length and Checksum filled in. */
export function buildTable(signature: string, revision: number, body: Uint8Array, oem: AcpiOem = {}): Uint8Array {
  if (!/^[A-Z0-9]{4}$/.test(signature)) throw new RangeError(`ACPI signature "${signature}" is not four capitals/digits`);
  const t = new Uint8Array(ACPI_HEADER_SIZE + body.length);
  const dv = new DataView(t.buffer);
  ascii(t, 0, signature, 4, 'signature');
  dv.setUint32(4, t.length, true);
  t[8] = revision;
  ascii(t, 10, oem.oemId ?? ACPI_OEM_ID, 6, 'OEM ID');
  ascii(t, 16, oem.oemTableId ?? `KVMTS${signature.slice(0, 3)}`, 8, 'OEM table ID');
  dv.setUint32(24, oem.oemRevision ?? 1, true);
  ascii(t, 28, oem.creatorId ?? ACPI_CREATOR_ID, 4, 'creator ID');
  dv.setUint32(32, oem.creatorRevision ?? 1, true);
  t.set(body, ACPI_HEADER_SIZE);
  t[9] = acpiChecksum(t);
  return t;
}

function setU64(dv: DataView, at: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`ACPI address ${String(v)} is not a physical address`);
  dv.setUint32(at, v % 0x1_0000_0000, true);
  dv.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
}

function u32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`ACPI ${what} 0x${v.toString(16)} does not fit in 32 bits`);
  return v;
}

// ---- RSDP (section 5.2.5) ----

export interface RsdpOptions {
  rsdtAddress: number;
  /** Needed for revision 2. */
  xsdtAddress?: number;
  /** 0: the ACPI 1.0 20-byte form; 2 (default): the 36-byte form with Length, XSDT and extended checksum. */
  revision?: 0 | 2;
  oemId?: string;
}

/** Offsets in the RSDP. */
export const Rsdp = {
  SIGNATURE: 0, CHECKSUM: 8, OEM_ID: 9, REVISION: 15, RSDT: 16, LENGTH: 20, XSDT: 24, EXT_CHECKSUM: 32,
  V1_SIZE: 20, V2_SIZE: 36,
} as const;

export function buildRsdp(o: RsdpOptions): Uint8Array {
  const rev = o.revision ?? 2;
  const t = new Uint8Array(rev === 0 ? Rsdp.V1_SIZE : Rsdp.V2_SIZE);
  const dv = new DataView(t.buffer);
  ascii(t, 0, 'RSD PTR ', 8, 'signature');
  ascii(t, Rsdp.OEM_ID, o.oemId ?? ACPI_OEM_ID, 6, 'OEM ID');
  t[Rsdp.REVISION] = rev;
  dv.setUint32(Rsdp.RSDT, u32(o.rsdtAddress, 'RSDT address'), true);
  if (rev === 2) {
    if (o.xsdtAddress === undefined) throw new RangeError('a revision-2 RSDP needs the XSDT address');
    dv.setUint32(Rsdp.LENGTH, t.length, true);
    setU64(dv, Rsdp.XSDT, o.xsdtAddress);
  }
  // The first checksum covers the ACPI 1.0 part only; the extended one covers everything.
  t[Rsdp.CHECKSUM] = acpiChecksum(t, 0, Rsdp.V1_SIZE);
  if (rev === 2) t[Rsdp.EXT_CHECKSUM] = acpiChecksum(t);
  return t;
}

// ---- RSDT / XSDT (sections 5.2.7, 5.2.8) ----

export function buildRsdt(tables: readonly number[], oem?: AcpiOem): Uint8Array {
  const body = new Uint8Array(4 * tables.length);
  const dv = new DataView(body.buffer);
  tables.forEach((a, i) => dv.setUint32(4 * i, u32(a, 'table address'), true));
  return buildTable('RSDT', 1, body, oem);
}

export function buildXsdt(tables: readonly number[], oem?: AcpiOem): Uint8Array {
  const body = new Uint8Array(8 * tables.length);
  const dv = new DataView(body.buffer);
  tables.forEach((a, i) => setU64(dv, 8 * i, a));
  return buildTable('XSDT', 1, body, oem);
}

// ---- FACS (section 5.2.10) ----

export const FACS_SIZE = 64;

/** The FACS: no checksum; must be 64-byte aligned in memory. Waking vectors 0, no global lock owner. */
export function buildFacs(hardwareSignature = 0): Uint8Array {
  const t = new Uint8Array(FACS_SIZE);
  const dv = new DataView(t.buffer);
  ascii(t, 0, 'FACS', 4, 'signature');
  dv.setUint32(4, FACS_SIZE, true);
  dv.setUint32(8, hardwareSignature >>> 0, true);
  t[32] = 2; // Version
  return t;
}

// ---- FADT (section 5.2.9) ----

/** One fixed-hardware register block: its first I/O port and its length in bytes. */
export interface AcpiIoRegister {
  port: number;
  width: number;
}

/**
 * The PM block's fixed-hardware registers, as the platform's PM device reports them
 * (structurally the `PmLayout` of `@kvmts/devices`' `pmLayout()`, which can be passed as is).
 */
export interface AcpiPmRegisters {
  /** PM1a_EVT_BLK: PM1_STS then PM1_EN (length = PM1_EVT_LEN). */
  pm1aEvt: AcpiIoRegister;
  /** PM1a_CNT_BLK (length = PM1_CNT_LEN). */
  pm1aCnt: AcpiIoRegister;
  /** PM_TMR_BLK (length = PM_TMR_LEN). */
  pmTmr: AcpiIoRegister;
  /** Timer width: 24 (TMR_VAL_EXT = 0) or 32. Default 24. */
  pmTmrBits?: number;
  /** GPE0_BLK: status then enable halves (length = GPE0_BLK_LEN). */
  gpe0: AcpiIoRegister;
  /** RESET_REG in I/O space and the RESET_VALUE to write. */
  resetReg: AcpiIoRegister & { value: number };
  /** SLP_TYP for S5, for the DSDT's \_S5 package. */
  slpTypS5?: number;
}

/** FADT Flags bits (table 5.10). */
export const FadtFlags = {
  WBINVD: 1 << 0,
  WBINVD_FLUSH: 1 << 1,
  PROC_C1: 1 << 2,
  P_LVL2_UP: 1 << 3,
  /** Set: there is no fixed-feature power button. */
  PWR_BUTTON: 1 << 4,
  /** Set: there is no fixed-feature sleep button. */
  SLP_BUTTON: 1 << 5,
  /** Set: the RTC alarm does not use the fixed RTC_STS/RTC_EN bits. */
  FIX_RTC: 1 << 6,
  RTC_S4: 1 << 7,
  TMR_VAL_EXT: 1 << 8,
  DCK_CAP: 1 << 9,
  RESET_REG_SUP: 1 << 10,
  SEALED_CASE: 1 << 11,
  HEADLESS: 1 << 12,
  CPU_SW_SLP: 1 << 13,
  PCI_EXP_WAK: 1 << 14,
  USE_PLATFORM_CLOCK: 1 << 15,
  S4_RTC_STS_VALID: 1 << 16,
  REMOTE_POWER_ON_CAPABLE: 1 << 17,
  FORCE_APIC_CLUSTER_MODEL: 1 << 18,
  FORCE_APIC_PHYSICAL_DESTINATION_MODE: 1 << 19,
  HW_REDUCED_ACPI: 1 << 20,
  LOW_POWER_S0_IDLE_CAPABLE: 1 << 21,
} as const;

/** IAPC_BOOT_ARCH bits (table 5.11). */
export const IapcBootArch = {
  LEGACY_DEVICES: 1 << 0,
  I8042: 1 << 1,
  VGA_NOT_PRESENT: 1 << 2,
  MSI_NOT_SUPPORTED: 1 << 3,
  PCIE_ASPM_CONTROLS: 1 << 4,
  CMOS_RTC_NOT_PRESENT: 1 << 5,
} as const;

/** Byte offsets in the FADT (table 5.9). */
export const Fadt = {
  FIRMWARE_CTRL: 36, DSDT: 40, PREFERRED_PM_PROFILE: 45, SCI_INT: 46, SMI_CMD: 48,
  ACPI_ENABLE: 52, ACPI_DISABLE: 53,
  PM1A_EVT_BLK: 56, PM1B_EVT_BLK: 60, PM1A_CNT_BLK: 64, PM1B_CNT_BLK: 68, PM2_CNT_BLK: 72,
  PM_TMR_BLK: 76, GPE0_BLK: 80, GPE1_BLK: 84,
  PM1_EVT_LEN: 88, PM1_CNT_LEN: 89, PM2_CNT_LEN: 90, PM_TMR_LEN: 91, GPE0_BLK_LEN: 92, GPE1_BLK_LEN: 93,
  P_LVL2_LAT: 96, P_LVL3_LAT: 98, CENTURY: 108, IAPC_BOOT_ARCH: 109, FLAGS: 112,
  RESET_REG: 116, RESET_VALUE: 128, MINOR_VERSION: 131,
  X_FIRMWARE_CTRL: 132, X_DSDT: 140,
  X_PM1A_EVT_BLK: 148, X_PM1B_EVT_BLK: 160, X_PM1A_CNT_BLK: 172, X_PM1B_CNT_BLK: 184,
  X_PM2_CNT_BLK: 196, X_PM_TMR_BLK: 208, X_GPE0_BLK: 220, X_GPE1_BLK: 232,
  SLEEP_CONTROL_REG: 244, SLEEP_STATUS_REG: 256, HYPERVISOR_VENDOR_ID: 268,
  /** Length of a revision-3 (ACPI 2.0/3.0) FADT. */
  SIZE_REV3: 244,
  /** Length of a revision-6 (ACPI 6.x) FADT. */
  SIZE_REV6: 276,
} as const;

/** Generic Address Structure (section 5.2.3.2) address space IDs and access sizes. */
export const Gas = { SYSTEM_MEMORY: 0, SYSTEM_IO: 1, ACCESS_UNDEFINED: 0, ACCESS_BYTE: 1, ACCESS_WORD: 2, ACCESS_DWORD: 3, ACCESS_QWORD: 4 } as const;

function writeGas(dv: DataView, at: number, space: number, bitWidth: number, accessSize: number, address: number): void {
  dv.setUint8(at, space);
  dv.setUint8(at + 1, bitWidth);
  dv.setUint8(at + 2, 0);
  dv.setUint8(at + 3, accessSize);
  setU64(dv, at + 4, address);
}

export interface FadtOptions {
  facsAddress: number;
  dsdtAddress: number;
  pm: AcpiPmRegisters;
  /** SCI interrupt (an ISA IRQ / GSI). Default 9. */
  sciInt?: number;
  /** 3 (244 bytes, the default) or 6 (276 bytes, ACPI 6.x with minor version `minorVersion`). */
  revision?: 3 | 6;
  minorVersion?: number;
  /** CMOS index of the RTC century byte, 0 for none. Default 0x32. */
  century?: number;
  /** IAPC_BOOT_ARCH. Default LEGACY_DEVICES | 8042. */
  bootArch?: number;
  /**
   * Flags. Default WBINVD | PROC_C1 | SLP_BUTTON | FIX_RTC | RESET_REG_SUP: a fixed power
   * button but no sleep button, no RTC alarm wake, a 24-bit timer (TMR_VAL_EXT from `pm.pmTmrBits`).
   */
  flags?: number;
  /** Preferred_PM_Profile: 0 unspecified (default), 1 desktop, 4 enterprise server… */
  pmProfile?: number;
  oem?: AcpiOem;
}

export const FADT_DEFAULT_FLAGS = FadtFlags.WBINVD | FadtFlags.PROC_C1 | FadtFlags.SLP_BUTTON | FadtFlags.FIX_RTC | FadtFlags.RESET_REG_SUP;

function accessFor(width: number): number {
  return width === 1 ? Gas.ACCESS_BYTE : width === 2 ? Gas.ACCESS_WORD : width === 4 ? Gas.ACCESS_DWORD : Gas.ACCESS_UNDEFINED;
}

function checkReg(r: AcpiIoRegister, what: string): void {
  if (!Number.isInteger(r.port) || r.port <= 0 || r.port + r.width > 0x10000) throw new RangeError(`FADT ${what} at port ${String(r.port)} is not in I/O space`);
  if (!Number.isInteger(r.width) || r.width < 1 || r.width > 255) throw new RangeError(`FADT ${what} length ${String(r.width)} is not 1-255`);
}

/** The FADT. There is no SMM: SMI_CMD, ACPI_ENABLE and ACPI_DISABLE are 0 (the PM block is always in ACPI mode). */
export function buildFadt(o: FadtOptions): Uint8Array {
  const rev = o.revision ?? 3;
  const size = rev === 3 ? Fadt.SIZE_REV3 : Fadt.SIZE_REV6;
  const t = new Uint8Array(size - ACPI_HEADER_SIZE);
  const dv = new DataView(t.buffer);
  const at = (off: number) => off - ACPI_HEADER_SIZE;
  const pm = o.pm;
  checkReg(pm.pm1aEvt, 'PM1a_EVT_BLK');
  checkReg(pm.pm1aCnt, 'PM1a_CNT_BLK');
  checkReg(pm.pmTmr, 'PM_TMR_BLK');
  checkReg(pm.gpe0, 'GPE0_BLK');
  checkReg(pm.resetReg, 'RESET_REG');
  // PM1_EVT_LEN >= 4 and even, PM1_CNT_LEN >= 2, PM_TMR_LEN = 4, GPE0_BLK_LEN even.
  if (pm.pm1aEvt.width < 4 || pm.pm1aEvt.width % 2) throw new RangeError(`FADT PM1_EVT_LEN ${pm.pm1aEvt.width} must be even and at least 4`);
  if (pm.pm1aCnt.width < 2) throw new RangeError(`FADT PM1_CNT_LEN ${pm.pm1aCnt.width} must be at least 2`);
  if (pm.pmTmr.width !== 4) throw new RangeError(`FADT PM_TMR_LEN ${pm.pmTmr.width} must be 4`);
  if (pm.gpe0.width % 2) throw new RangeError(`FADT GPE0_BLK_LEN ${pm.gpe0.width} must be even`);
  const tmrBits = pm.pmTmrBits ?? 24;
  if (tmrBits !== 24 && tmrBits !== 32) throw new RangeError(`FADT PM timer width ${tmrBits} must be 24 or 32`);

  dv.setUint32(at(Fadt.FIRMWARE_CTRL), u32(o.facsAddress, 'FACS address'), true);
  dv.setUint32(at(Fadt.DSDT), u32(o.dsdtAddress, 'DSDT address'), true);
  dv.setUint8(at(Fadt.PREFERRED_PM_PROFILE), o.pmProfile ?? 0);
  dv.setUint16(at(Fadt.SCI_INT), o.sciInt ?? 9, true);
  // SMI_CMD, ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT: 0.
  dv.setUint32(at(Fadt.PM1A_EVT_BLK), pm.pm1aEvt.port, true);
  dv.setUint32(at(Fadt.PM1A_CNT_BLK), pm.pm1aCnt.port, true);
  dv.setUint32(at(Fadt.PM_TMR_BLK), pm.pmTmr.port, true);
  dv.setUint32(at(Fadt.GPE0_BLK), pm.gpe0.port, true);
  dv.setUint8(at(Fadt.PM1_EVT_LEN), pm.pm1aEvt.width);
  dv.setUint8(at(Fadt.PM1_CNT_LEN), pm.pm1aCnt.width);
  dv.setUint8(at(Fadt.PM_TMR_LEN), pm.pmTmr.width);
  dv.setUint8(at(Fadt.GPE0_BLK_LEN), pm.gpe0.width);
  // C2/C3 unsupported: latencies above 100 / 1000 µs say so.
  dv.setUint16(at(Fadt.P_LVL2_LAT), 0x0fff, true);
  dv.setUint16(at(Fadt.P_LVL3_LAT), 0x0fff, true);
  dv.setUint8(at(Fadt.CENTURY), o.century ?? 0x32);
  dv.setUint16(at(Fadt.IAPC_BOOT_ARCH), o.bootArch ?? (IapcBootArch.LEGACY_DEVICES | IapcBootArch.I8042), true);
  let flags = o.flags ?? FADT_DEFAULT_FLAGS;
  if (o.flags === undefined && tmrBits === 32) flags |= FadtFlags.TMR_VAL_EXT;
  dv.setUint32(at(Fadt.FLAGS), flags >>> 0, true);
  writeGas(dv, at(Fadt.RESET_REG), Gas.SYSTEM_IO, 8 * pm.resetReg.width, accessFor(pm.resetReg.width), pm.resetReg.port);
  dv.setUint8(at(Fadt.RESET_VALUE), pm.resetReg.value);
  if (rev === 6) dv.setUint8(at(Fadt.MINOR_VERSION), o.minorVersion ?? 0);
  // X_FIRMWARE_CTRL stays 0: FIRMWARE_CTRL is set and the spec says then X_ must be 0.
  setU64(dv, at(Fadt.X_DSDT), o.dsdtAddress);
  // PM1 event/control registers are 16-bit halves; the GPE block is byte-accessible.
  writeGas(dv, at(Fadt.X_PM1A_EVT_BLK), Gas.SYSTEM_IO, 8 * pm.pm1aEvt.width, Gas.ACCESS_WORD, pm.pm1aEvt.port);
  writeGas(dv, at(Fadt.X_PM1A_CNT_BLK), Gas.SYSTEM_IO, 8 * pm.pm1aCnt.width, Gas.ACCESS_WORD, pm.pm1aCnt.port);
  writeGas(dv, at(Fadt.X_PM_TMR_BLK), Gas.SYSTEM_IO, 8 * pm.pmTmr.width, Gas.ACCESS_DWORD, pm.pmTmr.port);
  writeGas(dv, at(Fadt.X_GPE0_BLK), Gas.SYSTEM_IO, 8 * pm.gpe0.width, Gas.ACCESS_BYTE, pm.gpe0.port);
  return buildTable('FACP', rev, t, o.oem);
}

// ---- MADT (section 5.2.12) ----

export const LOCAL_APIC_ADDRESS = 0xfee00000;
export const IOAPIC_ADDRESS = 0xfec00000;

/** MADT interrupt controller structure types (table 5.21). */
export const MadtType = { LOCAL_APIC: 0, IO_APIC: 1, INTERRUPT_SOURCE_OVERRIDE: 2, LOCAL_APIC_NMI: 4 } as const;

/** MPS INTI flags (table 5.26): polarity in bits 1:0, trigger mode in bits 3:2. */
export const MpsIntiFlags = {
  CONFORMS: 0,
  ACTIVE_HIGH: 0x1,
  ACTIVE_LOW: 0x3,
  EDGE: 0x1 << 2,
  LEVEL: 0x3 << 2,
} as const;

/** One Interrupt Source Override: ISA IRQ `source` arrives on `gsi` with MPS INTI `flags`. */
export interface InterruptOverride {
  source: number;
  gsi: number;
  flags: number;
}

export interface MadtOptions {
  vcpus: number;
  /** Local APIC ID of each vCPU. Default 0..vcpus-1. Processor UIDs are always 0..vcpus-1. */
  apicIds?: readonly number[];
  ioapicId?: number;
  ioapicAddress?: number;
  localApicAddress?: number;
  /**
   * Default: IRQ0 → GSI 2 (conforming: the PIT's edge interrupt) and the SCI's IRQ
   * (`sciInt`, 9) level-triggered, active-high.
   */
  overrides?: readonly InterruptOverride[];
  sciInt?: number;
  /** Describe LINT1 of every local APIC as the NMI input (default true). */
  lint1Nmi?: boolean;
  oem?: AcpiOem;
}

/** MADT Flags bit 0: the system also has dual 8259 PICs. */
export const MADT_PCAT_COMPAT = 1;

/** The default overrides: timer on GSI 2, SCI level/active-high. */
export function pcInterruptOverrides(sciInt = 9): InterruptOverride[] {
  return [
    { source: 0, gsi: 2, flags: MpsIntiFlags.CONFORMS },
    { source: sciInt, gsi: sciInt, flags: MpsIntiFlags.ACTIVE_HIGH | MpsIntiFlags.LEVEL },
  ];
}

export function buildMadt(o: MadtOptions): Uint8Array {
  if (!Number.isInteger(o.vcpus) || o.vcpus < 1 || o.vcpus > 255) throw new RangeError(`MADT: ${String(o.vcpus)} vCPUs (1-255 with xAPIC entries)`);
  const ids = o.apicIds ?? Array.from({ length: o.vcpus }, (_, i) => i);
  if (ids.length !== o.vcpus) throw new RangeError(`MADT: ${ids.length} APIC IDs for ${o.vcpus} vCPUs`);
  const parts: Uint8Array[] = [];
  const head = new Uint8Array(8);
  const hv = new DataView(head.buffer);
  hv.setUint32(0, u32(o.localApicAddress ?? LOCAL_APIC_ADDRESS, 'local APIC address'), true);
  hv.setUint32(4, MADT_PCAT_COMPAT, true);
  parts.push(head);
  ids.forEach((id, uid) => {
    if (!Number.isInteger(id) || id < 0 || id > 254) throw new RangeError(`MADT: APIC ID ${String(id)} is not 0-254`);
    // Type, length, ACPI processor UID, APIC ID, flags (bit 0 enabled).
    parts.push(Uint8Array.of(MadtType.LOCAL_APIC, 8, uid, id, 1, 0, 0, 0));
  });
  const ioapic = new Uint8Array(12);
  const iv = new DataView(ioapic.buffer);
  ioapic[0] = MadtType.IO_APIC;
  ioapic[1] = 12;
  ioapic[2] = o.ioapicId ?? 0;
  iv.setUint32(4, u32(o.ioapicAddress ?? IOAPIC_ADDRESS, 'I/O APIC address'), true);
  iv.setUint32(8, 0, true); // GSI base
  parts.push(ioapic);
  for (const ov of o.overrides ?? pcInterruptOverrides(o.sciInt)) {
    const e = new Uint8Array(10);
    const ev = new DataView(e.buffer);
    e[0] = MadtType.INTERRUPT_SOURCE_OVERRIDE;
    e[1] = 10;
    e[2] = 0; // bus: ISA
    e[3] = ov.source;
    ev.setUint32(4, ov.gsi, true);
    ev.setUint16(8, ov.flags, true);
    parts.push(e);
  }
  // Local APIC NMI: all processors (UID 0xFF), conforming flags, LINT1.
  if (o.lint1Nmi ?? true) parts.push(Uint8Array.of(MadtType.LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1));
  return buildTable('APIC', 4, concat(...parts), o.oem);
}

// ---- DSDT (section 5.2.11.1) ----

/** GSI for a PCI slot's INTx pin (0 = INTA … 3 = INTD), as the platform's interrupt router wires it. */
export type PciIrqRoute = (slot: number, pin: number) => number;

export interface DsdtOptions {
  /** Number of processor devices (ACPI0007, _UID 0..n-1, matching the MADT's processor UIDs). */
  vcpus: number;
  route: PciIrqRoute;
  /** SLP_TYP for \_S5. Default 5. */
  slpTypS5?: number;
  /** The 32-bit PCI memory window. Default 0xC0000000–0xFEBFFFFF. */
  pciWindow?: { base: number; end: number };
  /** Also route the legacy VGA window 0xA0000–0xBFFFF through the host bridge. Default true. */
  vgaWindow?: boolean;
  /** _ADR of the PCI-to-ISA bridge (0xDDDDFFFF form: device << 16 | function). Default 0x00010000 (PIIX3 at 00:01.0). */
  isaBridgeAdr?: number;
  /** Describe the 8042's PS/2 mouse port (PNP0F13, IRQ 12); without it Linux disables the AUX port. Default true. */
  ps2Mouse?: boolean;
  /**
   * Give \_SB.PCI0 an _ADR of 0 next to its _HID (default true). The spec says a device
   * should have one or the other, and iasl warns about both; OSes accept it.
   */
  pci0Adr?: boolean;
  /** PCI slots to put in _PRT. Default 1..31. */
  slots?: readonly number[];
  oem?: AcpiOem;
}

export const PCI_WINDOW_DEFAULT = { base: 0xc0000000, end: 0xfebfffff } as const;

function procName(i: number): string {
  return `C${i.toString(16).toUpperCase().padStart(3, '0')}`;
}

/** The _PRT entries for `slots` × INTA–INTD. */
export function prtEntries(route: PciIrqRoute, slots: readonly number[]): PrtEntry[] {
  const out: PrtEntry[] = [];
  for (const slot of slots) {
    for (let pin = 0; pin < 4; pin++) {
      const gsi = route(slot, pin);
      if (!Number.isInteger(gsi) || gsi < 0 || gsi > 0xffff_ffff) throw new RangeError(`PCI routing gave GSI ${String(gsi)} for slot ${slot} pin ${pin}`);
      out.push({ slot, pin, gsi });
    }
  }
  return out;
}

/** The DSDT's AML body (without the table header). */
export function buildDsdtAml(o: DsdtOptions): Aml {
  const slp = o.slpTypS5 ?? 5;
  const win = o.pciWindow ?? PCI_WINDOW_DEFAULT;
  if (win.end < win.base) throw new RangeError('DSDT: the PCI window ends before it starts');
  const slots = o.slots ?? Array.from({ length: 31 }, (_, i) => i + 1);
  const hid = (id: string) => name('_HID', eisaIdAml(id));

  const pciCrs = resourceTemplate(
    wordBusNumber({ min: 0, max: 0xff }),
    io(0x0cf8, 0x0cf8, 1, 8),
    wordIo({ min: 0x0000, max: 0x0cf7 }),
    wordIo({ min: 0x0d00, max: 0xffff }),
    ...(o.vgaWindow ?? true ? [dwordMemory({ min: 0xa0000, max: 0xbffff, caching: 'cacheable' })] : []),
    dwordMemory({ min: win.base, max: win.end }),
  );
  const isaDevices: Aml[] = [
    device('COM1', hid('PNP0501'), name('_UID', integer(1)), name('_CRS', resourceTemplate(io(0x3f8, 0x3f8, 1, 8), irqNoFlags(4)))),
    device('RTC', hid('PNP0B00'), name('_CRS', resourceTemplate(io(0x70, 0x70, 1, 2), irqNoFlags(8)))),
    device('KBD', hid('PNP0303'), name('_CRS', resourceTemplate(io(0x60, 0x60, 1, 1), io(0x64, 0x64, 1, 1), irqNoFlags(1)))),
  ];
  if (o.ps2Mouse ?? true) isaDevices.push(device('MOU', hid('PNP0F13'), name('_CRS', resourceTemplate(irqNoFlags(12)))));

  const pci0 = device(
    'PCI0',
    hid('PNP0A03'),
    ...(o.pci0Adr ?? true ? [name('_ADR', Zero)] : []),
    name('_UID', Zero),
    name('_BBN', Zero),
    name('_CRS', pciCrs),
    name('_PRT', prt(prtEntries(o.route, slots))),
    device('ISA', name('_ADR', integer(o.isaBridgeAdr ?? 0x00010000)), ...isaDevices),
  );
  const cpus = Array.from({ length: o.vcpus }, (_, i) => device(procName(i), name('_HID', string('ACPI0007')), name('_UID', integer(i))));
  return concat(
    name('_S5', pkg(integer(slp), integer(slp), Zero, Zero)),
    scope('\\_SB', pci0, ...cpus),
  );
}

/** The DSDT (revision 2: integers are 64-bit). */
export function buildDsdt(o: DsdtOptions): Uint8Array {
  return buildTable('DSDT', 2, buildDsdtAml(o), o.oem);
}
