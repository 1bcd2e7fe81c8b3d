/**
 * The kvmts migration stream, format version 1. All integers are big-endian.
 *
 * ```
 * header   "KVMTSMIG" (8 bytes) | u32 format version
 * section  u8 type | u32 payload length | payload | u32 CRC-32 of (type, length, payload)
 * ```
 *
 * A stream is the header, then one CONFIG section, any number of RAM and ROUND sections, one
 * STATE section, and END. On a live-migration connection the destination answers with ACK or
 * ERROR, and the source then sends COMMIT (or ABANDON).
 *
 * RAM payload: a sequence of records `u8 kind | u8 slot | u32 first page | u32 page count | data`:
 * - `ZERO`: the pages are all zero; no data.
 * - `RAW`: `count * 4096` bytes.
 * - `XBZRLE`: one page, `u32 length | delta` against the copy of the page sent before
 *   (see {@link ./xbzrle.ts}).
 * - `DEFLATE`: `u32 length | raw deflate` of `count * 4096` bytes.
 * @module
 */

/** The 8 magic bytes that open every stream. */
export const MAGIC = new Uint8Array([0x4b, 0x56, 0x4d, 0x54, 0x53, 0x4d, 0x49, 0x47]); // "KVMTSMIG"
/** The format version this build writes and reads. */
export const FORMAT_VERSION = 1;
/** Magic plus version. */
export const HEADER_SIZE = 12;
/** Type, length, CRC. */
export const FRAME_OVERHEAD = 9;
/** Largest payload a reader accepts (a corrupt length must not make it buffer gigabytes). */
export const MAX_SECTION_BYTES = 64 << 20;
/** The guest page size. */
export const PAGE_SIZE = 4096;

/** Section types. */
export const Section = {
  /** JSON {@link MachineConfig}. */
  Config: 1,
  /** Page records. */
  Ram: 2,
  /** JSON machine state: VM, vCPUs, devices. */
  State: 3,
  /** JSON `{ round }`: the end of a pre-copy round (informational). */
  Round: 4,
  /** JSON `{ sections, pages }`: what came before, for a last consistency check. */
  End: 5,
  /** Destination → source, JSON `{ ok: true }`: everything loaded; waiting for COMMIT. */
  Ack: 0x10,
  /** Destination → source, JSON `{ message }`: the destination gave up and discarded everything. */
  Error: 0x11,
  /** Source → destination, JSON `{}`: the source has stopped; the destination may run. */
  Commit: 0x12,
  /** Source → destination, JSON `{ reason }`: the source gave up; discard everything. */
  Abandon: 0x13,
} as const;
export type SectionType = (typeof Section)[keyof typeof Section];

const NAMES: Record<number, string> = {
  1: 'CONFIG', 2: 'RAM', 3: 'STATE', 4: 'ROUND', 5: 'END', 0x10: 'ACK', 0x11: 'ERROR', 0x12: 'COMMIT', 0x13: 'ABANDON',
};

/** A section type's name for messages (`0x7f` for unknown ones). */
export function sectionName(type: number): string {
  return NAMES[type] ?? `0x${type.toString(16)}`;
}

/** Whether `type` is a known section type. */
export function isSectionType(type: number): type is SectionType {
  return NAMES[type] !== undefined;
}

/** RAM record kinds. */
export const PageKind = {
  Zero: 0,
  Raw: 1,
  Xbzrle: 2,
  Deflate: 3,
} as const;
/** Bytes before a RAM record's data. */
export const RECORD_HEADER = 10;

/** One section as read. */
export interface Frame {
  type: SectionType;
  payload: Uint8Array;
  /** Byte offset of the section in the stream (for messages). */
  offset: number;
  /** 0-based index among the stream's sections. */
  index: number;
}
