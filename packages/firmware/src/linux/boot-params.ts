/**
 * Building side of the Linux boot protocol: the "zero page" (struct boot_params) that the
 * kernel reads at entry, with the command line, initrd and E820 map filled in.
 * @module
 */
import type { E820Entry } from '../e820.js';
import { BootError } from '../errors.js';
import { Hdr } from './bzimage.js';

/** Offsets in struct boot_params (outside the setup header). */
export const BootParams = {
  /** acpi_rsdp_addr (u64), read by kernels with boot protocol 2.14 or later. */
  ACPI_RSDP_ADDR: 0x070,
  ALT_MEM_K: 0x1e0,
  E820_ENTRIES: 0x1e8,
  E820_TABLE: 0x2d0,
  SIZE: 0x1000,
} as const;
/** boot_params holds at most this many E820 entries. */
export const E820_MAX_ENTRIES = 128;
/** type_of_loader: "undefined" bootloader (0xFF), as the protocol asks of loaders without an ID. */
export const LOADER_TYPE_UNDEFINED = 0xff;

export interface BootParamsOptions {
  /** The setup header from the image (BzImage.header). */
  header: Uint8Array;
  cmdlineAddr: number;
  initrd?: { addr: number; size: number };
  e820: readonly E820Entry[];
  /** Guest address of the ACPI RSDP, for boot_params.acpi_rsdp_addr (protocol 2.14+; older kernels scan the BIOS area instead). */
  rsdpAddr?: number;
}

/** Builds boot_params (4 KiB). */
export function buildBootParams(o: BootParamsOptions): Uint8Array {
  const bp = new Uint8Array(BootParams.SIZE);
  const dv = new DataView(bp.buffer);
  bp.set(o.header, Hdr.SETUP_SECTS);
  bp[Hdr.TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
  dv.setUint32(Hdr.CMD_LINE_PTR, o.cmdlineAddr, true);
  dv.setUint32(Hdr.RAMDISK_IMAGE, o.initrd?.addr ?? 0, true);
  dv.setUint32(Hdr.RAMDISK_SIZE, o.initrd?.size ?? 0, true);
  if (o.rsdpAddr !== undefined) {
    dv.setUint32(BootParams.ACPI_RSDP_ADDR, o.rsdpAddr % 0x1_0000_0000, true);
    dv.setUint32(BootParams.ACPI_RSDP_ADDR + 4, Math.floor(o.rsdpAddr / 0x1_0000_0000), true);
  }
  if (o.e820.length > E820_MAX_ENTRIES) throw new BootError(`the memory map has ${o.e820.length} entries; boot_params holds ${E820_MAX_ENTRIES}`);
  bp[BootParams.E820_ENTRIES] = o.e820.length;
  o.e820.forEach((e, i) => {
    const at = BootParams.E820_TABLE + i * 20;
    dv.setUint32(at, e.addr % 0x1_0000_0000, true);
    dv.setUint32(at + 4, Math.floor(e.addr / 0x1_0000_0000), true);
    dv.setUint32(at + 8, e.size % 0x1_0000_0000, true);
    dv.setUint32(at + 12, Math.floor(e.size / 0x1_0000_0000), true);
    dv.setUint32(at + 16, e.type, true);
  });
  // Extended memory above 1 MiB in KiB, for kernels that look at it before the E820 map.
  const extended = o.e820.filter((e) => e.type === 1 && e.addr >= 0x100000).reduce((n, e) => n + e.size, 0);
  dv.setUint32(BootParams.ALT_MEM_K, Math.floor(extended / 1024), true);
  dv.setUint16(0x002, Math.min(0xffff, Math.floor(extended / 1024)), true); // screen_info.ext_mem_k
  return bp;
}
