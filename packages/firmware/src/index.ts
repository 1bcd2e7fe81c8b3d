/**
 * Firmware for kvmts VMs: direct Linux boot (the x86 boot protocol), Multiboot, the PC memory
 * map, ACPI and MP tables.
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
export {
  buildMpTables, MP_TABLE_ADDRESS, MP_LOCAL_APIC_VERSION, MP_IOAPIC_VERSION, MP_IOAPIC_PINS, MP_SPEC_REV, MP_ALL_LOCAL_APICS,
  MpSize, MpEntryType, MpInterruptType, MpCpuFlags,
} from './mptable/mptable.js';
export type { MpTableOptions, MpTables } from './mptable/mptable.js';
export {
  parseMultiboot, findMultibootHeader, isMultiboot, MULTIBOOT_HEADER_MAGIC, MULTIBOOT_SEARCH_LIMIT, MultibootHeaderFlag, MbHdr,
} from './multiboot/image.js';
export type { MultibootImage, MultibootSegment } from './multiboot/image.js';
export {
  buildMultibootInfo, multibootInfoSize, multibootMemorySizes, MULTIBOOT_BOOTLOADER_MAGIC, MultibootInfoFlag, MbInfo,
  MODULE_ENTRY_SIZE, MMAP_ENTRY_SIZE, DEFAULT_BOOT_LOADER_NAME,
} from './multiboot/info.js';
export type { MultibootInfo, MultibootInfoOptions, PlacedModule } from './multiboot/info.js';
export { loadMultiboot, enterMultiboot, MULTIBOOT_CS, MULTIBOOT_DS } from './multiboot/load.js';
export type { MultibootBootOptions, LoadedMultiboot, MultibootModule } from './multiboot/load.js';
export { buildMultibootTestKernel, multibootModuleChecksum, MULTIBOOT_TEST_PASS } from './multiboot/test-kernel.js';
export type { MultibootTestKernelOptions } from './multiboot/test-kernel.js';
export * from './bios/index.js';
