/**
 * The BIOS: a ROM of real-mode stubs whose services run in the VMM. See {@link Bios}.
 * @module
 */
export { Bios } from './bios.js';
export type { BiosOptions, BiosVm, BiosSlot } from './bios.js';
export { buildBiosRom } from './rom.js';
export type { BiosRom, RomStub, StubKind } from './rom.js';
export { FileDisk, MemoryDisk, SECTOR_SIZE } from './disk-image.js';
export type { DiskImage } from './disk-image.js';
export { DiskStatus, hardDiskGeometry } from './disk.js';
export type { DiskGeometry } from './disk.js';
export { BOOT_SIGNATURE } from './boot.js';
export type { BootResult } from './boot.js';
export { GuestFault, GuestRam, Ports, BiosCall } from './guest.js';
export type { BiosVcpu, PortBus, BiosMemoryBackend } from './guest.js';
export { SMAP } from './system.js';
export { PCI_SIGNATURE, PciStatus } from './pci.js';
export { keyFromAscii } from './keyboard.js';
export {
  BIOS_CALL_PORT, BIOS_ROM_BASE, BIOS_ROM_ALIAS, BIOS_ROM_SIZE, BIOS_RSDP_ADDRESS, Bda, RomEntry, VGA_TEXT_BASE,
  BOOT_SECTOR_ADDRESS, TICKS_PER_DAY,
} from './layout.js';
