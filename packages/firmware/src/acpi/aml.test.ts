import { describe, expect, it } from 'vitest';
import {
  buffer, byteConst, device, dwordConst, dwordMemory, eisaId, eisaIdAml, integer, io, irqNoFlags, method, name, namePath, nameSeg,
  Ones, One, pkg, pkgLength, prt, qwordConst, resourceTemplate, ret, scope, string, wordBusNumber, wordConst, wordIo, Zero,
} from './aml.js';

// Expected bytes below are derived by hand from the AML grammar (ACPI 6.x chapter 20) and the
// resource descriptor formats (section 6.4), not taken from any compiler's output.
const hex = (s: string) => Uint8Array.from(s.trim().split(/\s+/), (b) => parseInt(b, 16));
const bytes = (a: Uint8Array) => [...a];

describe('names', () => {
  it('pads NameSegs with underscores and rejects bad ones', () => {
    expect(bytes(nameSeg('_S5'))).toEqual(bytes(hex('5F 53 35 5F')));
    expect(bytes(nameSeg('PCI0'))).toEqual(bytes(hex('50 43 49 30')));
    expect(() => nameSeg('0ABC')).toThrow(RangeError);
    expect(() => nameSeg('abcd')).toThrow(RangeError);
    expect(() => nameSeg('TOOLONG')).toThrow(RangeError);
  });

  it('encodes root, parent, dual and multi name paths', () => {
    expect(bytes(namePath('_SB'))).toEqual(bytes(hex('5F 53 42 5F')));
    expect(bytes(namePath('\\_SB'))).toEqual(bytes(hex('5C 5F 53 42 5F')));
    expect(bytes(namePath('\\_SB.PCI0'))).toEqual(bytes(hex('5C 2E 5F 53 42 5F 50 43 49 30')));
    expect(bytes(namePath('\\_SB.PCI0.ISA'))).toEqual(bytes(hex('5C 2F 03 5F 53 42 5F 50 43 49 30 49 53 41 5F')));
    expect(bytes(namePath('^^FOO'))).toEqual(bytes(hex('5E 5E 46 4F 4F 5F')));
    expect(bytes(namePath('\\'))).toEqual(bytes(hex('5C 00')));
    expect(bytes(namePath(''))).toEqual([0]);
  });
});

describe('PkgLength', () => {
  it('uses one byte up to 63 (the count includes itself)', () => {
    expect(bytes(pkgLength(0))).toEqual([0x01]);
    expect(bytes(pkgLength(62))).toEqual([0x3f]);
  });
  it('uses two bytes up to 0xFFF: lead byte 01xx_nnnn, then bits 11:4', () => {
    // 63 bytes of content + 2 = 65 = 0x041.
    expect(bytes(pkgLength(63))).toEqual([0x41, 0x04]);
    // 0xFFD + 2 = 0xFFF, the two-byte maximum.
    expect(bytes(pkgLength(0xffd))).toEqual([0x4f, 0xff]);
  });
  it('uses three bytes up to 0xFFFFF', () => {
    // 0xFFE + 3 = 0x1001.
    expect(bytes(pkgLength(0xffe))).toEqual([0x81, 0x00, 0x01]);
    // 0xFFFFC + 3 = 0xFFFFF.
    expect(bytes(pkgLength(0xffffc))).toEqual([0x8f, 0xff, 0xff]);
  });
  it('uses four bytes beyond that, up to 2^28 - 1', () => {
    // 0xFFFFD + 4 = 0x100001.
    expect(bytes(pkgLength(0xffffd))).toEqual([0xc1, 0x00, 0x00, 0x01]);
    expect(bytes(pkgLength(0x0ffffffb))).toEqual([0xcf, 0xff, 0xff, 0xff]);
    expect(() => pkgLength(0x0ffffffc)).toThrow(RangeError);
  });
});

describe('data objects', () => {
  it('encodes integers in their shortest form', () => {
    expect(bytes(integer(0))).toEqual([0x00]);
    expect(bytes(integer(1))).toEqual([0x01]);
    expect(bytes(Ones)).toEqual([0xff]);
    expect(bytes(integer(2))).toEqual([0x0a, 0x02]);
    expect(bytes(integer(0xff))).toEqual([0x0a, 0xff]);
    expect(bytes(integer(0x100))).toEqual([0x0b, 0x00, 0x01]);
    expect(bytes(integer(0x10000))).toEqual([0x0c, 0x00, 0x00, 0x01, 0x00]);
    expect(bytes(integer(0x1_0000_0000))).toEqual([0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    expect(bytes(integer(0xffff_ffff_ffff_ffffn))).toEqual([0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    expect(() => integer(-1)).toThrow(RangeError);
    expect(() => integer(2 ** 64 + 4096)).toThrow(RangeError);
  });
  it('encodes fixed-width constants whatever the value', () => {
    expect(bytes(byteConst(0))).toEqual([0x0a, 0x00]);
    expect(bytes(wordConst(1))).toEqual([0x0b, 0x01, 0x00]);
    expect(bytes(dwordConst(0x12345678))).toEqual([0x0c, 0x78, 0x56, 0x34, 0x12]);
    expect(bytes(qwordConst(1))).toEqual([0x0e, 1, 0, 0, 0, 0, 0, 0, 0]);
    expect(() => wordConst(0x10000)).toThrow(RangeError);
  });
  it('encodes strings and buffers', () => {
    expect(bytes(string('ACPI0007'))).toEqual(bytes(hex('0D 41 43 50 49 30 30 30 37 00')));
    // Buffer: 11, PkgLength (BufferSize 0A 03 + 3 bytes = 5, +1), size, bytes.
    expect(bytes(buffer(Uint8Array.of(1, 2, 3)))).toEqual(bytes(hex('11 06 0A 03 01 02 03')));
  });
  it('encodes Name(_S5, Package(){5, 5, 0, 0})', () => {
    // Package: 12, PkgLength (NumElements 1 + elements 6 = 7, +1 = 8), 04, 0A 05, 0A 05, 00, 00.
    const s5 = name('_S5', pkg(integer(5), integer(5), Zero, Zero));
    expect(bytes(s5)).toEqual(bytes(hex('08 5F 53 35 5F 12 08 04 0A 05 0A 05 00 00')));
  });
  it('uses VarPackage for more than 255 elements', () => {
    const big = pkg(...Array.from({ length: 256 }, () => Zero));
    // 13, PkgLength(2 bytes: content = 0B 00 01 + 256 = 259, +2 = 261 = 0x105), WordConst 256.
    expect(bytes(big.subarray(0, 6))).toEqual(bytes(hex('13 45 10 0B 00 01')));
    expect(big.length).toBe(1 + 261);
  });
});

describe('named objects and methods', () => {
  it('encodes Scope and Device with PkgLength over the name and body', () => {
    expect(bytes(scope('\\_SB'))).toEqual(bytes(hex('10 06 5C 5F 53 42 5F')));
    // Device: 5B 82, PkgLength (name 4 + Name(_ADR, Zero) 6 = 10, +1 = 0B).
    expect(bytes(device('PCI0', name('_ADR', Zero)))).toEqual(bytes(hex('5B 82 0B 50 43 49 30 08 5F 41 44 52 00')));
  });
  it('encodes Method flags and Return', () => {
    // Method(_STA, 0, NotSerialized) { Return (0x0F) }: content 4 + 1 + 3 = 8.
    expect(bytes(method('_STA', {}, ret(integer(0x0f))))).toEqual(bytes(hex('14 09 5F 53 54 41 00 A4 0A 0F')));
    // Two args, Serialized, SyncLevel 3: 0b0011_1_010.
    expect(bytes(method('FOO', { args: 2, serialized: true, syncLevel: 3 }, ret(One)))).toEqual(bytes(hex('14 08 46 4F 4F 5F 3A A4 01')));
    expect(() => method('FOO', { args: 8 })).toThrow(RangeError);
  });
});

describe('EISAID', () => {
  it('compresses PNP IDs', () => {
    expect(eisaId('PNP0A03')).toBe(0x030ad041);
    expect(eisaId('PNP0501')).toBe(0x0105d041);
    expect(eisaId('PNP0B00')).toBe(0x000bd041);
    expect(eisaId('PNP0303')).toBe(0x0303d041);
    expect(eisaId('PNP0F13')).toBe(0x130fd041);
    // Another vendor: "QEM" = 17, 5, 13 → 0b0_10001_00101_01101 = 0x44AD.
    expect(eisaId('QEM0001')).toBe(0x0100ad44);
    expect(bytes(eisaIdAml('PNP0A03'))).toEqual(bytes(hex('0C 41 D0 0A 03')));
    expect(() => eisaId('pnp0a03')).toThrow(RangeError);
  });
});

describe('resource descriptors', () => {
  it('encodes IO and IRQNoFlags in a template ending with an End Tag', () => {
    expect(bytes(io(0x3f8, 0x3f8, 1, 8))).toEqual(bytes(hex('47 01 F8 03 F8 03 01 08')));
    expect(bytes(irqNoFlags(4))).toEqual(bytes(hex('22 10 00')));
    expect(bytes(irqNoFlags(8, 12))).toEqual(bytes(hex('22 00 11')));
    // 8 + 3 + 2 = 13 bytes; Buffer content = 0A 0D + 13 = 15, PkgLength 0x10.
    expect(bytes(resourceTemplate(io(0x3f8, 0x3f8, 1, 8), irqNoFlags(4)))).toEqual(
      bytes(hex('11 10 0A 0D 47 01 F8 03 F8 03 01 08 22 10 00 79 00')),
    );
  });
  it('encodes WordBusNumber and WordIO', () => {
    // 88, length 13, type 2 (bus), flags MinFixed|MaxFixed (0C), type flags 0, gran, min, max, tra, len.
    expect(bytes(wordBusNumber({ min: 0, max: 0xff }))).toEqual(bytes(hex('88 0D 00 02 0C 00 00 00 00 00 FF 00 00 00 00 01')));
    // Type 1 (I/O), type flags _RNG = 3 (entire range).
    expect(bytes(wordIo({ min: 0, max: 0xcf7 }))).toEqual(bytes(hex('88 0D 00 01 0C 03 00 00 00 00 F7 0C 00 00 F8 0C')));
    expect(bytes(wordIo({ min: 0xd00, max: 0xffff }))).toEqual(bytes(hex('88 0D 00 01 0C 03 00 00 00 0D FF FF 00 00 00 F3')));
  });
  it('encodes DWordMemory', () => {
    // 87, length 23, type 0 (memory), 0C, type flags ReadWrite (1) | NonCacheable (0 << 1).
    expect(bytes(dwordMemory({ min: 0xc0000000, max: 0xfebfffff }))).toEqual(
      bytes(hex('87 17 00 00 0C 01 00 00 00 00 00 00 00 C0 FF FF BF FE 00 00 00 00 00 00 C0 3E')),
    );
    // Cacheable is _MEM = 1 in bits 2:1.
    expect(dwordMemory({ min: 0xa0000, max: 0xbffff, caching: 'cacheable' })[5]).toBe(0x03);
  });
  it('encodes _PRT entries as {0xSSSSFFFF, pin, 0, GSI}', () => {
    const p = prt([{ slot: 1, pin: 0, gsi: 11 }, { slot: 0x1f, pin: 3, gsi: 0x17 }]);
    // Entry: 12, PkgLength (1 + 5 + 1 + 1 + 2 = 10, +1 = 0B), 04, DWord 0x0001FFFF, Zero, Zero, 0A 0B.
    const e1 = hex('12 0B 04 0C FF FF 01 00 00 00 0A 0B');
    const e2 = hex('12 0C 04 0C FF FF 1F 00 0A 03 00 0A 17');
    // Outer: 12, PkgLength (1 + 12 + 13 = 26, +1 = 1B), 02.
    expect(bytes(p)).toEqual([0x12, 0x1b, 0x02, ...e1, ...e2]);
    expect(() => prt([{ slot: 32, pin: 0, gsi: 1 }])).toThrow(RangeError);
    expect(() => prt([{ slot: 1, pin: 4, gsi: 1 }])).toThrow(RangeError);
  });
});
