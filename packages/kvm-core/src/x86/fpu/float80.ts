/**
 * Exact software arithmetic on x87 80-bit extended-precision values.
 *
 * A value is kept as its raw fields ({@link F80}): sign, 15-bit biased exponent and the 64-bit
 * significand with its explicit integer bit as two uint32 halves. Arithmetic unpacks operands
 * into a 96-bit working significand (three uint32 words, module-level "registers" W0:W1:W2, with
 * bits shifted out jammed into the lowest bit), then rounds once with {@link roundPack} under the
 * rounding control, precision control and exception masks of an {@link FpEnv}. Add, subtract,
 * multiply and divide use only 32-bit word arithmetic; square root, partial remainder, 64-bit
 * integer and packed-BCD conversions use BigInt (they are rare, and exactness is easy to see).
 *
 * Exception semantics follow the Intel SDM for the x87 FPU of a P6: invalid operands (SNaN,
 * unnormal, pseudo-NaN, pseudo-infinity) raise IE; pseudo-denormals and denormals raise DE
 * and are read with exponent 1; tininess is detected before rounding; overflow after rounding.
 * With IE, DE or ZE unmasked an operation returns `null` (the destination is left alone;
 * {@link compare} is the exception: it still returns its result); with OE or UE unmasked a
 * register result carries the exponent wrapped by 24576, as on hardware, and a memory-format
 * result is `null` (nothing is stored). A register result still out of range after the wrap
 * (only FSCALE gets there) becomes ±∞ (OE, PE, C1 = 1) or ±0 (UE, PE), as measured on Intel.
 * @module
 */

/** Raw fields of an 80-bit value. */
export interface F80 {
  /** 0 or 1. */
  sign: number;
  /** Biased exponent, 0..0x7fff. */
  exp: number;
  /** Significand bits 63..32 (bit 63 is the explicit integer bit). */
  hi: number;
  /** Significand bits 31..0. */
  lo: number;
}

// FSW exception bits.
export const IE = 0x01, DE = 0x02, ZE = 0x04, OE = 0x08, UE = 0x10, PE = 0x20, SF = 0x40;

/** Rounding control (FCW bits 10-11). */
export const RC_NEAREST = 0, RC_DOWN = 1, RC_UP = 2, RC_ZERO = 3;

/** The rounding and exception context of one operation. */
export class FpEnv {
  /** Rounding control, RC_*. */
  rc = RC_NEAREST;
  /** Significand bits for arithmetic results: 24, 53 or 64 (from FCW.PC). */
  prec = 64;
  /** Exception masks (FCW bits 0-5): a set bit masks the exception. */
  mask = 0x3f;
  /** Exceptions raised so far (IE..PE, SF). */
  flags = 0;
  /** Set when the last rounding incremented the magnitude (the x87's C1 "rounded up"). */
  c1 = 0;

  /** An environment from an x87 control word. */
  static fromFcw(fcw: number): FpEnv {
    const e = new FpEnv();
    e.setFcw(fcw);
    return e;
  }

  setFcw(fcw: number): void {
    this.rc = (fcw >> 10) & 3;
    const pc = (fcw >> 8) & 3;
    this.prec = pc === 0 ? 24 : pc === 2 ? 53 : 64;
    this.mask = fcw & 0x3f;
    this.flags = 0;
    this.c1 = 0;
  }
}

export function f80(sign: number, exp: number, hi: number, lo: number): F80 {
  return { sign, exp, hi: hi >>> 0, lo: lo >>> 0 };
}

/** The QNaN "real indefinite": the masked response to an invalid operation. */
export const INDEFINITE: Readonly<F80> = Object.freeze(f80(1, 0x7fff, 0xc0000000, 0));
export const POS_ZERO: Readonly<F80> = Object.freeze(f80(0, 0, 0, 0));
export const ONE: Readonly<F80> = Object.freeze(f80(0, 0x3fff, 0x80000000, 0));

/** Value classes of an 80-bit encoding. */
export const enum Cls {
  Zero = 0,
  /** Exponent 0, integer bit 0, nonzero significand. */
  Denormal = 1,
  /** Exponent 0 with the integer bit set: read as exponent 1 (raises DE). */
  PseudoDenormal = 2,
  Normal = 3,
  Infinity = 4,
  QNaN = 5,
  SNaN = 6,
  /** Unnormal, pseudo-NaN or pseudo-infinity: invalid operands on the 387 and later. */
  Unsupported = 7,
}

export function classify(a: F80): Cls {
  const e = a.exp, intBit = a.hi >>> 31;
  if (e === 0) {
    if (intBit) return Cls.PseudoDenormal;
    return (a.hi | a.lo) === 0 ? Cls.Zero : Cls.Denormal;
  }
  if (intBit === 0) return Cls.Unsupported;
  if (e === 0x7fff) {
    if ((a.hi & 0x7fffffff) === 0 && a.lo === 0) return Cls.Infinity;
    return a.hi & 0x40000000 ? Cls.QNaN : Cls.SNaN;
  }
  return Cls.Normal;
}

export function isNaNCls(k: Cls): boolean {
  return k === Cls.QNaN || k === Cls.SNaN;
}
function isDenCls(k: Cls): boolean {
  return k === Cls.Denormal || k === Cls.PseudoDenormal;
}
/** A finite, nonzero operand (normal or denormal). */
function isFiniteNonzero(k: Cls): boolean {
  return k === Cls.Normal || k === Cls.Denormal || k === Cls.PseudoDenormal;
}

export function isZero(a: F80): boolean {
  return a.exp === 0 && (a.hi | a.lo) === 0;
}

export function negate(a: F80): F80 {
  return f80(a.sign ^ 1, a.exp, a.hi, a.lo);
}
export function abs(a: F80): F80 {
  return f80(0, a.exp, a.hi, a.lo);
}
export function equalBits(a: F80, b: F80): boolean {
  return a.sign === b.sign && a.exp === b.exp && a.hi === b.hi && a.lo === b.lo;
}

/** A pseudo-denormal as the equal normal value (exponent 1); other encodings unchanged. */
function canonical(a: F80): F80 {
  return a.exp === 0 && a.hi >>> 31 ? f80(a.sign, 1, a.hi, a.lo) : f80(a.sign, a.exp, a.hi, a.lo);
}

function quiet(a: F80): F80 {
  return f80(a.sign, a.exp, a.hi | 0x40000000, a.lo);
}

/**
 * The NaN result of an operation with at least one NaN operand (SDM table 4-7, x87 column):
 * a QNaN over an SNaN, else the larger significand (after quieting); on a tie the positive one.
 * Raises IE for an SNaN. Returns null when IE is unmasked.
 */
function propagateNaN(a: F80, ka: Cls, b: F80 | null, kb: Cls, env: FpEnv): F80 | null {
  if (ka === Cls.SNaN || kb === Cls.SNaN) {
    env.flags |= IE;
    if (!(env.mask & IE)) return null;
  }
  if (b === null || !isNaNCls(kb)) return quiet(a);
  if (!isNaNCls(ka)) return quiet(b);
  if (ka === Cls.SNaN && kb === Cls.QNaN) return b;
  if (kb === Cls.SNaN && ka === Cls.QNaN) return a;
  const qa = quiet(a), qb = quiet(b);
  if (qa.hi !== qb.hi) return qa.hi > qb.hi ? qa : qb;
  if (qa.lo !== qb.lo) return qa.lo > qb.lo ? qa : qb;
  return qa.sign <= qb.sign ? qa : qb;
}

/** The masked or unmasked response to an invalid operation: indefinite, or null. */
function invalid(env: FpEnv): F80 | null {
  env.flags |= IE;
  return env.mask & IE ? f80(1, 0x7fff, 0xc0000000, 0) : null;
}

/**
 * Common handling of NaN and unsupported operands of an arithmetic operation. Returns
 * undefined when the operands are ordinary (possibly denormal), else the result.
 */
function specialOperands(a: F80, ka: Cls, b: F80 | null, kb: Cls, env: FpEnv): F80 | null | undefined {
  if (ka === Cls.Unsupported || kb === Cls.Unsupported) return invalid(env);
  if (isNaNCls(ka) || isNaNCls(kb)) return propagateNaN(a, ka, b, kb, env);
  return undefined;
}

/** Raises DE for denormal operands; returns false if DE is unmasked (no result). */
function denormalCheck(den: boolean, env: FpEnv): boolean {
  if (!den) return true;
  env.flags |= DE;
  return (env.mask & DE) !== 0;
}

// --- The 96-bit working significand --------------------------------------------------------

let W0 = 0, W1 = 0, W2 = 0;
/** Set by roundBits when rounding carried out of bit 95. */
let CARRY = false;

function lowMask(n: number): number {
  return n >= 32 ? 0xffffffff : ((1 << n) - 1) >>> 0;
}

/** Shifts W right by n bits, OR-ing any lost bits into the lowest bit. */
function shiftRightJam(n: number): void {
  if (n <= 0) return;
  if (n >= 96) {
    const s = (W0 | W1 | W2) !== 0;
    W0 = 0; W1 = 0; W2 = s ? 1 : 0;
    return;
  }
  let s = 0;
  while (n >= 32) { s |= W2; W2 = W1; W1 = W0; W0 = 0; n -= 32; }
  if (n > 0) {
    s |= W2 << (32 - n);
    W2 = ((W2 >>> n) | (W1 << (32 - n))) >>> 0;
    W1 = ((W1 >>> n) | (W0 << (32 - n))) >>> 0;
    W0 = W0 >>> n;
  }
  if (s !== 0) W2 = (W2 | 1) >>> 0;
}

/** Shifts W left until bit 95 is set; returns the shift. W must be nonzero. */
function normalizeW(): number {
  let n = 0;
  while (W0 === 0) { W0 = W1; W1 = W2; W2 = 0; n += 32; }
  const z = Math.clz32(W0);
  if (z !== 0) {
    W0 = ((W0 << z) | (W1 >>> (32 - z))) >>> 0;
    W1 = ((W1 << z) | (W2 >>> (32 - z))) >>> 0;
    W2 = (W2 << z) >>> 0;
    n += z;
  }
  return n;
}

function bitW(i: number): number {
  if (i >= 64) return (W0 >>> (i - 64)) & 1;
  if (i >= 32) return (W1 >>> (i - 32)) & 1;
  return (W2 >>> i) & 1;
}
/** Whether any bit below index i (0..96) of W is set. */
function anyBelow(i: number): boolean {
  if (i >= 64) return W2 !== 0 || W1 !== 0 || (W0 & lowMask(i - 64)) !== 0;
  if (i >= 32) return W2 !== 0 || (W1 & lowMask(i - 32)) !== 0;
  return (W2 & lowMask(i)) !== 0;
}

/**
 * Rounds W to its top k bits (1..96) by rounding control rc; bits below are cleared.
 * Returns 0 if exact, 1 if inexact and truncated, 2 if inexact and incremented. A carry out of
 * bit 95 leaves W = 2^95 (the caller adds one to the exponent) and sets CARRY.
 */
function roundBits(k: number, rc: number, sign: number): number {
  CARRY = false;
  const L = 96 - k;
  if (L === 0) return 0;
  const guard = bitW(L - 1);
  const sticky = anyBelow(L - 1);
  if (!guard && !sticky) return 0;
  let inc: boolean;
  switch (rc) {
    case RC_NEAREST: inc = guard === 1 && (sticky || bitW(L) === 1); break;
    case RC_DOWN: inc = sign === 1; break;
    case RC_UP: inc = sign === 0; break;
    default: inc = false;
  }
  // Clear the bits below L.
  if (L >= 64) { W2 = 0; W1 = 0; W0 = (W0 & ~lowMask(L - 64)) >>> 0; }
  else if (L >= 32) { W2 = 0; W1 = (W1 & ~lowMask(L - 32)) >>> 0; }
  else W2 = (W2 & ~lowMask(L)) >>> 0;
  if (!inc) return 1;
  if (L >= 64) {
    const v = W0 + 2 ** (L - 64);
    if (v > 0xffffffff) { W0 = 0x80000000; W1 = 0; W2 = 0; CARRY = true; } else W0 = v;
  } else if (L >= 32) {
    const v = W1 + 2 ** (L - 32);
    if (v > 0xffffffff) {
      W1 = v - 0x100000000;
      if (W0 === 0xffffffff) { W0 = 0x80000000; W1 = 0; W2 = 0; CARRY = true; } else W0 = W0 + 1;
    } else W1 = v;
  } else {
    const v = W2 + 2 ** L;
    if (v > 0xffffffff) {
      W2 = v - 0x100000000;
      if (W1 === 0xffffffff) {
        W1 = 0;
        if (W0 === 0xffffffff) { W0 = 0x80000000; W2 = 0; CARRY = true; } else W0 = W0 + 1;
      } else W1 = W1 + 1;
    } else W2 = v;
  }
  return 2;
}

/** A destination format: significand bits, exponent bias, register (wrapping) or memory. */
export interface Format {
  prec: number;
  bias: number;
  reg: boolean;
}
export const FMT_F32: Format = Object.freeze({ prec: 24, bias: 127, reg: false });
export const FMT_F64: Format = Object.freeze({ prec: 53, bias: 1023, reg: false });
const FMT_REG = [
  Object.freeze({ prec: 24, bias: 16383, reg: true }),
  Object.freeze({ prec: 53, bias: 16383, reg: true }),
  Object.freeze({ prec: 64, bias: 16383, reg: true }),
];
export const FMT_F80: Format = FMT_REG[2]!;
function regFormat(prec: number): Format {
  return prec === 24 ? FMT_REG[0]! : prec === 53 ? FMT_REG[1]! : FMT_REG[2]!;
}

/**
 * Rounds the working significand W (normalized, value = W/2^95 × 2^(e - 16383)) into format
 * fmt. The result's `exp` is biased for fmt (0 = zero/denormal, 2*bias+1 = infinity) and hi:lo
 * holds the top 64 bits with the explicit integer bit (0 for a denormal). Returns null when an
 * unmasked overflow or underflow stops a memory-format result.
 */
export function roundPackW(sign: number, e: number, fmt: Format, env: FpEnv): F80 | null {
  let be = e - 16383 + fmt.bias;
  const emax = 2 * fmt.bias;
  let tiny = false;
  if (be <= 0) {
    if (!(env.mask & UE)) {
      env.flags |= UE;
      if (!fmt.reg) return null;
      be += 24576;
      // Still tiny after the wrap (FSCALE only): Intel returns ±0, inexact, C1 = 0.
      if (be <= 0) { env.flags |= PE; env.c1 = 0; return f80(sign, 0, 0, 0); }
    } else {
      shiftRightJam(1 - be);
      be = 0;
      tiny = true;
    }
  }
  const r = roundBits(fmt.prec, env.rc, sign);
  if (CARRY) be++;
  if (tiny) {
    if (W0 & 0x80000000) be = 1;
    if (r !== 0) env.flags |= UE;
  } else if (be > emax) {
    if (!(env.mask & OE)) {
      env.flags |= OE;
      if (!fmt.reg) return null;
      be -= 24576;
      // Still too large after the wrap (FSCALE only): Intel returns ±∞, inexact, C1 = 1, in
      // every rounding mode.
      if (be > emax) { env.flags |= PE; env.c1 = 1; return f80(sign, emax + 1, 0x80000000, 0); }
    } else {
      env.flags |= OE | PE;
      const toInf = env.rc === RC_NEAREST || (env.rc === RC_DOWN && sign === 1) || (env.rc === RC_UP && sign === 0);
      if (toInf) { env.c1 = 1; return f80(sign, emax + 1, 0x80000000, 0); }
      env.c1 = 0;
      W0 = 0xffffffff; W1 = 0xffffffff; W2 = 0;
      roundBits(fmt.prec, RC_ZERO, sign);
      return f80(sign, emax, W0, W1);
    }
  }
  if (r !== 0) {
    env.flags |= PE;
    env.c1 = r === 2 ? 1 : 0;
  } else env.c1 = 0;
  return f80(sign, be, W0, W1);
}

/** Loads a finite nonzero operand into W (normalized) and returns its exponent (f80 bias). */
function loadW(a: F80): number {
  W0 = a.hi; W1 = a.lo; W2 = 0;
  const e = a.exp === 0 ? 1 : a.exp;
  return e - normalizeW();
}

/** Rounds a finite value in F80 fields (possibly denormal or unnormalized) to format fmt. */
export function roundTo(a: F80, fmt: Format, env: FpEnv): F80 | null {
  if ((a.hi | a.lo) === 0) return f80(a.sign, 0, 0, 0);
  const e = loadW(a);
  return roundPackW(a.sign, e, fmt, env);
}

// --- Arithmetic -------------------------------------------------------------------------------

/**
 * a + b (or a - b when `sub`), rounded to env.prec. `aDen`/`bDen` mark an operand that came
 * from a denormal memory operand (a float32/float64 denormal, normal once widened), for DE.
 */
export function add(a: F80, b: F80, env: FpEnv, sub = false, aDen = false, bDen = false): F80 | null {
  const ka = classify(a), kb = classify(b);
  const s = specialOperands(a, ka, b, kb, env);
  if (s !== undefined) return s;
  const sa = a.sign, sb = b.sign ^ (sub ? 1 : 0);
  if (ka === Cls.Infinity && kb === Cls.Infinity && sa !== sb) return invalid(env);
  if (!denormalCheck(isDenCls(ka) || isDenCls(kb) || aDen || bDen, env)) return null;
  if (ka === Cls.Infinity) return f80(sa, 0x7fff, 0x80000000, 0);
  if (kb === Cls.Infinity) return f80(sb, 0x7fff, 0x80000000, 0);
  const fmt = regFormat(env.prec);
  if (ka === Cls.Zero && kb === Cls.Zero) {
    env.c1 = 0;
    return f80(sa === sb ? sa : env.rc === RC_DOWN ? 1 : 0, 0, 0, 0);
  }
  if (kb === Cls.Zero) return roundTo(a, fmt, env);
  if (ka === Cls.Zero) return roundTo(f80(sb, b.exp, b.hi, b.lo), fmt, env);
  // Both finite nonzero: align b to a (a has the larger exponent).
  let eb = loadW(b);
  let B0 = W0, B1 = W1, B2 = W2;
  let ea = loadW(a);
  let A0 = W0, A1 = W1, A2 = W2;
  let signA = sa, signB = sb;
  if (ea < eb) {
    [A0, B0] = [B0, A0]; [A1, B1] = [B1, A1]; [A2, B2] = [B2, A2];
    [ea, eb] = [eb, ea]; [signA, signB] = [signB, signA];
  }
  W0 = B0; W1 = B1; W2 = B2;
  shiftRightJam(ea - eb);
  B0 = W0; B1 = W1; B2 = W2;
  let e = ea, sign = signA;
  if (signA === signB) {
    let t = A2 + B2; const r2 = t >>> 0; let c = t > 0xffffffff ? 1 : 0;
    t = A1 + B1 + c; const r1 = t >>> 0; c = t > 0xffffffff ? 1 : 0;
    t = A0 + B0 + c; const r0 = t >>> 0; c = t > 0xffffffff ? 1 : 0;
    W0 = r0; W1 = r1; W2 = r2;
    if (c) {
      shiftRightJam(1);
      W0 = (W0 | 0x80000000) >>> 0;
      e++;
    }
  } else {
    // Subtract the smaller magnitude from the larger.
    const aGe = A0 !== B0 ? A0 > B0 : A1 !== B1 ? A1 > B1 : A2 >= B2;
    if (!aGe) {
      [A0, B0] = [B0, A0]; [A1, B1] = [B1, A1]; [A2, B2] = [B2, A2];
      sign = signB;
    }
    let t = A2 - B2; const r2 = t >>> 0; let bw = t < 0 ? 1 : 0;
    t = A1 - B1 - bw; const r1 = t >>> 0; bw = t < 0 ? 1 : 0;
    t = A0 - B0 - bw; const r0 = t >>> 0;
    W0 = r0; W1 = r1; W2 = r2;
    if ((W0 | W1 | W2) === 0) {
      env.c1 = 0;
      return f80(env.rc === RC_DOWN ? 1 : 0, 0, 0, 0);
    }
    e -= normalizeW();
  }
  return roundPackW(sign, e, fmt, env);
}

export function sub(a: F80, b: F80, env: FpEnv, bDen = false): F80 | null {
  return add(a, b, env, true, false, bDen);
}

/** a × b, rounded to env.prec. `aDen`/`bDen`: the operand came from a denormal memory operand. */
export function mul(a: F80, b: F80, env: FpEnv, aDen = false, bDen = false): F80 | null {
  const ka = classify(a), kb = classify(b);
  const s = specialOperands(a, ka, b, kb, env);
  if (s !== undefined) return s;
  const sign = a.sign ^ b.sign;
  if ((ka === Cls.Infinity && kb === Cls.Zero) || (ka === Cls.Zero && kb === Cls.Infinity)) return invalid(env);
  if (!denormalCheck(isDenCls(ka) || isDenCls(kb) || aDen || bDen, env)) return null;
  if (ka === Cls.Infinity || kb === Cls.Infinity) return f80(sign, 0x7fff, 0x80000000, 0);
  if (ka === Cls.Zero || kb === Cls.Zero) { env.c1 = 0; return f80(sign, 0, 0, 0); }
  const ea = loadW(a); const a0 = W0, a1 = W1;
  const eb = loadW(b); const b0 = W0, b1 = W1;
  mul64(a0, a1, b0, b1);
  let e = ea + eb - 16383;
  if (W0 & 0x80000000) e++;
  else normalizeW();
  return roundPackW(sign, e, regFormat(env.prec), env);
}

/** W = top 96 bits of (a0:a1) × (b0:b1) with the low 32 bits jammed; bit 127 of the product is W bit 95. */
function mul64(a0: number, a1: number, b0: number, b1: number): void {
  const a = [a1 & 0xffff, a1 >>> 16, a0 & 0xffff, a0 >>> 16];
  const b = [b1 & 0xffff, b1 >>> 16, b0 & 0xffff, b0 >>> 16];
  const r = [0, 0, 0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 4; i++) {
    let carry = 0;
    const ai = a[i]!;
    for (let j = 0; j < 4; j++) {
      const t = r[i + j]! + ai * b[j]! + carry;
      r[i + j] = t % 65536;
      carry = Math.floor(t / 65536);
    }
    r[i + 4] = r[i + 4]! + carry;
  }
  W0 = (r[7]! * 65536 + r[6]!) >>> 0;
  W1 = (r[5]! * 65536 + r[4]!) >>> 0;
  W2 = (r[3]! * 65536 + r[2]!) >>> 0;
  if (r[1]! !== 0 || r[0]! !== 0) W2 = (W2 | 1) >>> 0;
}

/** a / b, rounded to env.prec. */
export function div(a: F80, b: F80, env: FpEnv, aDen = false, bDen = false): F80 | null {
  const ka = classify(a), kb = classify(b);
  const s = specialOperands(a, ka, b, kb, env);
  if (s !== undefined) return s;
  const sign = a.sign ^ b.sign;
  if ((ka === Cls.Infinity && kb === Cls.Infinity) || (ka === Cls.Zero && kb === Cls.Zero)) return invalid(env);
  if (kb === Cls.Zero && ka !== Cls.Infinity) {
    env.flags |= ZE;
    if (!(env.mask & ZE)) return null;
    return f80(sign, 0x7fff, 0x80000000, 0);
  }
  if (!denormalCheck(isDenCls(ka) || isDenCls(kb) || aDen || bDen, env)) return null;
  if (ka === Cls.Infinity) return f80(sign, 0x7fff, 0x80000000, 0);
  if (kb === Cls.Infinity || ka === Cls.Zero) { env.c1 = 0; return f80(sign, 0, 0, 0); }
  let ea = loadW(a); const a0 = W0, a1 = W1;
  const eb = loadW(b); const b0 = W0, b1 = W1;
  // Restoring division, remainder as rh (up to 33 bits, a double) : rl.
  let rh = a0, rl = a1;
  if (a0 < b0 || (a0 === b0 && a1 < b1)) {
    rh = rh * 2 + (rl >>> 31); rl = (rl << 1) >>> 0;
    ea--;
  }
  const q = [0, 0, 0];
  for (let i = 0; i < 96; i++) {
    let bit = 0;
    if (rh > b0 || (rh === b0 && rl >= b1)) {
      let l = rl - b1, borrow = 0;
      if (l < 0) { l += 0x100000000; borrow = 1; }
      rh = rh - b0 - borrow; rl = l;
      bit = 1;
    }
    const w = i >> 5;
    q[w] = q[w]! * 2 + bit;
    rh = rh * 2 + (rl >>> 31); rl = (rl << 1) >>> 0;
  }
  W0 = q[0]! >>> 0; W1 = q[1]! >>> 0; W2 = q[2]! >>> 0;
  if (rh !== 0 || rl !== 0) W2 = (W2 | 1) >>> 0;
  return roundPackW(sign, ea - eb + 16383, regFormat(env.prec), env);
}

function sigBig(hi: number, lo: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo);
}

function isqrt(n: bigint): bigint {
  if (n < 2n) return n;
  // Newton's iteration from a power of two above the root decreases monotonically to floor(sqrt(n)).
  let x = 1n << BigInt(Math.ceil(n.toString(2).length / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) return x;
    x = y;
  }
}

/** Loads a nonnegative BigInt significand (bit length ≤ 96 + any) into W, jamming lower bits. */
function loadWBig(v: bigint, sticky: boolean): number {
  // Returns the shift applied: W = v >> shift (with jam) normalized so bit 95 is the top bit.
  const len = v.toString(2).length;
  const shift = len - 96;
  let w = shift > 0 ? v >> BigInt(shift) : v << BigInt(-shift);
  if (shift > 0 && (v & ((1n << BigInt(shift)) - 1n)) !== 0n) sticky = true;
  if (sticky) w |= 1n;
  W0 = Number((w >> 64n) & 0xffffffffn); W1 = Number((w >> 32n) & 0xffffffffn); W2 = Number(w & 0xffffffffn);
  return shift;
}

/** The square root of a, rounded to env.prec. */
export function sqrt(a: F80, env: FpEnv): F80 | null {
  const ka = classify(a);
  const s = specialOperands(a, ka, null, Cls.Zero, env);
  if (s !== undefined) return s;
  if (ka === Cls.Zero) return f80(a.sign, 0, 0, 0);
  if (a.sign === 1) return invalid(env);
  if (!denormalCheck(isDenCls(ka), env)) return null;
  if (ka === Cls.Infinity) return f80(0, 0x7fff, 0x80000000, 0);
  const e = loadW(a);
  // value = m × 2^(e-16383-63), m 64-bit; make the exponent even, then take 2^132 more bits.
  let m = sigBig(W0, W1);
  let ue = e - 16383 - 63;
  if (ue & 1) { m <<= 1n; ue--; }
  const n = m << 132n;
  const r = isqrt(n);
  const exact = r * r === n;
  const shift = loadWBig(r, !exact);
  // value = r × 2^(ue/2 - 66); W holds r >> shift, with bit 95 = 2^(95+shift).
  const re = (ue >> 1) - 66 + shift + 95;
  return roundPackW(0, re + 16383, regFormat(env.prec), env);
}

// --- Comparison ---------------------------------------------------------------------------------

/** Comparison results. */
export const LESS = -1, EQUAL = 0, GREATER = 1, UNORDERED = 2;

/**
 * Compares a with b. `quietNaNs`: QNaN operands raise no IE (FUCOM*). Returns LESS, EQUAL,
 * GREATER or UNORDERED, and raises IE (UNORDERED) or DE (the real result) in env.flags. The
 * result is returned even when the exception is unmasked: the comparison instructions still
 * set their condition codes or EFLAGS then, as Intel hardware does, and only skip the pop
 * (see {@link unmaskedCompareFault}).
 */
export function compare(a: F80, b: F80, env: FpEnv, quietNaNs: boolean, bDen = false): number {
  const ka = classify(a), kb = classify(b);
  if (ka === Cls.Unsupported || kb === Cls.Unsupported || ka === Cls.SNaN || kb === Cls.SNaN ||
      (!quietNaNs && (ka === Cls.QNaN || kb === Cls.QNaN))) {
    env.flags |= IE;
    return UNORDERED;
  }
  if (ka === Cls.QNaN || kb === Cls.QNaN) return UNORDERED;
  if (isDenCls(ka) || isDenCls(kb) || bDen) env.flags |= DE;
  return compareValues(a, ka, b, kb);
}

/** True when a comparison raised IE or DE with that exception unmasked (the instruction does not pop). */
export function unmaskedCompareFault(env: FpEnv): boolean {
  return (env.flags & ~env.mask & (IE | DE)) !== 0;
}

function compareValues(a: F80, ka: Cls, b: F80, kb: Cls): number {
  const za = ka === Cls.Zero, zb = kb === Cls.Zero;
  if (za && zb) return EQUAL;
  if (a.sign !== b.sign) return a.sign ? LESS : GREATER;
  // Same sign: compare magnitudes.
  let m: number;
  if (za) m = -1;
  else if (zb) m = 1;
  else if (ka === Cls.Infinity || kb === Cls.Infinity) m = ka === kb ? 0 : ka === Cls.Infinity ? 1 : -1;
  else {
    const ea = loadW(a); const a0 = W0, a1 = W1;
    const eb = loadW(b);
    m = ea !== eb ? (ea > eb ? 1 : -1) : a0 !== W0 ? (a0 > W0 ? 1 : -1) : a1 !== W1 ? (a1 > W1 ? 1 : -1) : 0;
  }
  if (a.sign) m = -m;
  return m < 0 ? LESS : m > 0 ? GREATER : EQUAL;
}

// --- Integer rounding, scaling, extraction, remainders ------------------------------------------

/** Rounds a to an integral value by env.rc (FRNDINT). Raises PE when inexact. */
export function roundToInt(a: F80, env: FpEnv): F80 | null {
  const ka = classify(a);
  const s = specialOperands(a, ka, null, Cls.Zero, env);
  if (s !== undefined) return s;
  if (ka === Cls.Zero || ka === Cls.Infinity) { env.c1 = 0; return f80(a.sign, a.exp, a.hi, a.lo); }
  if (!denormalCheck(isDenCls(ka), env)) return null;
  const e = loadW(a);
  const ue = e - 16383;
  env.c1 = 0;
  if (ue >= 63) return f80(a.sign, e, W0, W1);
  if (ue < 0) {
    // |a| < 1: the result is 0 or 1.
    const half = ue === -1;
    const aboveHalf = half && (W0 !== 0x80000000 || W1 !== 0);
    let one: boolean;
    switch (env.rc) {
      case RC_NEAREST: one = aboveHalf; break;
      case RC_DOWN: one = a.sign === 1; break;
      case RC_UP: one = a.sign === 0; break;
      default: one = false;
    }
    env.flags |= PE;
    if (one) { env.c1 = 1; return f80(a.sign, 0x3fff, 0x80000000, 0); }
    return f80(a.sign, 0, 0, 0);
  }
  const r = roundBits(ue + 1, env.rc, a.sign);
  let re = e;
  if (CARRY) re++;
  if (r !== 0) { env.flags |= PE; env.c1 = r === 2 ? 1 : 0; }
  return f80(a.sign, re, W0, W1);
}

/**
 * Rounds a to a signed integer by env.rc for FIST/FBSTP. Returns the integer as a BigInt, or
 * null for NaN, infinity, unsupported or out-of-range operands (the caller raises IE: the range
 * depends on the destination).
 */
export function toIntegerBig(a: F80, env: FpEnv): bigint | null {
  const ka = classify(a);
  if (ka === Cls.Unsupported || isNaNCls(ka) || ka === Cls.Infinity) return null;
  if (ka === Cls.Zero) { env.c1 = 0; return 0n; }
  const t = new FpEnv();
  t.rc = env.rc; t.mask = 0x3f;
  const r = roundToInt(a, t)!;
  env.c1 = t.c1;
  // The PE of an out-of-range value is not reported; the caller adds it back for in-range results.
  const inexact = (t.flags & PE) !== 0;
  if (isZero(r)) { if (inexact) env.flags |= PE; return 0n; }
  const ue = r.exp - 16383;
  if (ue > 66) return null;
  let v = sigBig(r.hi, r.lo);
  v = ue >= 63 ? v << BigInt(ue - 63) : v >> BigInt(63 - ue);
  if (inexact) env.flags |= PE;
  return r.sign ? -v : v;
}

/** FSCALE: a × 2^trunc(b). */
export function scale(a: F80, b: F80, env: FpEnv): F80 | null {
  const ka = classify(a), kb = classify(b);
  const s = specialOperands(a, ka, b, kb, env);
  if (s !== undefined) return s;
  if (kb === Cls.Infinity) {
    if (b.sign === 0) {
      if (ka === Cls.Zero) return invalid(env);
      if (!denormalCheck(isDenCls(ka), env)) return null;
      return f80(a.sign, 0x7fff, 0x80000000, 0);
    }
    if (ka === Cls.Infinity) return invalid(env);
    if (!denormalCheck(isDenCls(ka), env)) return null;
    return f80(a.sign, 0, 0, 0);
  }
  if (!denormalCheck(isDenCls(ka) || isDenCls(kb), env)) return null;
  if (ka === Cls.Zero || ka === Cls.Infinity) { env.c1 = 0; return f80(a.sign, a.exp, a.hi, a.lo); }
  // trunc(b), clamped: beyond ±2^17 the result over/underflows whatever a is.
  let n = 0;
  if (kb !== Cls.Zero) {
    const eb = loadW(b) - 16383;
    if (eb >= 17) n = 1 << 17;
    else if (eb >= 0) n = Math.floor(W0 / 2 ** (31 - eb));
    n = b.sign ? -n : n;
  }
  const e = loadW(a);
  return roundPackW(a.sign, e + n, FMT_F80, env);
}

/** FXTRACT: [exponent, significand] of a, or null if the operation stops (unmasked). */
export function extract(a: F80, env: FpEnv): [F80, F80] | null {
  const ka = classify(a);
  const s = specialOperands(a, ka, null, Cls.Zero, env);
  if (s !== undefined) return s === null ? null : [s, s];
  if (ka === Cls.Zero) {
    env.flags |= ZE;
    if (!(env.mask & ZE)) return null;
    return [f80(1, 0x7fff, 0x80000000, 0), f80(a.sign, 0, 0, 0)];
  }
  if (ka === Cls.Infinity) return [f80(0, 0x7fff, 0x80000000, 0), f80(a.sign, 0x7fff, 0x80000000, 0)];
  if (!denormalCheck(isDenCls(ka), env)) return null;
  const e = loadW(a);
  const sig = f80(a.sign, 0x3fff, W0, W1);
  return [fromInt(e - 16383), sig];
}

/** Result of FPREM/FPREM1. */
export interface PremResult {
  value: F80;
  /** C2: the reduction is incomplete. */
  partial: boolean;
  /** The low three bits of the quotient (complete reduction). */
  q: number;
}

/**
 * FPREM (`ieee` false: quotient truncated) and FPREM1 (`ieee` true: quotient rounded to
 * nearest). Returns null when the operation stops (unmasked IE/DE).
 */
export function prem(a: F80, b: F80, env: FpEnv, ieee: boolean): PremResult | null {
  const ka = classify(a), kb = classify(b);
  const s = specialOperands(a, ka, b, kb, env);
  if (s !== undefined) return s === null ? null : { value: s, partial: false, q: 0 };
  if (ka === Cls.Infinity || kb === Cls.Zero) {
    const r = invalid(env);
    return r === null ? null : { value: r, partial: false, q: 0 };
  }
  if (!denormalCheck(isDenCls(ka) || isDenCls(kb), env)) return null;
  if (ka === Cls.Zero || kb === Cls.Infinity) return { value: canonical(a), partial: false, q: 0 };
  const ea = loadW(a); const ma = sigBig(W0, W1);
  const eb = loadW(b); const mb = sigBig(W0, W1);
  const d = ea - eb;
  if (d < 0) {
    if (ieee && d === -1) {
      // |a| may exceed |b|/2: quotient rounds to 1.
      // a = ma × 2^(eb-1-63) and |b|/2 = mb × 2^(eb-1-63): above half, a - b has magnitude 2mb - ma.
      if (ma > mb) return packRem(2n * mb - ma, eb - 1, a.sign ^ 1, 1);
    }
    return { value: canonical(a), partial: false, q: 0 };
  }
  if (d >= 64) {
    const n = (d & 31) | 32;
    // Partial: reduce by b × 2^(d-n), quotient truncated to an integer of at most n bits.
    const shift = d - n; // remainder = a - b·2^shift·floor(a / (b·2^shift))
    const num = ma << BigInt(d - shift);
    const q = num / mb;
    const rem = num - q * mb;
    const res = packRem(rem, eb + shift, a.sign, 0);
    return { value: res.value, partial: true, q: Number(q & 7n) };
  }
  const num = ma << BigInt(d);
  let q = num / mb;
  let rem = num - q * mb;
  let sign = a.sign;
  if (ieee) {
    const twice = rem * 2n;
    if (twice > mb || (twice === mb && (q & 1n) === 1n)) {
      q += 1n;
      rem = mb - rem;
      sign ^= 1;
    }
  }
  return packRem(rem, eb, sign, Number(q & 7n));
}

/** Packs remainder r × 2^(e - 16383 - 63) (exact) into a PremResult; zero keeps `sign`. */
function packRem(r: bigint, e: number, sign: number, q: number): PremResult {
  if (r === 0n) return { value: f80(sign, 0, 0, 0), partial: false, q };
  const shift = loadWBig(r, false);
  // W bit 95 has weight 2^(95 + shift) in units of 2^(e - 16383 - 63).
  const re = e + shift + 95 - 63;
  const env = new FpEnv();
  const v = roundPackW(sign, re, FMT_F80, env)!;
  return { value: v, partial: false, q };
}

// --- Conversions --------------------------------------------------------------------------------

/** An exact integer (|v| < 2^53) as F80. */
export function fromInt(v: number): F80 {
  if (v === 0) return f80(0, 0, 0, 0);
  const sign = v < 0 ? 1 : 0;
  const m = Math.abs(v);
  const hi = Math.floor(m / 0x100000000), lo = m >>> 0;
  W0 = hi >>> 0; W1 = lo; W2 = 0;
  const n = normalizeW();
  return f80(sign, 16383 + 63 - n, W0, W1);
}

/** A 64-bit integer (two's complement, as BigInt in range) as F80, exactly. */
export function fromBigInt(v: bigint): F80 {
  if (v === 0n) return f80(0, 0, 0, 0);
  const sign = v < 0n ? 1 : 0;
  const m = sign ? -v : v;
  W0 = Number((m >> 32n) & 0xffffffffn); W1 = Number(m & 0xffffffffn); W2 = 0;
  const n = normalizeW();
  return f80(sign, 16383 + 63 - n, W0, W1);
}

/** Sign-extended int16/int32 value as F80 (FILD m16/m32). */
export function fromInt32(v: number): F80 {
  return fromInt(v | 0);
}

/** Whether the float32/float64 encoding is a denormal (for DE on arithmetic operands). */
export function isF32Denormal(bits: number): boolean {
  return (bits & 0x7f800000) === 0 && (bits & 0x7fffff) !== 0;
}
export function isF64Denormal(hi: number, lo: number): boolean {
  return (hi & 0x7ff00000) === 0 && ((hi & 0xfffff) | lo) !== 0;
}

/** Widens a float32 encoding exactly; SNaNs stay signaling (the consumer raises IE). */
export function fromF32Raw(bits: number): F80 {
  const sign = bits >>> 31, e = (bits >>> 23) & 0xff, f = bits & 0x7fffff;
  if (e === 0xff) return f80(sign, 0x7fff, 0x80000000 | (f << 8), 0);
  if (e === 0) {
    if (f === 0) return f80(sign, 0, 0, 0);
    W0 = f; W1 = 0; W2 = 0;
    const n = normalizeW();
    // value = f × 2^(-126-23); W bit 95 = 2^(-149 + 31 - n)
    return f80(sign, 16383 - 149 + 31 - n, W0, W1);
  }
  return f80(sign, e - 127 + 16383, 0x80000000 | (f << 8), 0);
}

/** Widens a float64 encoding exactly; SNaNs stay signaling. */
export function fromF64Raw(hi: number, lo: number): F80 {
  const sign = hi >>> 31, e = (hi >>> 20) & 0x7ff, fh = hi & 0xfffff;
  const sh = ((fh << 11) | (lo >>> 21)) >>> 0, sl = (lo << 11) >>> 0;
  if (e === 0x7ff) return f80(sign, 0x7fff, 0x80000000 | sh, sl);
  if (e === 0) {
    if ((fh | lo) === 0) return f80(sign, 0, 0, 0);
    W0 = sh; W1 = sl; W2 = 0;
    const n = normalizeW();
    // value = 0.f × 2^-1022; W bit 95 (the integer-bit position) has weight 2^-1022.
    return f80(sign, 16383 - 1022 - n, W0, W1);
  }
  return f80(sign, e - 1023 + 16383, 0x80000000 | sh, sl);
}

/**
 * FLD m32/m64 semantics on a widened value: SNaN → IE and quieted; a denormal source raises
 * DE. `den` says whether the source encoding was denormal. Returns null only for an SNaN with
 * IE unmasked.
 */
export function loadConverted(v: F80, den: boolean, env: FpEnv): F80 | null {
  const k = classify(v);
  if (k === Cls.SNaN) {
    env.flags |= IE;
    if (!(env.mask & IE)) return null;
    return quiet(v);
  }
  // The conversion is exact: even with DE unmasked the value is loaded (as the hardware does).
  if (den) env.flags |= DE;
  return v;
}

/** Narrows for FST m32: returns the float32 bits, or null when nothing may be stored. */
export function toF32(a: F80, env: FpEnv): number | null {
  const k = classify(a);
  if (k === Cls.Unsupported || k === Cls.SNaN) {
    env.flags |= IE;
    if (!(env.mask & IE)) return null;
    if (k === Cls.Unsupported) return 0xffc00000 | 0;
  }
  if (k === Cls.QNaN || k === Cls.SNaN) return ((a.sign << 31) | 0x7fc00000 | ((a.hi >>> 8) & 0x7fffff)) | 0;
  if (k === Cls.Infinity) return ((a.sign << 31) | 0x7f800000) | 0;
  if (k === Cls.Zero) { env.c1 = 0; return (a.sign << 31) | 0; }
  const r = roundTo(a, FMT_F32, env);
  if (r === null) return null;
  return ((r.sign << 31) | (r.exp << 23) | ((r.hi >>> 8) & 0x7fffff)) | 0;
}

/** Narrows for FST m64: [lo, hi] dwords, or null when nothing may be stored. */
export function toF64(a: F80, env: FpEnv): [number, number] | null {
  const k = classify(a);
  if (k === Cls.Unsupported || k === Cls.SNaN) {
    env.flags |= IE;
    if (!(env.mask & IE)) return null;
    if (k === Cls.Unsupported) return [0, 0xfff80000 | 0];
  }
  if (k === Cls.QNaN || k === Cls.SNaN) {
    const hi = (a.sign << 31) | 0x7ff80000 | ((a.hi >>> 11) & 0x7ffff);
    const lo = (a.hi << 21) | (a.lo >>> 11);
    return [lo | 0, hi | 0];
  }
  if (k === Cls.Infinity) return [0, ((a.sign << 31) | 0x7ff00000) | 0];
  if (k === Cls.Zero) { env.c1 = 0; return [0, (a.sign << 31) | 0]; }
  const r = roundTo(a, FMT_F64, env);
  if (r === null) return null;
  const hi = (r.sign << 31) | (r.exp << 20) | ((r.hi >>> 11) & 0xfffff);
  const lo = (r.hi << 21) | (r.lo >>> 11);
  return [lo | 0, hi | 0];
}

/**
 * FIST/FISTP: the integer (as BigInt) for an integer of `bits` bits, or the integer indefinite
 * (-2^(bits-1)) with IE when out of range or not a number; null if IE is unmasked.
 */
export function toInt(a: F80, bits: number, env: FpEnv): bigint | null {
  const v = toIntegerBig(a, env);
  const lim = 1n << BigInt(bits - 1);
  if (v === null || v >= lim || v < -lim) {
    env.flags = (env.flags & ~PE) | IE;
    env.c1 = 0;
    if (!(env.mask & IE)) return null;
    return -lim;
  }
  return v;
}

/** Packed BCD (10 bytes, 18 digits + sign byte) to F80. Invalid digits give an undefined (but deterministic) value. */
export function fromBcd(bytes: Uint8Array | number[]): F80 {
  let v = 0n;
  for (let i = 8; i >= 0; i--) {
    const b = bytes[i]!;
    v = v * 100n + BigInt((b >> 4) * 10 + (b & 15));
  }
  const neg = (bytes[9]! & 0x80) !== 0;
  if (v === 0n) return f80(neg ? 1 : 0, 0, 0, 0);
  return fromBigInt(neg ? -v : v);
}

/** The packed-BCD indefinite: FF FF C0 00 00 00 00 00 00 00 (memory order reversed). */
export const BCD_INDEFINITE: readonly number[] = Object.freeze([0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff]);

/** FBSTP: 10 BCD bytes, the BCD indefinite with IE when out of range, or null if IE unmasked. */
export function toBcd(a: F80, env: FpEnv): number[] | null {
  const v = toIntegerBig(a, env);
  const lim = 10n ** 18n;
  if (v === null || v >= lim || v <= -lim) {
    env.flags = (env.flags & ~PE) | IE;
    env.c1 = 0;
    if (!(env.mask & IE)) return null;
    return [...BCD_INDEFINITE];
  }
  let m = v < 0n ? -v : v;
  const out: number[] = [];
  for (let i = 0; i < 9; i++) {
    const d0 = Number(m % 10n); m /= 10n;
    const d1 = Number(m % 10n); m /= 10n;
    out.push((d1 << 4) | d0);
  }
  out.push(v < 0n || (v === 0n && a.sign === 1) ? 0x80 : 0);
  return out;
}

/** Reads the 10-byte memory format (little-endian). */
export function fromBytes80(b: ArrayLike<number>, off = 0): F80 {
  const lo = (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
  const hi = (b[off + 4]! | (b[off + 5]! << 8) | (b[off + 6]! << 16) | (b[off + 7]! << 24)) >>> 0;
  const se = b[off + 8]! | (b[off + 9]! << 8);
  return f80(se >> 15, se & 0x7fff, hi, lo);
}

/** The 10-byte memory format. */
export function toBytes80(a: F80): number[] {
  const se = (a.sign << 15) | a.exp;
  return [
    a.lo & 0xff, (a.lo >>> 8) & 0xff, (a.lo >>> 16) & 0xff, a.lo >>> 24,
    a.hi & 0xff, (a.hi >>> 8) & 0xff, (a.hi >>> 16) & 0xff, a.hi >>> 24,
    se & 0xff, se >> 8,
  ];
}

/** 20 hex digits, sign/exponent first (the oracle's notation). */
export function toHex(a: F80): string {
  return ((a.sign << 15) | a.exp).toString(16).padStart(4, '0') + a.hi.toString(16).padStart(8, '0') + a.lo.toString(16).padStart(8, '0');
}
export function fromHex(s: string): F80 {
  const se = parseInt(s.slice(0, 4), 16);
  return f80(se >> 15, se & 0x7fff, parseInt(s.slice(4, 12), 16), parseInt(s.slice(12, 20), 16));
}

// --- Transcendentals (float64 precision, not bit-exact) ----------------------------------------

/** F80 to a JS number (rounded to nearest double; NaN for NaNs and unsupported encodings). */
export function toNumber(a: F80): number {
  const k = classify(a);
  if (k === Cls.Unsupported || isNaNCls(k)) return NaN;
  if (k === Cls.Infinity) return a.sign ? -Infinity : Infinity;
  if (k === Cls.Zero) return a.sign ? -0 : 0;
  const e = (a.exp === 0 ? 1 : a.exp) - 16383 - 63;
  // One rounding of the significand to 53 bits, then scaling in two exact-ish steps.
  const m = a.hi * 0x100000000 + a.lo;
  const e1 = Math.max(Math.min(e, 1000), -1000);
  const v = m * 2 ** e1 * 2 ** (e - e1);
  return a.sign ? -v : v;
}

/** A JS number to F80, exactly. */
export function fromNumber(v: number): F80 {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, v);
  return fromF64Raw(dv.getUint32(0), dv.getUint32(4));
}
