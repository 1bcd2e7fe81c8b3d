/**
 * Firmware for kvmts VMs: direct Linux boot (the x86 boot protocol) and the PC memory map.
 * @packageDocumentation
 */
export { BootError } from './errors.js';
export { E820Type, pcE820, e820RamBytes, EBDA_START, HIGH_MEMORY_START, PCI_HOLE_START } from './e820.js';
export type { E820Entry } from './e820.js';
export { parseBzImage, Hdr, BOOT_FLAG, HDRS_MAGIC, LOADED_HIGH, MIN_PROTOCOL } from './linux/bzimage.js';
export type { BzImage } from './linux/bzimage.js';
export { buildBootParams, BootParams, E820_MAX_ENTRIES, LOADER_TYPE_UNDEFINED } from './linux/boot-params.js';
export type { BootParamsOptions } from './linux/boot-params.js';
export { loadLinux, enterLinux, Layout, BOOT_CS, BOOT_DS } from './linux/load.js';
export type { LinuxBootOptions, LoadedLinux } from './linux/load.js';
export * as aml from './acpi/aml.js';
export { eisaId } from './acpi/aml.js';
export type { Aml, PrtEntry } from './acpi/aml.js';
export {
  buildTable, buildRsdp, buildRsdt, buildXsdt, buildFacs, buildFadt, buildMadt, buildDsdt, buildDsdtAml, acpiChecksum, byteSum,
  pcInterruptOverrides, prtEntries, Rsdp, Fadt, FadtFlags, IapcBootArch, Gas, MadtType, MpsIntiFlags, FADT_DEFAULT_FLAGS,
  ACPI_OEM_ID, ACPI_HEADER_SIZE, FACS_SIZE, LOCAL_APIC_ADDRESS, IOAPIC_ADDRESS, MADT_PCAT_COMPAT, PCI_WINDOW_DEFAULT,
} from './acpi/tables.js';
export type { AcpiOem, AcpiIoRegister, AcpiPmRegisters, FadtOptions, MadtOptions, DsdtOptions, RsdpOptions, InterruptOverride, PciIrqRoute } from './acpi/tables.js';
export { buildAcpiTables, RSDP_SCAN_START, RSDP_SCAN_END } from './acpi/build.js';
export type { AcpiBuildOptions, AcpiTables, AcpiTableLocation } from './acpi/build.js';
