/**
 * Loading side of Multiboot (version 1, spec 0.6.96): find and check the Multiboot header of
 * an OS image, and work out which bytes go where, from the ELF program headers or, when the
 * header's flag bit 16 asks for it, from the header's own address fields ("a.out kludge").
 * Building the Multiboot information structure is separate (info.ts), as for Linux.
 * @module
 */
import { BootError } from '../errors.js';

/** The magic at the start of the Multiboot header. */
export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
/** The header must lie 4-byte aligned within this many bytes from the start of the image. */
export const MULTIBOOT_SEARCH_LIMIT = 8192;

/** Header flags (section 3.1.2). Bits 0-15 are requirements, bits 16-31 optional features. */
export const MultibootHeaderFlag = {
  /** Load modules on 4 KiB boundaries. */
  PAGE_ALIGN: 1 << 0,
  /** Provide mem_lower/mem_upper (and the memory map if there is one). */
  MEMORY_INFO: 1 << 1,
  /** Provide the video mode table. */
  VIDEO_MODE: 1 << 2,
  /** The header's address fields say where to load the image (the "a.out kludge"). */
  ADDRESS_FIELDS: 1 << 16,
} as const;
/** The requirement bits this loader can honour (video mode: see {@link MultibootImage.warnings}). */
const UNDERSTOOD_REQUIREMENTS = MultibootHeaderFlag.PAGE_ALIGN | MultibootHeaderFlag.MEMORY_INFO | MultibootHeaderFlag.VIDEO_MODE;
const REQUIREMENT_BITS = 0xffff;

/** Header field offsets (section 3.1.1). */
export const MbHdr = {
  MAGIC: 0, FLAGS: 4, CHECKSUM: 8, HEADER_ADDR: 12, LOAD_ADDR: 16, LOAD_END_ADDR: 20, BSS_END_ADDR: 24, ENTRY_ADDR: 28,
  /** Size up to the end of the address fields. */
  SIZE_WITH_ADDRESSES: 32,
} as const;

/** A span of the image to copy to guest memory, followed by zeroes up to `memSize`. */
export interface MultibootSegment {
  /** Guest-physical load address. */
  addr: number;
  /** The bytes from the file (a view into the image). */
  data: Uint8Array;
  /** Bytes in memory, at least `data.length`; the rest is zeroed (bss). */
  memSize: number;
}

export interface MultibootImage {
  /** Offset of the Multiboot header in the file. */
  headerOffset: number;
  flags: number;
  format: 'elf' | 'aout-kludge';
  segments: MultibootSegment[];
  /** Guest-physical entry point. */
  entry: number;
  /** Lowest and one past the highest address the kernel occupies (bss included). */
  start: number;
  end: number;
  /** Requests the loader ignores, for the user to see (e.g. a video mode). */
  warnings: string[];
}

const u16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
const hex = (v: number) => `0x${(v >>> 0).toString(16)}`;

/**
 * Where the Multiboot header is: the first 4-byte-aligned magic in the first 8 KiB whose
 * checksum is right, else the first magic at all (`checksumOk` false), else undefined.
 */
export function findMultibootHeader(image: Uint8Array): { offset: number; checksumOk: boolean } | undefined {
  let firstBad: number | undefined;
  const limit = Math.min(image.length, MULTIBOOT_SEARCH_LIMIT) - 12;
  for (let off = 0; off <= limit; off += 4) {
    if (u32(image, off) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = u32(image, off + MbHdr.FLAGS);
    const checksum = u32(image, off + MbHdr.CHECKSUM);
    if (((MULTIBOOT_HEADER_MAGIC + flags + checksum) >>> 0) === 0) return { offset: off, checksumOk: true };
    firstBad ??= off;
  }
  return firstBad === undefined ? undefined : { offset: firstBad, checksumOk: false };
}

/** True if `image` carries a Multiboot header (even one with a wrong checksum, which {@link parseMultiboot} then reports). */
export function isMultiboot(image: Uint8Array): boolean {
  return findMultibootHeader(image) !== undefined;
}

/** Parses and checks a Multiboot kernel; throws {@link BootError} naming what is wrong. */
export function parseMultiboot(image: Uint8Array, name = 'kernel image'): MultibootImage {
  const found = findMultibootHeader(image);
  if (found === undefined) throw new BootError(`${name} is not a Multiboot kernel: no header magic 0x1badb002 in its first ${MULTIBOOT_SEARCH_LIMIT} bytes`);
  const at = found.offset;
  const flags = u32(image, at + MbHdr.FLAGS);
  if (!found.checksumOk) {
    const checksum = u32(image, at + MbHdr.CHECKSUM);
    throw new BootError(`${name}: the Multiboot header at offset ${hex(at)} has a wrong checksum (${hex(checksum)}, expected ${hex(-(MULTIBOOT_HEADER_MAGIC + flags))})`);
  }
  const unknown = flags & REQUIREMENT_BITS & ~UNDERSTOOD_REQUIREMENTS;
  if (unknown !== 0) {
    throw new BootError(`${name} requires Multiboot features kvmts does not know (header flag bits ${hex(unknown)}); refusing to boot it`);
  }
  const warnings: string[] = [];
  if (flags & MultibootHeaderFlag.VIDEO_MODE) warnings.push(`${name} asks for a video mode; kvmts has no graphics and leaves the video fields out`);

  const layout = flags & MultibootHeaderFlag.ADDRESS_FIELDS ? aoutKludge(image, at, name) : elf(image, name);
  if (layout.segments.length === 0) throw new BootError(`${name} has nothing to load (no loadable ELF segments)`);
  const start = Math.min(...layout.segments.map((s) => s.addr));
  const end = Math.max(...layout.segments.map((s) => s.addr + s.memSize));
  if (end > 0x1_0000_0000) throw new BootError(`${name} ends at ${hex(end)}, beyond 4 GiB`);
  return { headerOffset: at, flags, ...layout, start, end, warnings };
}

/** Layout from the header's address fields (flag bit 16). */
function aoutKludge(image: Uint8Array, at: number, name: string): Pick<MultibootImage, 'format' | 'segments' | 'entry'> {
  if (at + MbHdr.SIZE_WITH_ADDRESSES > image.length) throw new BootError(`${name} is truncated: the Multiboot header's address fields run past the end of the file`);
  const headerAddr = u32(image, at + MbHdr.HEADER_ADDR);
  const loadAddr = u32(image, at + MbHdr.LOAD_ADDR);
  const loadEndAddr = u32(image, at + MbHdr.LOAD_END_ADDR);
  const bssEndAddr = u32(image, at + MbHdr.BSS_END_ADDR);
  const entry = u32(image, at + MbHdr.ENTRY_ADDR);
  // The file offset of load_addr: the header sits (header_addr - load_addr) bytes into the text.
  if (headerAddr < loadAddr || headerAddr - loadAddr > at) {
    throw new BootError(`${name}: the Multiboot header says it is loaded at ${hex(headerAddr)}, which does not fit load_addr ${hex(loadAddr)} and its file offset ${hex(at)}`);
  }
  const fileOffset = at - (headerAddr - loadAddr);
  let loadSize: number;
  if (loadEndAddr === 0) loadSize = image.length - fileOffset;
  else {
    if (loadEndAddr < loadAddr) throw new BootError(`${name}: Multiboot load_end_addr ${hex(loadEndAddr)} is below load_addr ${hex(loadAddr)}`);
    loadSize = loadEndAddr - loadAddr;
    if (fileOffset + loadSize > image.length) {
      throw new BootError(`${name} is truncated: the Multiboot header asks for ${loadSize} bytes from offset ${hex(fileOffset)}, the file has ${image.length - fileOffset}`);
    }
  }
  const loadEnd = loadAddr + loadSize;
  if (bssEndAddr !== 0 && bssEndAddr < loadEnd) throw new BootError(`${name}: Multiboot bss_end_addr ${hex(bssEndAddr)} is below the end of the loaded image ${hex(loadEnd)}`);
  const memSize = bssEndAddr === 0 ? loadSize : bssEndAddr - loadAddr;
  if (entry < loadAddr || entry >= loadEnd) throw new BootError(`${name}: the Multiboot entry point ${hex(entry)} is outside the loaded image ${hex(loadAddr)}-${hex(loadEnd)}`);
  return { format: 'aout-kludge', segments: [{ addr: loadAddr, data: image.subarray(fileOffset, fileOffset + loadSize), memSize }], entry };
}

const ELF_MAGIC = 0x464c457f; // "\x7fELF"
const ELFCLASS32 = 1;
const ELFDATA2LSB = 1;
const ET_EXEC = 2;
const EM_386 = 3;
const PT_LOAD = 1;
const ELF_HEADER_SIZE = 52;
const PHDR_SIZE = 32;

/** Layout from an ELF32 i386 executable's PT_LOAD program headers, at their physical addresses. */
function elf(image: Uint8Array, name: string): Pick<MultibootImage, 'format' | 'segments' | 'entry'> {
  if (image.length < 4 || u32(image, 0) !== ELF_MAGIC) {
    throw new BootError(`${name} is neither an ELF file nor a Multiboot kernel with load addresses in its header (flag bit 16)`);
  }
  if (image.length < ELF_HEADER_SIZE) throw new BootError(`${name} is truncated: ${image.length} bytes, an ELF header needs ${ELF_HEADER_SIZE}`);
  if (image[4] !== ELFCLASS32) throw new BootError(`${name} is a ${image[4] === 2 ? '64-bit' : 'non-32-bit'} ELF file; Multiboot loads 32-bit (ELFCLASS32) i386 kernels`);
  if (image[5] !== ELFDATA2LSB) throw new BootError(`${name} is a big-endian ELF file; Multiboot loads little-endian i386 kernels`);
  const machine = u16(image, 18);
  if (machine !== EM_386) throw new BootError(`${name} is an ELF file for machine ${machine}, not i386 (EM_386 = 3)`);
  const type = u16(image, 16);
  if (type !== ET_EXEC) throw new BootError(`${name} is an ELF file of type ${type}, not an executable (ET_EXEC)`);
  const entry = u32(image, 24);
  const phoff = u32(image, 28);
  const phentsize = u16(image, 42);
  const phnum = u16(image, 44);
  if (phentsize < PHDR_SIZE && phnum > 0) throw new BootError(`${name}: ELF program headers of ${phentsize} bytes (at least ${PHDR_SIZE} expected)`);
  if (phoff + phnum * phentsize > image.length) throw new BootError(`${name} is truncated: its ${phnum} ELF program headers run past the end of the file`);
  const segments: MultibootSegment[] = [];
  let physicalEntry = entry;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (u32(image, ph) !== PT_LOAD) continue;
    const offset = u32(image, ph + 4);
    const vaddr = u32(image, ph + 8);
    const paddr = u32(image, ph + 12);
    const filesz = u32(image, ph + 16);
    const memsz = u32(image, ph + 20);
    if (memsz === 0) continue;
    if (filesz > memsz) throw new BootError(`${name}: ELF segment ${i} has more file bytes (${filesz}) than memory bytes (${memsz})`);
    if (offset + filesz > image.length) throw new BootError(`${name} is truncated: ELF segment ${i} needs bytes up to offset ${hex(offset + filesz)}, the file has ${image.length}`);
    segments.push({ addr: paddr, data: image.subarray(offset, offset + filesz), memSize: memsz });
    // A kernel linked high but loaded low gives a virtual e_entry: translate it like its segment.
    if (vaddr !== paddr && entry >= vaddr && entry - vaddr < memsz) physicalEntry = (entry - vaddr + paddr) >>> 0;
  }
  if (!segments.some((s) => physicalEntry >= s.addr && physicalEntry < s.addr + s.memSize)) {
    throw new BootError(`${name}: the ELF entry point ${hex(entry)} is in none of its loadable segments`);
  }
  return { format: 'elf', segments, entry: physicalEntry };
}
