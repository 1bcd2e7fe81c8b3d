import type { X86Cpu } from './cpu.js';
import { AF, CF, OF } from './flags.js';
import { LazyOp } from './flags.js';
import { Vector } from './exceptions.js';

/**
 * The eight ALU operations of opcodes 00–3F and group 1, in ModRM `reg` order:
 * ADD OR ADC SBB AND SUB XOR CMP. Returns the unmasked result; defers the flags.
 */
export function alu(c: X86Cpu, op: number, a: number, b: number, bits: number): number {
  let r: number;
  switch (op) {
    case 0: r = (a + b) | 0; c.lazy(LazyOp.Add, a, b, r, bits); return r;
    case 1: r = a | b; c.lazy(LazyOp.Logic, 0, 0, r, bits); return r;
    case 2: r = (a + b + c.getCF()) | 0; c.lazy(LazyOp.Add, a, b, r, bits); return r;
    case 3: r = (a - b - c.getCF()) | 0; c.lazy(LazyOp.Sub, a, b, r, bits); return r;
    case 4: r = a & b; c.lazy(LazyOp.Logic, 0, 0, r, bits); return r;
    case 5:
    case 7: r = (a - b) | 0; c.lazy(LazyOp.Sub, a, b, r, bits); return r;
    default: r = a ^ b; c.lazy(LazyOp.Logic, 0, 0, r, bits); return r;
  }
}

/** Mask of an operand of `bits` width. */
function maskOf(bits: number): number {
  return bits === 32 ? -1 : (1 << bits) - 1;
}

/**
 * Group 2 shifts and rotates (ModRM `reg`: ROL ROR RCL RCR SHL SHR SAL SAR) of `v` by `count`.
 * `v` is zero-extended to `bits`. Returns the new value; a masked count of 0 changes nothing.
 */
export function shift(c: X86Cpu, op: number, v: number, count: number, bits: number): number {
  count &= 31;
  if (count === 0) return v;
  const mask = maskOf(bits);
  const top = bits - 1;
  v &= mask;
  let r: number, cf: number, of: number;
  switch (op) {
    case 0: { // ROL
      const n = count % bits;
      r = n === 0 ? v : ((v << n) | (v >>> (bits - n))) & mask;
      cf = r & 1;
      of = ((r >>> top) & 1) ^ cf;
      break;
    }
    case 1: { // ROR
      const n = count % bits;
      r = n === 0 ? v : ((v >>> n) | (v << (bits - n))) & mask;
      cf = (r >>> top) & 1;
      of = cf ^ ((r >>> (top - 1)) & 1);
      break;
    }
    case 2: { // RCL: rotate bits+1 positions through CF
      const n = bits === 32 ? count : count % (bits + 1);
      r = v; cf = c.getCF();
      for (let i = 0; i < n; i++) {
        const out = (r >>> top) & 1;
        r = ((r << 1) | cf) & mask;
        cf = out;
      }
      of = ((r >>> top) & 1) ^ cf;
      break;
    }
    case 3: { // RCR
      const n = bits === 32 ? count : count % (bits + 1);
      r = v; cf = c.getCF();
      for (let i = 0; i < n; i++) {
        const out = r & 1;
        r = ((r >>> 1) | (cf << top)) & mask;
        cf = out;
      }
      // Defined for a count of 1 (old MSB xor old CF); larger counts repeat the 1-bit step.
      of = ((r >>> top) ^ (r >>> (top - 1))) & 1;
      break;
    }
    case 4:
    case 6: { // SHL/SAL
      r = (v << count) & mask;
      cf = count <= bits ? (v >>> (bits - count)) & 1 : 0;
      of = ((r >>> top) & 1) ^ cf;
      c.lazyResult(r, bits, (cf ? CF : 0) | (of ? OF : 0));
      return r;
    }
    case 5: { // SHR
      r = count >= 32 ? 0 : (v >>> count) & mask;
      cf = (v >>> (count - 1)) & 1;
      // OF is the original MSB for a 1-bit shift; after more steps that bit is 0.
      of = count === 1 ? (v >>> top) & 1 : 0;
      c.lazyResult(r, bits, (cf ? CF : 0) | (of ? OF : 0));
      return r;
    }
    default: { // SAR
      const sv = (v << (32 - bits)) >> (32 - bits);
      r = (sv >> count) & mask;
      cf = (sv >> (count - 1)) & 1;
      c.lazyResult(r, bits, cf ? CF : 0);
      return r;
    }
  }
  // Rotates touch only CF and OF.
  c.materialize();
  c.flags = (c.flags & ~(CF | OF)) | (cf ? CF : 0) | (of ? OF : 0);
  return r;
}

/** SHLD (left = true) / SHRD of `dst` with bits from `src`, by `count` (masked to 5 bits). */
export function doubleShift(c: X86Cpu, left: boolean, dst: number, src: number, count: number, bits: number): number {
  count &= 31;
  if (count === 0) return dst;
  const mask = maskOf(bits);
  const top = bits - 1;
  dst &= mask; src &= mask;
  let r: number, cf: number;
  if (bits === 32) {
    if (left) { r = (dst << count) | (src >>> (32 - count)); cf = (dst >>> (32 - count)) & 1; }
    else { r = (dst >>> count) | (src << (32 - count)); cf = (dst >>> (count - 1)) & 1; }
  } else {
    // 16-bit: shift the 32-bit concatenation. Counts above 16 are undefined on hardware.
    if (left) {
      const cat = (dst << 16) | src;
      r = (cat << count) >>> 16;
      cf = (cat >>> (32 - count)) & 1;
    } else {
      const cat = ((src << 16) | dst) >>> 0;
      r = cat >>> count;
      cf = (cat >>> (count - 1)) & 1;
    }
  }
  r &= mask;
  const of = ((r ^ dst) >>> top) & 1;
  c.lazyResult(r, bits, (cf ? CF : 0) | (of ? OF : 0));
  return r;
}

/** Unsigned 32x32 -> 64 multiply: returns the low word, leaves the high word in `mulHigh`. */
export let mulHigh = 0;
export function mulu32(a: number, b: number): number {
  a >>>= 0; b >>>= 0;
  const aL = a & 0xffff, aH = a >>> 16, bL = b & 0xffff, bH = b >>> 16;
  const ll = aL * bL, lh = aL * bH, hl = aH * bL, hh = aH * bH;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  mulHigh = (hh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) | 0;
  return ((mid << 16) | (ll & 0xffff)) | 0;
}
/** Signed 32x32 -> 64 multiply; high word in `mulHigh`. */
export function muls32(a: number, b: number): number {
  const lo = mulu32(a, b);
  let hi = mulHigh;
  if (a < 0) hi = (hi - b) | 0;
  if (b < 0) hi = (hi - a) | 0;
  mulHigh = hi;
  return lo;
}

/** Unsigned 64/32 division of hi:lo by d; quotient returned, remainder in `divRem`. Faults #DE on overflow. */
export let divRem = 0;
export function divu64(c: X86Cpu, hi: number, lo: number, d: number): number {
  hi >>>= 0; lo >>>= 0; d >>>= 0;
  if (d === 0 || hi >= d) c.fault(Vector.DE, 0, false);
  let r = hi;
  r = r * 65536 + (lo >>> 16);
  const q1 = Math.floor(r / d);
  r -= q1 * d;
  r = r * 65536 + (lo & 0xffff);
  const q2 = Math.floor(r / d);
  r -= q2 * d;
  divRem = r | 0;
  return ((q1 << 16) | q2) | 0;
}
/** Signed 64/32 division; remainder in `divRem`. */
export function divs64(c: X86Cpu, hi: number, lo: number, d: number): number {
  const neg = hi < 0;
  if (neg) { lo = (-lo) | 0; hi = (~hi + (lo === 0 ? 1 : 0)) | 0; }
  const dneg = d < 0;
  const ad = dneg ? -d : d;
  if (d === 0) c.fault(Vector.DE, 0, false);
  hi >>>= 0; lo >>>= 0;
  if (hi >= ad) c.fault(Vector.DE, 0, false);
  let r = hi * 65536 + (lo >>> 16);
  const q1 = Math.floor(r / ad);
  r -= q1 * ad;
  r = r * 65536 + (lo & 0xffff);
  const q2 = Math.floor(r / ad);
  r -= q2 * ad;
  const q = q1 * 65536 + q2; // magnitude, < 2^32
  const qs = neg !== dneg ? -q : q;
  if (qs > 0x7fffffff || qs < -0x80000000) c.fault(Vector.DE, 0, false);
  divRem = (neg ? -r : r) | 0;
  return qs | 0;
}

export { AF };
