/**
 * ModRM/SIB decoding and r/m operand access, shared by the integer interpreter and the x87 unit.
 * `decodeModrm` leaves the operand in the CPU's decode state (c.modrm, c.eaSeg, c.eaOff).
 */
import type { X86Cpu } from './cpu.js';
import { DS, SS } from './constants.js';

// ModRM decoding ---------------------------------------------------------------------------

/** 16-bit addressing: base+index register pairs for rm = 0..7 (-1 = none), and the default segment. */
const RM16_BASE = [3, 3, 5, 5, 6, 7, 5, 3];
const RM16_INDEX = [6, 7, 6, 7, -1, -1, -1, -1];
const RM16_SEG = [DS, DS, SS, SS, DS, DS, SS, DS];

/** Reads a ModRM byte and, for a memory operand, its effective address into c.eaSeg/c.eaOff. */
export function decodeModrm(c: X86Cpu): number {
  const m = c.fetch8();
  c.modrm = m;
  const mod = m >> 6;
  if (mod === 3) return m;
  const rm = m & 7;
  let seg: number, off: number;
  if (!c.addrsize32) {
    if (mod === 0 && rm === 6) {
      off = c.fetch16(); seg = DS;
    } else {
      off = c.r16[RM16_BASE[rm]! << 1]!;
      const ix = RM16_INDEX[rm]!;
      if (ix >= 0) off += c.r16[ix << 1]!;
      seg = RM16_SEG[rm]!;
      if (mod === 1) off += (c.fetch8() << 24) >> 24;
      else if (mod === 2) off += c.fetch16();
    }
    off &= 0xffff;
  } else {
    seg = DS;
    if (rm === 4) {
      const sib = c.fetch8();
      const base = sib & 7, index = (sib >> 3) & 7, scale = sib >> 6;
      if (base === 5 && mod === 0) off = c.fetch32();
      else {
        off = c.r32[base]!;
        if (base === 4 || base === 5) seg = SS;
      }
      if (index !== 4) off = (off + (c.r32[index]! << scale)) | 0;
    } else if (rm === 5 && mod === 0) {
      off = c.fetch32();
    } else {
      off = c.r32[rm]!;
      if (rm === 5) seg = SS;
    }
    if (mod === 1) off = (off + ((c.fetch8() << 24) >> 24)) | 0;
    else if (mod === 2) off = (off + c.fetch32()) | 0;
  }
  c.eaSeg = c.prefixSeg >= 0 ? c.prefixSeg : seg;
  c.eaOff = off;
  return m;
}

export function isReg(c: X86Cpu): boolean {
  return c.modrm >= 0xc0;
}

export function readRm8(c: X86Cpu): number {
  return c.modrm >= 0xc0 ? c.getReg8(c.modrm & 7) : c.read8(c.eaSeg, c.eaOff);
}
export function readRm16(c: X86Cpu): number {
  return c.modrm >= 0xc0 ? c.r16[(c.modrm & 7) << 1]! : c.read16(c.eaSeg, c.eaOff);
}
export function readRm32(c: X86Cpu): number {
  return c.modrm >= 0xc0 ? c.r32[c.modrm & 7]! : c.read32(c.eaSeg, c.eaOff);
}
export function writeRm8(c: X86Cpu, v: number): void {
  if (c.modrm >= 0xc0) c.setReg8(c.modrm & 7, v);
  else c.write8(c.eaSeg, c.eaOff, v);
}
export function writeRm16(c: X86Cpu, v: number): void {
  if (c.modrm >= 0xc0) c.r16[(c.modrm & 7) << 1] = v;
  else c.write16(c.eaSeg, c.eaOff, v);
}
export function writeRm32(c: X86Cpu, v: number): void {
  if (c.modrm >= 0xc0) c.r32[c.modrm & 7] = v;
  else c.write32(c.eaSeg, c.eaOff, v);
}
/** Reads an r/m operand of the current operand size (16 or 32). */
export function readRmV(c: X86Cpu): number {
  return c.opsize32 ? readRm32(c) : readRm16(c);
}
export function writeRmV(c: X86Cpu, v: number): void {
  if (c.opsize32) writeRm32(c, v);
  else writeRm16(c, v);
}
/** Reads an r/m operand that the instruction will write back: snapshot the flags first (see X86Cpu.saveFlags). */
export function readRmForUpdate8(c: X86Cpu): number {
  if (c.modrm < 0xc0) c.saveFlags();
  return readRm8(c);
}
export function readRmForUpdateV(c: X86Cpu): number {
  if (c.modrm < 0xc0) c.saveFlags();
  return readRmV(c);
}
