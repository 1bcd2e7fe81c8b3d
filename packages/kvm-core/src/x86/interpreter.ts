import { TLB_SLOT, type X86Cpu } from './cpu.js';
import {
  decodeModrm, isReg, readRm16, readRm32, readRm8, readRmForUpdate8, readRmForUpdateV, readRmV, writeRm16, writeRm32, writeRm8, writeRmV,
} from './modrm.js';
import { CS, DS, ES, EmulationGap, FS, GS, SS } from './constants.js';
import { alu, divRem, divs64, divu64, doubleShift, mulHigh, mulu32, muls32, shift } from './alu.js';
import { AC, AF, CF, DF, ID, IF, IOPL, LazyOp, NT, OF, RF, SF, TF, VM, ZF } from './flags.js';
import { Vector } from './exceptions.js';
import { checkIoPermission, farReturn, farTransfer, iretProtected, loadSystemSegment, probeDescriptor } from './protected.js';
import { CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR4_PAE, CR4_PGE, CR4_PSE } from './constants.js';
import { cpuid, rdmsrInstruction, wrmsrInstruction } from './cpuid.js';
import { executeWait, executeX87, fxrstor, fxsave } from './fpu/x87.js';

function regV(c: X86Cpu, r: number): number {
  return c.opsize32 ? c.r32[r]! : c.r16[r << 1]!;
}
function setRegV(c: X86Cpu, r: number, v: number): void {
  if (c.opsize32) c.r32[r] = v;
  else c.r16[r << 1] = v;
}
function bitsV(c: X86Cpu): number {
  return c.opsize32 ? 32 : 16;
}

// Control transfer -------------------------------------------------------------------------

/** Near jump to `target` (already sized), checked against the CS limit. */
function jumpNear(c: X86Cpu, target: number): void {
  if (!c.opsize32) target &= 0xffff;
  if ((target >>> 0) > c.segLimit[CS]!) c.fault(Vector.GP, 0);
  c.eip = target | 0;
}

function jumpRel(c: X86Cpu, rel: number): void {
  jumpNear(c, (c.eip + rel) | 0);
}

/** Far JMP (call = false) or CALL to sel:off. */
function farJump(c: X86Cpu, sel: number, off: number, call: boolean): void {
  if (c.protectedMode && !(c.flags & VM)) {
    farTransfer(c, sel, off, call, c.opsize32);
    return;
  }
  if (call) { c.push(c.segSel[CS]!); c.push(c.eip); }
  const target = c.opsize32 ? off | 0 : off & 0xffff;
  c.loadSeg(CS, sel);
  c.eip = target;
}

/** Real/V86-mode far return target. */
function realFarJump(c: X86Cpu, sel: number, off: number): void {
  c.loadSeg(CS, sel);
  c.eip = c.opsize32 ? off | 0 : off & 0xffff;
}

// Flags ------------------------------------------------------------------------------------

/** POPF/IRET: writes EFLAGS honouring privilege (IOPL at CPL 0 only, IF when CPL <= IOPL) and the operand size. */
function writeFlags(c: X86Cpu, v: number, size32: boolean, cpl: number = c.cpl): void {
  const old = c.getEflags();
  let mask = CF | 0x4 | AF | ZF | SF | TF | DF | OF | NT;
  if (size32) mask |= AC | ID;
  const pm = c.protectedMode;
  if (!pm || cpl === 0) mask |= IOPL;
  if (!pm || cpl <= ((old & IOPL) >> 12)) mask |= IF;
  if (!size32) mask &= 0xffff;
  c.setEflags((old & ~mask) | (v & mask));
}

// String instructions ----------------------------------------------------------------------

const STR_MOVS = 0, STR_CMPS = 1, STR_STOS = 2, STR_LODS = 3, STR_SCAS = 4, STR_INS = 5, STR_OUTS = 6;

/**
 * REP MOVS/STOS fast path: with 32-bit addresses, DF=0 and flat segments, the part of the
 * count that stays inside pages the TLB already maps as RAM is done as one bulk copy or fill
 * (Linux's clear_page, copy_to_user, memset and memcpy are REP STOSL/MOVSL). Everything else —
 * a TLB miss, MMIO, a page crossing inside an element, overlapping forward copies that must
 * replicate — is left to the per-element loop. Returns false when it did nothing.
 */
function bulkString(c: X86Cpu, kind: number, size: number, srcSeg: number): boolean {
  const count = c.r32[1]! >>> 0;
  const di = c.r32[7]! >>> 0;
  const wp = di >>> 12;
  const ws = c.tlbWrite[wp]!;
  if (ws <= c.tlbNeed) return false;
  let n = Math.min(count, ((4096 - (di & 0xfff)) / size) | 0);
  const dst = c.mems[ws & TLB_SLOT]!;
  const d = (di + c.tlbWriteOff[wp]!) | 0;
  if (kind === STR_STOS) {
    if (n <= 0) return false;
    const v = c.r32[0]!;
    if (size === 1 || v === 0 || v === -1 || (size === 2 ? (v & 0xff) === ((v >> 8) & 0xff) : (v & 0xff) * 0x01010101 === (v >>> 0))) {
      dst.fill(v & 0xff, d, d + n * size);
    } else if (size === 2) {
      for (let i = d, end = d + n * 2; i < end; i += 2) { dst[i] = v; dst[i + 1] = v >> 8; }
    } else {
      for (let i = d, end = d + n * 4; i < end; i += 4) { dst[i] = v; dst[i + 1] = v >> 8; dst[i + 2] = v >> 16; dst[i + 3] = v >> 24; }
    }
  } else {
    const si = c.r32[6]! >>> 0;
    const rp = si >>> 12;
    const rs = c.tlbRead[rp]!;
    if (rs <= c.tlbNeed || (c.segFlat & (1 << srcSeg)) === 0) return false;
    n = Math.min(n, ((4096 - (si & 0xfff)) / size) | 0);
    if (n <= 0) return false;
    const src = c.mems[rs & TLB_SLOT]!;
    const s = (si + c.tlbReadOff[rp]!) | 0;
    const len = n * size;
    // A forward copy onto a destination just above its source repeats the first bytes: not memmove.
    if (src === dst && d > s && d < s + len) return false;
    if (src === dst) dst.copyWithin(d, s, s + len); else dst.set(src.subarray(s, s + len), d);
    c.r32[6] = (si + len) | 0;
  }
  c.r32[7] = (di + n * size) | 0;
  c.r32[1] = (count - n) | 0;
  // A bulk chunk costs the time slice about what a few instructions do.
  c.budget -= 1 + (n >>> 6);
  return true;
}

function stringOp(c: X86Cpu, kind: number, size: number): void {
  const a32 = c.addrsize32;
  const srcSeg = c.prefixSeg >= 0 ? c.prefixSeg : DS;
  const delta = c.flags & DF ? -size : size;
  const rep = c.repPrefix;
  const bulk = rep !== 0 && a32 && delta > 0 && (kind === STR_STOS || kind === STR_MOVS) && (c.segFlat & (1 << ES)) !== 0;
  for (;;) {
    if (rep !== 0) {
      const count = a32 ? c.r32[1]! : c.r16[2]!;
      if (count === 0) return;
      if (bulk && bulkString(c, kind, size, srcSeg)) {
        if (c.r32[1] === 0) return;
        if (c.budget <= 0) {
          c.budget = 1;
          c.eip = c.startEip;
          return;
        }
        continue;
      }
    }
    const si = a32 ? c.r32[6]! : c.r16[12]!;
    const di = a32 ? c.r32[7]! : c.r16[14]!;
    let useSi = false, useDi = false;
    switch (kind) {
      case STR_MOVS: {
        const v = size === 1 ? c.read8(srcSeg, si) : size === 2 ? c.read16(srcSeg, si) : c.read32(srcSeg, si);
        if (size === 1) c.write8(ES, di, v); else if (size === 2) c.write16(ES, di, v); else c.write32(ES, di, v);
        useSi = useDi = true;
        break;
      }
      case STR_CMPS: {
        const a = size === 1 ? c.read8(srcSeg, si) : size === 2 ? c.read16(srcSeg, si) : c.read32(srcSeg, si);
        const b = size === 1 ? c.read8(ES, di) : size === 2 ? c.read16(ES, di) : c.read32(ES, di);
        alu(c, 7, a, b, size * 8);
        useSi = useDi = true;
        break;
      }
      case STR_STOS: {
        if (size === 1) c.write8(ES, di, c.r8[0]!); else if (size === 2) c.write16(ES, di, c.r16[0]!); else c.write32(ES, di, c.r32[0]!);
        useDi = true;
        break;
      }
      case STR_LODS: {
        if (size === 1) c.r8[0] = c.read8(srcSeg, si); else if (size === 2) c.r16[0] = c.read16(srcSeg, si); else c.r32[0] = c.read32(srcSeg, si);
        useSi = true;
        break;
      }
      case STR_SCAS: {
        const b = size === 1 ? c.read8(ES, di) : size === 2 ? c.read16(ES, di) : c.read32(ES, di);
        const a = size === 1 ? c.r8[0]! : size === 2 ? c.r16[0]! : c.r32[0]!;
        alu(c, 7, a, b, size * 8);
        useDi = true;
        break;
      }
      case STR_INS: {
        checkIoPrivilege(c, c.r16[4]!, size);
        // The destination is probed first: a fault must not follow a completed port read.
        c.checkLimit(ES, di, size);
        const v = c.ioIn(c.r16[4]!, size);
        if (size === 1) c.write8(ES, di, v); else if (size === 2) c.write16(ES, di, v); else c.write32(ES, di, v);
        useDi = true;
        break;
      }
      default: { // OUTS
        checkIoPrivilege(c, c.r16[4]!, size);
        const v = size === 1 ? c.read8(srcSeg, si) : size === 2 ? c.read16(srcSeg, si) : c.read32(srcSeg, si);
        c.ioOut(c.r16[4]!, size, v);
        useSi = true;
        break;
      }
    }
    // Registers change only after the iteration's memory and port accesses are done.
    if (useSi) { if (a32) c.r32[6] = (si + delta) | 0; else c.r16[12] = si + delta; }
    if (useDi) { if (a32) c.r32[7] = (di + delta) | 0; else c.r16[14] = di + delta; }
    if (rep === 0) return;
    if (a32) c.r32[1] = (c.r32[1]! - 1) | 0; else c.r16[2] = c.r16[2]! - 1;
    c.endReplay();
    if (kind === STR_CMPS || kind === STR_SCAS) {
      if ((rep === 0xf3) !== c.getZF()) return;
    }
    if ((a32 ? c.r32[1]! : c.r16[2]!) === 0) return;
    // Yield between iterations at the end of the time slice; the instruction resumes later.
    if (--c.budget <= 0) {
      c.budget = 1;
      c.eip = c.startEip;
      return;
    }
  }
}

/** IN/OUT/INS/OUTS of `size` bytes at `port`: above IOPL, and always in V86 mode, the TSS's I/O bitmap decides. */
function checkIoPrivilege(c: X86Cpu, port: number, size: number): void {
  if (c.protectedMode && (c.cpl > ((c.flags & IOPL) >> 12) || (c.flags & VM) !== 0)) checkIoPermission(c, port, size);
}

// Group opcodes ----------------------------------------------------------------------------

function group3(c: X86Cpu, bits: number): void {
  const op = (c.modrm >> 3) & 7;
  switch (op) {
    case 0:
    case 1: { // TEST r/m, imm
      const a = bits === 8 ? readRm8(c) : readRmV(c);
      const b = bits === 8 ? c.fetch8() : c.fetchImm();
      alu(c, 4, a, b, bits);
      return;
    }
    case 2: { // NOT
      if (bits === 8) writeRm8(c, ~readRm8(c));
      else writeRmV(c, ~readRmV(c));
      return;
    }
    case 3: { // NEG
      const a = bits === 8 ? readRmForUpdate8(c) : readRmForUpdateV(c);
      const r = alu(c, 5, 0, a, bits);
      if (bits === 8) writeRm8(c, r); else writeRmV(c, r);
      return;
    }
    case 4:
    case 5:
      multiply(c, bits, op === 5);
      return;
    default:
      divide(c, bits, op === 7);
      return;
  }
}

function multiply(c: X86Cpu, bits: number, signed: boolean): void {
  let over: boolean, result: number;
  if (bits === 8) {
    const src = readRm8(c);
    const al = c.r8[0]!;
    const p = signed ? ((al << 24) >> 24) * ((src << 24) >> 24) : al * src;
    c.r16[0] = p;
    over = signed ? p !== (p << 24) >> 24 : p > 0xff;
    result = p;
  } else if (bits === 16) {
    const src = readRm16(c);
    const ax = c.r16[0]!;
    const p = signed ? ((ax << 16) >> 16) * ((src << 16) >> 16) : ax * src;
    c.r16[0] = p; c.r16[4] = p >> 16;
    over = signed ? p !== (p << 16) >> 16 : p > 0xffff;
    result = p;
  } else {
    const src = readRm32(c);
    const lo = signed ? muls32(c.r32[0]!, src) : mulu32(c.r32[0]!, src);
    c.r32[0] = lo; c.r32[2] = mulHigh;
    over = signed ? mulHigh !== lo >> 31 : mulHigh !== 0;
    result = lo;
  }
  c.lazyResult(result, bits, over ? CF | OF : 0);
}

function divide(c: X86Cpu, bits: number, signed: boolean): void {
  if (bits === 8) {
    const d = readRm8(c);
    if (d === 0) c.fault(Vector.DE, 0, false);
    const n = c.r16[0]!;
    let q: number, r: number;
    if (signed) {
      const sn = (n << 16) >> 16, sd = (d << 24) >> 24;
      q = Math.trunc(sn / sd); r = sn % sd;
      if (q > 127 || q < -128) c.fault(Vector.DE, 0, false);
    } else {
      q = Math.floor(n / d); r = n % d;
      if (q > 0xff) c.fault(Vector.DE, 0, false);
    }
    c.r8[0] = q; c.r8[1] = r;
  } else if (bits === 16) {
    const d = readRm16(c);
    if (d === 0) c.fault(Vector.DE, 0, false);
    const n = ((c.r16[4]! << 16) | c.r16[0]!) >>> 0;
    let q: number, r: number;
    if (signed) {
      const sn = n | 0, sd = (d << 16) >> 16;
      q = Math.trunc(sn / sd); r = sn % sd;
      if (q > 32767 || q < -32768) c.fault(Vector.DE, 0, false);
    } else {
      q = Math.floor(n / d); r = n % d;
      if (q > 0xffff) c.fault(Vector.DE, 0, false);
    }
    c.r16[0] = q; c.r16[4] = r;
  } else {
    const d = readRm32(c);
    const q = signed ? divs64(c, c.r32[2]!, c.r32[0]!, d) : divu64(c, c.r32[2]!, c.r32[0]!, d);
    c.r32[0] = q; c.r32[2] = divRem;
  }
}

/** FE/FF: INC DEC (CALL CALLF JMP JMPF PUSH for FF). */
function group5(c: X86Cpu, byte: boolean): void {
  const op = (c.modrm >> 3) & 7;
  if (byte) {
    if (op > 1) c.undefinedOpcode();
    const a = readRmForUpdate8(c);
    const r = (op === 0 ? a + 1 : a - 1) | 0;
    writeRm8(c, r);
    c.lazyKeepCF(op === 0 ? LazyOp.Add : LazyOp.Sub, a, 1, r, 8);
    return;
  }
  switch (op) {
    case 0:
    case 1: {
      const a = readRmForUpdateV(c);
      const r = (op === 0 ? a + 1 : a - 1) | 0;
      writeRmV(c, r);
      c.lazyKeepCF(op === 0 ? LazyOp.Add : LazyOp.Sub, a, 1, r, bitsV(c));
      return;
    }
    case 2: { // CALL near indirect
      const target = readRmV(c);
      const ret = c.eip;
      if (!c.opsize32 && (target & 0xffff) > c.segLimit[CS]!) c.fault(Vector.GP, 0);
      c.push(ret);
      jumpNear(c, target);
      return;
    }
    case 3: // CALL far indirect
    case 5: { // JMP far indirect
      if (isReg(c)) c.undefinedOpcode();
      const off = c.opsize32 ? c.read32(c.eaSeg, c.eaOff) : c.read16(c.eaSeg, c.eaOff);
      const sel = c.read16(c.eaSeg, (c.eaOff + (c.opsize32 ? 4 : 2)) & (c.addrsize32 ? -1 : 0xffff));
      farJump(c, sel, off, op === 3);
      return;
    }
    case 4:
      jumpNear(c, readRmV(c));
      return;
    case 6:
      c.push(readRmV(c));
      return;
    default:
      c.undefinedOpcode();
  }
}

// BCD ----------------------------------------------------------------------------------------

function bcd(c: X86Cpu, op: number): void {
  const al = c.r8[0]!;
  const cf = c.getCF(), af = c.getAF();
  c.materialize();
  let f = c.flags & ~(CF | AF);
  switch (op) {
    case 0x27: { // DAA
      let v = al;
      if ((al & 0xf) > 9 || af) { v += 6; f |= AF; if (cf || v > 0xff) f |= CF; }
      if (al > 0x99 || cf) { v += 0x60; f |= CF; }
      c.r8[0] = v;
      break;
    }
    case 0x2f: { // DAS
      let v = al;
      if ((al & 0xf) > 9 || af) { v -= 6; f |= AF; if (cf || v < 0) f |= CF; }
      if (al > 0x99 || cf) { v -= 0x60; f |= CF; }
      c.r8[0] = v;
      break;
    }
    case 0x37: // AAA
      if ((al & 0xf) > 9 || af) { c.r16[0] = c.r16[0]! + 0x106; f |= AF | CF; }
      c.r8[0] = c.r8[0]! & 0xf;
      break;
    default: // 0x3F AAS
      if ((al & 0xf) > 9 || af) { c.r16[0] = c.r16[0]! - 6; c.r8[1] = c.r8[1]! - 1; f |= AF | CF; }
      c.r8[0] = c.r8[0]! & 0xf;
      break;
  }
  // SF ZF PF follow AL; OF is undefined (left as computed by the lazy Logic op: 0).
  c.flags = f;
  c.lzOp = LazyOp.Logic; c.lzR = c.r8[0]!; c.lzTop = 7; c.lzShift = 24; c.lzMask = ZF | SF | 0x4 | OF;
}

// The interpreter ----------------------------------------------------------------------------

/** Executes one instruction (or, for REP string instructions, a run of iterations). */
export function step(c: X86Cpu): void {
  c.startEsp = c.r32[4]!;
  // The shadow of STI / MOV SS covers exactly one instruction: this one.
  c.interruptShadow = false;
  c.flagsSaved = false;
  c.prefixSeg = -1;
  c.opsize32 = c.code32;
  c.addrsize32 = c.code32;
  c.repPrefix = 0;
  c.lockPrefix = false;
  let op = c.fetch8();
  // Prefixes. A 386+ allows at most 15 bytes per instruction.
  for (let n = 0; ; n++) {
    if (n >= 14) c.fault(Vector.GP, 0);
    switch (op) {
      case 0x26: c.prefixSeg = ES; break;
      case 0x2e: c.prefixSeg = CS; break;
      case 0x36: c.prefixSeg = SS; break;
      case 0x3e: c.prefixSeg = DS; break;
      case 0x64: c.prefixSeg = FS; break;
      case 0x65: c.prefixSeg = GS; break;
      case 0x66: c.opsize32 = !c.code32; break;
      case 0x67: c.addrsize32 = !c.code32; break;
      case 0xf0: c.lockPrefix = true; break;
      case 0xf2: case 0xf3: c.repPrefix = op; break;
      default:
        if (c.lockPrefix && !lockable(c, op)) c.undefinedOpcode();
        execute(c, op);
        return;
    }
    op = c.fetch8();
  }
}

/**
 * LOCK is valid only on read-modify-write instructions with a memory destination; anything
 * else is #UD. Looks at the opcode and the ModRM byte that follows without consuming it.
 */
function lockable(c: X86Cpu, op: number): boolean {
  const peek = (i: number) => c.readLin8((c.segBase[CS]! + c.eip + i) | 0);
  let modrm: number;
  if (op === 0x0f) {
    const op2 = peek(0);
    modrm = peek(1);
    const reg = (modrm >> 3) & 7;
    const ok = op2 === 0xab || op2 === 0xb3 || op2 === 0xbb || op2 === 0xb0 || op2 === 0xb1 || op2 === 0xc0 || op2 === 0xc1 ||
      (op2 === 0xba && reg >= 5) || (op2 === 0xc7 && reg === 1);
    return ok && modrm < 0xc0;
  }
  modrm = peek(0);
  const reg = (modrm >> 3) & 7;
  let ok: boolean;
  if (op < 0x40) ok = (op & 7) < 2 && (op >> 3) !== 7;
  else if (op >= 0x80 && op <= 0x83) ok = reg !== 7;
  else if (op === 0x86 || op === 0x87) ok = true;
  else if (op === 0xf6 || op === 0xf7) ok = reg === 2 || reg === 3;
  else if (op === 0xfe || op === 0xff) ok = reg < 2;
  else ok = false;
  return ok && modrm < 0xc0;
}

function execute(c: X86Cpu, op: number): void {
  if (op < 0x40 && (op & 7) < 6) {
    // 00–3F: the eight ALU operations in six forms each.
    const aop = op >> 3;
    switch (op & 7) {
      case 0: { decodeModrm(c); const a = aop === 7 ? readRm8(c) : readRmForUpdate8(c); const r = alu(c, aop, a, c.getReg8((c.modrm >> 3) & 7), 8); if (aop !== 7) writeRm8(c, r); return; }
      case 1: { decodeModrm(c); const a = aop === 7 ? readRmV(c) : readRmForUpdateV(c); const r = alu(c, aop, a, regV(c, (c.modrm >> 3) & 7), bitsV(c)); if (aop !== 7) writeRmV(c, r); return; }
      case 2: { decodeModrm(c); const reg = (c.modrm >> 3) & 7; const r = alu(c, aop, c.getReg8(reg), readRm8(c), 8); if (aop !== 7) c.setReg8(reg, r); return; }
      case 3: { decodeModrm(c); const reg = (c.modrm >> 3) & 7; const r = alu(c, aop, regV(c, reg), readRmV(c), bitsV(c)); if (aop !== 7) setRegV(c, reg, r); return; }
      case 4: { const r = alu(c, aop, c.r8[0]!, c.fetch8(), 8); if (aop !== 7) c.r8[0] = r; return; }
      default: { const r = alu(c, aop, regV(c, 0), c.fetchImm(), bitsV(c)); if (aop !== 7) setRegV(c, 0, r); return; }
    }
  }
  switch (op) {
    case 0x06: c.push(c.segSel[ES]!); return;
    case 0x07: popSeg(c, ES); return;
    case 0x0e: c.push(c.segSel[CS]!); return;
    case 0x0f: executeTwoByte(c, c.fetch8()); return;
    case 0x16: c.push(c.segSel[SS]!); return;
    case 0x17: popSeg(c, SS); c.interruptShadow = true; c.shadowFromMovSs = true; return;
    case 0x1e: c.push(c.segSel[DS]!); return;
    case 0x1f: popSeg(c, DS); return;
    case 0x27: case 0x2f: case 0x37: case 0x3f: bcd(c, op); return;

    case 0x40: case 0x41: case 0x42: case 0x43: case 0x44: case 0x45: case 0x46: case 0x47:
    case 0x48: case 0x49: case 0x4a: case 0x4b: case 0x4c: case 0x4d: case 0x4e: case 0x4f: {
      const reg = op & 7, a = regV(c, reg), inc = op < 0x48;
      const r = (inc ? a + 1 : a - 1) | 0;
      setRegV(c, reg, r);
      c.lazyKeepCF(inc ? LazyOp.Add : LazyOp.Sub, a, 1, r, bitsV(c));
      return;
    }
    case 0x50: case 0x51: case 0x52: case 0x53: case 0x54: case 0x55: case 0x56: case 0x57:
      c.push(regV(c, op & 7)); // PUSH SP pushes the value before the push (286+).
      return;
    case 0x58: case 0x59: case 0x5a: case 0x5b: case 0x5c: case 0x5d: case 0x5e: case 0x5f: {
      const v = c.opsize32 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
      c.adjustSp(c.opsize32 ? 4 : 2);
      setRegV(c, op & 7, v); // POP SP loads the popped value last.
      return;
    }
    case 0x60: { // PUSHA
      const sp = c.r32[4]!;
      for (let r = 0; r < 8; r++) c.push(r === 4 ? (c.opsize32 ? sp : sp & 0xffff) : regV(c, r));
      return;
    }
    case 0x61: { // POPA
      const size = c.opsize32 ? 4 : 2;
      const vals = c.popaScratch;
      for (let i = 0; i < 8; i++) vals[i] = size === 4 ? c.read32(SS, c.spOffset(i * size)) : c.read16(SS, c.spOffset(i * size));
      for (let i = 0; i < 8; i++) if (i !== 3) setRegV(c, 7 - i, vals[i]!);
      c.adjustSp(8 * size);
      return;
    }
    case 0x62: { // BOUND
      decodeModrm(c);
      if (isReg(c)) c.undefinedOpcode();
      const reg = (c.modrm >> 3) & 7;
      let v: number, lo: number, hi: number;
      if (c.opsize32) {
        v = c.r32[reg]!; lo = c.read32(c.eaSeg, c.eaOff); hi = c.read32(c.eaSeg, (c.eaOff + 4) | 0);
      } else {
        v = (c.r16[reg << 1]! << 16) >> 16;
        lo = (c.read16(c.eaSeg, c.eaOff) << 16) >> 16;
        hi = (c.read16(c.eaSeg, (c.eaOff + 2) & (c.addrsize32 ? -1 : 0xffff)) << 16) >> 16;
      }
      if (v < lo || v > hi) c.fault(Vector.BR, 0, false);
      return;
    }
    case 0x63: { // ARPL r/m16, r16 (not recognised in real and V86 mode)
      if (!c.protectedMode || (c.flags & VM) !== 0) c.undefinedOpcode();
      decodeModrm(c);
      const dst = readRm16(c), src = c.r16[((c.modrm >> 3) & 7) << 1]!;
      const raise = (dst & 3) < (src & 3);
      if (raise) writeRm16(c, (dst & ~3) | (src & 3));
      c.setFlag(ZF, raise);
      return;
    }
    case 0x68: c.push(c.fetchImm()); return;
    case 0x6a: c.push((c.fetch8() << 24) >> 24); return;
    case 0x69: case 0x6b: { // IMUL r, r/m, imm
      decodeModrm(c);
      const a = readRmV(c);
      const b = op === 0x6b ? (c.fetch8() << 24) >> 24 : c.opsize32 ? c.fetch32() : (c.fetch16() << 16) >> 16;
      imulReg(c, (c.modrm >> 3) & 7, a, b, c.opsize32);
      return;
    }
    case 0x6c: stringOp(c, STR_INS, 1); return;
    case 0x6d: stringOp(c, STR_INS, c.opsize32 ? 4 : 2); return;
    case 0x6e: stringOp(c, STR_OUTS, 1); return;
    case 0x6f: stringOp(c, STR_OUTS, c.opsize32 ? 4 : 2); return;

    case 0x70: case 0x71: case 0x72: case 0x73: case 0x74: case 0x75: case 0x76: case 0x77:
    case 0x78: case 0x79: case 0x7a: case 0x7b: case 0x7c: case 0x7d: case 0x7e: case 0x7f: {
      const rel = (c.fetch8() << 24) >> 24;
      if (c.cond(op & 0xf)) jumpRel(c, rel);
      return;
    }
    case 0x80: case 0x82: { // group 1, r/m8, imm8 (82 is an alias of 80)
      decodeModrm(c);
      const aop = (c.modrm >> 3) & 7;
      const a = aop === 7 ? readRm8(c) : readRmForUpdate8(c);
      const r = alu(c, aop, a, c.fetch8(), 8);
      if (aop !== 7) writeRm8(c, r);
      return;
    }
    case 0x81: case 0x83: {
      decodeModrm(c);
      const aop = (c.modrm >> 3) & 7;
      const a = aop === 7 ? readRmV(c) : readRmForUpdateV(c);
      let b = op === 0x81 ? c.fetchImm() : (c.fetch8() << 24) >> 24;
      if (!c.opsize32) b &= 0xffff;
      const r = alu(c, aop, a, b, bitsV(c));
      if (aop !== 7) writeRmV(c, r);
      return;
    }
    case 0x84: decodeModrm(c); alu(c, 4, readRm8(c), c.getReg8((c.modrm >> 3) & 7), 8); return;
    case 0x85: decodeModrm(c); alu(c, 4, readRmV(c), regV(c, (c.modrm >> 3) & 7), bitsV(c)); return;
    case 0x86: { // XCHG r/m8, r8
      decodeModrm(c);
      const reg = (c.modrm >> 3) & 7;
      const a = readRm8(c);
      writeRm8(c, c.getReg8(reg));
      c.setReg8(reg, a);
      return;
    }
    case 0x87: {
      decodeModrm(c);
      const reg = (c.modrm >> 3) & 7;
      const a = readRmV(c);
      writeRmV(c, regV(c, reg));
      setRegV(c, reg, a);
      return;
    }
    case 0x88: decodeModrm(c); writeRm8(c, c.getReg8((c.modrm >> 3) & 7)); return;
    case 0x89: decodeModrm(c); writeRmV(c, regV(c, (c.modrm >> 3) & 7)); return;
    case 0x8a: decodeModrm(c); c.setReg8((c.modrm >> 3) & 7, readRm8(c)); return;
    case 0x8b: decodeModrm(c); setRegV(c, (c.modrm >> 3) & 7, readRmV(c)); return;
    case 0x8c: { // MOV r/m16, Sreg
      decodeModrm(c);
      const sreg = (c.modrm >> 3) & 7;
      if (sreg > 5) c.undefinedOpcode();
      const v = c.segSel[sreg]!;
      if (isReg(c) && c.opsize32) c.r32[c.modrm & 7] = v;
      else writeRm16(c, v);
      return;
    }
    case 0x8d: { // LEA
      decodeModrm(c);
      if (isReg(c)) c.undefinedOpcode();
      setRegV(c, (c.modrm >> 3) & 7, c.eaOff);
      return;
    }
    case 0x8e: { // MOV Sreg, r/m16
      decodeModrm(c);
      const sreg = (c.modrm >> 3) & 7;
      if (sreg === CS || sreg > 5) c.undefinedOpcode();
      c.loadSeg(sreg, readRm16(c));
      if (sreg === SS) { c.interruptShadow = true; c.shadowFromMovSs = true; }
      return;
    }
    case 0x8f: { // POP r/m
      decodeModrm(c);
      if ((c.modrm >> 3) & 7) c.undefinedOpcode();
      const size = c.opsize32 ? 4 : 2;
      const v = size === 4 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
      // The address is computed with the incremented stack pointer when it uses ESP.
      c.adjustSp(size);
      if (!isReg(c) && c.addrsize32 && (c.modrm & 7) === 4) {
        // Re-decode is not needed for the common forms; the SIB base ESP case uses the new ESP.
        c.eaOff = (c.eaOff + size) | 0;
      }
      writeRmV(c, v);
      return;
    }
    case 0x90:
      return; // NOP (and PAUSE with F3).
    case 0x91: case 0x92: case 0x93: case 0x94: case 0x95: case 0x96: case 0x97: {
      const r = op & 7, a = regV(c, 0);
      setRegV(c, 0, regV(c, r));
      setRegV(c, r, a);
      return;
    }
    case 0x98: // CBW / CWDE
      if (c.opsize32) c.r32[0] = (c.r32[0]! << 16) >> 16;
      else c.r16[0] = (c.r8[0]! << 24) >> 24;
      return;
    case 0x99: // CWD / CDQ
      if (c.opsize32) c.r32[2] = c.r32[0]! >> 31;
      else c.r16[4] = (c.r16[0]! << 16) >> 31;
      return;
    case 0x9a: { // CALL ptr16:16/32
      const off = c.fetchImm();
      const sel = c.fetch16();
      farJump(c, sel, off, true);
      return;
    }
    case 0x9b: executeWait(c); return; // WAIT/FWAIT
    case 0x9c: { // PUSHF
      if ((c.flags & VM) !== 0 && ((c.flags & IOPL) >> 12) < 3) c.fault(Vector.GP, 0); // no VME
      const f = c.getEflags() & ~(RF | VM);
      c.push(f);
      return;
    }
    case 0x9d: { // POPF
      if ((c.flags & VM) !== 0 && ((c.flags & IOPL) >> 12) < 3) c.fault(Vector.GP, 0); // no VME
      const v = c.opsize32 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
      c.adjustSp(c.opsize32 ? 4 : 2);
      writeFlags(c, v, c.opsize32);
      return;
    }
    case 0x9e: { // SAHF
      c.materialize();
      c.flags = (c.flags & ~(SF | ZF | AF | 0x4 | CF)) | (c.r8[1]! & (SF | ZF | AF | 0x4 | CF));
      return;
    }
    case 0x9f: c.r8[1] = c.getEflags() & 0xff; return; // LAHF
    case 0xa0: case 0xa1: case 0xa2: case 0xa3: { // MOV with a direct offset
      const off = c.addrsize32 ? c.fetch32() : c.fetch16();
      const seg = c.prefixSeg >= 0 ? c.prefixSeg : DS;
      switch (op) {
        case 0xa0: c.r8[0] = c.read8(seg, off); return;
        case 0xa1: if (c.opsize32) c.r32[0] = c.read32(seg, off); else c.r16[0] = c.read16(seg, off); return;
        case 0xa2: c.write8(seg, off, c.r8[0]!); return;
        default: if (c.opsize32) c.write32(seg, off, c.r32[0]!); else c.write16(seg, off, c.r16[0]!); return;
      }
    }
    case 0xa4: stringOp(c, STR_MOVS, 1); return;
    case 0xa5: stringOp(c, STR_MOVS, c.opsize32 ? 4 : 2); return;
    case 0xa6: stringOp(c, STR_CMPS, 1); return;
    case 0xa7: stringOp(c, STR_CMPS, c.opsize32 ? 4 : 2); return;
    case 0xa8: alu(c, 4, c.r8[0]!, c.fetch8(), 8); return;
    case 0xa9: alu(c, 4, regV(c, 0), c.fetchImm(), bitsV(c)); return;
    case 0xaa: stringOp(c, STR_STOS, 1); return;
    case 0xab: stringOp(c, STR_STOS, c.opsize32 ? 4 : 2); return;
    case 0xac: stringOp(c, STR_LODS, 1); return;
    case 0xad: stringOp(c, STR_LODS, c.opsize32 ? 4 : 2); return;
    case 0xae: stringOp(c, STR_SCAS, 1); return;
    case 0xaf: stringOp(c, STR_SCAS, c.opsize32 ? 4 : 2); return;
    case 0xb0: case 0xb1: case 0xb2: case 0xb3: case 0xb4: case 0xb5: case 0xb6: case 0xb7:
      c.setReg8(op & 7, c.fetch8());
      return;
    case 0xb8: case 0xb9: case 0xba: case 0xbb: case 0xbc: case 0xbd: case 0xbe: case 0xbf:
      setRegV(c, op & 7, c.fetchImm());
      return;
    case 0xc0: case 0xc1: case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      decodeModrm(c);
      const byte = (op & 1) === 0;
      const a = byte ? readRmForUpdate8(c) : readRmForUpdateV(c);
      const count = op <= 0xc1 ? c.fetch8() : op <= 0xd1 ? 1 : c.r8[4]!;
      const r = shift(c, (c.modrm >> 3) & 7, a, count, byte ? 8 : bitsV(c));
      if ((count & 31) === 0) return;
      if (byte) writeRm8(c, r); else writeRmV(c, r);
      return;
    }
    case 0xc2: case 0xc3: { // RET near
      const n = op === 0xc2 ? c.fetch16() : 0;
      const target = c.opsize32 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
      jumpNear(c, target);
      c.adjustSp((c.opsize32 ? 4 : 2) + n);
      return;
    }
    case 0xc4: case 0xc5: { // LES, LDS
      decodeModrm(c);
      if (isReg(c)) c.undefinedOpcode();
      loadFarPointer(c, op === 0xc4 ? ES : DS);
      return;
    }
    case 0xc6: decodeModrm(c); if ((c.modrm >> 3) & 7) c.undefinedOpcode(); writeRm8(c, c.fetch8()); return;
    case 0xc7: decodeModrm(c); if ((c.modrm >> 3) & 7) c.undefinedOpcode(); writeRmV(c, c.fetchImm()); return;
    case 0xc8: enter(c); return;
    case 0xc9: { // LEAVE
      const bp = c.stack32 ? c.r32[5]! : c.r16[10]!;
      const v = c.opsize32 ? c.read32(SS, bp) : c.read16(SS, bp);
      if (c.stack32) c.r32[4] = (bp + (c.opsize32 ? 4 : 2)) | 0;
      else c.r16[8] = bp + (c.opsize32 ? 4 : 2);
      setRegV(c, 5, v);
      return;
    }
    case 0xca: case 0xcb: { // RET far
      const n = op === 0xca ? c.fetch16() : 0;
      if (c.protectedMode && !(c.flags & VM)) { farReturn(c, n, c.opsize32); return; }
      const size = c.opsize32 ? 4 : 2;
      const off = size === 4 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
      const sel = c.read16(SS, c.spOffset(size));
      realFarJump(c, sel, off);
      c.adjustSp(2 * size + n);
      return;
    }
    case 0xcc: softwareInterrupt(c, 3); return;
    case 0xcd: softwareInterrupt(c, c.fetch8(), true); return;
    case 0xce: if (c.getOF()) softwareInterrupt(c, 4); return;
    case 0xcf: iret(c); return;
    case 0xd4: { // AAM
      const base = c.fetch8();
      if (base === 0) c.fault(Vector.DE, 0, false);
      const al = c.r8[0]!;
      c.r8[1] = Math.floor(al / base);
      c.r8[0] = al % base;
      c.lazy(LazyOp.Logic, 0, 0, c.r8[0]!, 8);
      return;
    }
    case 0xd5: { // AAD
      const base = c.fetch8();
      const r = (c.r8[0]! + c.r8[1]! * base) & 0xff;
      c.r16[0] = r;
      c.lazy(LazyOp.Logic, 0, 0, r, 8);
      return;
    }
    case 0xd6: c.r8[0] = c.getCF() ? 0xff : 0; return; // SALC
    case 0xd7: { // XLAT
      const seg = c.prefixSeg >= 0 ? c.prefixSeg : DS;
      const off = c.addrsize32 ? (c.r32[3]! + c.r8[0]!) | 0 : (c.r16[6]! + c.r8[0]!) & 0xffff;
      c.r8[0] = c.read8(seg, off);
      return;
    }
    case 0xd8: case 0xd9: case 0xda: case 0xdb: case 0xdc: case 0xdd: case 0xde: case 0xdf:
      executeX87(c, op);
      return;
    case 0xe0: case 0xe1: case 0xe2: { // LOOPNE, LOOPE, LOOP
      const rel = (c.fetch8() << 24) >> 24;
      const count = c.addrsize32 ? (c.r32[1]! - 1) | 0 : (c.r16[2]! - 1) & 0xffff;
      let take = count !== 0;
      if (op === 0xe0) take = take && !c.getZF();
      else if (op === 0xe1) take = take && c.getZF();
      if (take) jumpRel(c, rel);
      if (c.addrsize32) c.r32[1] = count; else c.r16[2] = count;
      return;
    }
    case 0xe3: { // JCXZ / JECXZ
      const rel = (c.fetch8() << 24) >> 24;
      if ((c.addrsize32 ? c.r32[1]! : c.r16[2]!) === 0) jumpRel(c, rel);
      return;
    }
    case 0xe4: { const port = c.fetch8(); checkIoPrivilege(c, port, 1); c.r8[0] = c.ioIn(port, 1); return; }
    case 0xe5: { const port = c.fetch8(); checkIoPrivilege(c, port, c.opsize32 ? 4 : 2); if (c.opsize32) c.r32[0] = c.ioIn(port, 4); else c.r16[0] = c.ioIn(port, 2); return; }
    case 0xe6: { const port = c.fetch8(); checkIoPrivilege(c, port, 1); c.ioOut(port, 1, c.r8[0]!); return; }
    case 0xe7: { const port = c.fetch8(); checkIoPrivilege(c, port, c.opsize32 ? 4 : 2); c.ioOut(port, c.opsize32 ? 4 : 2, c.opsize32 ? c.r32[0]! : c.r16[0]!); return; }
    case 0xe8: { // CALL rel
      const rel = c.opsize32 ? c.fetch32() : (c.fetch16() << 16) >> 16;
      const ret = c.eip;
      const target = c.opsize32 ? (ret + rel) | 0 : (ret + rel) & 0xffff;
      if ((target >>> 0) > c.segLimit[CS]!) c.fault(Vector.GP, 0);
      c.push(ret);
      c.eip = target;
      return;
    }
    case 0xe9: { const rel = c.opsize32 ? c.fetch32() : (c.fetch16() << 16) >> 16; jumpRel(c, rel); return; }
    case 0xea: { const off = c.fetchImm(); const sel = c.fetch16(); farJump(c, sel, off, false); return; }
    case 0xeb: { const rel = (c.fetch8() << 24) >> 24; jumpRel(c, rel); return; }
    case 0xec: checkIoPrivilege(c, c.r16[4]!, 1); c.r8[0] = c.ioIn(c.r16[4]!, 1); return;
    case 0xed: checkIoPrivilege(c, c.r16[4]!, c.opsize32 ? 4 : 2); if (c.opsize32) c.r32[0] = c.ioIn(c.r16[4]!, 4); else c.r16[0] = c.ioIn(c.r16[4]!, 2); return;
    case 0xee: checkIoPrivilege(c, c.r16[4]!, 1); c.ioOut(c.r16[4]!, 1, c.r8[0]!); return;
    case 0xef: checkIoPrivilege(c, c.r16[4]!, c.opsize32 ? 4 : 2); c.ioOut(c.r16[4]!, c.opsize32 ? 4 : 2, c.opsize32 ? c.r32[0]! : c.r16[0]!); return;
    case 0xf1: c.interrupt(Vector.DB, c.eip); return; // INT1 (ICEBP): a #DB trap, no gate DPL check
    case 0xf4: // HLT
      if (c.protectedMode && c.cpl !== 0) c.fault(Vector.GP, 0);
      c.hlt();
      return;
    case 0xf5: c.setFlag(CF, c.getCF() === 0); return; // CMC
    case 0xf6: decodeModrm(c); group3(c, 8); return;
    case 0xf7: decodeModrm(c); group3(c, bitsV(c)); return;
    case 0xf8: c.setFlag(CF, false); return;
    case 0xf9: c.setFlag(CF, true); return;
    case 0xfa: // CLI
      if (c.protectedMode && c.cpl > ((c.flags & IOPL) >> 12)) c.fault(Vector.GP, 0); // no VME/PVI
      c.flags &= ~IF;
      return;
    case 0xfb: // STI
      if (c.protectedMode && c.cpl > ((c.flags & IOPL) >> 12)) c.fault(Vector.GP, 0); // no VME/PVI
      if (!(c.flags & IF)) { c.interruptShadow = true; c.shadowFromMovSs = false; }
      c.flags |= IF;
      return;
    case 0xfc: c.flags &= ~DF; return;
    case 0xfd: c.flags |= DF; return;
    case 0xfe: decodeModrm(c); group5(c, true); return;
    case 0xff: decodeModrm(c); group5(c, false); return;
    default:
      throw new EmulationGap(`opcode ${op.toString(16).padStart(2, '0')}`);
  }
}

function popSeg(c: X86Cpu, seg: number): void {
  const v = c.opsize32 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
  c.loadSeg(seg, v & 0xffff);
  c.adjustSp(c.opsize32 ? 4 : 2);
}

function loadFarPointer(c: X86Cpu, seg: number): void {
  const off = c.opsize32 ? c.read32(c.eaSeg, c.eaOff) : c.read16(c.eaSeg, c.eaOff);
  const sel = c.read16(c.eaSeg, (c.eaOff + (c.opsize32 ? 4 : 2)) & (c.addrsize32 ? -1 : 0xffff));
  c.loadSeg(seg, sel);
  setRegV(c, (c.modrm >> 3) & 7, off);
}

/** IMUL with a register destination (0F AF, 69, 6B); shared with the block compiler. */
export function imulReg(c: X86Cpu, reg: number, a: number, b: number, op32: boolean): void {
  let r: number, over: boolean;
  if (op32) {
    r = muls32(a, b);
    over = mulHigh !== r >> 31;
    c.r32[reg] = r;
    c.lazyResult(r, 32, over ? CF | OF : 0);
  } else {
    const p = ((a << 16) >> 16) * ((b << 16) >> 16);
    over = p !== (p << 16) >> 16;
    c.r16[reg << 1] = p;
    c.lazyResult(p, 16, over ? CF | OF : 0);
  }
}

function enter(c: X86Cpu): void {
  const size = c.fetch16();
  const level = c.fetch8() & 31;
  const w = c.opsize32 ? 4 : 2;
  const bp = c.stack32 ? c.r32[5]! : c.r16[10]!;
  c.push(c.opsize32 ? c.r32[5]! : c.r16[10]!);
  const frame = c.stack32 ? c.r32[4]! : c.r16[8]!;
  let walk = bp;
  for (let i = 1; i < level; i++) {
    walk = c.stack32 ? (walk - w) | 0 : (walk - w) & 0xffff;
    c.push(w === 4 ? c.read32(SS, walk) : c.read16(SS, walk));
  }
  if (level > 0) c.push(frame);
  // The final stack pointer must be writable (checked by touching the new top).
  const newSp = c.spOffset(-size);
  if (size > 0) c.checkLimit(SS, newSp, 1);
  setRegV(c, 5, frame);
  if (c.stack32) c.r32[4] = newSp; else c.r16[8] = newSp;
}

/** INT n (`intN`), INT3, INTO. In V86 mode only INT n is IOPL-sensitive (there is no VME). */
function softwareInterrupt(c: X86Cpu, vector: number, intN = false): void {
  if (intN && (c.flags & VM) !== 0 && ((c.flags & IOPL) >> 12) < 3) c.fault(Vector.GP, 0);
  c.interrupt(vector, c.eip, -1, true);
}

function iret(c: X86Cpu): void {
  c.nmiBlocked = false;
  // In V86 mode IRET is IOPL-sensitive (no VME); with IOPL 3 it is the real-mode IRET, at CPL 3.
  const v86 = (c.flags & VM) !== 0;
  if (v86 && ((c.flags & IOPL) >> 12) < 3) c.fault(Vector.GP, 0);
  if (c.protectedMode && !v86) {
    const cpl = c.cpl;
    const r = iretProtected(c, c.opsize32); // null: a task return or a return to V86 set EFLAGS itself
    if (r) writeFlags(c, r.flags, c.opsize32, cpl);
    return;
  }
  const size = c.opsize32 ? 4 : 2;
  const ip = size === 4 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
  const cs = c.read16(SS, c.spOffset(size));
  const f = size === 4 ? c.read32(SS, c.spOffset(2 * size)) : c.read16(SS, c.spOffset(2 * size));
  if (v86 && (ip >>> 0) > 0xffff) c.fault(Vector.GP, 0);
  realFarJump(c, cs, ip);
  c.adjustSp(3 * size);
  writeFlags(c, f, c.opsize32, v86 ? 3 : 0);
}

// Two-byte opcodes (0F xx) -------------------------------------------------------------------

function executeTwoByte(c: X86Cpu, op: number): void {
  switch (op) {
    case 0x00: group6(c); return;
    case 0x01: group7(c); return;
    case 0x02: case 0x03: larLsl(c, op === 0x02); return;
    case 0x06: requireCpl0(c); c.cr0 &= ~CR0_TS; return; // CLTS
    case 0x08: case 0x09: requireCpl0(c); return; // INVD, WBINVD: there are no caches to write back.
    case 0x20: case 0x22: moveControlRegister(c, op === 0x22); return;
    case 0x30: wrmsrInstruction(c); return;
    case 0x31: { // RDTSC
      if (c.protectedMode && c.cpl !== 0 && (c.cr4 & 4) !== 0) c.fault(Vector.GP, 0);
      const t = c.readTsc();
      c.r32[0] = t % 0x1_0000_0000; c.r32[2] = Math.floor(t / 0x1_0000_0000);
      return;
    }
    case 0x32: rdmsrInstruction(c); return;
    case 0x33: c.fault(Vector.GP, 0); // RDPMC: there are no performance counters.
    case 0x34: sysenter(c); return;
    case 0x35: sysexit(c); return;
    case 0xa2: cpuid(c); return;
    case 0x0b: c.undefinedOpcode(); // UD2
    case 0x1f: decodeModrm(c); return; // NOP r/m
    case 0x40: case 0x41: case 0x42: case 0x43: case 0x44: case 0x45: case 0x46: case 0x47:
    case 0x48: case 0x49: case 0x4a: case 0x4b: case 0x4c: case 0x4d: case 0x4e: case 0x4f: {
      decodeModrm(c);
      const v = readRmV(c); // The source is read (and may fault) whatever the condition.
      if (c.cond(op & 0xf)) setRegV(c, (c.modrm >> 3) & 7, v);
      else if (c.opsize32) c.r32[(c.modrm >> 3) & 7] = c.r32[(c.modrm >> 3) & 7]!;
      return;
    }
    case 0x80: case 0x81: case 0x82: case 0x83: case 0x84: case 0x85: case 0x86: case 0x87:
    case 0x88: case 0x89: case 0x8a: case 0x8b: case 0x8c: case 0x8d: case 0x8e: case 0x8f: {
      const rel = c.opsize32 ? c.fetch32() : (c.fetch16() << 16) >> 16;
      if (c.cond(op & 0xf)) jumpRel(c, rel);
      return;
    }
    case 0x90: case 0x91: case 0x92: case 0x93: case 0x94: case 0x95: case 0x96: case 0x97:
    case 0x98: case 0x99: case 0x9a: case 0x9b: case 0x9c: case 0x9d: case 0x9e: case 0x9f:
      decodeModrm(c);
      writeRm8(c, c.cond(op & 0xf) ? 1 : 0);
      return;
    case 0xa0: c.push(c.segSel[FS]!); return;
    case 0xa1: popSeg(c, FS); return;
    case 0xa8: c.push(c.segSel[GS]!); return;
    case 0xa9: popSeg(c, GS); return;
    case 0xa3: case 0xab: case 0xb3: case 0xbb: { // BT BTS BTR BTC r/m, r
      decodeModrm(c);
      bitOp(c, (op >> 3) & 3, regV(c, (c.modrm >> 3) & 7), true);
      return;
    }
    case 0xba: { // BT* r/m, imm8
      decodeModrm(c);
      const sub = (c.modrm >> 3) & 7;
      if (sub < 4) c.undefinedOpcode();
      bitOp(c, sub & 3, c.fetch8(), false);
      return;
    }
    case 0xa4: case 0xa5: case 0xac: case 0xad: { // SHLD, SHRD
      decodeModrm(c);
      const a = readRmForUpdateV(c);
      const count = (op & 1) === 0 ? c.fetch8() : c.r8[4]!;
      const r = doubleShift(c, op < 0xa8, a, regV(c, (c.modrm >> 3) & 7), count, bitsV(c));
      if ((count & 31) !== 0) writeRmV(c, r);
      return;
    }
    case 0xaf: decodeModrm(c); imulReg(c, (c.modrm >> 3) & 7, regV(c, (c.modrm >> 3) & 7), readRmV(c), c.opsize32); return;
    case 0xae: { // FXSAVE /0, FXRSTOR /1 (memory); the SSE forms (LDMXCSR, fences, ...) are #UD without SSE.
      decodeModrm(c);
      const r = (c.modrm >> 3) & 7;
      if (isReg(c) || r > 1 || c.lockPrefix) c.undefinedOpcode();
      if (r === 0) fxsave(c, c.eaSeg, c.eaOff); else fxrstor(c, c.eaSeg, c.eaOff);
      return;
    }
    case 0xb6: decodeModrm(c); setRegV(c, (c.modrm >> 3) & 7, readRm8(c)); return;
    case 0xb7: decodeModrm(c); setRegV(c, (c.modrm >> 3) & 7, readRm16(c)); return;
    case 0xbe: decodeModrm(c); setRegV(c, (c.modrm >> 3) & 7, (readRm8(c) << 24) >> 24); return;
    case 0xbf: decodeModrm(c); setRegV(c, (c.modrm >> 3) & 7, (readRm16(c) << 16) >> 16); return;
    case 0xbc: case 0xbd: { // BSF, BSR
      decodeModrm(c);
      const bits = bitsV(c);
      const v = bits === 32 ? readRm32(c) : readRm16(c);
      if (v === 0) {
        c.materialize();
        c.flags |= ZF;
        return;
      }
      const r = op === 0xbc ? 31 - Math.clz32(v & -v) : 31 - Math.clz32(v);
      setRegV(c, (c.modrm >> 3) & 7, r);
      c.materialize();
      c.flags &= ~ZF;
      return;
    }
    case 0xc8: case 0xc9: case 0xca: case 0xcb: case 0xcc: case 0xcd: case 0xce: case 0xcf: { // BSWAP
      const v = c.r32[op & 7]!;
      c.r32[op & 7] = ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
      return;
    }
    case 0xc0: case 0xc1: { // XADD
      decodeModrm(c);
      const reg = (c.modrm >> 3) & 7;
      // The register gets the old destination first, so that with reg = r/m the sum wins;
      // for memory the store still comes first (nothing is committed before it can fault).
      if (op === 0xc0) {
        const a = readRmForUpdate8(c), b = c.getReg8(reg);
        const r = alu(c, 0, a, b, 8);
        if (isReg(c)) { c.setReg8(reg, a); writeRm8(c, r); } else { writeRm8(c, r); c.setReg8(reg, a); }
      } else {
        const a = readRmForUpdateV(c), b = regV(c, reg);
        const r = alu(c, 0, a, b, bitsV(c));
        if (isReg(c)) { setRegV(c, reg, a); writeRmV(c, r); } else { writeRmV(c, r); setRegV(c, reg, a); }
      }
      return;
    }
    case 0xb0: case 0xb1: { // CMPXCHG
      decodeModrm(c);
      const reg = (c.modrm >> 3) & 7;
      const bits = op === 0xb0 ? 8 : bitsV(c);
      const dst = bits === 8 ? readRmForUpdate8(c) : readRmForUpdateV(c);
      const acc = bits === 8 ? c.r8[0]! : regV(c, 0);
      const equal = bits === 32 ? dst === acc : (dst & ((1 << bits) - 1)) === (acc & ((1 << bits) - 1));
      // The destination is always written (with its old value when unequal), as the hardware does.
      const src = equal ? (bits === 8 ? c.getReg8(reg) : regV(c, reg)) : dst;
      if (bits === 8) writeRm8(c, src); else writeRmV(c, src);
      alu(c, 7, acc, dst, bits);
      if (!equal) { if (bits === 8) c.r8[0] = dst; else setRegV(c, 0, dst); }
      return;
    }
    case 0xc7: { // CMPXCHG8B
      decodeModrm(c);
      if (((c.modrm >> 3) & 7) !== 1 || isReg(c)) c.undefinedOpcode();
      const lo = c.read32(c.eaSeg, c.eaOff), hi = c.read32(c.eaSeg, (c.eaOff + 4) | 0);
      const equal = lo === c.r32[0] && hi === c.r32[2];
      c.saveFlags();
      if (equal) {
        c.write32(c.eaSeg, c.eaOff, c.r32[3]!); c.write32(c.eaSeg, (c.eaOff + 4) | 0, c.r32[1]!);
      } else {
        c.write32(c.eaSeg, c.eaOff, lo); c.write32(c.eaSeg, (c.eaOff + 4) | 0, hi);
        c.r32[0] = lo; c.r32[2] = hi;
      }
      c.setFlag(ZF, equal);
      return;
    }
    case 0xb2: case 0xb4: case 0xb5: { // LSS, LFS, LGS
      decodeModrm(c);
      if (isReg(c)) c.undefinedOpcode();
      loadFarPointer(c, op === 0xb2 ? SS : op === 0xb4 ? FS : GS);
      return;
    }
    case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e:
      decodeModrm(c); // hint NOPs (0F 18–1F) on P6-class CPUs
      return;
    case 0x21: case 0x23: moveDebugRegister(c, op === 0x23); return;
    default:
      // Everything else in the 0F map is undefined on this CPU (SSE, MMX, SYSCALL, RSM, …: none
      // is advertised), so the guest gets #UD as it would on hardware.
      c.undefinedOpcode();
  }
}

/**
 * MOV r32, DRn / MOV DRn, r32. The registers hold their values, but breakpoints are not
 * armed: DR7 enables are stored and never fire (a documented gap).
 */
function moveDebugRegister(c: X86Cpu, toDr: boolean): void {
  const m = c.fetch8();
  let dr = (m >> 3) & 7;
  const r = m & 7;
  requireCpl0(c);
  if (dr === 4 || dr === 5) {
    if (c.cr4 & (1 << 3)) c.undefinedOpcode(); // CR4.DE: DR4/DR5 are reserved
    dr += 2;
  }
  if (toDr) {
    let v = c.r32[r]!;
    if (dr === 6) v = (v & 0xe00f) | 0xffff0ff0;
    else if (dr === 7) v = (v & 0xffff2fff) | 0x400;
    c.dr[dr] = v;
  } else {
    c.r32[r] = c.dr[dr]!;
  }
}

/** BT/BTS/BTR/BTC (kind 0..3). With a register offset the bit string may extend beyond the operand in memory. */
function bitOp(c: X86Cpu, kind: number, offset: number, regOffset: boolean): void {
  const bits = bitsV(c);
  let v: number, bit: number;
  if (isReg(c)) {
    bit = offset & (bits - 1);
    v = regV(c, c.modrm & 7);
  } else {
    if (regOffset) {
      const signed = bits === 32 ? offset | 0 : (offset << 16) >> 16;
      const byteDelta = Math.floor(signed / bits) * (bits >> 3);
      c.eaOff = c.addrsize32 ? (c.eaOff + byteDelta) | 0 : (c.eaOff + byteDelta) & 0xffff;
      bit = signed & (bits - 1);
    } else bit = offset & (bits - 1);
    if (kind !== 0) c.saveFlags();
    v = bits === 32 ? c.read32(c.eaSeg, c.eaOff) : c.read16(c.eaSeg, c.eaOff);
  }
  const set = ((v >>> bit) & 1) !== 0;
  if (kind !== 0) {
    const m = 1 << bit;
    const r = kind === 1 ? v | m : kind === 2 ? v & ~m : v ^ m;
    if (isReg(c)) setRegV(c, c.modrm & 7, r);
    else if (bits === 32) c.write32(c.eaSeg, c.eaOff, r); else c.write16(c.eaSeg, c.eaOff, r);
  }
  c.setFlag(CF, set);
}

// System instructions ------------------------------------------------------------------------

function requireCpl0(c: X86Cpu): void {
  if (c.protectedMode && c.cpl !== 0) c.fault(Vector.GP, 0);
}

function requireProtected(c: X86Cpu): void {
  if (!c.protectedMode || (c.flags & VM) !== 0) c.undefinedOpcode();
}

/** 0F 00: SLDT STR LLDT LTR VERR VERW. */
function group6(c: X86Cpu): void {
  decodeModrm(c);
  const sub = (c.modrm >> 3) & 7;
  requireProtected(c);
  switch (sub) {
    case 0: case 1: { // SLDT, STR
      const v = c.segSel[sub === 0 ? 6 : 7]!;
      if (isReg(c)) setRegV(c, c.modrm & 7, v); else writeRm16(c, v);
      return;
    }
    case 2: case 3:
      requireCpl0(c);
      loadSystemSegment(c, sub === 2, readRm16(c));
      return;
    case 4: case 5: { // VERR, VERW
      const sel = readRm16(c);
      const d = probeDescriptor(c, sel);
      let ok = false;
      if (d) {
        const kind = (d.hi >>> 8) & 0x1f, dpl = (d.hi >>> 13) & 3;
        const conformingCode = (kind & 0x1c) === 0x1c;
        const visible = conformingCode || dpl >= Math.max(c.cpl, sel & 3);
        if ((kind & 0x10) && visible) ok = sub === 4 ? (kind & 0x8) === 0 || (kind & 0x2) !== 0 : (kind & 0xa) === 0x2;
      }
      c.setFlag(ZF, ok);
      return;
    }
    default:
      c.undefinedOpcode();
  }
}

/** 0F 01: SGDT SIDT LGDT LIDT SMSW LMSW INVLPG. */
function group7(c: X86Cpu): void {
  decodeModrm(c);
  const sub = (c.modrm >> 3) & 7;
  switch (sub) {
    case 0: case 1: { // SGDT, SIDT
      if (isReg(c)) c.undefinedOpcode();
      const base = sub === 0 ? c.gdtBase : c.idtBase, limit = sub === 0 ? c.gdtLimit : c.idtLimit;
      c.write16(c.eaSeg, c.eaOff, limit);
      // With a 16-bit operand the 386+ stores the top base byte as well (no longer 0xFF as on the 286).
      c.write32(c.eaSeg, (c.eaOff + 2) & (c.addrsize32 ? -1 : 0xffff), c.opsize32 ? base : base & 0xffffff);
      return;
    }
    case 2: case 3: { // LGDT, LIDT
      if (isReg(c)) c.undefinedOpcode();
      requireCpl0(c);
      const limit = c.read16(c.eaSeg, c.eaOff);
      let base = c.read32(c.eaSeg, (c.eaOff + 2) & (c.addrsize32 ? -1 : 0xffff));
      if (!c.opsize32) base &= 0xffffff;
      if (sub === 2) { c.gdtBase = base; c.gdtLimit = limit; } else { c.idtBase = base; c.idtLimit = limit; }
      return;
    }
    case 4: { // SMSW
      if (isReg(c)) setRegV(c, c.modrm & 7, c.opsize32 ? c.cr0 : c.cr0 & 0xffff);
      else writeRm16(c, c.cr0 & 0xffff);
      return;
    }
    case 6: { // LMSW: sets PE (never clears it), MP, EM, TS.
      requireCpl0(c);
      const v = readRm16(c);
      c.cr0 = (c.cr0 & ~0xe) | (v & 0xf) | (c.cr0 & CR0_PE);
      c.updateMode();
      return;
    }
    case 7: // INVLPG
      if (isReg(c)) c.undefinedOpcode();
      requireCpl0(c);
      c.invalidatePage((c.segBase[c.eaSeg]! + c.eaOff) | 0);
      return;
    default:
      c.undefinedOpcode();
  }
}

/** LAR (0F 02) / LSL (0F 03). */
function larLsl(c: X86Cpu, lar: boolean): void {
  decodeModrm(c);
  requireProtected(c);
  const sel = readRm16(c);
  const d = probeDescriptor(c, sel);
  let ok = false;
  if (d) {
    const kind = (d.hi >>> 8) & 0x1f, dpl = (d.hi >>> 13) & 3;
    const conformingCode = (kind & 0x1c) === 0x1c;
    const visible = conformingCode || dpl >= Math.max(c.cpl, sel & 3);
    // System types valid for LAR: TSS, LDT, call/task gates; for LSL: TSS and LDT only.
    const sysOk = lar ? [1, 2, 3, 4, 5, 9, 0xb, 0xc].includes(kind) : [1, 2, 3, 9, 0xb].includes(kind);
    ok = visible && ((kind & 0x10) !== 0 || sysOk);
    if (ok) {
      const reg = (c.modrm >> 3) & 7;
      if (lar) setRegV(c, reg, d.hi & 0x00f0ff00);
      else {
        const raw = (d.lo & 0xffff) | (d.hi & 0xf0000);
        setRegV(c, reg, d.hi & (1 << 23) ? (raw << 12) | 0xfff : raw);
      }
    }
  }
  c.setFlag(ZF, ok);
}

/** CR4 bits this CPU implements: TSD, DE, PSE, PAE, PGE, PCE, OSFXSR. Others are reserved (#GP). */
const CR4_SUPPORTED = (1 << 2) | (1 << 3) | CR4_PSE | CR4_PAE | CR4_PGE | (1 << 8) | (1 << 9);

/** MOV r32, CRn (0F 20) and MOV CRn, r32 (0F 22). The operand is always a register. */
function moveControlRegister(c: X86Cpu, toCr: boolean): void {
  const m = c.fetch8();
  const cr = (m >> 3) & 7, r = m & 7;
  requireCpl0(c);
  if (!toCr) {
    let v: number;
    switch (cr) {
      case 0: v = c.cr0; break;
      case 2: v = c.cr2; break;
      case 3: v = c.cr3; break;
      case 4: v = c.cr4; break;
      default: c.undefinedOpcode();
    }
    c.r32[r] = v;
    return;
  }
  const v = c.r32[r]!;
  switch (cr) {
    case 0:
      if ((v & CR0_PG) && !(v & CR0_PE)) c.fault(Vector.GP, 0);
      if ((v & CR0_NW) !== 0 && (v & CR0_CD) === 0) c.fault(Vector.GP, 0); // NW without CD
      // Turning on PAE paging (or changing CD/NW under it) loads the PDPTEs; a bad one is #GP(0).
      if ((v & CR0_PG) !== 0 && (c.cr4 & CR4_PAE) !== 0 && ((v ^ c.cr0) & (CR0_PG | CR0_CD | CR0_NW)) !== 0 && !c.loadPdptes(c.cr3)) c.fault(Vector.GP, 0);
      c.cr0 = v | 0x10; // ET is hardwired to 1.
      c.updateMode();
      c.flushTlb(true);
      return;
    case 2: c.cr2 = v; return;
    case 3:
      // All bits are kept (PAE uses 31:5); under PAE paging the PDPTEs load from the new table.
      if (c.paePaging && !c.loadPdptes(v)) c.fault(Vector.GP, 0);
      c.cr3 = v; c.flushTlb(false); return;
    case 4:
      if (v & ~CR4_SUPPORTED) c.fault(Vector.GP, 0);
      // With PG on, setting PAE or changing PGE/PSE under PAE loads the PDPTEs (SDM 4.4.1).
      if ((c.cr0 & CR0_PG) !== 0 && (v & CR4_PAE) !== 0 && ((v ^ c.cr4) & (CR4_PAE | CR4_PGE | CR4_PSE)) !== 0 && !c.loadPdptes(c.cr3)) c.fault(Vector.GP, 0);
      c.cr4 = v; c.flushTlb(true); return;
    default: c.undefinedOpcode();
  }
}

/** SYSENTER: flat ring-0 CS/SS from IA32_SYSENTER_CS, ESP/EIP from the other two MSRs. */
function sysenter(c: X86Cpu): void {
  if (!c.protectedMode || (c.sysenterCs & 0xfffc) === 0) c.fault(Vector.GP, 0);
  const cs = c.sysenterCs & 0xfffc;
  c.flags &= ~(VM | IF | RF);
  c.loadSegRaw(CS, cs, 0, 0xffffffff, 0xb | 0x10 | 0x80 | 0x4000 | 0x8000);
  c.loadSegRaw(SS, cs + 8, 0, 0xffffffff, 0x3 | 0x10 | 0x80 | 0x4000 | 0x8000);
  c.updateMode();
  c.r32[4] = c.sysenterEsp;
  c.eip = c.sysenterEip;
}

/** SYSEXIT: flat ring-3 CS/SS at IA32_SYSENTER_CS + 16 / + 24; ESP = ECX, EIP = EDX. */
function sysexit(c: X86Cpu): void {
  if (!c.protectedMode || (c.flags & VM) !== 0 || c.cpl !== 0 || (c.sysenterCs & 0xfffc) === 0) c.fault(Vector.GP, 0);
  const base = c.sysenterCs & 0xfffc;
  c.loadSegRaw(CS, (base + 16) | 3, 0, 0xffffffff, 0xb | 0x10 | 0x60 | 0x80 | 0x4000 | 0x8000);
  c.loadSegRaw(SS, (base + 24) | 3, 0, 0xffffffff, 0x3 | 0x10 | 0x60 | 0x80 | 0x4000 | 0x8000);
  c.updateMode();
  c.r32[4] = c.r32[1]!;
  c.eip = c.r32[2]!;
}
