/**
 * A small x86 (16/32-bit) assembler driven by method calls, for building test and demo
 * guests in TypeScript. Encodings follow the Intel SDM opcode tables and the ModRM/SIB
 * tables (Vol. 2, Tables 2-1 to 2-3).
 *
 * Prefixes are emitted in the order: explicit ones (`rep`, `lock`, ...) as called, then
 * segment override, operand size (0x66), address size (0x67), then the opcode.
 * @module
 */

import {
  AsmError,
  ControlRegister,
  Expr,
  Mem,
  Register,
  SegmentRegister,
  toExpr,
  type Bits,
  type Imm,
  type OperandSize,
} from './operands.js';

/** Options for {@link Assembler}. */
export interface AssemblerOptions {
  /** Default operand and address size of the code: 16 (real mode) or 32. Default 16. */
  bits?: Bits;
  /** Address of the first byte; label values are relative to it. Default 0. */
  origin?: number;
}

/** The result of {@link Assembler.assemble}. */
export interface Assembled {
  readonly bytes: Uint8Array;
  /** Every label's address. */
  readonly labels: ReadonlyMap<string, number>;
  readonly origin: number;
}

/** Condition codes (the low nibble of Jcc/SETcc/CMOVcc), with all the usual aliases. */
export const Cond = {
  o: 0x0, no: 0x1, b: 0x2, c: 0x2, nae: 0x2, ae: 0x3, nb: 0x3, nc: 0x3,
  e: 0x4, z: 0x4, ne: 0x5, nz: 0x5, be: 0x6, na: 0x6, a: 0x7, nbe: 0x7,
  s: 0x8, ns: 0x9, p: 0xa, pe: 0xa, np: 0xb, po: 0xb,
  l: 0xc, nge: 0xc, ge: 0xd, nl: 0xd, le: 0xe, ng: 0xe, g: 0xf, nle: 0xf,
} as const;
/** A condition name for {@link Assembler.jcc}. */
export type Condition = keyof typeof Cond;

/**
 * Size of a relative jump to a label: `'short'` (rel8, an error if out of range) or
 * `'near'` (rel16/rel32). Left out, the assembler picks the shortest that reaches.
 */
export type JumpSize = 'short' | 'near';

/** Options for string instructions and other implicit-memory instructions. */
export interface StringOpOptions {
  /** Segment override for the source (DS:SI) operand. The ES:DI destination cannot be overridden. */
  seg?: SegmentRegister;
  /** Address size, i.e. SI/DI/CX versus ESI/EDI/ECX. Default: the assembler's bits. */
  addr?: Bits;
}

/** Any operand an instruction method accepts. */
export type Operand = Register | SegmentRegister | ControlRegister | Mem | Imm;

interface Fixup {
  /** Byte offset of the field within its data item. */
  at: number;
  size: 1 | 2 | 4;
  expr: Expr;
  /** Relative to `end` (a branch displacement) rather than absolute. */
  rel: boolean;
  /** Offset within the data item of the end of the instruction (for `rel`). */
  end: number;
  what: string;
}

type Item =
  | { k: 'data'; bytes: number[]; fixups: Fixup[] }
  | { k: 'label'; name: string }
  | { k: 'branch'; cc: number; target: Expr; bits: Bits; mode: JumpSize | 'auto'; near: boolean; what: string }
  | { k: 'org'; addr: number; fill: number }
  | { k: 'align'; n: number; fill: number };

const SEG_PREFIX = [0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65] as const;
/** Jcc/jmp marker for a branch item: an unconditional jmp. */
const JMP = -1;

const isImm = (x: unknown): x is Imm =>
  typeof x === 'number' || typeof x === 'string' || x instanceof Expr;

function fmtOp(x: Operand): string {
  if (typeof x === 'number') return x < 0 || x < 10 ? String(x) : `0x${x.toString(16)}`;
  return typeof x === 'string' ? x : x.toString();
}

function fmt(mnemonic: string, ops: readonly Operand[]): string {
  return ops.length === 0 ? mnemonic : `${mnemonic} ${ops.map(fmtOp).join(', ')}`;
}

function checkInt(v: number, size: 1 | 2 | 4, what: string): void {
  const bits = size * 8;
  if (!Number.isInteger(v) || v < -(2 ** (bits - 1)) || v > 2 ** bits - 1) {
    throw new AsmError(`${what}: value ${v} does not fit in ${bits} bits`);
  }
}

function putLe(out: number[] | Uint8Array, at: number, v: number, size: 1 | 2 | 4): void {
  for (let i = 0; i < size; i++) out[at + i] = (v >>> (8 * i)) & 0xff;
}

/** `v` read as a signed value of `size` bits (0xfff0 as a word is -16). */
function signed(v: number, size: OperandSize): number {
  return size === 32 ? v | 0 : size === 16 ? (v << 16) >> 16 : (v << 24) >> 24;
}

/** Does `v`, taken as a value of `size` bits, equal the sign extension of its low byte? */
function fitsS8(v: Imm, size: OperandSize): v is number {
  if (typeof v !== 'number') return false;
  const s = signed(v, size);
  return s >= -128 && s <= 127;
}

const immBytes = (size: OperandSize): 1 | 2 | 4 => (size === 8 ? 1 : size === 16 ? 2 : 4);

/**
 * Builds x86 machine code with method calls; `assemble()` resolves labels.
 *
 * ```ts
 * const a = new Assembler({ bits: 16, origin: 0x7c00 });
 * a.mov(reg.dx, 0x3f8).mov(reg.al, 0x41).label('again').out_dx_al().jmp('again');
 * const code = a.bytes();
 * ```
 */
export class Assembler {
  private readonly origin: number;
  private _bits: Bits;
  private readonly items: Item[] = [];
  private readonly labelNames = new Set<string>();

  constructor(options: AssemblerOptions = {}) {
    this._bits = options.bits ?? 16;
    this.origin = options.origin ?? 0;
    if (this._bits !== 16 && this._bits !== 32) throw new AsmError(`bits must be 16 or 32, not ${String(this._bits)}`);
    checkInt(this.origin, 4, 'origin');
  }

  /** The current default operand/address size. */
  get bits(): Bits {
    return this._bits;
  }

  /** Assemble what follows as 16-bit code (like NASM's `bits 16`). */
  use16(): this {
    this._bits = 16;
    return this;
  }

  /** Assemble what follows as 32-bit code (like NASM's `bits 32`). */
  use32(): this {
    this._bits = 32;
    return this;
  }

  // ---------------------------------------------------------------- layout and data

  /** Define `name` at the current position. */
  label(name: string): this {
    if (name === '') throw new AsmError('label name is empty');
    if (this.labelNames.has(name)) throw new AsmError(`label '${name}' is defined twice`);
    this.labelNames.add(name);
    this.items.push({ k: 'label', name });
    return this;
  }

  /** Pad with `fill` up to absolute address `addr`; an error if already past it. */
  org(addr: number, fill = 0): this {
    checkInt(addr, 4, 'org');
    checkInt(fill, 1, 'org fill');
    this.items.push({ k: 'org', addr, fill: fill & 0xff });
    return this;
  }

  /** Pad with `fill` (NOP by default, safe to run through) to a multiple of `n` bytes. */
  align(n: number, fill = 0x90): this {
    if (!Number.isInteger(n) || n < 1 || (n & (n - 1)) !== 0) throw new AsmError(`align: ${n} is not a power of two`);
    checkInt(fill, 1, 'align fill');
    this.items.push({ k: 'align', n, fill: fill & 0xff });
    return this;
  }

  /** Bytes: numbers (-128..255) and strings (as UTF-8 text). */
  db(...values: ReadonlyArray<number | string>): this {
    const out: number[] = [];
    for (const v of values) {
      if (typeof v === 'string') out.push(...new TextEncoder().encode(v));
      else {
        checkInt(v, 1, 'db');
        out.push(v & 0xff);
      }
    }
    return this.emitRaw(out, []);
  }

  /** 16-bit words: numbers, or label names / expressions (their addresses). */
  dw(...values: readonly Imm[]): this {
    return this.data(values, 2, 'dw');
  }

  /** 32-bit dwords: numbers, or label names / expressions (their addresses). */
  dd(...values: readonly Imm[]): this {
    return this.data(values, 4, 'dd');
  }

  /** UTF-8 text, no terminator. */
  ascii(text: string): this {
    return this.db(text);
  }

  /** UTF-8 text followed by a NUL byte. */
  asciz(text: string): this {
    return this.db(text, 0);
  }

  /** `count` copies of the byte `value`. */
  fill(count: number, value = 0): this {
    if (!Number.isInteger(count) || count < 0) throw new AsmError(`fill: bad count ${count}`);
    checkInt(value, 1, 'fill');
    return this.emitRaw(new Array<number>(count).fill(value & 0xff), []);
  }

  /** Escape hatch: emit these bytes as they are. */
  raw(bytes: ArrayLike<number>): this {
    const out = Array.from(bytes);
    for (const b of out) checkInt(b, 1, 'raw');
    return this.emitRaw(out.map((b) => b & 0xff), []);
  }

  // ---------------------------------------------------------------- prefixes

  /** REP prefix (F3) for the next string instruction. */
  rep(): this {
    return this.emitRaw([0xf3], []);
  }
  /** REPE/REPZ prefix (F3). */
  repe(): this {
    return this.emitRaw([0xf3], []);
  }
  /** Alias of {@link repe}. */
  repz(): this {
    return this.repe();
  }
  /** REPNE/REPNZ prefix (F2). */
  repne(): this {
    return this.emitRaw([0xf2], []);
  }
  /** Alias of {@link repne}. */
  repnz(): this {
    return this.repne();
  }
  /** LOCK prefix (F0). */
  lock(): this {
    return this.emitRaw([0xf0], []);
  }

  // ---------------------------------------------------------------- data movement

  /**
   * `mov`: reg/mem ← reg/mem/imm, sreg ↔ reg16/mem, cr ↔ reg32. For AL/AX/EAX with a bare
   * `[disp]` operand the short moffs forms (A0–A3) are used.
   */
  mov(dst: Register | SegmentRegister | ControlRegister | Mem, src: Operand): this {
    const what = fmt('mov', [dst, src]);
    if (dst instanceof ControlRegister) {
      if (!(src instanceof Register) || src.size !== 32) throw new AsmError(`${what}: control registers move to/from a 32-bit register`);
      return this.insn(what, { op: [0x0f, 0x22], rm: { reg: dst.code, rm: src } });
    }
    if (src instanceof ControlRegister) {
      if (!(dst instanceof Register) || dst.size !== 32) throw new AsmError(`${what}: control registers move to/from a 32-bit register`);
      return this.insn(what, { op: [0x0f, 0x20], rm: { reg: src.code, rm: dst } });
    }
    if (dst instanceof SegmentRegister) {
      if (dst.code === 1) throw new AsmError(`${what}: CS cannot be loaded with mov; use a far jump`);
      if (src instanceof Register && src.size !== 8) {
        // The operand size does not matter for a segment load, so no 0x66 is emitted.
        return this.insn(what, { op: [0x8e], rm: { reg: dst.code, rm: src } });
      }
      if (src instanceof Mem && (src.size === undefined || src.size === 16)) {
        return this.insn(what, { op: [0x8e], rm: { reg: dst.code, rm: src } });
      }
      throw new AsmError(`${what}: a segment register is loaded from a 16-bit register or word in memory`);
    }
    if (src instanceof SegmentRegister) {
      if (dst instanceof Register && dst.size !== 8) {
        return this.insn(what, { opSize: dst.size, op: [0x8c], rm: { reg: src.code, rm: dst } });
      }
      if (dst instanceof Mem && (dst.size === undefined || dst.size === 16)) {
        return this.insn(what, { op: [0x8c], rm: { reg: src.code, rm: dst } });
      }
      throw new AsmError(`${what}: a segment register is stored to a 16/32-bit register or word in memory`);
    }
    if (isImm(src)) {
      if (dst instanceof Register) {
        const op = dst.size === 8 ? 0xb0 + dst.code : 0xb8 + dst.code;
        return this.insn(what, { opSize: dst.size, op: [op], imm: [[src, immBytes(dst.size)]] });
      }
      const size = this.memSize(dst, what);
      return this.insn(what, { opSize: size, op: [size === 8 ? 0xc6 : 0xc7], rm: { reg: 0, rm: dst }, imm: [[src, immBytes(size)]] });
    }
    if (src instanceof Register && dst instanceof Register) {
      this.sameSize(what, dst.size, src.size);
      return this.insn(what, { opSize: src.size, op: [src.size === 8 ? 0x88 : 0x89], rm: { reg: src.code, rm: dst } });
    }
    if (dst instanceof Register && src instanceof Mem) {
      this.memMatches(what, src, dst.size);
      if (dst.code === 0 && src.isDispOnly) return this.moffs(what, dst.size === 8 ? 0xa0 : 0xa1, dst.size, src);
      return this.insn(what, { opSize: dst.size, op: [dst.size === 8 ? 0x8a : 0x8b], rm: { reg: dst.code, rm: src } });
    }
    if (dst instanceof Mem && src instanceof Register) {
      this.memMatches(what, dst, src.size);
      if (src.code === 0 && dst.isDispOnly) return this.moffs(what, src.size === 8 ? 0xa2 : 0xa3, src.size, dst);
      return this.insn(what, { opSize: src.size, op: [src.size === 8 ? 0x88 : 0x89], rm: { reg: src.code, rm: dst } });
    }
    throw new AsmError(`${what}: unsupported operand combination`);
  }

  /** `movzx reg16/32, r/m8` or `movzx reg32, r/m16`. */
  movzx(dst: Register, src: Register | Mem): this {
    return this.movx('movzx', 0xb6, dst, src);
  }

  /** `movsx reg16/32, r/m8` or `movsx reg32, r/m16`. */
  movsx(dst: Register, src: Register | Mem): this {
    return this.movx('movsx', 0xbe, dst, src);
  }

  /** `lea reg16/32, [mem]`. */
  lea(dst: Register, src: Mem): this {
    const what = fmt('lea', [dst, src]);
    if (dst.size === 8) throw new AsmError(`${what}: destination must be a 16 or 32-bit register`);
    return this.insn(what, { opSize: dst.size, op: [0x8d], rm: { reg: dst.code, rm: src } });
  }

  /** `xchg`: reg ↔ reg/mem (the one-byte 90+r form when one side is AX/EAX). */
  xchg(a: Register | Mem, b: Register | Mem): this {
    const what = fmt('xchg', [a, b]);
    let r: Register;
    let rm: Register | Mem;
    if (a instanceof Register) {
      r = a;
      rm = b;
    } else if (b instanceof Register) {
      r = b;
      rm = a;
    } else {
      throw new AsmError(`${what}: one operand must be a register`);
    }
    if (rm instanceof Register) this.sameSize(what, r.size, rm.size);
    else this.memMatches(what, rm, r.size);
    const size = r.size;
    if (size !== 8 && rm instanceof Register && (r.code === 0 || rm.code === 0)) {
      return this.insn(what, { opSize: size, op: [0x90 + (r.code === 0 ? rm.code : r.code)] });
    }
    return this.insn(what, { opSize: size, op: [size === 8 ? 0x86 : 0x87], rm: { reg: r.code, rm } });
  }

  // ---------------------------------------------------------------- arithmetic and logic

  add(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('add', 0, dst, src);
  }
  or(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('or', 1, dst, src);
  }
  adc(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('adc', 2, dst, src);
  }
  sbb(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('sbb', 3, dst, src);
  }
  and(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('and', 4, dst, src);
  }
  sub(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('sub', 5, dst, src);
  }
  xor(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('xor', 6, dst, src);
  }
  cmp(dst: Register | Mem, src: Register | Mem | Imm): this {
    return this.alu('cmp', 7, dst, src);
  }

  /** `test r/m, reg|imm` (`test reg, mem` is accepted and encoded as `test mem, reg`). */
  test(dst: Register | Mem, src: Register | Mem | Imm): this {
    const what = fmt('test', [dst, src]);
    if (isImm(src)) {
      const size = dst instanceof Register ? dst.size : this.memSize(dst, what);
      if (dst instanceof Register && dst.code === 0) {
        return this.insn(what, { opSize: size, op: [size === 8 ? 0xa8 : 0xa9], imm: [[src, immBytes(size)]] });
      }
      return this.insn(what, { opSize: size, op: [size === 8 ? 0xf6 : 0xf7], rm: { reg: 0, rm: dst }, imm: [[src, immBytes(size)]] });
    }
    const [r, rm] = src instanceof Register ? [src, dst] : dst instanceof Register ? [dst, src] : [undefined, undefined];
    if (r === undefined || rm === undefined) throw new AsmError(`${what}: one operand must be a register`);
    if (rm instanceof Register) this.sameSize(what, r.size, rm.size);
    else this.memMatches(what, rm, r.size);
    return this.insn(what, { opSize: r.size, op: [r.size === 8 ? 0x84 : 0x85], rm: { reg: r.code, rm } });
  }

  /** `inc`: one-byte 40+r for 16/32-bit registers, FE/FF /0 otherwise. */
  inc(dst: Register | Mem): this {
    return this.incDec('inc', 0, dst);
  }
  /** `dec`: one-byte 48+r for 16/32-bit registers, FE/FF /1 otherwise. */
  dec(dst: Register | Mem): this {
    return this.incDec('dec', 1, dst);
  }
  not(dst: Register | Mem): this {
    return this.unary('not', 2, dst);
  }
  neg(dst: Register | Mem): this {
    return this.unary('neg', 3, dst);
  }
  /** Unsigned multiply of AL/AX/EAX by `src` into AX, DX:AX or EDX:EAX. */
  mul(src: Register | Mem): this {
    return this.unary('mul', 4, src);
  }
  /** Unsigned divide of AX, DX:AX or EDX:EAX by `src`. */
  div(src: Register | Mem): this {
    return this.unary('div', 6, src);
  }
  /** Signed divide of AX, DX:AX or EDX:EAX by `src`. */
  idiv(src: Register | Mem): this {
    return this.unary('idiv', 7, src);
  }

  /**
   * Signed multiply: `imul(src)` (one-operand, F6/F7 /5), `imul(dst, src)` (0F AF) or
   * `imul(dst, src, imm)` (6B with imm8 when it fits, else 69).
   */
  imul(a: Register | Mem, b?: Register | Mem, c?: Imm): this {
    if (b === undefined) return this.unary('imul', 5, a);
    const what = fmt('imul', c === undefined ? [a, b] : [a, b, c]);
    if (!(a instanceof Register) || a.size === 8) throw new AsmError(`${what}: destination must be a 16 or 32-bit register`);
    if (b instanceof Register) this.sameSize(what, a.size, b.size);
    else this.memMatches(what, b, a.size);
    if (c === undefined) return this.insn(what, { opSize: a.size, op: [0x0f, 0xaf], rm: { reg: a.code, rm: b } });
    if (fitsS8(c, a.size)) return this.insn(what, { opSize: a.size, op: [0x6b], rm: { reg: a.code, rm: b }, imm: [[signed(c, a.size), 1]] });
    return this.insn(what, { opSize: a.size, op: [0x69], rm: { reg: a.code, rm: b }, imm: [[c, immBytes(a.size)]] });
  }

  rol(dst: Register | Mem, count: number | Register): this {
    return this.shift('rol', 0, dst, count);
  }
  ror(dst: Register | Mem, count: number | Register): this {
    return this.shift('ror', 1, dst, count);
  }
  rcl(dst: Register | Mem, count: number | Register): this {
    return this.shift('rcl', 2, dst, count);
  }
  rcr(dst: Register | Mem, count: number | Register): this {
    return this.shift('rcr', 3, dst, count);
  }
  shl(dst: Register | Mem, count: number | Register): this {
    return this.shift('shl', 4, dst, count);
  }
  /** Same instruction as {@link shl}. */
  sal(dst: Register | Mem, count: number | Register): this {
    return this.shift('sal', 4, dst, count);
  }
  shr(dst: Register | Mem, count: number | Register): this {
    return this.shift('shr', 5, dst, count);
  }
  sar(dst: Register | Mem, count: number | Register): this {
    return this.shift('sar', 7, dst, count);
  }

  /** Sign-extend AL into AX (98; in 32-bit code with 0x66). */
  cbw(): this {
    return this.insn('cbw', { opSize: 16, op: [0x98] });
  }
  /** Sign-extend AX into EAX. */
  cwde(): this {
    return this.insn('cwde', { opSize: 32, op: [0x98] });
  }
  /** Sign-extend AX into DX:AX. */
  cwd(): this {
    return this.insn('cwd', { opSize: 16, op: [0x99] });
  }
  /** Sign-extend EAX into EDX:EAX. */
  cdq(): this {
    return this.insn('cdq', { opSize: 32, op: [0x99] });
  }

  // ---------------------------------------------------------------- stack

  /**
   * `push reg16/32 | sreg | mem | imm`. An immediate is pushed at `size` bits (default: the
   * code's bits), as the sign-extended imm8 form when it fits.
   */
  push(src: Register | SegmentRegister | Mem | Imm, size?: Bits): this {
    const what = fmt('push', [src]);
    if (src instanceof SegmentRegister) {
      const op = [[0x06], [0x0e], [0x16], [0x1e], [0x0f, 0xa0], [0x0f, 0xa8]][src.code];
      return this.insn(what, { op: op ?? [] });
    }
    if (src instanceof Register) {
      if (src.size === 8) throw new AsmError(`${what}: cannot push an 8-bit register`);
      return this.insn(what, { opSize: src.size, op: [0x50 + src.code] });
    }
    if (src instanceof Mem) {
      const s = this.memSize(src, what);
      if (s === 8) throw new AsmError(`${what}: cannot push a byte`);
      return this.insn(what, { opSize: s, op: [0xff], rm: { reg: 6, rm: src } });
    }
    const s = size ?? this._bits;
    if (fitsS8(src, s)) return this.insn(what, { opSize: s, op: [0x6a], imm: [[signed(src, s), 1]] });
    return this.insn(what, { opSize: s, op: [0x68], imm: [[src, immBytes(s)]] });
  }

  /** `pop reg16/32 | sreg (not CS) | mem`. */
  pop(dst: Register | SegmentRegister | Mem): this {
    const what = fmt('pop', [dst]);
    if (dst instanceof SegmentRegister) {
      if (dst.code === 1) throw new AsmError(`${what}: CS cannot be popped`);
      const op = [[0x07], [], [0x17], [0x1f], [0x0f, 0xa1], [0x0f, 0xa9]][dst.code];
      return this.insn(what, { op: op ?? [] });
    }
    if (dst instanceof Register) {
      if (dst.size === 8) throw new AsmError(`${what}: cannot pop an 8-bit register`);
      return this.insn(what, { opSize: dst.size, op: [0x58 + dst.code] });
    }
    const s = this.memSize(dst, what);
    if (s === 8) throw new AsmError(`${what}: cannot pop a byte`);
    return this.insn(what, { opSize: s, op: [0x8f], rm: { reg: 0, rm: dst } });
  }

  pusha(): this {
    return this.insn('pusha', { opSize: 16, op: [0x60] });
  }
  pushad(): this {
    return this.insn('pushad', { opSize: 32, op: [0x60] });
  }
  popa(): this {
    return this.insn('popa', { opSize: 16, op: [0x61] });
  }
  popad(): this {
    return this.insn('popad', { opSize: 32, op: [0x61] });
  }
  pushf(): this {
    return this.insn('pushf', { opSize: 16, op: [0x9c] });
  }
  pushfd(): this {
    return this.insn('pushfd', { opSize: 32, op: [0x9c] });
  }
  popf(): this {
    return this.insn('popf', { opSize: 16, op: [0x9d] });
  }
  popfd(): this {
    return this.insn('popfd', { opSize: 32, op: [0x9d] });
  }

  // ---------------------------------------------------------------- control transfer

  /**
   * `jmp label|address` (relative; shortest form unless `size` is given), or an indirect
   * near `jmp reg|mem` (FF /4).
   */
  jmp(target: Imm | Register | Mem, size?: JumpSize): this {
    if (target instanceof Register || target instanceof Mem) return this.indirect('jmp', 4, target);
    return this.branch(JMP, target, size, fmt('jmp', [target]));
  }

  /** `call label|address` (E8 rel16/rel32) or an indirect near `call reg|mem` (FF /2). */
  call(target: Imm | Register | Mem): this {
    if (target instanceof Register || target instanceof Mem) return this.indirect('call', 2, target);
    const what = fmt('call', [target]);
    return this.insn(what, { op: [0xe8], rel: [target, this._bits === 16 ? 2 : 4] });
  }

  /**
   * Far jump: `jmpFar(selector, offset)` is `jmp ptr16:16` (or `ptr16:32` with `size` 32;
   * in 16-bit code that adds 0x66). `jmpFar(mem)` jumps through a far pointer in memory
   * (FF /5); the memory size picks m16:16 (word) or m16:32 (dword, the default in 32-bit code).
   */
  jmpFar(selector: number | Mem, offset?: Imm, size?: Bits): this {
    return this.far('jmp', 0xea, 5, selector, offset, size);
  }

  /** Far call: `call ptr16:16|ptr16:32` (9A) or through memory (FF /3). See {@link jmpFar}. */
  callFar(selector: number | Mem, offset?: Imm, size?: Bits): this {
    return this.far('call', 0x9a, 3, selector, offset, size);
  }

  /** Near return, optionally popping `n` bytes of arguments. */
  ret(n?: number): this {
    if (n === undefined) return this.insn('ret', { op: [0xc3] });
    return this.insn(fmt('ret', [n]), { op: [0xc2], imm: [[n, 2]] });
  }

  /** Far return, optionally popping `n` bytes of arguments. */
  retf(n?: number): this {
    if (n === undefined) return this.insn('retf', { op: [0xcb] });
    return this.insn(fmt('retf', [n]), { op: [0xca], imm: [[n, 2]] });
  }

  /** Interrupt return at the code's operand size. */
  iret(): this {
    return this.insn('iret', { op: [0xcf] });
  }
  /** 32-bit interrupt return (adds 0x66 in 16-bit code). */
  iretd(): this {
    return this.insn('iretd', { opSize: 32, op: [0xcf] });
  }
  /** `int n` (CD ib). */
  int(n: number): this {
    return this.insn(fmt('int', [n]), { op: [0xcd], imm: [[this.u8(n, 'int'), 1]] });
  }
  /** Breakpoint (CC). */
  int3(): this {
    return this.insn('int3', { op: [0xcc] });
  }
  /** Interrupt 4 if OF is set (CE). */
  into(): this {
    return this.insn('into', { op: [0xce] });
  }

  /** Conditional jump; see {@link JumpSize}. Near forms (0F 8x) need a 386. */
  jcc(cond: Condition, target: Imm, size?: JumpSize): this {
    const cc = Cond[cond] as number | undefined;
    if (cc === undefined) throw new AsmError(`unknown condition '${String(cond)}'`);
    return this.branch(cc, target, size, fmt(`j${cond}`, [target]));
  }
  jo(t: Imm, size?: JumpSize): this { return this.jcc('o', t, size); }
  jno(t: Imm, size?: JumpSize): this { return this.jcc('no', t, size); }
  jb(t: Imm, size?: JumpSize): this { return this.jcc('b', t, size); }
  jc(t: Imm, size?: JumpSize): this { return this.jcc('c', t, size); }
  jnae(t: Imm, size?: JumpSize): this { return this.jcc('nae', t, size); }
  jae(t: Imm, size?: JumpSize): this { return this.jcc('ae', t, size); }
  jnb(t: Imm, size?: JumpSize): this { return this.jcc('nb', t, size); }
  jnc(t: Imm, size?: JumpSize): this { return this.jcc('nc', t, size); }
  je(t: Imm, size?: JumpSize): this { return this.jcc('e', t, size); }
  jz(t: Imm, size?: JumpSize): this { return this.jcc('z', t, size); }
  jne(t: Imm, size?: JumpSize): this { return this.jcc('ne', t, size); }
  jnz(t: Imm, size?: JumpSize): this { return this.jcc('nz', t, size); }
  jbe(t: Imm, size?: JumpSize): this { return this.jcc('be', t, size); }
  jna(t: Imm, size?: JumpSize): this { return this.jcc('na', t, size); }
  ja(t: Imm, size?: JumpSize): this { return this.jcc('a', t, size); }
  jnbe(t: Imm, size?: JumpSize): this { return this.jcc('nbe', t, size); }
  js(t: Imm, size?: JumpSize): this { return this.jcc('s', t, size); }
  jns(t: Imm, size?: JumpSize): this { return this.jcc('ns', t, size); }
  jp(t: Imm, size?: JumpSize): this { return this.jcc('p', t, size); }
  jpe(t: Imm, size?: JumpSize): this { return this.jcc('pe', t, size); }
  jnp(t: Imm, size?: JumpSize): this { return this.jcc('np', t, size); }
  jpo(t: Imm, size?: JumpSize): this { return this.jcc('po', t, size); }
  jl(t: Imm, size?: JumpSize): this { return this.jcc('l', t, size); }
  jnge(t: Imm, size?: JumpSize): this { return this.jcc('nge', t, size); }
  jge(t: Imm, size?: JumpSize): this { return this.jcc('ge', t, size); }
  jnl(t: Imm, size?: JumpSize): this { return this.jcc('nl', t, size); }
  jle(t: Imm, size?: JumpSize): this { return this.jcc('le', t, size); }
  jng(t: Imm, size?: JumpSize): this { return this.jcc('ng', t, size); }
  jg(t: Imm, size?: JumpSize): this { return this.jcc('g', t, size); }
  jnle(t: Imm, size?: JumpSize): this { return this.jcc('nle', t, size); }

  /** Decrement CX (ECX with 32-bit addressing) and jump if non-zero; rel8 only. */
  loop(target: Imm, opts?: { addr?: Bits }): this {
    return this.rel8('loop', 0xe2, target, opts?.addr);
  }
  /** `loope`/`loopz`: also requires ZF=1. */
  loope(target: Imm, opts?: { addr?: Bits }): this {
    return this.rel8('loope', 0xe1, target, opts?.addr);
  }
  loopz(target: Imm, opts?: { addr?: Bits }): this {
    return this.rel8('loopz', 0xe1, target, opts?.addr);
  }
  /** `loopne`/`loopnz`: also requires ZF=0. */
  loopne(target: Imm, opts?: { addr?: Bits }): this {
    return this.rel8('loopne', 0xe0, target, opts?.addr);
  }
  loopnz(target: Imm, opts?: { addr?: Bits }): this {
    return this.rel8('loopnz', 0xe0, target, opts?.addr);
  }
  /** Jump if CX is zero (rel8). */
  jcxz(target: Imm): this {
    return this.rel8('jcxz', 0xe3, target, 16);
  }
  /** Jump if ECX is zero (rel8). */
  jecxz(target: Imm): this {
    return this.rel8('jecxz', 0xe3, target, 32);
  }

  // ---------------------------------------------------------------- flags and system

  cli(): this { return this.insn('cli', { op: [0xfa] }); }
  sti(): this { return this.insn('sti', { op: [0xfb] }); }
  hlt(): this { return this.insn('hlt', { op: [0xf4] }); }
  cld(): this { return this.insn('cld', { op: [0xfc] }); }
  std(): this { return this.insn('std', { op: [0xfd] }); }
  clc(): this { return this.insn('clc', { op: [0xf8] }); }
  stc(): this { return this.insn('stc', { op: [0xf9] }); }
  cmc(): this { return this.insn('cmc', { op: [0xf5] }); }
  nop(): this { return this.insn('nop', { op: [0x90] }); }
  cpuid(): this { return this.insn('cpuid', { op: [0x0f, 0xa2] }); }
  rdtsc(): this { return this.insn('rdtsc', { op: [0x0f, 0x31] }); }
  rdmsr(): this { return this.insn('rdmsr', { op: [0x0f, 0x32] }); }
  wrmsr(): this { return this.insn('wrmsr', { op: [0x0f, 0x30] }); }

  /**
   * Load GDTR from a 6-byte pseudo-descriptor (0F 01 /2). With operand size 16 a CPU uses
   * only 24 bits of the base; pass `size` 32 to add 0x66 in 16-bit code.
   */
  lgdt(src: Mem, size?: Bits): this {
    return this.insn(fmt('lgdt', [src]), { opSize: size, op: [0x0f, 0x01], rm: { reg: 2, rm: src } });
  }
  /** Load IDTR (0F 01 /3); see {@link lgdt}. */
  lidt(src: Mem, size?: Bits): this {
    return this.insn(fmt('lidt', [src]), { opSize: size, op: [0x0f, 0x01], rm: { reg: 3, rm: src } });
  }
  /** Store GDTR (0F 01 /0). */
  sgdt(dst: Mem): this {
    return this.insn(fmt('sgdt', [dst]), { op: [0x0f, 0x01], rm: { reg: 0, rm: dst } });
  }
  /** Store IDTR (0F 01 /1). */
  sidt(dst: Mem): this {
    return this.insn(fmt('sidt', [dst]), { op: [0x0f, 0x01], rm: { reg: 1, rm: dst } });
  }
  /** Load LDTR from a selector (0F 00 /2). */
  lldt(src: Register | Mem): this {
    return this.insn(fmt('lldt', [src]), { op: [0x0f, 0x00], rm: { reg: 2, rm: src } });
  }
  /** Load the task register from a selector (0F 00 /3). */
  ltr(src: Register | Mem): this {
    return this.insn(fmt('ltr', [src]), { op: [0x0f, 0x00], rm: { reg: 3, rm: src } });
  }
  /** Invalidate the TLB entry for the page of `m` (0F 01 /7). */
  invlpg(m: Mem): this {
    return this.insn(fmt('invlpg', [m]), { op: [0x0f, 0x01], rm: { reg: 7, rm: m } });
  }

  // ---------------------------------------------------------------- port I/O

  /** `in al|ax|eax, imm8|dx`. */
  in(dst: Register, port: number | Register): this {
    const what = fmt('in', [dst, port]);
    this.accumulator(what, dst);
    const w = dst.size === 8 ? 0 : 1;
    if (port instanceof Register) {
      if (port.name !== 'dx') throw new AsmError(`${what}: the port register must be dx`);
      return this.insn(what, { opSize: dst.size, op: [0xec | w] });
    }
    return this.insn(what, { opSize: dst.size, op: [0xe4 | w], imm: [[this.u8(port, 'in'), 1]] });
  }

  /** `out imm8|dx, al|ax|eax`. */
  out(port: number | Register, src: Register): this {
    const what = fmt('out', [port, src]);
    this.accumulator(what, src);
    const w = src.size === 8 ? 0 : 1;
    if (port instanceof Register) {
      if (port.name !== 'dx') throw new AsmError(`${what}: the port register must be dx`);
      return this.insn(what, { opSize: src.size, op: [0xee | w] });
    }
    return this.insn(what, { opSize: src.size, op: [0xe6 | w], imm: [[this.u8(port, 'out'), 1]] });
  }

  in_al_dx(): this { return this.insn('in al, dx', { opSize: 8, op: [0xec] }); }
  in_ax_dx(): this { return this.insn('in ax, dx', { opSize: 16, op: [0xed] }); }
  in_eax_dx(): this { return this.insn('in eax, dx', { opSize: 32, op: [0xed] }); }
  out_dx_al(): this { return this.insn('out dx, al', { opSize: 8, op: [0xee] }); }
  out_dx_ax(): this { return this.insn('out dx, ax', { opSize: 16, op: [0xef] }); }
  out_dx_eax(): this { return this.insn('out dx, eax', { opSize: 32, op: [0xef] }); }

  // ---------------------------------------------------------------- string instructions

  movsb(o?: StringOpOptions): this { return this.str('movsb', 0xa4, 8, o, true); }
  movsw(o?: StringOpOptions): this { return this.str('movsw', 0xa5, 16, o, true); }
  movsd(o?: StringOpOptions): this { return this.str('movsd', 0xa5, 32, o, true); }
  cmpsb(o?: StringOpOptions): this { return this.str('cmpsb', 0xa6, 8, o, true); }
  cmpsw(o?: StringOpOptions): this { return this.str('cmpsw', 0xa7, 16, o, true); }
  cmpsd(o?: StringOpOptions): this { return this.str('cmpsd', 0xa7, 32, o, true); }
  stosb(o?: StringOpOptions): this { return this.str('stosb', 0xaa, 8, o, false); }
  stosw(o?: StringOpOptions): this { return this.str('stosw', 0xab, 16, o, false); }
  stosd(o?: StringOpOptions): this { return this.str('stosd', 0xab, 32, o, false); }
  lodsb(o?: StringOpOptions): this { return this.str('lodsb', 0xac, 8, o, true); }
  lodsw(o?: StringOpOptions): this { return this.str('lodsw', 0xad, 16, o, true); }
  lodsd(o?: StringOpOptions): this { return this.str('lodsd', 0xad, 32, o, true); }
  scasb(o?: StringOpOptions): this { return this.str('scasb', 0xae, 8, o, false); }
  scasw(o?: StringOpOptions): this { return this.str('scasw', 0xaf, 16, o, false); }
  scasd(o?: StringOpOptions): this { return this.str('scasd', 0xaf, 32, o, false); }
  insb(o?: StringOpOptions): this { return this.str('insb', 0x6c, 8, o, false); }
  insw(o?: StringOpOptions): this { return this.str('insw', 0x6d, 16, o, false); }
  insd(o?: StringOpOptions): this { return this.str('insd', 0x6d, 32, o, false); }
  outsb(o?: StringOpOptions): this { return this.str('outsb', 0x6e, 8, o, true); }
  outsw(o?: StringOpOptions): this { return this.str('outsw', 0x6f, 16, o, true); }
  outsd(o?: StringOpOptions): this { return this.str('outsd', 0x6f, 32, o, true); }

  // ---------------------------------------------------------------- output

  /** Lay out the program, resolve every label, and return the bytes and label addresses. */
  assemble(): Assembled {
    const items = this.items;
    const addrs = new Array<number>(items.length).fill(0);
    for (const it of items) if (it.k === 'branch') it.near = it.mode === 'near';
    let labels = new Map<string, number>();
    let end = this.origin;
    // Branches start short and only ever grow, so this settles in a few passes.
    for (;;) {
      labels = new Map();
      let addr = this.origin;
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        addrs[i] = addr;
        switch (it.k) {
          case 'data':
            addr += it.bytes.length;
            break;
          case 'label':
            labels.set(it.name, addr);
            break;
          case 'branch':
            addr += branchLength(it);
            break;
          case 'org':
            if (addr > it.addr) {
              throw new AsmError(`org 0x${it.addr.toString(16)}: code already reaches 0x${addr.toString(16)}`);
            }
            addr = it.addr;
            break;
          case 'align':
            addr = Math.ceil(addr / it.n) * it.n;
            break;
        }
      }
      end = addr;
      let grew = false;
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        if (it.k !== 'branch' || it.near || it.mode !== 'auto') continue;
        const d = evaluate(it.target, labels, it.what) - (addrs[i]! + 2);
        if (d < -128 || d > 127) {
          it.near = true;
          grew = true;
        }
      }
      if (!grew) break;
    }

    const out = new Uint8Array(end - this.origin);
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      const at = addrs[i]! - this.origin;
      switch (it.k) {
        case 'data':
          out.set(it.bytes, at);
          for (const f of it.fixups) {
            let v = evaluate(f.expr, labels, f.what);
            if (f.rel) v = relDisp(v - (addrs[i]! + f.end), f.size, f.what);
            else checkInt(v, f.size, f.what);
            putLe(out, at + f.at, v, f.size);
          }
          break;
        case 'branch': {
          const len = branchLength(it);
          const d = evaluate(it.target, labels, it.what) - (addrs[i]! + len);
          if (!it.near) {
            out[at] = it.cc === JMP ? 0xeb : 0x70 | it.cc;
            out[at + 1] = relDisp(d, 1, it.what) & 0xff;
          } else {
            const size = it.bits === 16 ? 2 : 4;
            let p = at;
            if (it.cc === JMP) out[p++] = 0xe9;
            else {
              out[p++] = 0x0f;
              out[p++] = 0x80 | it.cc;
            }
            putLe(out, p, relDisp(d, size, it.what), size);
          }
          break;
        }
        case 'org':
        case 'align':
          out.fill(it.fill, at, (i + 1 < items.length ? addrs[i + 1]! : end) - this.origin);
          break;
        case 'label':
          break;
      }
    }
    return { bytes: out, labels, origin: this.origin };
  }

  /** The assembled bytes; see {@link assemble}. */
  bytes(): Uint8Array {
    return this.assemble().bytes;
  }

  // ---------------------------------------------------------------- encoding helpers

  private emitRaw(bytes: number[], fixups: Fixup[]): this {
    const last = this.items[this.items.length - 1];
    if (last?.k === 'data') {
      const base = last.bytes.length;
      for (const b of bytes) last.bytes.push(b);
      for (const f of fixups) last.fixups.push({ ...f, at: f.at + base, end: f.end + base });
    } else {
      this.items.push({ k: 'data', bytes, fixups });
    }
    return this;
  }

  private data(values: readonly Imm[], size: 2 | 4, what: string): this {
    const bytes: number[] = [];
    const fixups: Fixup[] = [];
    for (const v of values) this.pushImm(bytes, fixups, v, size, what);
    for (const f of fixups) f.end = bytes.length;
    return this.emitRaw(bytes, fixups);
  }

  private pushImm(out: number[], fixups: Fixup[], v: Imm, size: 1 | 2 | 4, what: string): void {
    const at = out.length;
    for (let i = 0; i < size; i++) out.push(0);
    if (typeof v === 'number') {
      checkInt(v, size, what);
      putLe(out, at, v, size);
    } else {
      fixups.push({ at, size, expr: toExpr(v), rel: false, end: 0, what });
    }
  }

  /**
   * Emit one instruction: prefixes, opcode, ModRM (+SIB, displacement), immediates and a
   * trailing relative displacement.
   */
  private insn(
    what: string,
    o: {
      opSize?: OperandSize | undefined;
      op: readonly number[];
      rm?: { reg: number; rm: Register | Mem };
      imm?: ReadonlyArray<readonly [Imm, 1 | 2 | 4]>;
      rel?: readonly [Imm, 1 | 2 | 4];
      addr?: Bits;
      seg?: SegmentRegister | undefined;
    },
  ): this {
    const out: number[] = [];
    const fixups: Fixup[] = [];
    const m = o.rm?.rm instanceof Mem ? o.rm.rm : undefined;
    const seg = m?.seg ?? o.seg;
    if (seg) out.push(SEG_PREFIX[seg.code]!);
    if (o.opSize !== undefined && o.opSize !== 8 && o.opSize !== this._bits) out.push(0x66);
    const addr = o.addr ?? m?.addrSize;
    if (addr !== undefined && addr !== this._bits) out.push(0x67);
    out.push(...o.op);
    if (o.rm) {
      const { reg: r, rm } = o.rm;
      if (rm instanceof Register) out.push(0xc0 | (r << 3) | rm.code);
      else this.encodeMem(r, rm, out, fixups, what);
    }
    for (const [v, size] of o.imm ?? []) this.pushImm(out, fixups, v, size, what);
    if (o.rel) {
      const at = out.length;
      for (let i = 0; i < o.rel[1]; i++) out.push(0);
      fixups.push({ at, size: o.rel[1], expr: toExpr(o.rel[0]), rel: true, end: 0, what });
    }
    for (const f of fixups) f.end = out.length;
    return this.emitRaw(out, fixups);
  }

  /** ModRM + optional SIB + displacement for a memory operand (SDM Tables 2-1, 2-2, 2-3). */
  private encodeMem(regField: number, m: Mem, out: number[], fixups: Fixup[], what: string): void {
    const asz = m.addrSize ?? this._bits;
    const disp = m.disp;
    const r = regField << 3;
    const dispField = (size: 1 | 2 | 4): void => this.pushImm(out, fixups, disp, size, what);
    if (asz === 16) {
      const codes = [m.base, m.index].filter((x): x is Register => x !== undefined).map((x) => x.code).sort();
      const key = codes.join(',');
      // bx=3 bp=5 si=6 di=7
      const rm = { '': 6, '3,6': 0, '3,7': 1, '5,6': 2, '5,7': 3, '6': 4, '7': 5, '5': 6, '3': 7 }[key];
      if (rm === undefined) throw new AsmError(`${what}: 16-bit addressing allows only [bx|bp] + [si|di] + disp`);
      if (codes.length === 0) {
        out.push(0x06 | r);
        dispField(2);
        return;
      }
      if (typeof disp !== 'number') {
        out.push(0x80 | r | rm);
        dispField(2);
        return;
      }
      checkInt(disp, 2, what);
      const d = (disp << 16) >> 16;
      if (d === 0 && rm !== 6) out.push(r | rm);
      else if (d >= -128 && d <= 127) {
        out.push(0x40 | r | rm);
        out.push(d & 0xff);
      } else {
        out.push(0x80 | r | rm);
        dispField(2);
      }
      return;
    }

    let base = m.base;
    let index = m.index;
    let scale: number = m.scale;
    if (index === undefined && scale !== 1) throw new AsmError(`${what}: scale without an index register`);
    if (index?.code === 4) {
      // ESP cannot be an index; [esp+reg] means the same with the roles swapped.
      if (scale !== 1 || base?.code === 4) throw new AsmError(`${what}: esp cannot be an index register`);
      index = base;
      base = m.index;
    }
    if (typeof disp === 'number') checkInt(disp, 4, what);
    const mod = (b: Register): number => {
      if (typeof disp !== 'number') return 0x80;
      const d = disp | 0;
      if (d === 0 && b.code !== 5) return 0x00;
      return d >= -128 && d <= 127 ? 0x40 : 0x80;
    };
    const dispFor = (md: number): void => {
      if (md === 0x40) out.push((disp as number) & 0xff);
      else if (md === 0x80) dispField(4);
    };
    if (base === undefined && index === undefined) {
      out.push(0x05 | r);
      dispField(4);
      return;
    }
    if (index === undefined && base !== undefined && base.code !== 4) {
      const md = mod(base);
      out.push(md | r | base.code);
      dispFor(md);
      return;
    }
    const ss = scale === 1 ? 0 : scale === 2 ? 1 : scale === 4 ? 2 : 3;
    const idx = index === undefined ? 4 : index.code;
    if (base === undefined) {
      // No base: mod=00 with SIB base=101 means [index*scale + disp32].
      out.push(0x04 | r, (ss << 6) | (idx << 3) | 5);
      dispField(4);
      return;
    }
    const md = mod(base);
    out.push(md | r | 4, (ss << 6) | (idx << 3) | base.code);
    dispFor(md);
  }

  private branch(cc: number, target: Imm, size: JumpSize | undefined, what: string): this {
    if (size !== undefined && size !== 'short' && size !== 'near') throw new AsmError(`${what}: size must be 'short' or 'near'`);
    this.items.push({ k: 'branch', cc, target: toExpr(target), bits: this._bits, mode: size ?? 'auto', near: size === 'near', what });
    return this;
  }

  private rel8(mnemonic: string, op: number, target: Imm, addr: Bits | undefined): this {
    return this.insn(fmt(mnemonic, [target]), { op: [op], rel: [target, 1], addr: addr ?? this._bits });
  }

  private indirect(mnemonic: string, ext: number, target: Register | Mem): this {
    const what = fmt(mnemonic, [target]);
    const size = target instanceof Register ? target.size : (target.size ?? this._bits);
    if (size === 8) throw new AsmError(`${what}: target must be 16 or 32 bits`);
    return this.insn(what, { opSize: size, op: [0xff], rm: { reg: ext, rm: target } });
  }

  private far(mnemonic: string, op: number, ext: number, selector: number | Mem, offset: Imm | undefined, size: Bits | undefined): this {
    if (selector instanceof Mem) {
      const what = fmt(`${mnemonic} far`, [selector]);
      const s = selector.size ?? this._bits;
      if (s === 8) throw new AsmError(`${what}: a far pointer is word (m16:16) or dword (m16:32) sized`);
      return this.insn(what, { opSize: s, op: [0xff], rm: { reg: ext, rm: selector } });
    }
    if (offset === undefined) throw new AsmError(`${mnemonic}Far: missing offset`);
    const s = size ?? this._bits;
    const what = `${mnemonic} ${fmtOp(selector)}:${fmtOp(offset)}`;
    return this.insn(what, { opSize: s, op: [op], imm: [[offset, s === 16 ? 2 : 4], [this.u16(selector, what), 2]] });
  }

  private moffs(what: string, op: number, size: OperandSize, m: Mem): this {
    const asz = m.addrSize ?? this._bits;
    return this.insn(what, { opSize: size, op: [op], imm: [[m.disp, asz === 16 ? 2 : 4]], addr: asz, seg: m.seg });
  }

  private movx(mnemonic: string, op: number, dst: Register, src: Register | Mem): this {
    const what = fmt(mnemonic, [dst, src]);
    if (dst.size === 8) throw new AsmError(`${what}: destination must be a 16 or 32-bit register`);
    const ssize = src instanceof Register ? src.size : src.size;
    if (ssize === undefined) throw new AsmError(`${what}: source size not specified; use byte() or word()`);
    if (ssize >= dst.size) throw new AsmError(`${what}: source must be narrower than the destination`);
    return this.insn(what, { opSize: dst.size, op: [0x0f, ssize === 8 ? op : op + 1], rm: { reg: dst.code, rm: src } });
  }

  private alu(mnemonic: string, n: number, dst: Register | Mem, src: Register | Mem | Imm): this {
    const what = fmt(mnemonic, [dst, src]);
    if (isImm(src)) {
      const size = dst instanceof Register ? dst.size : this.memSize(dst, what);
      if (size === 8) {
        if (dst instanceof Register && dst.code === 0) return this.insn(what, { opSize: 8, op: [0x04 + 8 * n], imm: [[src, 1]] });
        return this.insn(what, { opSize: 8, op: [0x80], rm: { reg: n, rm: dst }, imm: [[src, 1]] });
      }
      if (typeof src === 'number') checkInt(src, immBytes(size), what);
      if (fitsS8(src, size)) return this.insn(what, { opSize: size, op: [0x83], rm: { reg: n, rm: dst }, imm: [[signed(src, size), 1]] });
      if (dst instanceof Register && dst.code === 0) return this.insn(what, { opSize: size, op: [0x05 + 8 * n], imm: [[src, immBytes(size)]] });
      return this.insn(what, { opSize: size, op: [0x81], rm: { reg: n, rm: dst }, imm: [[src, immBytes(size)]] });
    }
    if (src instanceof Register) {
      if (dst instanceof Register) this.sameSize(what, dst.size, src.size);
      else this.memMatches(what, dst, src.size);
      return this.insn(what, { opSize: src.size, op: [8 * n + (src.size === 8 ? 0 : 1)], rm: { reg: src.code, rm: dst } });
    }
    if (dst instanceof Register) {
      this.memMatches(what, src, dst.size);
      return this.insn(what, { opSize: dst.size, op: [8 * n + (dst.size === 8 ? 2 : 3)], rm: { reg: dst.code, rm: src } });
    }
    throw new AsmError(`${what}: two memory operands`);
  }

  private incDec(mnemonic: string, n: number, dst: Register | Mem): this {
    const what = fmt(mnemonic, [dst]);
    if (dst instanceof Register && dst.size !== 8) return this.insn(what, { opSize: dst.size, op: [0x40 + 8 * n + dst.code] });
    const size = dst instanceof Register ? dst.size : this.memSize(dst, what);
    return this.insn(what, { opSize: size, op: [size === 8 ? 0xfe : 0xff], rm: { reg: n, rm: dst } });
  }

  private unary(mnemonic: string, n: number, dst: Register | Mem): this {
    const what = fmt(mnemonic, [dst]);
    const size = dst instanceof Register ? dst.size : this.memSize(dst, what);
    return this.insn(what, { opSize: size, op: [size === 8 ? 0xf6 : 0xf7], rm: { reg: n, rm: dst } });
  }

  private shift(mnemonic: string, n: number, dst: Register | Mem, count: number | Register): this {
    const what = fmt(mnemonic, [dst, count]);
    const size = dst instanceof Register ? dst.size : this.memSize(dst, what);
    const w = size === 8 ? 0 : 1;
    if (count instanceof Register) {
      if (count.name !== 'cl') throw new AsmError(`${what}: a shift count register must be cl`);
      return this.insn(what, { opSize: size, op: [0xd2 | w], rm: { reg: n, rm: dst } });
    }
    if (count === 1) return this.insn(what, { opSize: size, op: [0xd0 | w], rm: { reg: n, rm: dst } });
    return this.insn(what, { opSize: size, op: [0xc0 | w], rm: { reg: n, rm: dst }, imm: [[this.u8(count, what), 1]] });
  }

  private str(mnemonic: string, op: number, size: OperandSize, o: StringOpOptions | undefined, hasSource: boolean): this {
    if (o?.seg && !hasSource) throw new AsmError(`${mnemonic}: ES:DI cannot take a segment override`);
    return this.insn(mnemonic, { opSize: size, op: [op], addr: o?.addr ?? this._bits, seg: o?.seg });
  }

  private memSize(m: Mem, what: string): OperandSize {
    if (m.size === undefined) throw new AsmError(`${what}: operand size not specified; use byte(), word() or dword()`);
    return m.size;
  }

  private memMatches(what: string, m: Mem, size: OperandSize): void {
    if (m.size !== undefined && m.size !== size) throw new AsmError(`${what}: operand sizes differ (${m.size} vs ${size} bits)`);
  }

  private sameSize(what: string, a: OperandSize, b: OperandSize): void {
    if (a !== b) throw new AsmError(`${what}: operand sizes differ (${a} vs ${b} bits)`);
  }

  private accumulator(what: string, r: Register): void {
    if (r.code !== 0) throw new AsmError(`${what}: port I/O uses al, ax or eax`);
  }

  private u8(v: number, what: string): number {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new AsmError(`${what}: ${v} is not in 0..255`);
    return v;
  }

  private u16(v: number, what: string): number {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new AsmError(`${what}: ${v} is not in 0..0xffff`);
    return v;
  }
}

function branchLength(b: Extract<Item, { k: 'branch' }>): number {
  if (!b.near) return 2;
  const disp = b.bits === 16 ? 2 : 4;
  return (b.cc === JMP ? 1 : 2) + disp;
}

function evaluate(e: Expr, labels: ReadonlyMap<string, number>, what: string): number {
  let v = e.addend;
  for (const t of e.terms) {
    const a = labels.get(t.label);
    if (a === undefined) throw new AsmError(`${what}: undefined label '${t.label}'`);
    v += t.sign * a;
  }
  return v;
}

/** Encode a branch displacement: rel8 must reach; rel16/rel32 wrap like IP/EIP do. */
function relDisp(d: number, size: 1 | 2 | 4, what: string): number {
  if (size === 1) {
    if (d < -128 || d > 127) {
      throw new AsmError(`${what}: target is ${d} bytes away, out of rel8 range (-128..127); use a near jump`);
    }
    return d & 0xff;
  }
  return size === 2 ? d & 0xffff : d >>> 0;
}
