/**
 * Where the BIOS keeps things: the ROM and its fixed entry points, the BIOS data area (BDA),
 * the EBDA, and the private port the ROM's stubs use to call into the VMM.
 * @module
 */

/** The private I/O port every ROM stub writes to: the VMM runs the service, then the stub returns. */
export const BIOS_CALL_PORT = 0xe2;

/** The ROM occupies the last 64 KiB below 1 MiB (segment F000)... */
export const BIOS_ROM_BASE = 0xf0000;
export const BIOS_ROM_SIZE = 0x10000;
export const BIOS_ROM_SEGMENT = 0xf000;
/** ...and is aliased at the top of the 4 GiB space, where the reset vector is fetched from. */
export const BIOS_ROM_ALIAS = 0xffff0000;

/** Where the RSDP goes: in the 0xE0000–0xFFFFF area that OSes scan for "RSD PTR ". */
export const BIOS_RSDP_ADDRESS = 0xe0000;

/**
 * The IBM PC/AT's fixed ROM entry points (offsets in segment F000). Old software jumps to these
 * directly, so the ROM keeps a jump at each of them, as SeaBIOS does.
 */
export const RomEntry = {
  post: 0xe05b,
  int13: 0xe3fe,
  int19: 0xe6f2,
  configTable: 0xe6f5,
  int16: 0xe82e,
  int09: 0xe987,
  diskettePrams: 0xefc7,
  int10: 0xf065,
  int12: 0xf841,
  int11: 0xf84d,
  int15: 0xf859,
  int1a: 0xfe6e,
  int08: 0xfea5,
  dummyIret: 0xff53,
  resetVector: 0xfff0,
  releaseDate: 0xfff5,
  modelByte: 0xfffe,
} as const;

/** The PC/AT model byte (in the ROM at F000:FFFE and in the INT 15h C0h configuration table). */
export const MODEL_BYTE = 0xfc;

/** Segment of the extended BIOS data area (1 KiB at 0x9FC00). */
export const EBDA_SEGMENT = 0x9fc0;
/** Conventional memory reported by INT 12h, in KiB (everything below the EBDA). */
export const BASE_MEMORY_KB = 639;

/** Where a boot sector is loaded and entered. */
export const BOOT_SECTOR_ADDRESS = 0x7c00;
/** The stack the BIOS gives the boot sector: SS:SP = 0000:7C00, growing down below it. */
export const BOOT_STACK_TOP = 0x7c00;

/** VGA colour text memory. */
export const VGA_TEXT_BASE = 0xb8000;
export const TEXT_COLUMNS = 80;
export const TEXT_ROWS = 25;
export const TEXT_PAGE_BYTES = 0x1000;
export const TEXT_PAGES = 8;

/** Offsets in the BIOS data area (segment 0x40, linear 0x400 + offset). */
export const Bda = {
  base: 0x400,
  com1: 0x400,
  lpt1: 0x408,
  ebdaSegment: 0x40e,
  equipment: 0x410,
  memoryKb: 0x413,
  shiftFlags: 0x417,
  shiftFlags2: 0x418,
  kbdHead: 0x41a,
  kbdTail: 0x41c,
  kbdBuffer: 0x41e,
  floppyStatus: 0x441,
  videoMode: 0x449,
  textColumns: 0x44a,
  videoPageSize: 0x44c,
  videoPageStart: 0x44e,
  cursorPositions: 0x450,
  cursorShape: 0x460,
  activePage: 0x462,
  crtcBase: 0x463,
  videoModeControl: 0x465,
  tickCount: 0x46c,
  midnightFlag: 0x470,
  diskStatus: 0x474,
  hardDiskCount: 0x475,
  kbdBufferStart: 0x480,
  kbdBufferEnd: 0x482,
  textRowsMinusOne: 0x484,
  charHeight: 0x485,
  kbdFlags3: 0x496,
} as const;

/** BDA keyboard ring buffer offsets (relative to segment 0x40). */
export const KBD_BUFFER_START = 0x1e;
export const KBD_BUFFER_END = 0x3e;

/** Timer ticks per day at the PIT's 1.193182 MHz / 65536 (what INT 1Ah 00h counts up to). */
export const TICKS_PER_DAY = 0x1800b0;

/** COM1, the console. */
export const COM1_PORT = 0x3f8;
