/**
 * Operand types for the {@link Assembler}: registers, memory references and label
 * expressions.
 * @module
 */

/** An error in the program being assembled; the message names the instruction and operands. */
export class AsmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AsmError';
  }
}

/** Operand or address size in bits. */
export type Bits = 16 | 32;
/** Size of a general register or memory operand in bits. */
export type OperandSize = 8 | 16 | 32;

/** A general-purpose register. `code` is the 3-bit number used in ModRM/SIB and `+r` opcodes. */
export class Register {
  readonly kind = 'reg';
  constructor(
    readonly name: string,
    readonly size: OperandSize,
    readonly code: number,
  ) {}
  toString(): string {
    return this.name;
  }
}

/** A segment register; `code` is its Sreg number (ES=0, CS, SS, DS, FS, GS=5). */
export class SegmentRegister {
  readonly kind = 'sreg';
  constructor(
    readonly name: string,
    readonly code: number,
  ) {}
  toString(): string {
    return this.name;
  }
}

/** A control register (CR0, CR2, CR3, CR4). */
export class ControlRegister {
  readonly kind = 'creg';
  constructor(
    readonly name: string,
    readonly code: number,
  ) {}
  toString(): string {
    return this.name;
  }
}

const r8 = (name: string, code: number): Register => new Register(name, 8, code);
const r16 = (name: string, code: number): Register => new Register(name, 16, code);
const r32 = (name: string, code: number): Register => new Register(name, 32, code);

/** All registers by name: `reg.ax`, `reg.es`, `reg.cr0`, ... */
export const reg = {
  al: r8('al', 0), cl: r8('cl', 1), dl: r8('dl', 2), bl: r8('bl', 3),
  ah: r8('ah', 4), ch: r8('ch', 5), dh: r8('dh', 6), bh: r8('bh', 7),
  ax: r16('ax', 0), cx: r16('cx', 1), dx: r16('dx', 2), bx: r16('bx', 3),
  sp: r16('sp', 4), bp: r16('bp', 5), si: r16('si', 6), di: r16('di', 7),
  eax: r32('eax', 0), ecx: r32('ecx', 1), edx: r32('edx', 2), ebx: r32('ebx', 3),
  esp: r32('esp', 4), ebp: r32('ebp', 5), esi: r32('esi', 6), edi: r32('edi', 7),
  es: new SegmentRegister('es', 0), cs: new SegmentRegister('cs', 1),
  ss: new SegmentRegister('ss', 2), ds: new SegmentRegister('ds', 3),
  fs: new SegmentRegister('fs', 4), gs: new SegmentRegister('gs', 5),
  cr0: new ControlRegister('cr0', 0), cr2: new ControlRegister('cr2', 2),
  cr3: new ControlRegister('cr3', 3), cr4: new ControlRegister('cr4', 4),
} as const;

/**
 * A value computed from label addresses once layout is known:
 * `sum(sign * address(label)) + addend`. Build with {@link sym}.
 */
export class Expr {
  constructor(
    readonly terms: ReadonlyArray<{ readonly label: string; readonly sign: 1 | -1 }>,
    readonly addend: number,
  ) {}

  /** This expression plus a constant, or plus another label's address. */
  plus(x: number | string | Expr): Expr {
    const o = toExpr(x);
    return new Expr([...this.terms, ...o.terms], this.addend + o.addend);
  }

  /** This expression minus a constant, or minus another label's address (`end` minus `start`). */
  minus(x: number | string | Expr): Expr {
    const o = toExpr(x);
    const neg = o.terms.map((t) => ({ label: t.label, sign: (t.sign === 1 ? -1 : 1) as 1 | -1 }));
    return new Expr([...this.terms, ...neg], this.addend - o.addend);
  }

  toString(): string {
    let s = '';
    for (const t of this.terms) s += (t.sign < 0 ? '-' : s === '' ? '' : '+') + t.label;
    if (this.addend !== 0 || s === '') s += (this.addend < 0 || s === '' ? '' : '+') + String(this.addend);
    return s;
  }
}

/** The address of `label`, optionally plus a constant: `sym('msg', 2)` is `msg+2`. */
export function sym(label: string, addend = 0): Expr {
  return new Expr([{ label, sign: 1 }], addend);
}

/** `end - start` as an expression, e.g. the byte length of a string between two labels. */
export function sizeBetween(start: string, end: string): Expr {
  return sym(end).minus(start);
}

/** An immediate or displacement: a number, a label name (its address) or an {@link Expr}. */
export type Imm = number | string | Expr;

export function toExpr(x: Imm): Expr {
  if (x instanceof Expr) return x;
  if (typeof x === 'string') return sym(x);
  return new Expr([], x);
}

/** What {@link mem} and its sized variants accept. */
export interface MemSpec {
  base?: Register;
  index?: Register;
  scale?: 1 | 2 | 4 | 8;
  /** Displacement: a number, or a label/expression (then always encoded at full width). */
  disp?: Imm;
  /** Segment override prefix. */
  seg?: SegmentRegister;
  /** Operand size; needed when no register operand implies it (e.g. `mov [bx], 1`). */
  size?: OperandSize;
  /** Address size for a displacement-only operand; defaults to the assembler's `bits`. */
  addr?: Bits;
}

/** A memory operand. Create with {@link mem}, {@link byte}, {@link word} or {@link dword}. */
export class Mem {
  readonly kind = 'mem';
  readonly base: Register | undefined;
  readonly index: Register | undefined;
  readonly scale: 1 | 2 | 4 | 8;
  readonly disp: Imm;
  readonly seg: SegmentRegister | undefined;
  readonly size: OperandSize | undefined;
  /** Address size forced by the registers used, or by `addr`; undefined = the assembler's bits. */
  readonly addrSize: Bits | undefined;

  constructor(spec: MemSpec) {
    this.base = spec.base;
    this.index = spec.index;
    this.scale = spec.scale ?? 1;
    this.disp = spec.disp ?? 0;
    this.seg = spec.seg;
    this.size = spec.size;
    let a: Bits | undefined = spec.addr;
    for (const r of [spec.base, spec.index]) {
      if (r === undefined) continue;
      if (r.size === 8) throw new AsmError(`cannot address memory with 8-bit register ${r.name}`);
      if (a !== undefined && a !== r.size) {
        throw new AsmError(`mixed 16-bit and 32-bit address registers in ${this.toString()}`);
      }
      a = r.size;
    }
    this.addrSize = a;
    if (a === 16 && this.scale !== 1) throw new AsmError('16-bit addressing has no scaled index');
  }

  /** The same reference with a different operand size. */
  withSize(size: OperandSize): Mem {
    return new Mem({ ...this.spec(), size });
  }

  /** True for a bare `[disp]` reference (eligible for the moffs forms of `mov`). */
  get isDispOnly(): boolean {
    return this.base === undefined && this.index === undefined;
  }

  private spec(): MemSpec {
    const s: MemSpec = { scale: this.scale, disp: this.disp };
    if (this.base) s.base = this.base;
    if (this.index) s.index = this.index;
    if (this.seg) s.seg = this.seg;
    if (this.size) s.size = this.size;
    if (this.addrSize) s.addr = this.addrSize;
    return s;
  }

  toString(): string {
    const parts: string[] = [];
    if (this.base) parts.push(this.base.name);
    if (this.index) parts.push(this.scale === 1 ? this.index.name : `${this.index.name}*${this.scale}`);
    const d = this.disp;
    if (typeof d !== 'number' || d !== 0 || parts.length === 0) {
      parts.push(typeof d === 'number' ? `0x${(d >>> 0).toString(16)}` : String(d));
    }
    const sz = this.size === 8 ? 'byte ' : this.size === 16 ? 'word ' : this.size === 32 ? 'dword ' : '';
    return `${sz}[${this.seg ? this.seg.name + ':' : ''}${parts.join('+')}]`;
  }
}

function toMem(x: MemSpec | Imm | Mem, size: OperandSize | undefined): Mem {
  if (x instanceof Mem) return size === undefined ? x : x.withSize(size);
  if (typeof x === 'number' || typeof x === 'string' || x instanceof Expr) {
    return new Mem(size === undefined ? { disp: x } : { disp: x, size });
  }
  return new Mem(size === undefined ? x : { ...x, size });
}

/** A memory operand of unspecified size: `mem({ base: reg.bx, disp: 2 })`, `mem('var')`, `mem(0x400)`. */
export function mem(x: MemSpec | Imm | Mem): Mem {
  return toMem(x, undefined);
}
/** A byte-sized memory operand (`byte [..]`). */
export function byte(x: MemSpec | Imm | Mem): Mem {
  return toMem(x, 8);
}
/** A word-sized memory operand (`word [..]`). */
export function word(x: MemSpec | Imm | Mem): Mem {
  return toMem(x, 16);
}
/** A dword-sized memory operand (`dword [..]`). */
export function dword(x: MemSpec | Imm | Mem): Mem {
  return toMem(x, 32);
}
