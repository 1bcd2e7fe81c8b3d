/**
 * Loading side of the Linux x86 boot protocol (Documentation/arch/x86/boot.rst): parse and
 * validate a bzImage's setup header. Building boot_params is separate (boot-params.ts), as in
 * rust-vmm's linux-loader.
 * @module
 */
import { BootError } from '../errors.js';

/** Offsets of setup-header fields, from the start of the image (and of boot_params). */
export const Hdr = {
  SETUP_SECTS: 0x1f1,
  SYSSIZE: 0x1f4,
  VID_MODE: 0x1fa,
  BOOT_FLAG: 0x1fe,
  JUMP: 0x200,
  HEADER: 0x202,
  VERSION: 0x206,
  KERNEL_VERSION: 0x20e,
  TYPE_OF_LOADER: 0x210,
  LOADFLAGS: 0x211,
  CODE32_START: 0x214,
  RAMDISK_IMAGE: 0x218,
  RAMDISK_SIZE: 0x21c,
  HEAP_END_PTR: 0x224,
  CMD_LINE_PTR: 0x228,
  INITRD_ADDR_MAX: 0x22c,
  KERNEL_ALIGNMENT: 0x230,
  RELOCATABLE_KERNEL: 0x234,
  XLOADFLAGS: 0x236,
  CMDLINE_SIZE: 0x238,
  PREF_ADDRESS: 0x258,
  INIT_SIZE: 0x260,
} as const;

export const BOOT_FLAG = 0xaa55;
/** "HdrS" */
export const HDRS_MAGIC = 0x53726448;
/** loadflags bits. */
export const LOADED_HIGH = 0x01;
export const CAN_USE_HEAP = 0x80;
/** The oldest protocol with everything this loader relies on (initrd_addr_max, 32-bit entry). */
export const MIN_PROTOCOL = 0x0204;

/** A parsed bzImage. */
export interface BzImage {
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  version: number;
  /** The kernel's version string, when the header points at one. */
  kernelVersion: string;
  /** 512-byte sectors of real-mode setup code after the boot sector. */
  setupSects: number;
  /** The setup header's bytes (from 0x1f1 to the end of the header), copied into boot_params. */
  header: Uint8Array;
  /** The protected-mode kernel, loaded at `code32Start`. */
  kernel: Uint8Array;
  code32Start: number;
  loadflags: number;
  /** Highest address the initrd may end at (inclusive). */
  initrdAddrMax: number;
  /** Longest command line, without the terminating NUL. */
  cmdlineSize: number;
  /** Memory the kernel needs from its load address while it decompresses and starts. */
  initSize: number;
  relocatable: boolean;
}

const u16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

/** Parses and checks a bzImage; throws {@link BootError} naming what is wrong. */
export function parseBzImage(image: Uint8Array, name = 'kernel image'): BzImage {
  if (image.length < 0x264) throw new BootError(`${name} is not a Linux bzImage: only ${image.length} bytes (a setup header needs at least 612)`);
  if (u16(image, Hdr.BOOT_FLAG) !== BOOT_FLAG) throw new BootError(`${name} is not a Linux bzImage: no 0xAA55 boot flag at offset 0x1fe`);
  if (u32(image, Hdr.HEADER) !== HDRS_MAGIC) throw new BootError(`${name} is not a Linux bzImage: no "HdrS" signature at offset 0x202 (a pre-2.0 zImage or not a kernel)`);
  const version = u16(image, Hdr.VERSION);
  const vs = `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
  if (version < MIN_PROTOCOL) throw new BootError(`${name} uses boot protocol ${vs}; kvmts needs 2.04 or later`);
  const loadflags = image[Hdr.LOADFLAGS]!;
  if ((loadflags & LOADED_HIGH) === 0) throw new BootError(`${name} is a zImage (loaded low); kvmts boots bzImages (LOADED_HIGH)`);
  let setupSects = image[Hdr.SETUP_SECTS]!;
  if (setupSects === 0) setupSects = 4; // the protocol's rule for very old images
  const kernelOffset = (setupSects + 1) * 512;
  if (kernelOffset >= image.length) throw new BootError(`${name} is truncated: setup_sects=${setupSects} puts the kernel at ${kernelOffset}, past the end of the ${image.length}-byte file`);
  const syssize = u32(image, Hdr.SYSSIZE);
  const kernel = image.subarray(kernelOffset);
  if (syssize !== 0 && syssize * 16 > kernel.length + 15) {
    throw new BootError(`${name} is truncated: the header says the kernel is ${syssize * 16} bytes, the file holds ${kernel.length}`);
  }
  // The header runs from 0x1f1 to 0x202 + the byte at 0x201 (the jump's offset).
  const headerEnd = Math.min(0x202 + image[0x201]!, image.length);
  let kernelVersion = '';
  const kvOff = u16(image, Hdr.KERNEL_VERSION);
  if (kvOff !== 0 && kvOff + 0x200 < image.length) {
    const start = kvOff + 0x200;
    let end = start;
    while (end < image.length && end - start < 256 && image[end] !== 0) end++;
    kernelVersion = new TextDecoder().decode(image.subarray(start, end));
  }
  return {
    version,
    kernelVersion,
    setupSects,
    header: image.slice(Hdr.SETUP_SECTS, headerEnd),
    kernel,
    code32Start: u32(image, Hdr.CODE32_START) || 0x100000,
    loadflags,
    initrdAddrMax: version >= 0x0203 ? u32(image, Hdr.INITRD_ADDR_MAX) : 0x37ffffff,
    cmdlineSize: version >= 0x0206 ? u32(image, Hdr.CMDLINE_SIZE) : 255,
    initSize: version >= 0x020a ? u32(image, Hdr.INIT_SIZE) : kernel.length * 4,
    relocatable: version >= 0x0205 && image[Hdr.RELOCATABLE_KERNEL] !== 0,
  };
}
