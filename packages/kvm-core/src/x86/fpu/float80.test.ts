import { describe, expect, it } from 'vitest';
import * as F from './float80.js';
import { DE, FpEnv, IE, OE, PE, RC_DOWN, RC_NEAREST, RC_UP, RC_ZERO, UE, ZE } from './float80.js';

const h = F.fromHex;
const hex = (v: F.F80 | null) => (v === null ? 'null' : F.toHex(v));

function env(opts: { rc?: number; prec?: number; mask?: number } = {}): FpEnv {
  const e = new FpEnv();
  e.rc = opts.rc ?? RC_NEAREST;
  e.prec = opts.prec ?? 64;
  e.mask = opts.mask ?? 0x3f;
  return e;
}

const ONE = h('3fff8000000000000000');
const TWO = h('40008000000000000000');
const THREE = h('4000c000000000000000');
const INF = h('7fff8000000000000000');
const NINF = h('ffff8000000000000000');
const INDEF = 'ffffc000000000000000';

describe('float80 arithmetic, values worked by hand', () => {
  it('adds exactly and normalizes carries', () => {
    expect(hex(F.add(ONE, ONE, env()))).toBe('40008000000000000000');
    expect(hex(F.add(ONE, TWO, env()))).toBe('4000c000000000000000');
    // 1 - 1 = +0, but -0 when rounding down.
    expect(hex(F.sub(ONE, ONE, env()))).toBe('00000000000000000000');
    expect(hex(F.sub(ONE, ONE, env({ rc: RC_DOWN })))).toBe('80000000000000000000');
  });

  it('rounds 1 + 2^-64 (a guard bit only) by the rounding control', () => {
    const tiny = h('3fbf8000000000000000'); // 2^-64: half an ulp of 1.0
    const e = env();
    expect(hex(F.add(ONE, tiny, e))).toBe('3fff8000000000000000'); // tie: even
    expect(e.flags & PE).toBe(PE);
    expect(e.c1).toBe(0);
    const up = env({ rc: RC_UP });
    expect(hex(F.add(ONE, tiny, up))).toBe('3fff8000000000000001');
    expect(up.c1).toBe(1);
    // 1 + 1.5·2^-64 = 1 + 0.75 ulp: nearest rounds up; 1 + 1.5·2^-65 = 1 + 0.375 ulp: down.
    expect(hex(F.add(ONE, h('3fbfc000000000000000'), env()))).toBe('3fff8000000000000001');
    expect(hex(F.add(ONE, h('3fbec000000000000000'), env()))).toBe('3fff8000000000000000');
  });

  it('divides 1/3 at each precision control setting', () => {
    // 1/3 = 1.010101...b × 2^-2: the bits after any cut are 0101... or 1010...
    expect(hex(F.div(ONE, THREE, env()))).toBe('3ffdaaaaaaaaaaaaaaab');
    expect(hex(F.div(ONE, THREE, env({ rc: RC_ZERO })))).toBe('3ffdaaaaaaaaaaaaaaaa');
    expect(hex(F.div(ONE, THREE, env({ prec: 53 })))).toBe('3ffdaaaaaaaaaaaaa800');
    expect(hex(F.div(ONE, THREE, env({ prec: 24 })))).toBe('3ffdaaaaab0000000000');
    expect(hex(F.div(TWO, THREE, env()))).toBe('3ffeaaaaaaaaaaaaaaab');
  });

  it('multiplies with a full 128-bit product', () => {
    // (1 + 2^-63)^2 = 1 + 2^-62 + 2^-126: sticky bit only.
    const a = h('3fff8000000000000001');
    expect(hex(F.mul(a, a, env()))).toBe('3fff8000000000000002');
    expect(hex(F.mul(a, a, env({ rc: RC_UP })))).toBe('3fff8000000000000003');
    expect(hex(F.mul(THREE, THREE, env()))).toBe('40029000000000000000');
  });

  it('takes exact square roots', () => {
    expect(hex(F.sqrt(h('40018000000000000000'), env()))).toBe('40008000000000000000'); // sqrt 4
    // sqrt(2) = 1.0110101000001001111001100110011111110011101111001100100100001000 0101...
    expect(hex(F.sqrt(TWO, env()))).toBe('3fffb504f333f9de6484');
    expect(hex(F.sqrt(TWO, env({ rc: RC_UP })))).toBe('3fffb504f333f9de6485');
    const e = env();
    expect(hex(F.sqrt(F.negate(ONE), e))).toBe(INDEF);
    expect(e.flags & IE).toBe(IE);
    expect(hex(F.sqrt(h('80000000000000000000'), env()))).toBe('80000000000000000000'); // sqrt(-0) = -0
  });

  it('signals invalid operations and zero division', () => {
    let e = env();
    expect(hex(F.add(INF, NINF, e))).toBe(INDEF);
    expect(e.flags).toBe(IE);
    e = env();
    expect(hex(F.div(F.POS_ZERO, F.POS_ZERO, e))).toBe(INDEF);
    e = env();
    expect(hex(F.div(ONE, h('80000000000000000000'), e))).toBe('ffff8000000000000000');
    expect(e.flags).toBe(ZE);
    e = env({ mask: 0x3f & ~ZE });
    expect(F.div(ONE, F.POS_ZERO, e)).toBeNull();
    // Unnormals (exponent nonzero, integer bit clear) are invalid operands on the 387+.
    e = env();
    expect(hex(F.add(h('3fff4000000000000000'), ONE, e))).toBe(INDEF);
    expect(e.flags).toBe(IE);
  });

  it('propagates NaNs as the x87 does', () => {
    const q1 = h('7fffc000000000000001'), q2 = h('ffffc000000000000002'), s3 = h('7fffa000000000000003');
    let e = env();
    expect(hex(F.add(q1, q2, e))).toBe('ffffc000000000000002'); // larger significand
    expect(e.flags).toBe(0);
    e = env();
    expect(hex(F.add(s3, ONE, e))).toBe('7fffe000000000000003'); // SNaN quieted
    expect(e.flags).toBe(IE);
    e = env();
    expect(hex(F.mul(s3, q1, e))).toBe('7fffc000000000000001'); // the QNaN wins over an SNaN
  });

  it('overflows and underflows by the SDM rules', () => {
    const max = h('7ffeffffffffffffffff');
    let e = env();
    expect(hex(F.mul(max, TWO, e))).toBe('7fff8000000000000000');
    expect(e.flags).toBe(OE | PE);
    e = env({ rc: RC_ZERO });
    expect(hex(F.mul(max, TWO, e))).toBe('7ffeffffffffffffffff');
    // Unmasked: the exponent wraps by 24576 (0x6000).
    e = env({ mask: 0x3f & ~OE });
    expect(hex(F.mul(max, TWO, e))).toBe('1fffffffffffffffffff');
    expect(e.flags).toBe(OE);
    // Smallest normal / 2 = the denormal 0000 4000000000000000, exact: no UE when masked.
    const minNormal = h('00018000000000000000');
    e = env();
    expect(hex(F.div(minNormal, TWO, e))).toBe('00004000000000000000');
    expect(e.flags).toBe(0);
    // Smallest denormal / 2: inexact and tiny.
    e = env();
    expect(hex(F.div(h('00000000000000000001'), TWO, e))).toBe('00000000000000000000');
    expect(e.flags).toBe(DE | UE | PE);
  });

  it('reads pseudo-denormals with exponent 1 and raises DE', () => {
    const e = env();
    const pd = h('00008000000000000000'); // = 2^-16382
    expect(hex(F.add(pd, F.POS_ZERO, e))).toBe('00018000000000000000');
    expect(e.flags).toBe(DE);
  });

  it('compares, ignoring the sign of zero', () => {
    expect(F.compare(F.POS_ZERO, h('80000000000000000000'), env(), false)).toBe(F.EQUAL);
    expect(F.compare(ONE, TWO, env(), false)).toBe(F.LESS);
    expect(F.compare(NINF, F.negate(TWO), env(), false)).toBe(F.LESS);
    const e = env();
    expect(F.compare(h('7fffc000000000000000'), ONE, e, true)).toBe(F.UNORDERED);
    expect(e.flags).toBe(0);
    expect(F.compare(h('7fffc000000000000000'), ONE, e, false)).toBe(F.UNORDERED);
    expect(e.flags).toBe(IE);
  });

  it('rounds to integers (FRNDINT) in every mode', () => {
    const v25 = h('4000a000000000000000'); // 2.5
    expect(hex(F.roundToInt(v25, env()))).toBe('40008000000000000000'); // 2
    expect(hex(F.roundToInt(v25, env({ rc: RC_UP })))).toBe('4000c000000000000000'); // 3
    expect(hex(F.roundToInt(F.negate(v25), env({ rc: RC_DOWN })))).toBe('c000c000000000000000'); // -3
    expect(hex(F.roundToInt(h('3ffe8000000000000000'), env()))).toBe('00000000000000000000'); // 0.5 → 0
    expect(hex(F.roundToInt(h('bffe8000000000000000'), env({ rc: RC_DOWN })))).toBe('bfff8000000000000000'); // -0.5 → -1
    expect(hex(F.roundToInt(h('3ffec000000000000000'), env()))).toBe('3fff8000000000000000'); // 0.75 → 1
  });

  it('scales, extracts and takes remainders', () => {
    expect(hex(F.scale(THREE, TWO, env()))).toBe('4002c000000000000000'); // 3 × 2^2
    expect(hex(F.scale(THREE, h('bfffc000000000000000'), env()))).toBe('3fffc000000000000000'); // 3 × 2^trunc(-1.5)
    const [ex, sig] = F.extract(h('4005a000000000000000'), env())!; // 80 = 1.25 × 2^6
    expect(hex(ex)).toBe('4001c000000000000000'); // 6
    expect(hex(sig)).toBe('3fffa000000000000000'); // 1.25
    const seven = h('4001e000000000000000'), eight = h('40028000000000000000');
    const r = F.prem(seven, THREE, env(), false)!;
    expect(hex(r.value)).toBe('3fff8000000000000000'); // 7 = 2×3 + 1
    expect(r.q).toBe(2);
    expect(r.partial).toBe(false);
    const r1 = F.prem(eight, THREE, env(), true)!; // 8 = 3×3 - 1
    expect(hex(r1.value)).toBe('bfff8000000000000000');
    expect(r1.q).toBe(3);
    const big = F.prem(h('40ff8000000000000000'), THREE, env(), false)!; // 2^256 rem 3: partial
    expect(big.partial).toBe(true);
  });
});

describe('float80 conversions', () => {
  it('widens float32/float64 exactly, including denormals', () => {
    expect(hex(F.fromF64Raw(0x3fb99999, 0x9999999a))).toBe('3ffbccccccccccccd000'); // 0.1
    expect(hex(F.fromF64Raw(0x3ff00000, 0))).toBe('3fff8000000000000000');
    expect(hex(F.fromF64Raw(0, 1))).toBe('3bcd8000000000000000'); // 2^-1074
    expect(hex(F.fromF32Raw(1))).toBe('3f6a8000000000000000'); // 2^-149
    expect(hex(F.fromF32Raw(0xff800000))).toBe('ffff8000000000000000');
  });

  it('narrows with rounding and exceptions', () => {
    const e = env();
    const v = F.fromInt(16777217); // 2^24 + 1: a tie at float32 precision
    expect(F.toF32(v, e)! >>> 0).toBe(0x4b800000);
    expect(e.flags).toBe(PE);
    expect(F.toF32(v, env({ rc: RC_UP }))! >>> 0).toBe(0x4b800001);
    // Too large for float32: OE; masked nearest gives infinity.
    const o = env();
    expect(F.toF32(h('40ff8000000000000000'), o)! >>> 0).toBe(0x7f800000);
    expect(o.flags).toBe(OE | PE);
    // Unmasked overflow stores nothing.
    expect(F.toF32(h('40ff8000000000000000'), env({ mask: 0x37 }))).toBeNull();
    // 2^-149 survives as the smallest float32 denormal; 2^-150 is a tie that rounds to even (0).
    expect(F.toF32(h('3f6a8000000000000000'), env())).toBe(1);
    const u = env();
    expect(F.toF32(h('3f698000000000000000'), u)).toBe(0);
    expect(u.flags).toBe(UE | PE);
    const d = F.toF64(h('3ffbcccccccccccccccd'), env())!;
    expect([d[1] >>> 0, d[0] >>> 0]).toEqual([0x3fb99999, 0x9999999a]);
    expect(F.toF64(h('7fffa000000000000000'), env())!.map((x) => x >>> 0)).toEqual([0, 0x7ffc0000]);
  });

  it('converts to integers with the x87 indefinite on overflow', () => {
    expect(F.toInt(h('4000a000000000000000'), 16, env())).toBe(2n); // 2.5 → 2
    expect(F.toInt(h('4000e000000000000000'), 16, env())).toBe(4n); // 3.5 → 4
    expect(F.toInt(h('c000a000000000000000'), 16, env({ rc: RC_DOWN }))).toBe(-3n);
    const e = env();
    expect(F.toInt(F.fromInt(32768), 16, e)).toBe(-32768n);
    expect(e.flags).toBe(IE);
    expect(F.toInt(F.fromInt(-32768), 16, env())).toBe(-32768n);
    expect(F.toInt(h('403e8000000000000000'), 64, env())).toBe(-(1n << 63n)); // 2^63: out of range
    expect(F.toInt(h('c03e8000000000000000'), 64, env())).toBe(-(1n << 63n)); // -2^63: fits
    expect(F.toInt(h('7fffc000000000000000'), 32, env())).toBe(-(1n << 31n));
  });

  it('converts packed BCD both ways', () => {
    const bcd = [0x23, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x80]; // -123
    const v = F.fromBcd(bcd);
    expect(hex(v)).toBe('c005f600000000000000');
    expect(F.toBcd(v, env())).toEqual(bcd);
    expect(hex(F.fromBcd([0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]))).toBe('80000000000000000000');
    const max = [0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0];
    expect(F.toBcd(F.fromBcd(max), env())).toEqual(max);
    const e = env();
    expect(F.toBcd(F.fromBigInt(10n ** 18n), e)).toEqual([...F.BCD_INDEFINITE]);
    expect(e.flags).toBe(IE);
  });

  it('round-trips the 80-bit memory format', () => {
    const v = h('c005f600000000000123');
    expect(hex(F.fromBytes80(F.toBytes80(v)))).toBe('c005f600000000000123');
    expect(F.toBytes80(v)).toEqual([0x23, 0x01, 0, 0, 0, 0, 0, 0xf6, 0x05, 0xc0]);
    expect(hex(F.fromBigInt(-(1n << 63n)))).toBe('c03e8000000000000000');
  });
});

/** A deterministic xorshift generator. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s;
  };
}

describe('float80 against IEEE double and single arithmetic', () => {
  const r = rng(12345);
  const randDouble = (range = 200): number => {
    const dv = new DataView(new ArrayBuffer(8));
    dv.setUint32(0, (r() & 0x800fffff) | ((0x3ff + (r() % range) - range / 2) << 20));
    dv.setUint32(4, r());
    return dv.getFloat64(0);
  };

  it('precision control 53 matches double arithmetic (round to nearest)', () => {
    for (let k = 0; k < 4000; k++) {
      const a = randDouble(), b = randDouble();
      const fa = F.fromNumber(a), fb = F.fromNumber(b);
      const e = env({ prec: 53 });
      expect(hex(F.add(fa, fb, e))).toBe(hex(F.fromNumber(a + b)));
      expect(hex(F.sub(fa, fb, e))).toBe(hex(F.fromNumber(a - b)));
      expect(hex(F.mul(fa, fb, e))).toBe(hex(F.fromNumber(a * b)));
      expect(hex(F.div(fa, fb, e))).toBe(hex(F.fromNumber(a / b)));
      expect(hex(F.sqrt(F.abs(fa), e))).toBe(hex(F.fromNumber(Math.sqrt(Math.abs(a)))));
    }
  });

  it('precision control 24 matches single arithmetic (round to nearest)', () => {
    for (let k = 0; k < 4000; k++) {
      // Exponents within ±30: every result stays in float32's normal range.
      const a = Math.fround(randDouble(60)), b = Math.fround(randDouble(60));
      const fa = F.fromNumber(a), fb = F.fromNumber(b);
      const e = env({ prec: 24 });
      expect(hex(F.add(fa, fb, e))).toBe(hex(F.fromNumber(Math.fround(a + b))));
      expect(hex(F.mul(fa, fb, e))).toBe(hex(F.fromNumber(Math.fround(a * b))));
      expect(hex(F.div(fa, fb, e))).toBe(hex(F.fromNumber(Math.fround(a / b))));
      expect(hex(F.sqrt(F.abs(fa), e))).toBe(hex(F.fromNumber(Math.fround(Math.sqrt(Math.abs(a))))));
    }
  });

  it('narrowing to float64 and float32 rounds to nearest even', () => {
    /** The nearest value with `keep` significant bits of a 64-bit significand, as a double. */
    const ref = (v: F.F80, keep: number): number => {
      const sig = (BigInt(v.hi) << 32n) | BigInt(v.lo);
      const drop = BigInt(64 - keep);
      const lower = sig >> drop, rem = sig & ((1n << drop) - 1n), half = 1n << (drop - 1n);
      let m = lower;
      if (rem > half || (rem === half && (lower & 1n) === 1n)) m = lower + 1n;
      return (v.sign ? -1 : 1) * Number(m) * 2 ** (v.exp - 16383 - 63 + Number(drop));
    };
    const dv = new DataView(new ArrayBuffer(8));
    for (let k = 0; k < 4000; k++) {
      const v = F.f80(r() & 1, 0x3fff + (r() % 200) - 100, r() | 0x80000000, r());
      const d = F.toF64(v, env())!;
      dv.setUint32(0, d[1]); dv.setUint32(4, d[0]);
      expect(dv.getFloat64(0)).toBe(ref(v, 53));
      dv.setInt32(0, F.toF32(v, env())!);
      expect(dv.getFloat32(0)).toBe(ref(v, 24));
    }
  });
});
