/**
 * Building side of Multiboot (version 1): the Multiboot information structure the kernel finds
 * at EBX, with the memory sizes, command line, modules, memory map and boot loader name, all
 * in one block whose pointers are resolved for the block's guest address.
 * @module
 */
import { E820Type, HIGH_MEMORY_START, LOW_RESERVED_START, type E820Entry } from '../e820.js';
import { BootError } from '../errors.js';

/** EAX at the kernel's entry: proof that a Multiboot loader started it. */
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;

/** Bits of the info structure's `flags`: which fields are valid (section 3.3). */
export const MultibootInfoFlag = {
  MEMORY: 1 << 0,
  BOOT_DEVICE: 1 << 1,
  CMDLINE: 1 << 2,
  MODS: 1 << 3,
  AOUT_SYMS: 1 << 4,
  ELF_SECTIONS: 1 << 5,
  MMAP: 1 << 6,
  DRIVES: 1 << 7,
  CONFIG_TABLE: 1 << 8,
  BOOT_LOADER_NAME: 1 << 9,
  APM_TABLE: 1 << 10,
  VBE: 1 << 11,
} as const;

/** Field offsets of the info structure. */
export const MbInfo = {
  FLAGS: 0,
  MEM_LOWER: 4,
  MEM_UPPER: 8,
  BOOT_DEVICE: 12,
  CMDLINE: 16,
  MODS_COUNT: 20,
  MODS_ADDR: 24,
  MMAP_LENGTH: 44,
  MMAP_ADDR: 48,
  BOOT_LOADER_NAME: 64,
  /** Up to and including the VBE fields (all this loader writes or zeroes). */
  SIZE: 88,
} as const;

/** A module entry: mod_start, mod_end (exclusive), string, reserved. */
export const MODULE_ENTRY_SIZE = 16;
/** A memory map entry: size (of the rest: 20), base_addr (u64), length (u64), type. */
export const MMAP_ENTRY_SIZE = 24;

export const DEFAULT_BOOT_LOADER_NAME = 'kvmts';

/** A module already in guest memory. */
export interface PlacedModule {
  start: number;
  /** One past the last byte. */
  end: number;
  /** Its string (conventionally the file name and arguments). */
  string: string;
}

export interface MultibootInfoOptions {
  /** Guest address the block will be written at (8-byte aligned). */
  address: number;
  cmdline: string;
  modules: readonly PlacedModule[];
  e820: readonly E820Entry[];
  bootLoaderName?: string;
}

export interface MultibootInfo {
  /** The block: the info structure first, then the module list, the memory map and the strings. */
  bytes: Uint8Array;
  /** Guest address of the info structure (= the block's), for EBX. */
  infoAddress: number;
  memLowerKiB: number;
  memUpperKiB: number;
}

const encoder = new TextEncoder();

function setU64(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, v % 0x1_0000_0000, true);
  dv.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
}

/**
 * mem_lower: KiB of RAM from address 0 (at most 640); mem_upper: KiB of RAM from 1 MiB up to
 * the first hole, as the spec defines them.
 */
export function multibootMemorySizes(e820: readonly E820Entry[]): { lowerKiB: number; upperKiB: number } {
  const ram = e820.filter((e) => e.type === E820Type.Ram);
  const low = ram.find((e) => e.addr === 0);
  const high = ram.find((e) => e.addr === HIGH_MEMORY_START);
  return {
    lowerKiB: low ? Math.floor(Math.min(low.size, LOW_RESERVED_START) / 1024) : 0,
    upperKiB: high ? Math.floor(Math.min(high.size, 0x1_0000_0000 - HIGH_MEMORY_START) / 1024) : 0,
  };
}

/** Size of the block {@link buildMultibootInfo} makes, to find room for it first. */
export function multibootInfoSize(o: Omit<MultibootInfoOptions, 'address'>): number {
  const strings = [o.cmdline, ...o.modules.map((m) => m.string), o.bootLoaderName ?? DEFAULT_BOOT_LOADER_NAME];
  return MbInfo.SIZE + o.modules.length * MODULE_ENTRY_SIZE + o.e820.length * MMAP_ENTRY_SIZE +
    strings.reduce((n, s) => n + encoder.encode(s).length + 1, 0);
}

/** Builds the info structure with everything it points to, for guest address `address`. */
export function buildMultibootInfo(o: MultibootInfoOptions): MultibootInfo {
  if (!Number.isInteger(o.address) || o.address % 8 !== 0) throw new BootError(`Multiboot info address 0x${o.address.toString(16)} is not 8-byte aligned`);
  const size = multibootInfoSize(o);
  if (o.address + size > 0x1_0000_0000) throw new BootError('the Multiboot information does not fit below 4 GiB');
  const bytes = new Uint8Array(size);
  const dv = new DataView(bytes.buffer);
  let at = MbInfo.SIZE;
  const take = (n: number): number => {
    const off = at;
    at += n;
    return off;
  };
  const putString = (s: string): number => {
    const b = encoder.encode(s);
    const off = take(b.length + 1);
    bytes.set(b, off); // NUL already there
    return o.address + off;
  };

  const modsOffset = take(o.modules.length * MODULE_ENTRY_SIZE);
  const mmapOffset = take(o.e820.length * MMAP_ENTRY_SIZE);
  const { lowerKiB, upperKiB } = multibootMemorySizes(o.e820);
  dv.setUint32(MbInfo.MEM_LOWER, lowerKiB, true);
  dv.setUint32(MbInfo.MEM_UPPER, upperKiB, true);
  dv.setUint32(MbInfo.CMDLINE, putString(o.cmdline), true);
  dv.setUint32(MbInfo.MODS_COUNT, o.modules.length, true);
  dv.setUint32(MbInfo.MODS_ADDR, o.address + modsOffset, true);
  o.modules.forEach((m, i) => {
    const e = modsOffset + i * MODULE_ENTRY_SIZE;
    dv.setUint32(e, m.start, true);
    dv.setUint32(e + 4, m.end, true);
    dv.setUint32(e + 8, putString(m.string), true);
  });
  // mmap_addr points at the first entry's size field; each size counts the bytes after it.
  o.e820.forEach((r, i) => {
    const e = mmapOffset + i * MMAP_ENTRY_SIZE;
    dv.setUint32(e, MMAP_ENTRY_SIZE - 4, true);
    setU64(dv, e + 4, r.addr);
    setU64(dv, e + 12, r.size);
    dv.setUint32(e + 20, r.type, true);
  });
  dv.setUint32(MbInfo.MMAP_LENGTH, o.e820.length * MMAP_ENTRY_SIZE, true);
  dv.setUint32(MbInfo.MMAP_ADDR, o.address + mmapOffset, true);
  dv.setUint32(MbInfo.BOOT_LOADER_NAME, putString(o.bootLoaderName ?? DEFAULT_BOOT_LOADER_NAME), true);
  const F = MultibootInfoFlag;
  dv.setUint32(MbInfo.FLAGS, F.MEMORY | F.CMDLINE | F.MODS | F.MMAP | F.BOOT_LOADER_NAME, true);
  return { bytes, infoAddress: o.address, memLowerKiB: lowerKiB, memUpperKiB: upperKiB };
}
