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
