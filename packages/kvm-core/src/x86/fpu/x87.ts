/**
 * The x87 FPU of an i686 (P6): its state ({@link X87State}) and the D8–DF escape opcodes
 * ({@link executeX87}), WAIT ({@link executeWait}) and FXSAVE/FXRSTOR ({@link fxsave},
 * {@link fxrstor}).
 *
 * Every instruction computes first and commits last: memory operands are read, and results
 * written, before any FPU register, status bit or pointer changes, so an instruction that faults
 * on memory (or exits for MMIO) leaves the unit as it was and can be restarted.
 * @module
 */
// A value import: X86Cpu.FPU_AVAILABLE is read at run time only, so the cycle with cpu.ts is harmless.
import { X86Cpu } from '../cpu.js';
import { decodeModrm } from '../modrm.js';
import { Vector } from '../exceptions.js';
import { CS, CR0_NE, CR0_PE, CR0_TS, EmulationGap } from '../constants.js';
import { AF, CF, OF, PF, SF as EFLAGS_SF, VM, ZF } from '../flags.js';
import * as F from './float80.js';
import { Cls, type F80, FpEnv, IE, SF, DE, PE, ZE } from './float80.js';

const CR0_MP = 1 << 1, CR0_EM = 1 << 2;

// FSW bits.
const FSW_ES = 0x80, FSW_C0 = 0x100, FSW_C1 = 0x200, FSW_C2 = 0x400, FSW_C3 = 0x4000, FSW_B = 0x8000;
const FSW_TOP = 0x3800;
const FSW_CC = FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3;

/** Tag values of the full tag word. */
const TAG_VALID = 0, TAG_ZERO = 1, TAG_SPECIAL = 2, TAG_EMPTY = 3;

function zeroReg(): F80 {
  return F.f80(0, 0, 0, 0);
}

/** The x87 unit's architectural state. */
export class X87State {
  /** Control word. */
  fcw = 0x037f;
  /** Status word, with TOP kept separately in `top` (bits 11-13 here are ignored). */
  sw = 0;
  /** TOP: the physical register that is ST(0). */
  top = 0;
  /** Bit i set: physical register i is empty. */
  empty = 0xff;
  /** The eight data registers, by physical number. */
  readonly regs: F80[] = [zeroReg(), zeroReg(), zeroReg(), zeroReg(), zeroReg(), zeroReg(), zeroReg(), zeroReg()];
  /** Last instruction pointer (offset), its CS selector, last data pointer (offset) and selector, last opcode (11 bits). */
  fip = 0;
  fcs = 0;
  fdp = 0;
  fds = 0;
  fop = 0;
  /** MXCSR as FXSAVE stores it (there is no SSE unit: kept only for the image). */
  mxcsr = 0x1f80;
  /**
   * Called when a waiting x87 instruction (or WAIT) finds an unmasked exception pending while
   * CR0.NE = 0: the PC's FERR# → IRQ 13 path. The instruction then goes on as if IGNNE# were
   * asserted. Called again by each later waiting instruction until the exception is cleared
   * (FNCLEX, FNINIT, FLDENV/FRSTOR of a clean status word).
   */
  onFerr: ((c: X86Cpu) => void) | null = null;
  /** Scratch rounding context, refilled from FCW by each instruction. */
  readonly env = new FpEnv();

  /** The state after RESET (SDM table 9-1): FCW 0040H, FSW 0, all tags valid-zero (5555H), registers +0. */
  reset(): void {
    this.fcw = 0x0040;
    this.sw = 0;
    this.top = 0;
    this.empty = 0;
    for (let i = 0; i < 8; i++) this.regs[i] = zeroReg();
    this.fip = this.fcs = this.fdp = this.fds = this.fop = 0;
    this.mxcsr = 0x1f80;
  }

  /** FNINIT: FCW 037FH, FSW 0, all registers empty, pointers cleared; register contents kept. */
  init(): void {
    this.fcw = 0x037f;
    this.sw = 0;
    this.top = 0;
    this.empty = 0xff;
    this.fip = this.fcs = this.fdp = this.fds = this.fop = 0;
  }

  /** The status word with TOP. */
  get fsw(): number {
    return (this.sw & ~FSW_TOP) | (this.top << 11);
  }
  set fsw(v: number) {
    this.sw = v & 0xffff & ~FSW_TOP;
    this.top = (v >> 11) & 7;
  }

  /** The full tag word (2 bits per physical register), computed from the contents as FNSTENV stores it. */
  get ftw(): number {
    let t = 0;
    for (let i = 0; i < 8; i++) t |= this.tagOf(i) << (2 * i);
    return t;
  }
  /** Loads a full tag word: only empty (11) versus non-empty counts; the rest follows the contents. */
  set ftw(v: number) {
    let e = 0;
    for (let i = 0; i < 8; i++) if (((v >> (2 * i)) & 3) === TAG_EMPTY) e |= 1 << i;
    this.empty = e;
  }

  /** Tag of physical register i. */
  tagOf(i: number): number {
    if (this.empty & (1 << i)) return TAG_EMPTY;
    const r = this.regs[i]!;
    if (r.exp === 0x7fff || (r.exp === 0 && (r.hi | r.lo) !== 0) || (r.exp !== 0 && (r.hi & 0x80000000) === 0)) return TAG_SPECIAL;
    return r.exp === 0 ? TAG_ZERO : TAG_VALID;
  }

  /** Physical number of ST(i). */
  phys(i: number): number {
    return (this.top + i) & 7;
  }
  isEmpty(i: number): boolean {
    return (this.empty & (1 << this.phys(i))) !== 0;
  }
  /** ST(i). */
  st(i: number): F80 {
    return this.regs[this.phys(i)]!;
  }
  /** Sets ST(i) and tags it non-empty. */
  setSt(i: number, v: F80): void {
    const p = this.phys(i);
    this.regs[p] = v;
    this.empty &= ~(1 << p);
  }
  push(v: F80): void {
    this.top = (this.top - 1) & 7;
    this.setSt(0, v);
  }
  pop(): void {
    this.empty |= 1 << this.top;
    this.top = (this.top + 1) & 7;
  }

  /** Recomputes ES and B from the exception flags and masks. */
  updateEs(): void {
    if ((this.sw & ~this.fcw & 0x3f) !== 0) this.sw |= FSW_ES | FSW_B;
    else this.sw &= ~(FSW_ES | FSW_B);
  }

  /** Starts an arithmetic context from FCW. */
  newEnv(): FpEnv {
    this.env.setFcw(this.fcw);
    return this.env;
  }
}

// --- Common instruction plumbing ------------------------------------------------------------

/** The #NM check for escape instructions: CR0.EM or CR0.TS. */
function checkNm(c: X86Cpu): void {
  if ((c.cr0 & (CR0_EM | CR0_TS)) !== 0) c.fault(Vector.NM, 0, false);
}

/**
 * The check a waiting x87 instruction makes first: with an unmasked exception pending (FSW.ES),
 * raise #MF (CR0.NE = 1) or signal FERR# through `onFerr` and go on (CR0.NE = 0).
 */
export function x87PendingException(c: X86Cpu): void {
  const x = c.x87;
  if ((x.sw & FSW_ES) === 0) return;
  if ((c.cr0 & CR0_NE) !== 0) c.fault(Vector.MF, 0, false);
  x.onFerr?.(c);
}

/** WAIT/FWAIT (9B): #NM when CR0.TS and CR0.MP are both set, then the pending-exception check. */
export function executeWait(c: X86Cpu): void {
  if ((c.cr0 & (CR0_TS | CR0_MP)) === (CR0_TS | CR0_MP)) c.fault(Vector.NM, 0, false);
  x87PendingException(c);
}

/**
 * Commits the status of an instruction: the new exception flags (sticky), C1 from env.c1 when
 * `setC1`, ES/B, and the last-instruction/data pointers.
 */
function finish(c: X86Cpu, x: X87State, env: FpEnv, setC1: boolean): void {
  let sw = x.sw | (env.flags & 0x7f);
  if (setC1) sw = env.c1 ? sw | FSW_C1 : sw & ~FSW_C1;
  x.sw = sw;
  if ((sw & ~x.fcw & 0x3f) !== 0) x.sw |= FSW_ES | FSW_B;
  notePointers(c, x);
}

/** FIP/FCS/FOP (and FDP/FDS for a memory operand) of a non-control instruction. */
function notePointers(c: X86Cpu, x: X87State): void {
  x.fip = c.startEip;
  x.fcs = c.segSel[CS]!;
  x.fop = ((curOp & 7) << 8) | c.modrm;
  if (c.modrm < 0xc0) {
    x.fdp = c.eaOff;
    x.fds = c.segSel[c.eaSeg]!;
  }
}

/** Sets C3 C2 C0 from a comparison (C1 cleared). */
function setCompareCodes(x: X87State, r: number): void {
  let cc = 0;
  if (r === F.LESS) cc = FSW_C0;
  else if (r === F.EQUAL) cc = FSW_C3;
  else if (r === F.UNORDERED) cc = FSW_C0 | FSW_C2 | FSW_C3;
  x.sw = (x.sw & ~FSW_CC) | cc;
}

/** Stack underflow: IE + SF, C1 = 0. Returns true when masked (the masked response applies). */
function underflow(env: FpEnv): boolean {
  env.flags |= IE | SF;
  env.c1 = 0;
  return (env.mask & IE) !== 0;
}
/** Stack overflow: IE + SF, C1 = 1. Returns true when masked. */
function overflow(env: FpEnv): boolean {
  env.flags |= IE | SF;
  env.c1 = 1;
  return (env.mask & IE) !== 0;
}

/** The opcode byte of the instruction being executed (for FOP). */
let curOp = 0;

// --- Memory operands -------------------------------------------------------------------------

function read80(c: X86Cpu, seg: number, off: number): F80 {
  const lo = c.read32(seg, off) >>> 0;
  const hi = c.read32(seg, (off + 4) | 0) >>> 0;
  const se = c.read16(seg, (off + 8) | 0);
  return F.f80(se >> 15, se & 0x7fff, hi, lo);
}
function write80(c: X86Cpu, seg: number, off: number, v: F80): void {
  c.write32(seg, off, v.lo | 0);
  c.write32(seg, (off + 4) | 0, v.hi | 0);
  c.write16(seg, (off + 8) | 0, (v.sign << 15) | v.exp);
}
function readI64(c: X86Cpu, seg: number, off: number): bigint {
  const lo = c.read32(seg, off) >>> 0;
  const hi = c.read32(seg, (off + 4) | 0);
  return (BigInt(hi) << 32n) | BigInt(lo);
}
function writeI64(c: X86Cpu, seg: number, off: number, v: bigint): void {
  c.write32(seg, off, Number(BigInt.asIntN(32, v)));
  c.write32(seg, (off + 4) | 0, Number(BigInt.asIntN(32, v >> 32n)));
}
function readBytes(c: X86Cpu, seg: number, off: number, n: number): number[] {
  const b: number[] = [];
  for (let i = 0; i < n; i++) b.push(c.read8(seg, (off + i) | 0));
  return b;
}
function writeBytes(c: X86Cpu, seg: number, off: number, b: readonly number[]): void {
  for (let i = 0; i < b.length; i++) c.write8(seg, (off + i) | 0, b[i]!);
}

// --- The escape opcodes ------------------------------------------------------------------------

/** Memory-operand source formats of the arithmetic groups D8 (m32fp), DA (m32int), DC (m64fp), DE (m16int). */
const enum Src { F32, I32, F64, I16 }

/** Reads an arithmetic memory operand: [value, was a denormal encoding]. */
function readSource(c: X86Cpu, kind: Src): [F80, boolean] {
  const seg = c.eaSeg, off = c.eaOff;
  switch (kind) {
    case Src.F32: { const b = c.read32(seg, off); return [F.fromF32Raw(b), F.isF32Denormal(b)]; }
    case Src.F64: {
      const lo = c.read32(seg, off) >>> 0, hi = c.read32(seg, (off + 4) | 0) >>> 0;
      return [F.fromF64Raw(hi, lo), F.isF64Denormal(hi, lo)];
    }
    case Src.I32: return [F.fromInt32(c.read32(seg, off)), false];
    default: return [F.fromInt32((c.read16(seg, off) << 16) >> 16), false];
  }
}

/** The arithmetic of reg field op (0 add, 1 mul, 4 sub, 5 subr, 6 div, 7 divr) on a = ST(0)-side, b = other. */
function arith(op: number, a: F80, b: F80, env: FpEnv, bDen: boolean): F80 | null {
  switch (op) {
    case 0: return F.add(a, b, env, false, false, bDen);
    case 1: return F.mul(a, b, env, false, bDen);
    case 4: return F.add(a, b, env, true, false, bDen);
    case 5: return F.add(b, a, env, true, bDen, false);
    case 6: return F.div(a, b, env, false, bDen);
    default: return F.div(b, a, env, bDen, false);
  }
}

/**
 * Executes one x87 escape instruction; `op` is the opcode byte D8..DF (prefixes already taken,
 * ModRM not yet read). Reports EmulationGap while `X86Cpu.FPU_AVAILABLE` is false.
 */
export function executeX87(c: X86Cpu, op: number): void {
  if (!X86Cpu.FPU_AVAILABLE) throw new EmulationGap(`x87 instruction ${op.toString(16)}`);
  if (c.lockPrefix) c.undefinedOpcode();
  checkNm(c);
  const m = decodeModrm(c);
  curOp = op;
  const x = c.x87;
  const reg = (m >> 3) & 7;
  if (m < 0xc0) {
    switch (op) {
      case 0xd8: memArith(c, x, reg, Src.F32); return;
      case 0xda: memArith(c, x, reg, Src.I32); return;
      case 0xdc: memArith(c, x, reg, Src.F64); return;
      case 0xde: memArith(c, x, reg, Src.I16); return;
      case 0xd9:
        switch (reg) {
          case 0: loadMem(c, x, 32); return;
          case 1: c.undefinedOpcode();
          case 2: case 3: storeFloat(c, x, 32, reg === 3); return;
          case 4: x87PendingException(c); fldenv(c, x, c.eaSeg, c.eaOff); return;
          case 5: { // FLDCW
            x87PendingException(c);
            const v = c.read16(c.eaSeg, c.eaOff);
            x.fcw = (v & 0x1f3f) | 0x40;
            x.updateEs();
            return;
          }
          case 6: fnstenv(c, x, c.eaSeg, c.eaOff); x.fcw |= 0x3f; return;
          default: c.write16(c.eaSeg, c.eaOff, x.fcw); return; // FNSTCW
        }
      case 0xdb:
        switch (reg) {
          case 0: loadInt(c, x, 32); return;
          case 2: case 3: storeInt(c, x, 32, reg === 3); return;
          case 5: loadMem(c, x, 80); return;
          case 7: storeFloat(c, x, 80, true); return;
          default: c.undefinedOpcode(); // 1: FISTTP (SSE3); 4, 6: reserved
        }
      case 0xdd:
        switch (reg) {
          case 0: loadMem(c, x, 64); return;
          case 2: case 3: storeFloat(c, x, 64, reg === 3); return;
          case 4: x87PendingException(c); frstor(c, x, c.eaSeg, c.eaOff); return;
          case 6: fnsave(c, x, c.eaSeg, c.eaOff); return;
          case 7: c.write16(c.eaSeg, c.eaOff, x.fsw); return; // FNSTSW m16
          default: c.undefinedOpcode(); // 1: FISTTP (SSE3); 5: reserved
        }
      default: // 0xdf
        switch (reg) {
          case 0: loadInt(c, x, 16); return;
          case 2: case 3: storeInt(c, x, 16, reg === 3); return;
          case 4: loadBcd(c, x); return;
          case 5: loadInt(c, x, 64); return;
          case 6: storeBcd(c, x); return;
          case 7: storeInt(c, x, 64, true); return;
          default: c.undefinedOpcode(); // 1: FISTTP (SSE3)
        }
    }
  }
  const i = m & 7;
  switch (op) {
    case 0xd8:
      if (reg === 2 || reg === 3) { compareRegs(c, x, i, reg === 3 ? 1 : 0, false); return; }
      regArith(c, x, reg, i, 0, false);
      return;
    case 0xdc:
      if (reg === 2 || reg === 3) { compareRegs(c, x, i, reg === 3 ? 1 : 0, false); return; } // FCOM2/FCOMP3 aliases
      regArith(c, x, reg, i, i, false);
      return;
    case 0xde:
      if (reg === 2) { compareRegs(c, x, i, 1, false); return; } // FCOMP5 alias
      if (reg === 3) { if (i === 1) { compareRegs(c, x, 1, 2, false); return; } c.undefinedOpcode(); } // FCOMPP
      regArith(c, x, reg, i, i, true);
      return;
    case 0xd9: d9Reg(c, x, m); return;
    case 0xda:
      if (reg < 4) { fcmov(c, x, i, [2, 4, 6, 0xa][reg]!); return; }
      if (m === 0xe9) { compareRegs(c, x, 1, 2, true); return; } // FUCOMPP
      c.undefinedOpcode();
    case 0xdb:
      if (reg < 4) { fcmov(c, x, i, [3, 5, 7, 0xb][reg]!); return; }
      if (reg === 5 || reg === 6) { comi(c, x, i, reg === 5, false); return; } // FUCOMI, FCOMI
      if (reg === 4) {
        switch (i) {
          case 0: case 1: case 4: return; // FNENI, FNDISI, FNSETPM: no-ops on the 387 and later
          case 2: x.sw &= ~(0x7f | FSW_ES | FSW_B); return; // FNCLEX
          case 3: x.init(); return; // FNINIT
        }
      }
      c.undefinedOpcode();
    case 0xdd:
      switch (reg) {
        case 0: // FFREE
          x87PendingException(c);
          x.empty |= 1 << x.phys(i);
          notePointers(c, x);
          return;
        case 1: fxch(c, x, i); return; // FXCH4 alias
        case 2: case 3: storeReg(c, x, i, reg === 3); return;
        case 4: compareRegs(c, x, i, 0, true); return;
        case 5: compareRegs(c, x, i, 1, true); return;
        default: c.undefinedOpcode();
      }
    default: // 0xdf
      switch (reg) {
        case 0: // FFREEP
          x87PendingException(c);
          x.empty |= 1 << x.phys(i);
          x.pop();
          notePointers(c, x);
          return;
        case 1: fxch(c, x, i); return; // FXCH7 alias
        case 2: case 3: storeReg(c, x, i, true); return; // FSTP8, FSTP9 aliases
        case 4:
          if (i === 0) { c.r16[0] = x.fsw; return; } // FNSTSW AX
          c.undefinedOpcode();
        case 5: comi(c, x, i, true, true); return; // FUCOMIP
        case 6: comi(c, x, i, false, true); return; // FCOMIP
        default: c.undefinedOpcode();
      }
  }
}

// --- Loads -----------------------------------------------------------------------------------

/** Pushes v (or handles stack overflow); commits status. */
function pushResult(c: X86Cpu, x: X87State, env: FpEnv, v: F80 | null): void {
  if (!x.isEmpty(7)) {
    if (overflow(env)) x.push(F.INDEFINITE);
  } else if (v !== null) {
    x.push(v);
  }
  finish(c, x, env, true);
}

/** FLD m32fp / m64fp / m80fp. */
function loadMem(c: X86Cpu, x: X87State, bits: number): void {
  x87PendingException(c);
  let v: F80, den = false;
  if (bits === 32) { const b = c.read32(c.eaSeg, c.eaOff); v = F.fromF32Raw(b); den = F.isF32Denormal(b); }
  else if (bits === 64) {
    const lo = c.read32(c.eaSeg, c.eaOff) >>> 0, hi = c.read32(c.eaSeg, (c.eaOff + 4) | 0) >>> 0;
    v = F.fromF64Raw(hi, lo); den = F.isF64Denormal(hi, lo);
  } else v = read80(c, c.eaSeg, c.eaOff);
  const env = x.newEnv();
  if (!x.isEmpty(7)) { pushResult(c, x, env, null); return; }
  pushResult(c, x, env, bits === 80 ? v : F.loadConverted(v, den, env));
}

/** FILD m16int / m32int / m64int. */
function loadInt(c: X86Cpu, x: X87State, bits: number): void {
  x87PendingException(c);
  let v: F80;
  if (bits === 16) v = F.fromInt32((c.read16(c.eaSeg, c.eaOff) << 16) >> 16);
  else if (bits === 32) v = F.fromInt32(c.read32(c.eaSeg, c.eaOff));
  else v = F.fromBigInt(readI64(c, c.eaSeg, c.eaOff));
  pushResult(c, x, x.newEnv(), v);
}

/** FBLD m80bcd. */
function loadBcd(c: X86Cpu, x: X87State): void {
  x87PendingException(c);
  const v = F.fromBcd(readBytes(c, c.eaSeg, c.eaOff, 10));
  pushResult(c, x, x.newEnv(), v);
}

/** The rounding-control-dependent constants: nearest value, and the correction for RC (SDM 8.3.8). */
const CONSTANTS: readonly [number, number, number, number, 'up' | 'down'][] = [
  [0, 0x3fff, 0x80000000, 0, 'up'], // 1 (exact)
  [0, 0x4000, 0xd49a784b, 0xcd1b8afe, 'up'], // log2(10): nearest is below the true value
  [0, 0x3fff, 0xb8aa3b29, 0x5c17f0bc, 'down'], // log2(e): nearest is above
  [0, 0x4000, 0xc90fdaa2, 0x2168c235, 'down'], // pi
  [0, 0x3ffd, 0x9a209a84, 0xfbcff799, 'down'], // log10(2)
  [0, 0x3ffe, 0xb17217f7, 0xd1cf79ac, 'down'], // ln(2)
  [0, 0, 0, 0, 'up'], // +0 (exact)
];

function loadConstant(c: X86Cpu, x: X87State, k: number): void {
  x87PendingException(c);
  const [s, e, hi, lo, dir] = CONSTANTS[k]!;
  const env = x.newEnv();
  let l = lo;
  if (k >= 1 && k <= 5) {
    if (dir === 'up' && env.rc === F.RC_UP) l = lo + 1;
    else if (dir === 'down' && (env.rc === F.RC_DOWN || env.rc === F.RC_ZERO)) l = lo - 1;
  }
  pushResult(c, x, env, F.f80(s, e, hi, l));
}

// --- Stores ----------------------------------------------------------------------------------

/** FST/FSTP m32fp, m64fp; FSTP m80fp. */
function storeFloat(c: X86Cpu, x: X87State, bits: number, pop: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  let src: F80 = F.INDEFINITE;
  if (x.isEmpty(0)) {
    if (!underflow(env)) { finish(c, x, env, true); return; }
  } else src = x.st(0);
  const seg = c.eaSeg, off = c.eaOff;
  if (bits === 80) {
    write80(c, seg, off, src);
  } else if (bits === 32) {
    const v = F.toF32(src, env);
    if (v === null) { finish(c, x, env, true); return; }
    c.write32(seg, off, v);
  } else {
    const v = F.toF64(src, env);
    if (v === null) { finish(c, x, env, true); return; }
    c.write32(seg, off, v[0]);
    c.write32(seg, (off + 4) | 0, v[1]);
  }
  if (pop) x.pop();
  finish(c, x, env, true);
}

/** FIST/FISTP m16int, m32int; FISTP m64int. */
function storeInt(c: X86Cpu, x: X87State, bits: number, pop: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  let v: bigint | null;
  if (x.isEmpty(0)) {
    if (!underflow(env)) { finish(c, x, env, true); return; }
    v = -(1n << BigInt(bits - 1));
  } else {
    v = F.toInt(x.st(0), bits, env);
    if (v === null) { finish(c, x, env, true); return; }
  }
  const seg = c.eaSeg, off = c.eaOff;
  if (bits === 16) c.write16(seg, off, Number(v) & 0xffff);
  else if (bits === 32) c.write32(seg, off, Number(BigInt.asIntN(32, v)));
  else writeI64(c, seg, off, v);
  if (pop) x.pop();
  finish(c, x, env, true);
}

/** FBSTP m80bcd. */
function storeBcd(c: X86Cpu, x: X87State): void {
  x87PendingException(c);
  const env = x.newEnv();
  let b: number[] | null;
  if (x.isEmpty(0)) {
    if (!underflow(env)) { finish(c, x, env, true); return; }
    b = [...F.BCD_INDEFINITE];
  } else {
    b = F.toBcd(x.st(0), env);
    if (b === null) { finish(c, x, env, true); return; }
  }
  writeBytes(c, c.eaSeg, c.eaOff, b);
  x.pop();
  finish(c, x, env, true);
}

/** FST/FSTP ST(i). */
function storeReg(c: X86Cpu, x: X87State, i: number, pop: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  let v: F80 = F.INDEFINITE;
  if (x.isEmpty(0)) {
    if (!underflow(env)) { finish(c, x, env, true); return; }
  } else v = x.st(0);
  x.setSt(i, v);
  if (pop) x.pop();
  finish(c, x, env, true);
}

// --- Arithmetic ------------------------------------------------------------------------------

/** D8/DA/DC/DE with a memory operand: arithmetic on ST(0), or FCOM/FCOMP/FICOM/FICOMP. */
function memArith(c: X86Cpu, x: X87State, reg: number, kind: Src): void {
  x87PendingException(c);
  const [b, bDen] = readSource(c, kind);
  const env = x.newEnv();
  if (reg === 2 || reg === 3) {
    // Unmasked IE/DE (stack underflow included) still set C3 C2 C0 and only skip the pop (Intel).
    if (x.isEmpty(0)) {
      const masked = underflow(env);
      setCompareCodes(x, F.UNORDERED);
      if (masked && reg === 3) x.pop();
      finish(c, x, env, false);
      return;
    }
    setCompareCodes(x, F.compare(x.st(0), b, env, false, bDen));
    if (reg === 3 && !F.unmaskedCompareFault(env)) x.pop();
    finish(c, x, env, false);
    return;
  }
  if (x.isEmpty(0)) {
    if (underflow(env)) x.setSt(0, F.INDEFINITE);
    finish(c, x, env, true);
    return;
  }
  const r = arith(reg, x.st(0), b, env, bDen);
  if (r !== null) x.setSt(0, r);
  finish(c, x, env, true);
}

/**
 * Register arithmetic: reg field op on ST(0) and ST(i) (op 4/6 compute ST(0) - ST(i) and
 * ST(0) / ST(i), op 5/7 the reverse, in every form); result into ST(dest), then pop if asked.
 */
function regArith(c: X86Cpu, x: X87State, op: number, i: number, dest: number, pop: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0) || x.isEmpty(i)) {
    if (underflow(env)) {
      x.setSt(dest, F.INDEFINITE);
      if (pop) x.pop();
    }
    finish(c, x, env, true);
    return;
  }
  const r = arith(op, x.st(0), x.st(i), env, false);
  if (r !== null) {
    x.setSt(dest, r);
    if (pop) x.pop();
  }
  finish(c, x, env, true);
}

/**
 * FCOM/FCOMP/FCOMPP/FUCOM/FUCOMP/FUCOMPP ST(i): pops 0, 1 or 2 times. With IE (stack underflow
 * included) or DE unmasked, Intel hardware still sets C3 C2 C0 (111 for IE, the real result for
 * DE) and only skips the pops; the SDM would leave them alone.
 */
function compareRegs(c: X86Cpu, x: X87State, i: number, pops: number, unordered: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  let r: number, pop: boolean;
  if (x.isEmpty(0) || x.isEmpty(i)) {
    pop = underflow(env);
    r = F.UNORDERED;
  } else {
    r = F.compare(x.st(0), x.st(i), env, unordered);
    pop = !F.unmaskedCompareFault(env);
  }
  setCompareCodes(x, r);
  if (pop) for (let k = 0; k < pops; k++) x.pop();
  finish(c, x, env, false);
}

/**
 * FCOMI/FCOMIP/FUCOMI/FUCOMIP: ZF PF CF from the comparison; OF SF AF cleared. With IE (stack
 * underflow included) or DE unmasked, Intel hardware still writes the flags (unordered for IE,
 * the real result for DE) and only skips the pop.
 */
function comi(c: X86Cpu, x: X87State, i: number, unordered: boolean, pop: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  let r: number;
  if (x.isEmpty(0) || x.isEmpty(i)) {
    if (!underflow(env)) pop = false;
    r = F.UNORDERED;
  } else {
    r = F.compare(x.st(0), x.st(i), env, unordered);
    if (F.unmaskedCompareFault(env)) pop = false;
  }
  const bits = r === F.LESS ? CF : r === F.EQUAL ? ZF : r === F.UNORDERED ? ZF | PF | CF : 0;
  c.setEflags((c.getEflags() & ~(CF | PF | ZF | OF | EFLAGS_SF | AF)) | bits);
  if (pop) x.pop();
  env.c1 = 0;
  finish(c, x, env, true);
}

/** FCMOVcc ST(0), ST(i), with cc an integer condition code (B=2, E=4, BE=6, U=0xA, odd = negated). */
function fcmov(c: X86Cpu, x: X87State, i: number, cc: number): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0) || x.isEmpty(i)) {
    if (underflow(env)) x.setSt(0, F.INDEFINITE);
    finish(c, x, env, true);
    return;
  }
  if (c.cond(cc)) x.setSt(0, x.st(i));
  finish(c, x, env, true);
}

/** FXCH ST(i). */
function fxch(c: X86Cpu, x: X87State, i: number): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0) || x.isEmpty(i)) {
    if (!underflow(env)) { finish(c, x, env, true); return; }
    if (x.isEmpty(0)) x.setSt(0, F.INDEFINITE);
    if (x.isEmpty(i)) x.setSt(i, F.INDEFINITE);
  }
  const a = x.st(0);
  x.setSt(0, x.st(i));
  x.setSt(i, a);
  finish(c, x, env, true);
}

/** D9 with a register operand. */
function d9Reg(c: X86Cpu, x: X87State, m: number): void {
  const i = m & 7;
  switch (m >> 3) {
    case 0x18: { // FLD ST(i)
      x87PendingException(c);
      const env = x.newEnv();
      if (!x.isEmpty(7)) { pushResult(c, x, env, null); return; }
      if (x.isEmpty(i)) {
        if (underflow(env)) x.push(F.INDEFINITE);
        finish(c, x, env, true);
        return;
      }
      pushResult(c, x, env, x.st(i));
      return;
    }
    case 0x19: fxch(c, x, i); return;
    case 0x1a:
      if (i !== 0) c.undefinedOpcode();
      x87PendingException(c); // FNOP
      notePointers(c, x);
      return;
    case 0x1b: storeReg(c, x, i, true); return; // FSTP1 alias
    case 0x1c:
      switch (i) {
        case 0: case 1: unarySign(c, x, i === 0 ? 'chs' : 'abs'); return;
        case 4: ftst(c, x); return;
        case 5: fxam(c, x); return;
        default: c.undefinedOpcode();
      }
    case 0x1d:
      if (i === 7) c.undefinedOpcode();
      loadConstant(c, x, i);
      return;
    case 0x1e:
      switch (i) {
        case 0: transcendental(c, x, 'f2xm1'); return;
        case 1: transcendental(c, x, 'fyl2x'); return;
        case 2: transcendental(c, x, 'fptan'); return;
        case 3: transcendental(c, x, 'fpatan'); return;
        case 4: fxtract(c, x); return;
        case 5: fprem(c, x, true); return;
        case 6: case 7: { // FDECSTP, FINCSTP
          x87PendingException(c);
          x.top = (x.top + (i === 7 ? 1 : -1)) & 7;
          x.sw &= ~FSW_C1;
          notePointers(c, x);
          return;
        }
      }
      return;
    default:
      switch (i) {
        case 0: fprem(c, x, false); return;
        case 1: transcendental(c, x, 'fyl2xp1'); return;
        case 2: unaryArith(c, x, (a, env) => F.sqrt(a, env)); return;
        case 3: transcendental(c, x, 'fsincos'); return;
        case 4: unaryArith(c, x, (a, env) => F.roundToInt(a, env)); return;
        case 5: fscale(c, x); return;
        case 6: transcendental(c, x, 'fsin'); return;
        default: transcendental(c, x, 'fcos'); return;
      }
  }
}

/** FCHS, FABS: sign-bit operations, no exceptions but stack underflow. */
function unarySign(c: X86Cpu, x: X87State, kind: 'chs' | 'abs'): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0)) {
    if (underflow(env)) x.setSt(0, F.INDEFINITE);
  } else {
    const a = x.st(0);
    x.setSt(0, kind === 'chs' ? F.negate(a) : F.abs(a));
  }
  finish(c, x, env, true);
}

/** A one-operand operation on ST(0) (FSQRT, FRNDINT). */
function unaryArith(c: X86Cpu, x: X87State, f: (a: F80, env: FpEnv) => F80 | null): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0)) {
    if (underflow(env)) x.setSt(0, F.INDEFINITE);
  } else {
    const r = f(x.st(0), env);
    if (r !== null) x.setSt(0, r);
  }
  finish(c, x, env, true);
}

/** FTST: compares ST(0) with +0; C3 C2 C0 are set even with IE/DE unmasked (Intel). */
function ftst(c: X86Cpu, x: X87State): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0)) {
    underflow(env);
    setCompareCodes(x, F.UNORDERED);
  } else setCompareCodes(x, F.compare(x.st(0), F.POS_ZERO, env, false));
  finish(c, x, env, false);
}

function fxam(c: X86Cpu, x: X87State): void {
  x87PendingException(c);
  const a = x.st(0);
  let cc: number;
  if (x.isEmpty(0)) cc = FSW_C3 | FSW_C0;
  else {
    switch (F.classify(a)) {
      case Cls.Unsupported: cc = 0; break;
      case Cls.QNaN: case Cls.SNaN: cc = FSW_C0; break;
      case Cls.Normal: cc = FSW_C2; break;
      case Cls.Infinity: cc = FSW_C2 | FSW_C0; break;
      case Cls.Zero: cc = FSW_C3; break;
      default: cc = FSW_C3 | FSW_C2; // denormal, pseudo-denormal
    }
  }
  if (a.sign) cc |= FSW_C1;
  x.sw = (x.sw & ~FSW_CC) | cc;
  notePointers(c, x);
}

function fxtract(c: X86Cpu, x: X87State): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0) || !x.isEmpty(7)) {
    // Underflow (empty ST(0)) or overflow (no room for the second result): masked, both are indefinite.
    const masked = x.isEmpty(0) ? underflow(env) : overflow(env);
    if (masked) { x.setSt(0, F.INDEFINITE); x.push(F.INDEFINITE); }
    finish(c, x, env, true);
    return;
  }
  const r = F.extract(x.st(0), env);
  if (r !== null) {
    x.setSt(0, r[0]);
    x.push(r[1]);
  }
  env.c1 = 0;
  finish(c, x, env, true);
}

function fscale(c: X86Cpu, x: X87State): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0) || x.isEmpty(1)) {
    if (underflow(env)) x.setSt(0, F.INDEFINITE);
  } else {
    const r = F.scale(x.st(0), x.st(1), env);
    if (r !== null) x.setSt(0, r);
  }
  finish(c, x, env, true);
}

function fprem(c: X86Cpu, x: X87State, ieee: boolean): void {
  x87PendingException(c);
  const env = x.newEnv();
  if (x.isEmpty(0) || x.isEmpty(1)) {
    if (underflow(env)) {
      x.setSt(0, F.INDEFINITE);
      x.sw &= ~(FSW_C0 | FSW_C2 | FSW_C3);
    }
    finish(c, x, env, true);
    return;
  }
  const r = F.prem(x.st(0), x.st(1), env, ieee);
  if (r !== null) {
    x.setSt(0, r.value);
    let cc = 0;
    if (r.partial) cc |= FSW_C2;
    else {
      if (r.q & 4) cc |= FSW_C0;
      if (r.q & 2) cc |= FSW_C3;
      if (r.q & 1) cc |= FSW_C1;
    }
    x.sw = (x.sw & ~FSW_CC) | cc;
    env.c1 = (cc & FSW_C1) !== 0 ? 1 : 0;
  } else env.c1 = 0;
  finish(c, x, env, true);
}

type Transcendental = 'f2xm1' | 'fyl2x' | 'fyl2xp1' | 'fptan' | 'fpatan' | 'fsin' | 'fcos' | 'fsincos';

/**
 * Transcendental instructions, computed in float64 (not bit-exact with the hardware's 80-bit
 * results). NaN, stack and invalid-domain handling follow the SDM.
 */
function transcendental(c: X86Cpu, x: X87State, kind: Transcendental): void {
  x87PendingException(c);
  const env = x.newEnv();
  const two = kind === 'fyl2x' || kind === 'fyl2xp1' || kind === 'fpatan';
  const pushes = kind === 'fptan' || kind === 'fsincos';
  if (x.isEmpty(0) || (two && x.isEmpty(1))) {
    if (underflow(env)) {
      if (two) { x.setSt(1, F.INDEFINITE); x.pop(); }
      else { x.setSt(0, F.INDEFINITE); if (pushes) x.push(F.INDEFINITE); }
    }
    finish(c, x, env, true);
    return;
  }
  if (pushes && !x.isEmpty(7)) {
    if (overflow(env)) { x.setSt(0, F.INDEFINITE); x.push(F.INDEFINITE); }
    finish(c, x, env, true);
    return;
  }
  const a = x.st(0), b = two ? x.st(1) : F.POS_ZERO;
  const ka = F.classify(a), kb = two ? F.classify(b) : Cls.Zero;
  // NaN and unsupported operands.
  if (ka === Cls.Unsupported || kb === Cls.Unsupported || F.isNaNCls(ka) || F.isNaNCls(kb)) {
    let r: F80 | null;
    if (ka === Cls.Unsupported || kb === Cls.Unsupported) { env.flags |= IE; r = env.mask & IE ? F.INDEFINITE : null; }
    else r = F.add(a, b, env); // NaN propagation as for arithmetic
    if (r !== null) {
      if (two) { x.setSt(1, r); x.pop(); }
      else { x.setSt(0, r); if (pushes) x.push(r); }
    }
    finish(c, x, env, true);
    return;
  }
  if (ka === Cls.Denormal || ka === Cls.PseudoDenormal || kb === Cls.Denormal || kb === Cls.PseudoDenormal) {
    env.flags |= DE;
    if (!(env.mask & DE)) { finish(c, x, env, true); return; }
  }
  const va = F.toNumber(a), vb = F.toNumber(b);
  const inexact = (v: number): F80 => { env.flags |= PE; return F.fromNumber(v); };
  const bad = (): void => {
    env.flags |= IE;
    if (env.mask & IE) {
      if (two) { x.setSt(1, F.INDEFINITE); x.pop(); }
      else { x.setSt(0, F.INDEFINITE); if (pushes) x.push(F.INDEFINITE); }
    }
  };
  const outOfRange = Math.abs(va) >= 2 ** 63;
  switch (kind) {
    case 'fsin': case 'fcos': case 'fptan': case 'fsincos':
      if (!Number.isFinite(va)) { bad(); break; }
      if (outOfRange) { x.sw |= FSW_C2; break; }
      x.sw &= ~FSW_C2;
      if (kind === 'fsin') x.setSt(0, va === 0 ? a : inexact(Math.sin(va)));
      else if (kind === 'fcos') x.setSt(0, inexact(Math.cos(va)));
      else if (kind === 'fptan') { x.setSt(0, va === 0 ? a : inexact(Math.tan(va))); x.push(F.ONE); }
      else { const s = va === 0 ? a : inexact(Math.sin(va)); const co = inexact(Math.cos(va)); x.setSt(0, s); x.push(co); }
      break;
    case 'f2xm1':
      if (!Number.isFinite(va)) { x.setSt(0, va > 0 ? a : F.f80(1, 0x3fff, 0x80000000, 0)); break; }
      x.setSt(0, va === 0 ? a : inexact(Math.expm1(va * Math.LN2)));
      break;
    case 'fyl2x': {
      // ST(1) × log2(ST(0)).
      if (va < 0 || (Number.isNaN(va))) { bad(); break; }
      if (va === 0) {
        if (vb === 0 || !Number.isFinite(vb) && false) { bad(); break; }
        if (vb === 0) { bad(); break; }
        env.flags |= ZE;
        if (env.mask & ZE) { x.setSt(1, F.f80(b.sign ^ 1, 0x7fff, 0x80000000, 0)); x.pop(); }
        break;
      }
      const l = Math.log2(va);
      if ((l === 0 && !Number.isFinite(vb)) || (!Number.isFinite(l) && vb === 0)) { bad(); break; }
      const r = vb * l;
      x.setSt(1, Number.isFinite(r) && r !== 0 && va !== 1 ? inexact(r) : F.fromNumber(r));
      x.pop();
      break;
    }
    case 'fyl2xp1': {
      if (va <= -1) { bad(); break; }
      const l = Math.log1p(va) / Math.LN2;
      if (l === 0 && !Number.isFinite(vb)) { bad(); break; }
      const r = vb * l;
      x.setSt(1, r === 0 ? F.fromNumber(r) : inexact(r));
      x.pop();
      break;
    }
    default: { // fpatan: atan2(ST(1), ST(0))
      const r = Math.atan2(vb, va);
      x.setSt(1, r === 0 ? F.fromNumber(r) : inexact(r));
      x.pop();
    }
  }
  env.c1 = 0;
  finish(c, x, env, true);
}

// --- Environment and state images -------------------------------------------------------------

/** Real-address or virtual-8086 mode: environment images hold linear pointers. */
function realFormat(c: X86Cpu): boolean {
  return (c.cr0 & CR0_PE) === 0 || (c.flags & VM) !== 0;
}

/** FNSTENV image (14 or 28 bytes) at seg:off. Returns the image length. */
function writeEnv(c: X86Cpu, x: X87State, seg: number, off: number): number {
  const at = (d: number) => (off + d) | 0;
  const fcw = x.fcw, fsw = x.fsw, ftw = x.ftw;
  if (c.opsize32) {
    c.write32(seg, at(0), 0xffff0000 | fcw);
    c.write32(seg, at(4), 0xffff0000 | fsw);
    c.write32(seg, at(8), 0xffff0000 | ftw);
    if (realFormat(c)) {
      const ip = (x.fcs << 4) + x.fip, dp = (x.fds << 4) + x.fdp;
      c.write32(seg, at(12), 0xffff0000 | (ip & 0xffff));
      c.write32(seg, at(16), ((ip >>> 16) << 12) | (x.fop & 0x7ff));
      c.write32(seg, at(20), 0xffff0000 | (dp & 0xffff));
      c.write32(seg, at(24), (dp >>> 16) << 12);
    } else {
      c.write32(seg, at(12), x.fip);
      c.write32(seg, at(16), x.fcs | ((x.fop & 0x7ff) << 16));
      c.write32(seg, at(20), x.fdp);
      c.write32(seg, at(24), 0xffff0000 | x.fds);
    }
    return 28;
  }
  c.write16(seg, at(0), fcw);
  c.write16(seg, at(2), fsw);
  c.write16(seg, at(4), ftw);
  if (realFormat(c)) {
    const ip = (x.fcs << 4) + x.fip, dp = (x.fds << 4) + x.fdp;
    c.write16(seg, at(6), ip & 0xffff);
    c.write16(seg, at(8), (((ip >>> 16) & 0xf) << 12) | (x.fop & 0x7ff));
    c.write16(seg, at(10), dp & 0xffff);
    c.write16(seg, at(12), ((dp >>> 16) & 0xf) << 12);
  } else {
    c.write16(seg, at(6), x.fip);
    c.write16(seg, at(8), x.fcs);
    c.write16(seg, at(10), x.fdp);
    c.write16(seg, at(12), x.fds);
  }
  return 14;
}

interface EnvImage { fcw: number; fsw: number; ftw: number; fip: number; fcs: number; fdp: number; fds: number; fop: number; len: number }

/** Reads an FLDENV image (nothing is committed). */
function readEnv(c: X86Cpu, seg: number, off: number): EnvImage {
  const at = (d: number) => (off + d) | 0;
  if (c.opsize32) {
    const fcw = c.read16(seg, at(0)), fsw = c.read16(seg, at(4)), ftw = c.read16(seg, at(8));
    const w12 = c.read32(seg, at(12)) >>> 0, w16 = c.read32(seg, at(16)) >>> 0;
    const w20 = c.read32(seg, at(20)) >>> 0, w24 = c.read32(seg, at(24)) >>> 0;
    if (realFormat(c)) {
      return {
        fcw, fsw, ftw, len: 28, fcs: 0, fds: 0, fop: w16 & 0x7ff,
        fip: ((w12 & 0xffff) | ((w16 >>> 12) << 16)) >>> 0, fdp: ((w20 & 0xffff) | ((w24 >>> 12) << 16)) >>> 0,
      };
    }
    return { fcw, fsw, ftw, len: 28, fip: w12 | 0, fcs: w16 & 0xffff, fop: (w16 >>> 16) & 0x7ff, fdp: w20 | 0, fds: w24 & 0xffff };
  }
  const fcw = c.read16(seg, at(0)), fsw = c.read16(seg, at(2)), ftw = c.read16(seg, at(4));
  const w6 = c.read16(seg, at(6)), w8 = c.read16(seg, at(8)), w10 = c.read16(seg, at(10)), w12 = c.read16(seg, at(12));
  if (realFormat(c)) {
    return { fcw, fsw, ftw, len: 14, fcs: 0, fds: 0, fop: w8 & 0x7ff, fip: w6 | ((w8 >>> 12) << 16), fdp: w10 | ((w12 >>> 12) << 16) };
  }
  return { fcw, fsw, ftw, len: 14, fip: w6, fcs: w8, fop: 0, fdp: w10, fds: w12 };
}

function commitEnv(x: X87State, e: EnvImage): void {
  x.fcw = (e.fcw & 0x1f3f) | 0x40;
  x.fsw = e.fsw;
  x.ftw = e.ftw;
  x.fip = e.fip; x.fcs = e.fcs; x.fdp = e.fdp; x.fds = e.fds; x.fop = e.fop;
  x.updateEs();
}

function fldenv(c: X86Cpu, x: X87State, seg: number, off: number): void {
  commitEnv(x, readEnv(c, seg, off));
}

function fnstenv(c: X86Cpu, x: X87State, seg: number, off: number): void {
  writeEnv(c, x, seg, off);
}

function frstor(c: X86Cpu, x: X87State, seg: number, off: number): void {
  const e = readEnv(c, seg, off);
  const regs: F80[] = [];
  for (let i = 0; i < 8; i++) regs.push(read80(c, seg, (off + e.len + 10 * i) | 0));
  commitEnv(x, e);
  for (let i = 0; i < 8; i++) x.regs[x.phys(i)] = regs[i]!;
}

function fnsave(c: X86Cpu, x: X87State, seg: number, off: number): void {
  const len = writeEnv(c, x, seg, off);
  for (let i = 0; i < 8; i++) write80(c, seg, (off + len + 10 * i) | 0, x.st(i));
  x.init();
}

/** Checks shared by FXSAVE and FXRSTOR: #NM, 16-byte alignment of the operand. */
function fxCheck(c: X86Cpu, seg: number, off: number): void {
  if (!X86Cpu.FPU_AVAILABLE) throw new EmulationGap('opcode 0f ae (FXSAVE/FXRSTOR)');
  checkNm(c);
  if (((c.segBase[seg]! + off) & 15) !== 0) c.fault(Vector.GP, 0);
}

/** FXSAVE m512byte (0F AE /0): the legacy 512-byte image; the XMM area (160-511) is not written. */
export function fxsave(c: X86Cpu, seg: number, off: number): void {
  fxCheck(c, seg, off);
  const x = c.x87;
  const at = (d: number) => (off + d) | 0;
  let abridged = 0;
  for (let i = 0; i < 8; i++) if ((x.empty & (1 << i)) === 0) abridged |= 1 << i;
  c.write16(seg, at(0), x.fcw);
  c.write16(seg, at(2), x.fsw);
  c.write16(seg, at(4), abridged);
  c.write16(seg, at(6), x.fop & 0x7ff);
  c.write32(seg, at(8), x.fip);
  c.write32(seg, at(12), x.fcs);
  c.write32(seg, at(16), x.fdp);
  c.write32(seg, at(20), x.fds);
  c.write32(seg, at(24), x.mxcsr);
  c.write32(seg, at(28), 0xffbf);
  for (let i = 0; i < 8; i++) {
    const o = 32 + 16 * i;
    write80(c, seg, at(o), x.st(i));
    c.write16(seg, at(o + 10), 0);
    c.write32(seg, at(o + 12), 0);
  }
}

/** FXRSTOR m512byte (0F AE /1). */
export function fxrstor(c: X86Cpu, seg: number, off: number): void {
  fxCheck(c, seg, off);
  const x = c.x87;
  const at = (d: number) => (off + d) | 0;
  const fcw = c.read16(seg, at(0)), fsw = c.read16(seg, at(2)), abridged = c.read8(seg, at(4));
  const fop = c.read16(seg, at(6)), fip = c.read32(seg, at(8)), fcs = c.read16(seg, at(12));
  const fdp = c.read32(seg, at(16)), fds = c.read16(seg, at(20)), mxcsr = c.read32(seg, at(24)) >>> 0;
  if ((mxcsr & ~0xffbf) !== 0) c.fault(Vector.GP, 0);
  const top = (fsw >> 11) & 7;
  const regs: F80[] = [];
  for (let i = 0; i < 8; i++) regs.push(read80(c, seg, at(32 + 16 * i)));
  x.fcw = (fcw & 0x1f3f) | 0x40;
  x.fsw = fsw;
  x.empty = ~abridged & 0xff;
  x.fop = fop & 0x7ff; x.fip = fip; x.fcs = fcs; x.fdp = fdp; x.fds = fds;
  x.mxcsr = mxcsr;
  for (let i = 0; i < 8; i++) x.regs[(top + i) & 7] = regs[i]!;
  x.updateEs();
}
