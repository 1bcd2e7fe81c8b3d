/**
 * A small encoder for ACPI Machine Language (ACPI 6.x chapter 20, "ACPI Machine Language
 * Specification"), enough for a static DSDT: names, scopes, devices, methods returning
 * constants, data objects, and resource templates (section 6.4).
 *
 * Every function returns the encoded bytes of one AML term, so terms compose by passing the
 * results of one call into another.
 * @module
 */

/** Encoded AML bytes. */
export type Aml = Uint8Array;

// Opcodes (ACPI 6.x section 20.3).
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const ONES_OP = 0xff;
const NAME_OP = 0x08;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const VAR_PACKAGE_OP = 0x13;
const METHOD_OP = 0x14;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82; // after ExtOpPrefix
const ROOT_CHAR = 0x5c; // '\'
const PARENT_PREFIX_CHAR = 0x5e; // '^'
const RETURN_OP = 0xa4;

/** Concatenates byte arrays. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A NameSeg: four characters, the first A–Z or '_', the rest A–Z, 0–9 or '_'. Shorter names
 * are padded with '_' (as ASL does: `_S5` is `_S5_`).
 */
export function nameSeg(seg: string): Aml {
  if (seg.length < 1 || seg.length > 4) throw new RangeError(`AML NameSeg "${seg}" must be 1 to 4 characters`);
  const s = seg.padEnd(4, '_');
  if (!/^[A-Z_][A-Z0-9_]{3}$/.test(s)) throw new RangeError(`AML NameSeg "${seg}" has characters other than A-Z, 0-9 and _ (or starts with a digit)`);
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/**
 * A NameString: an optional root prefix `\` or parent prefixes `^`, then dot-separated
 * NameSegs (`\_SB.PCI0`, `^^FOO`, `_S5`). No segments encodes NullName (0x00).
 */
export function namePath(path: string): Aml {
  let i = 0;
  const prefix: number[] = [];
  if (path.startsWith('\\')) {
    prefix.push(ROOT_CHAR);
    i = 1;
  } else {
    while (path[i] === '^') {
      prefix.push(PARENT_PREFIX_CHAR);
      i++;
    }
  }
  const rest = path.slice(i);
  const segs = rest === '' ? [] : rest.split('.').map(nameSeg);
  let body: Aml;
  if (segs.length === 0) body = Uint8Array.of(0x00);
  else if (segs.length === 1) body = segs[0]!;
  else if (segs.length === 2) body = concat(Uint8Array.of(DUAL_NAME_PREFIX), ...segs);
  else if (segs.length <= 255) body = concat(Uint8Array.of(MULTI_NAME_PREFIX, segs.length), ...segs);
  else throw new RangeError(`AML name "${path}" has more than 255 segments`);
  return concat(Uint8Array.from(prefix), body);
}

/**
 * PkgLength for `contentLength` bytes that follow it. The encoded length counts the PkgLength
 * bytes themselves: one byte holds up to 63; otherwise the lead byte's bits 7:6 give the
 * count of following bytes (1–3), its bits 3:0 the low nibble, and the following bytes the
 * rest, least significant first (at most 2^28 − 1 in all).
 */
export function pkgLength(contentLength: number): Aml {
  if (!Number.isInteger(contentLength) || contentLength < 0) throw new RangeError(`AML PkgLength ${String(contentLength)} is not a byte count`);
  if (contentLength + 1 <= 0x3f) return Uint8Array.of(contentLength + 1);
  for (let n = 2; n <= 4; n++) {
    const total = contentLength + n;
    if (total < 2 ** (4 + 8 * (n - 1))) {
      const out = new Uint8Array(n);
      out[0] = ((n - 1) << 6) | (total & 0x0f);
      for (let k = 1; k < n; k++) out[k] = Math.floor(total / 2 ** (4 + 8 * (k - 1))) & 0xff;
      return out;
    }
  }
  throw new RangeError(`AML PkgLength ${contentLength} exceeds 2^28 - 1`);
}

/** `content` preceded by its PkgLength. */
function withPkgLength(content: Uint8Array): Aml {
  return concat(pkgLength(content.length), content);
}

/** ZeroOp, OneOp and OnesOp (all bits set: 64 bits in a revision-2 table). */
export const Zero: Aml = Uint8Array.of(ZERO_OP);
export const One: Aml = Uint8Array.of(ONE_OP);
export const Ones: Aml = Uint8Array.of(ONES_OP);

function checkInt(v: number | bigint, max: bigint, what: string): bigint {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new RangeError(`AML ${what} ${String(v)} is not an exact integer`);
  const b = BigInt(v);
  if (b < 0n || b > max) throw new RangeError(`AML ${what} ${String(v)} is out of range`);
  return b;
}

function le(prefix: number, v: bigint, bytes: number): Aml {
  const out = new Uint8Array(1 + bytes);
  out[0] = prefix;
  for (let i = 0; i < bytes; i++) out[1 + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** ByteConst: 0x0A then one byte. */
export function byteConst(v: number): Aml {
  return le(BYTE_PREFIX, checkInt(v, 0xffn, 'ByteConst'), 1);
}
/** WordConst: 0x0B then two bytes, little-endian. */
export function wordConst(v: number): Aml {
  return le(WORD_PREFIX, checkInt(v, 0xffffn, 'WordConst'), 2);
}
/** DWordConst: 0x0C then four bytes, little-endian. */
export function dwordConst(v: number): Aml {
  return le(DWORD_PREFIX, checkInt(v, 0xffff_ffffn, 'DWordConst'), 4);
}
/** QWordConst: 0x0E then eight bytes, little-endian. */
export function qwordConst(v: number | bigint): Aml {
  return le(QWORD_PREFIX, checkInt(v, 0xffff_ffff_ffff_ffffn, 'QWordConst'), 8);
}

/** An integer in its shortest encoding: Zero, One, then Byte/Word/DWord/QWord constants. */
export function integer(v: number | bigint): Aml {
  const b = checkInt(v, 0xffff_ffff_ffff_ffffn, 'integer');
  if (b === 0n) return Zero;
  if (b === 1n) return One;
  if (b <= 0xffn) return le(BYTE_PREFIX, b, 1);
  if (b <= 0xffffn) return le(WORD_PREFIX, b, 2);
  if (b <= 0xffff_ffffn) return le(DWORD_PREFIX, b, 4);
  return le(QWORD_PREFIX, b, 8);
}

/** A String: 0x0D, ASCII characters (0x01–0x7F), NUL. */
export function string(s: string): Aml {
  const out = new Uint8Array(s.length + 2);
  out[0] = STRING_PREFIX;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 1 || c > 0x7f) throw new RangeError(`AML String "${s}" has a character outside 0x01-0x7F`);
    out[1 + i] = c;
  }
  return out;
}

/** Buffer(){bytes}: 0x11 PkgLength BufferSize(integer) bytes. */
export function buffer(bytes: Uint8Array): Aml {
  return concat(Uint8Array.of(BUFFER_OP), withPkgLength(concat(integer(bytes.length), bytes)));
}

/**
 * Package(){elements}: 0x12 PkgLength NumElements elements. Each element must already be
 * encoded (a data object or a NameString). More than 255 elements use VarPackage (0x13).
 */
export function pkg(...elements: readonly Aml[]): Aml {
  if (elements.length <= 255) return concat(Uint8Array.of(PACKAGE_OP), withPkgLength(concat(Uint8Array.of(elements.length), ...elements)));
  return concat(Uint8Array.of(VAR_PACKAGE_OP), withPkgLength(concat(integer(elements.length), ...elements)));
}

/** Name(path, value): 0x08 NameString DataRefObject. */
export function name(path: string, value: Aml): Aml {
  return concat(Uint8Array.of(NAME_OP), namePath(path), value);
}

/** Scope(path){terms}: 0x10 PkgLength NameString TermList. */
export function scope(path: string, ...terms: readonly Aml[]): Aml {
  return concat(Uint8Array.of(SCOPE_OP), withPkgLength(concat(namePath(path), ...terms)));
}

/** Device(path){terms}: 0x5B 0x82 PkgLength NameString TermList. */
export function device(path: string, ...terms: readonly Aml[]): Aml {
  return concat(Uint8Array.of(EXT_OP_PREFIX, DEVICE_OP), withPkgLength(concat(namePath(path), ...terms)));
}

/** Method flags: argument count 0–7, Serialized, and SyncLevel 0–15. */
export interface MethodFlags {
  args?: number;
  serialized?: boolean;
  syncLevel?: number;
}

/** Method(path, args, Serialized?){terms}: 0x14 PkgLength NameString MethodFlags TermList. */
export function method(path: string, flags: MethodFlags, ...terms: readonly Aml[]): Aml {
  const args = flags.args ?? 0;
  const sync = flags.syncLevel ?? 0;
  if (!Number.isInteger(args) || args < 0 || args > 7) throw new RangeError(`AML Method ${path}: ${String(args)} arguments (0-7 allowed)`);
  if (!Number.isInteger(sync) || sync < 0 || sync > 15) throw new RangeError(`AML Method ${path}: SyncLevel ${String(sync)} (0-15 allowed)`);
  const f = args | (flags.serialized ? 0x08 : 0) | (sync << 4);
  return concat(Uint8Array.of(METHOD_OP), withPkgLength(concat(namePath(path), Uint8Array.of(f), ...terms)));
}

/** Return(value): 0xA4 then the term. */
export function ret(value: Aml): Aml {
  return concat(Uint8Array.of(RETURN_OP), value);
}

/**
 * The 32-bit compressed EISA ID of a PNP ID such as "PNP0A03": three letters of five bits
 * each (letter − 0x40) in the first two bytes, big-endian, then the four hex digits as two
 * bytes. Read as a little-endian DWord, "PNP0A03" is 0x030AD041.
 */
export function eisaId(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`EISA ID "${id}" is not three capital letters and four hex digits`);
  const l = [0, 1, 2].map((i) => id.charCodeAt(i) - 0x40);
  const vendor = (l[0]! << 10) | (l[1]! << 5) | l[2]!;
  const product = parseInt(id.slice(3), 16);
  const b = [vendor >> 8, vendor & 0xff, product >> 8, product & 0xff];
  return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
}

/** EISAID("XXXnnnn") as ASL compiles it: always a DWordConst. */
export function eisaIdAml(id: string): Aml {
  return dwordConst(eisaId(id));
}

// ---- Resource descriptors (ACPI 6.x section 6.4) ----

/** Address-space descriptor fields shared by the Word, DWord and QWord forms. */
export interface AddressSpace {
  min: number;
  max: number;
  /** Default max − min + 1. */
  length?: number;
  granularity?: number;
  translation?: number;
  /** ResourceConsumer (true) or ResourceProducer (false, the default: bridge windows). */
  consumer?: boolean;
}

// General flags: bit 0 consumer, bit 1 subtractive decode, bit 2 min fixed, bit 3 max fixed.
function generalFlags(a: AddressSpace): number {
  return (a.consumer ? 0x01 : 0) | 0x04 | 0x08;
}

const RES_MEMORY = 0;
const RES_IO = 1;
const RES_BUS = 2;

/**
 * A Word (16-bit fields, tag 0x88) or DWord (32-bit fields, tag 0x87) Address Space Descriptor:
 * type, general and type-specific flags, then granularity, min, max, translation and length.
 */
function addressDescriptor(bytes: 2 | 4, type: number, typeFlags: number, a: AddressSpace): Aml {
  const out = new Uint8Array(6 + 5 * bytes);
  const dv = new DataView(out.buffer);
  out[0] = bytes === 2 ? 0x88 : 0x87; // large items
  dv.setUint16(1, out.length - 3, true);
  out[3] = type;
  out[4] = generalFlags(a);
  out[5] = typeFlags;
  const len = a.length ?? a.max - a.min + 1;
  const max = bytes === 2 ? 0xffff : 0xffff_ffff;
  const fields = [['granularity', a.granularity ?? 0], ['min', a.min], ['max', a.max], ['translation', a.translation ?? 0], ['length', len]] as const;
  fields.forEach(([what, v], i) => {
    if (!Number.isInteger(v) || v < 0 || v > max) {
      throw new RangeError(`${bytes === 2 ? 'Word' : 'DWord'} address descriptor ${what} ${String(v)} does not fit in ${bytes * 8} bits`);
    }
    if (bytes === 2) dv.setUint16(6 + i * 2, v, true); else dv.setUint32(6 + i * 4, v, true);
  });
  return out;
}

/** WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, …). */
export function wordBusNumber(a: AddressSpace): Aml {
  return addressDescriptor(2, RES_BUS, 0, a);
}

/** WordIO(…, MinFixed, MaxFixed, PosDecode, EntireRange, …). */
export function wordIo(a: AddressSpace): Aml {
  return addressDescriptor(2, RES_IO, 0x03, a); // _RNG = 3: ISA and non-ISA ranges
}

/** Memory cacheability for {@link dwordMemory} (the _MEM field). */
export type MemoryCaching = 'noncacheable' | 'cacheable' | 'writecombining' | 'prefetchable';

/** DWordMemory(…, PosDecode, MinFixed, MaxFixed, caching, ReadWrite|ReadOnly, …). */
export function dwordMemory(a: AddressSpace & { caching?: MemoryCaching; readOnly?: boolean }): Aml {
  const mem = { noncacheable: 0, cacheable: 1, writecombining: 2, prefetchable: 3 }[a.caching ?? 'noncacheable'];
  return addressDescriptor(4, RES_MEMORY, (a.readOnly ? 0 : 0x01) | (mem << 1), a);
}

/** IO(Decode16, min, max, alignment, length): the small I/O Port Descriptor. */
export function io(min: number, max: number, alignment: number, length: number): Aml {
  for (const v of [min, max]) if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`IO descriptor address ${String(v)} does not fit in 16 bits`);
  for (const v of [alignment, length]) if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`IO descriptor alignment/length ${String(v)} does not fit in 8 bits`);
  return Uint8Array.of(0x47, 0x01, min & 0xff, min >> 8, max & 0xff, max >> 8, alignment, length);
}

/** IRQNoFlags(){irqs}: the two-byte IRQ descriptor (edge, active high, exclusive). */
export function irqNoFlags(...irqs: readonly number[]): Aml {
  let mask = 0;
  for (const irq of irqs) {
    if (!Number.isInteger(irq) || irq < 0 || irq > 15) throw new RangeError(`IRQ descriptor IRQ ${String(irq)} is not 0-15`);
    mask |= 1 << irq;
  }
  return Uint8Array.of(0x22, mask & 0xff, mask >> 8);
}

/**
 * ResourceTemplate(){descriptors}: a Buffer holding the descriptors and an End Tag (0x79)
 * whose checksum byte is 0 ("treat as correct", as ASL compilers emit it).
 */
export function resourceTemplate(...descriptors: readonly Aml[]): Aml {
  return buffer(concat(...descriptors, Uint8Array.of(0x79, 0x00)));
}

/** One _PRT entry: the device's INTx pin (0 = INTA … 3 = INTD) wired to a GSI. */
export interface PrtEntry {
  /** PCI device (slot) number on the bus, 0–31. */
  slot: number;
  /** 0 = INTA … 3 = INTD (the PCI Interrupt Pin register value minus one). */
  pin: number;
  gsi: number;
}

/**
 * The _PRT package: one Package(){Address, Pin, Source, SourceIndex} per entry, with
 * Address 0xSSSSFFFF (any function of device SSSS), Source 0 (a GSI, not a link device) and
 * SourceIndex the GSI.
 */
export function prt(entries: readonly PrtEntry[]): Aml {
  return pkg(
    ...entries.map((e) => {
      if (!Number.isInteger(e.slot) || e.slot < 0 || e.slot > 31) throw new RangeError(`_PRT slot ${String(e.slot)} is not 0-31`);
      if (!Number.isInteger(e.pin) || e.pin < 0 || e.pin > 3) throw new RangeError(`_PRT pin ${String(e.pin)} is not 0-3 (INTA-INTD)`);
      return pkg(integer(((e.slot << 16) | 0xffff) >>> 0), integer(e.pin), Zero, integer(e.gsi));
    }),
  );
}
