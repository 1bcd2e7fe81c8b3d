/**
 * The block compiler: turns a straight run of guest instructions into one JavaScript function
 * (`new Function`), with operands, addresses and immediates folded into the source. Only
 * common instructions are compiled; a block ends before anything else, and the interpreter
 * runs that instruction. Helpers called from compiled code must not read the interpreter's
 * per-instruction decode state (opsize32, prefixSeg, …): it belongs to whatever instruction the
 * interpreter ran last, so sizes are passed in as constants. Semantics come from the same helpers the interpreter uses (alu,
 * shift, the CPU's memory and flag methods), so both paths agree by construction.
 *
 * Each compiled instruction first records where it starts (startEip/startEsp) and where it
 * ends (eip), so a fault or exit in the middle of a block unwinds exactly as in the
 * interpreter. After a memory write, the block returns if that write invalidated compiled
 * code (self-modifying code).
 */
import type { X86Cpu } from '../cpu.js';
import { alu, shift } from '../alu.js';
import { imulReg } from '../interpreter.js';
import { CS, DS, ES, FS, GS, SS } from '../constants.js';

/** A compiled block: runs one or more instructions, leaving EIP at the next one. */
export type BlockFn = (c: X86Cpu) => void;

/** Longest block, in instructions: bounds the latency of interrupt delivery. */
export const MAX_BLOCK_INSNS = 32;

const R8 = (r: number) => `c.r8[${((r & 3) << 2) | (r >> 2)}]`;
const R16 = (r: number) => `c.r16[${r << 1}]`;
const R32 = (r: number) => `c.r32[${r}]`;

/** Reads instruction bytes of the block's page. */
export interface CodeReader {
  /** The byte at `eip + i` (same page), or -1 past the end of the page or the CS limit. */
  byte(eip: number): number;
}

interface Ctx {
  eip: number;
  code32: boolean;
  out: string[];
}

/** Decoded operand-size state of one instruction. */
interface Insn {
  start: number;
  seg: number;
  op32: boolean;
  addr32: boolean;
}

/** ModRM result: register number or a memory address expression. */
interface RM {
  mod: number;
  reg: number;
  rm: number;
  /** JS expression for the offset (memory operands). */
  ea: string;
  seg: number;
}

const RM16_BASE = ['3', '3', '5', '5', '6', '7', '5', '3'];
const RM16_INDEX = ['6', '7', '6', '7', '', '', '', ''];
const RM16_SEG = [DS, DS, SS, SS, DS, DS, SS, DS];

class Decoder {
  pos: number;
  constructor(private readonly rd: CodeReader, start: number) {
    this.pos = start;
  }
  u8(): number {
    const b = this.rd.byte(this.pos);
    if (b < 0) throw END;
    this.pos++;
    return b;
  }
  s8(): number { return (this.u8() << 24) >> 24; }
  u16(): number { return this.u8() | (this.u8() << 8); }
  s32(): number { return this.u16() | (this.u16() << 16); }
  imm(op32: boolean): number { return op32 ? this.s32() : this.u16(); }

  modrm(insn: Insn): RM {
    const m = this.u8();
    const mod = m >> 6, reg = (m >> 3) & 7, rm = m & 7;
    if (mod === 3) return { mod, reg, rm, ea: '', seg: 0 };
    let ea: string, seg: number;
    if (!insn.addr32) {
      let disp = 0;
      if (mod === 0 && rm === 6) { disp = this.u16(); ea = `${disp}`; seg = DS; }
      else {
        if (mod === 1) disp = this.s8(); else if (mod === 2) disp = this.u16();
        const ix = RM16_INDEX[rm]!;
        ea = `((c.r16[${Number(RM16_BASE[rm]) << 1}]${ix ? ` + c.r16[${Number(ix) << 1}]` : ''} + ${disp}) & 0xffff)`;
        seg = RM16_SEG[rm]!;
      }
    } else {
      seg = DS;
      let base = '', disp = 0;
      if (rm === 4) {
        const sib = this.u8();
        const b = sib & 7, index = (sib >> 3) & 7, scale = sib >> 6;
        if (b === 5 && mod === 0) disp = this.s32();
        else { base = `c.r32[${b}]`; if (b === 4 || b === 5) seg = SS; }
        if (index !== 4) base += `${base ? ' + ' : ''}(c.r32[${index}] << ${scale})`;
      } else if (rm === 5 && mod === 0) disp = this.s32();
      else { base = `c.r32[${rm}]`; if (rm === 5) seg = SS; }
      if (mod === 1) disp = this.s8(); else if (mod === 2) disp = this.s32();
      ea = base ? `((${base} + ${disp}) | 0)` : `${disp | 0}`;
    }
    return { mod, reg, rm, ea, seg: insn.seg >= 0 ? insn.seg : seg };
  }
}

/**
 * A conditional branch inside a block: taken, it retires the branch and leaves the block at the
 * target; not taken, the block goes on with the next instruction (EIP already points there).
 * Blocks so run on along the fall-through path instead of ending at every branch.
 */
function sideExit(cc: number, target: number): string {
  return `if (c.cond(${cc})) { c.eip = ${target}; c.budget--; return; }`;
}

/** Thrown by the decoder at the end of the page: the block stops before the instruction. */
const END = { end: true };

function rd(size: number, r: RM): string {
  if (r.mod === 3) return size === 8 ? R8(r.rm) : size === 16 ? R16(r.rm) : R32(r.rm);
  return `c.read${size}(${r.seg}, ${r.ea})`;
}

/** Statements that store `v` to the r/m operand; memory writes check for invalidated code. */
function wr(size: number, r: RM, v: string): string {
  if (r.mod === 3) return `${size === 8 ? R8(r.rm) : size === 16 ? R16(r.rm) : R32(r.rm)} = ${v};`;
  return `c.write${size}(${r.seg}, ${r.ea}, ${v}); if (c.jitStale) return;`;
}

function reg(size: number, r: number): string {
  return size === 8 ? R8(r) : size === 16 ? R16(r) : R32(r);
}

/**
 * Compiles one instruction into `out`. Returns 'next' to continue the block, 'end' when the
 * instruction transfers control (the block ends after it), or 'stop' when it cannot be
 * compiled (the block ends before it).
 */
function compileInsn(d: Decoder, ctx: Ctx, csLimit: number): 'next' | 'end' | 'stop' {
  const insn: Insn = { start: d.pos, seg: -1, op32: ctx.code32, addr32: ctx.code32 };
  let op = d.u8();
  for (;;) {
    if (op === 0x66) insn.op32 = !ctx.code32;
    else if (op === 0x67) insn.addr32 = !ctx.code32;
    else if (op === 0x26) insn.seg = ES;
    else if (op === 0x2e) insn.seg = CS;
    else if (op === 0x36) insn.seg = SS;
    else if (op === 0x3e) insn.seg = DS;
    else if (op === 0x64) insn.seg = FS;
    else if (op === 0x65) insn.seg = GS;
    else break;
    if (d.pos - insn.start >= 14) return 'stop';
    op = d.u8();
  }
  const V = insn.op32 ? 32 : 16;
  const body: string[] = [];
  let result: 'next' | 'end' = 'next';
  const mask = (bits: number) => (bits === 32 ? '' : bits === 16 ? ' & 0xffff' : ' & 0xff');
  const target = (t: number): number | null => {
    const tt = insn.op32 ? t | 0 : t & 0xffff;
    return (tt >>> 0) > csLimit ? null : tt;
  };

  if (op < 0x40 && (op & 7) < 6) {
    const aop = op >> 3;
    const form = op & 7;
    if (form < 4) {
      const r = d.modrm(insn);
      const size = form & 1 ? V : 8;
      if (form < 2) {
        if (aop !== 7 && r.mod !== 3) body.push('c.saveFlags();');
        body.push(`{ const r = alu(c, ${aop}, ${rd(size, r)}, ${reg(size, r.reg)}, ${size});`);
        if (aop !== 7) body.push(wr(size, r, 'r'));
        body.push('}');
      } else {
        body.push(`{ const r = alu(c, ${aop}, ${reg(size, r.reg)}, ${rd(size, r)}, ${size});`);
        if (aop !== 7) body.push(`${reg(size, r.reg)} = r;`);
        body.push('}');
      }
    } else {
      const size = form === 4 ? 8 : V;
      const imm = size === 8 ? d.u8() : d.imm(insn.op32);
      body.push(`{ const r = alu(c, ${aop}, ${reg(size, 0)}, ${imm}, ${size});`);
      if (aop !== 7) body.push(`${reg(size, 0)} = r;`);
      body.push('}');
    }
  } else if (op >= 0x40 && op <= 0x4f) {
    const r = op & 7, inc = op < 0x48;
    body.push(`{ const a = ${reg(V, r)}; const r = (a ${inc ? '+' : '-'} 1) | 0; ${reg(V, r)} = r; c.lazyKeepCF(${inc ? 1 : 2}, a, 1, r, ${V}); }`);
  } else if (op >= 0x50 && op <= 0x57) {
    body.push(`c.push${V}(${reg(V, op & 7)});`);
  } else if (op === 0x68 || op === 0x6a) {
    const imm = op === 0x6a ? d.s8() : d.imm(insn.op32);
    body.push(`c.push${V}(${V === 16 ? imm & 0xffff : imm | 0});`);
  } else if (op === 0x69 || op === 0x6b) {
    const r = d.modrm(insn);
    const imm = op === 0x6b ? d.s8() : insn.op32 ? d.s32() : (d.u16() << 16) >> 16;
    body.push(`imulReg(c, ${r.reg}, ${rd(V, r)}, ${imm}, ${insn.op32});`);
  } else if (op >= 0x58 && op <= 0x5f) {
    body.push(`{ const v = c.read${V}(2, c.sp); c.adjustSp(${V / 8}); ${reg(V, op & 7)} = v; }`);
  } else if (op >= 0x70 && op <= 0x7f) {
    const rel = d.s8();
    const t = target(d.pos + rel);
    if (t === null) return 'stop';
    body.push(sideExit(op & 0xf, t));
  } else if (op === 0x80 || op === 0x81 || op === 0x83) {
    const r = d.modrm(insn);
    const size = op === 0x80 ? 8 : V;
    let imm = op === 0x81 ? d.imm(insn.op32) : op === 0x80 ? d.u8() : d.s8();
    if (size === 16) imm &= 0xffff;
    if (size === 8) imm &= 0xff;
    if (r.reg !== 7 && r.mod !== 3) body.push('c.saveFlags();');
    body.push(`{ const r = alu(c, ${r.reg}, ${rd(size, r)}, ${imm}, ${size});`);
    if (r.reg !== 7) body.push(wr(size, r, 'r'));
    body.push('}');
  } else if (op === 0x84 || op === 0x85) {
    const r = d.modrm(insn);
    const size = op === 0x84 ? 8 : V;
    body.push(`alu(c, 4, ${rd(size, r)}, ${reg(size, r.reg)}, ${size});`);
  } else if (op >= 0x88 && op <= 0x8b) {
    const r = d.modrm(insn);
    const size = op & 1 ? V : 8;
    if (op < 0x8a) body.push(wr(size, r, reg(size, r.reg)));
    else body.push(`${reg(size, r.reg)} = ${rd(size, r)};`);
  } else if (op === 0x8d) {
    const r = d.modrm(insn);
    if (r.mod === 3) return 'stop';
    body.push(`${reg(V, r.reg)} = ${r.ea};`);
  } else if (op === 0x90) {
    // NOP
  } else if (op === 0x98) {
    body.push(insn.op32 ? 'c.r32[0] = (c.r32[0] << 16) >> 16;' : 'c.r16[0] = (c.r8[0] << 24) >> 24;');
  } else if (op === 0x99) {
    body.push(insn.op32 ? 'c.r32[2] = c.r32[0] >> 31;' : 'c.r16[4] = (c.r16[0] << 16) >> 31;');
  } else if (op === 0xa8 || op === 0xa9) {
    const size = op === 0xa8 ? 8 : V;
    const imm = size === 8 ? d.u8() : d.imm(insn.op32);
    body.push(`alu(c, 4, ${reg(size, 0)}, ${imm}, ${size});`);
  } else if (op >= 0xb0 && op <= 0xb7) {
    body.push(`${R8(op & 7)} = ${d.u8()};`);
  } else if (op >= 0xb8 && op <= 0xbf) {
    body.push(`${reg(V, op & 7)} = ${d.imm(insn.op32)};`);
  } else if (op === 0xc0 || op === 0xc1 || op === 0xd0 || op === 0xd1 || op === 0xd3) {
    const r = d.modrm(insn);
    const size = op & 1 ? V : 8;
    const count = op <= 0xc1 ? `${d.u8()}` : op <= 0xd1 ? '1' : 'c.r8[4]';
    if (r.mod !== 3) body.push('c.saveFlags();');
    body.push(`{ const n = ${count}; const r = shift(c, ${r.reg}, ${rd(size, r)}, n, ${size}); if ((n & 31) !== 0) { ${wr(size, r, 'r')} } }`);
  } else if (op === 0xc3) {
    body.push(`{ const t = c.read${V}(2, c.sp); if ((t >>> 0) > ${csLimit}) c.fault(13, 0); c.eip = t; c.adjustSp(${V / 8}); }`);
    result = 'end';
  } else if (op === 0xc6 || op === 0xc7) {
    const r = d.modrm(insn);
    if (r.reg !== 0) return 'stop';
    const size = op === 0xc6 ? 8 : V;
    const imm = size === 8 ? d.u8() : d.imm(insn.op32);
    body.push(wr(size, r, `${imm}`));
  } else if (op === 0xe8) {
    const rel = insn.op32 ? d.s32() : (d.u16() << 16) >> 16;
    const t = target(d.pos + rel);
    if (t === null) return 'stop';
    body.push(`c.push${V}(${insn.op32 ? d.pos | 0 : d.pos & 0xffff}); c.eip = ${t};`);
    result = 'end';
  } else if (op === 0xe9 || op === 0xeb) {
    const rel = op === 0xeb ? d.s8() : insn.op32 ? d.s32() : (d.u16() << 16) >> 16;
    const t = target(d.pos + rel);
    if (t === null) return 'stop';
    body.push(`c.eip = ${t};`);
    result = 'end';
  } else if ((op === 0xf6 || op === 0xf7) ) {
    const r = d.modrm(insn);
    const size = op === 0xf6 ? 8 : V;
    if (r.reg === 0 || r.reg === 1) {
      const imm = size === 8 ? d.u8() : d.imm(insn.op32);
      body.push(`alu(c, 4, ${rd(size, r)}, ${imm}, ${size});`);
    } else if (r.reg === 2) {
      body.push(wr(size, r, `~${rd(size, r)}`));
    } else if (r.reg === 3) {
      if (r.mod !== 3) body.push('c.saveFlags();');
      body.push(`{ const r = alu(c, 5, 0, ${rd(size, r)}, ${size}); ${wr(size, r, 'r')} }`);
    } else return 'stop';
  } else if ((op === 0xfe || op === 0xff)) {
    const r = d.modrm(insn);
    const size = op === 0xfe ? 8 : V;
    if (r.reg > 1) return 'stop';
    if (r.mod !== 3) body.push('c.saveFlags();');
    body.push(`{ const a = ${rd(size, r)}; const r = (a ${r.reg === 0 ? '+' : '-'} 1) | 0; ${wr(size, r, 'r')} c.lazyKeepCF(${r.reg === 0 ? 1 : 2}, a, 1, r, ${size}); }`);
  } else if (op === 0x0f) {
    const op2 = d.u8();
    if (op2 >= 0x80 && op2 <= 0x8f) {
      const rel = insn.op32 ? d.s32() : (d.u16() << 16) >> 16;
      const t = target(d.pos + rel);
      if (t === null) return 'stop';
      body.push(sideExit(op2 & 0xf, t));
    } else if (op2 >= 0x90 && op2 <= 0x9f) {
      const r = d.modrm(insn);
      body.push(wr(8, r, `c.cond(${op2 & 0xf}) ? 1 : 0`));
    } else if (op2 >= 0x40 && op2 <= 0x4f) {
      const r = d.modrm(insn);
      body.push(`{ const v = ${rd(V, r)}; if (c.cond(${op2 & 0xf})) ${reg(V, r.reg)} = v; }`);
    } else if (op2 === 0xaf) {
      const r = d.modrm(insn);
      body.push(`imulReg(c, ${r.reg}, ${reg(V, r.reg)}, ${rd(V, r)}, ${insn.op32});`);
    } else if (op2 === 0xb6 || op2 === 0xb7 || op2 === 0xbe || op2 === 0xbf) {
      const r = d.modrm(insn);
      const src = op2 & 1 ? 16 : 8;
      const v = rd(src, r);
      const ext = op2 < 0xb8 ? v : src === 8 ? `((${v} << 24) >> 24)` : `((${v} << 16) >> 16)`;
      body.push(`${reg(V, r.reg)} = ${ext}${V === 16 && op2 >= 0xb8 ? ' & 0xffff' : ''};`);
    } else return 'stop';
  } else {
    return 'stop';
  }
  void mask;
  const next = d.pos;
  ctx.out.push(`c.startEip = ${insn.start | 0}; c.startEsp = c.r32[4]; c.flagsSaved = false; c.eip = ${ctx.code32 ? next | 0 : next & 0xffff};`);
  ctx.out.push(...body);
  ctx.out.push('c.budget--;');
  return result;
}

/** The compiled block and how many instructions it holds (0: nothing compilable at its start). */
export interface CompiledBlock {
  fn: BlockFn | null;
  insns: number;
  /** Bytes of guest code the block covers, from its start. */
  length: number;
  /** The source, for debugging and tests. */
  source: string;
}

/** Compiles the block that starts at `eip`. */
export function compileBlock(reader: CodeReader, eip: number, code32: boolean, csLimit: number): CompiledBlock {
  const ctx: Ctx = { eip, code32, out: ['c.interruptShadow = false;'] };
  let d = new Decoder(reader, eip);
  let n = 0;
  while (n < MAX_BLOCK_INSNS) {
    const mark = ctx.out.length;
    const at = d.pos;
    let res: 'next' | 'end' | 'stop';
    try {
      res = compileInsn(d, ctx, csLimit);
    } catch (e) {
      if (e !== END) throw e;
      res = 'stop';
    }
    if (res === 'stop') {
      ctx.out.length = mark;
      d = new Decoder(reader, at);
      break;
    }
    n++;
    if (res === 'end') break;
  }
  if (n === 0) return { fn: null, insns: 0, length: 0, source: '' };
  const source = ctx.out.join('\n');
  const make = new Function('alu', 'shift', 'imulReg', `return function block(c) {\n${source}\n};`) as
    (a: typeof alu, s: typeof shift, i: typeof imulReg) => BlockFn;
  return { fn: make(alu, shift, imulReg), insns: n, length: d.pos - eip, source };
}
