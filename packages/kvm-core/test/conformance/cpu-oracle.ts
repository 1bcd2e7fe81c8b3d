/**
 * Runs the `shared/cpu-oracle` vectors (random i686 integer/x87 cases recorded on a real CPU,
 * see that folder's README) through kvm-core's public interface, and compares registers,
 * EFLAGS (under `flagsMask`), EIP, the data window (under `memMask`), exceptions and, for the
 * x87 cases, the FPU state (FCW, FSW under `fswMask`, the full tag word, the non-empty ST(i))
 * with the recording.
 *
 * Machine set-up, following the README's "Machine state a case runs in":
 * - RAM: one 1 MiB slot, one VM reused for every case. Before each case the data window
 *   0x10000–0x1FFFF is zeroed and `mem` preloaded; the code goes to linear 0x31000 with a HLT
 *   (F4) right after it (the oracle stops when EIP reaches the end of the code). The rest of the
 *   code area 0x30000–0x3FFFF is HLT-filled, so a stray jump stops at once (and fails on EIP).
 * - CR0 as the oracle's (Linux's) as far as it matters here: NE = 1, so x87 errors arrive as #MF
 *   (vector 16) and not through FERR#; MP = 1; EM = TS = 0. So 32-bit CR0 = PE|MP|ET|NE and
 *   16-bit CR0 = MP|ET|NE (paging, WP and AM are off: no vector can tell).
 * - x87: every case starts from the oracle's FPU state, set with KVM_SET_FPU (FXSAVE form): the
 *   FNINIT state (FCW 0x37F, FSW 0, all empty, registers +0, MXCSR 0x1F80), with the input's
 *   `fpu` fields over it. That includes cases without `fpu`: the vCPU's power-on state is the
 *   RESET state (FCW 0x40, all tags valid-zero), which differs. When the recording has `fpu`,
 *   KVM_GET_FPU is read back and the full tag word computed from the abridged tags and the
 *   register contents as FSTENV (and the oracle) would show it.
 * - 16-bit vectors run in REAL mode with the oracle's bases (CS=0x3000, DS=ES=SS=0x1000,
 *   IP=0x1000, limits 0xFFFF; FS=GS=0, unused). User-level instructions behave as in the
 *   oracle's 16-bit protected mode; only exception delivery differs: the IVT at 0 sends vector v
 *   to a HLT at 0000:0500+v, so the stopping IP names the vector and the frame (IP, CS, FLAGS) at
 *   SS:SP gives the faulting IP. Real mode pushes no error code, so it is not compared there.
 * - 32-bit vectors run in flat protected mode, paging off, CS = selector 8
 *   (base 0, 4 GiB, 32-bit), DS = ES = SS = FS = GS = selector 0x10, at CPL 0 rather than the
 *   oracle's CPL 3. That difference is invisible to these vectors: they hold no privileged or
 *   IOPL-sensitive instruction, and the POPF images are sanitized (IOPL 0, IF 1), so POPF gives
 *   the same EFLAGS at CPL 0 and 3. Exceptions go through an IDT of 32-bit interrupt gates at
 *   0x50000 to a HLT at 0x52000+v; the frame gives the faulting EIP and, for vectors that push
 *   one, the error code.
 * - Exception frames are pushed below SP (6 bytes in real mode, 12 or 16 in protected mode),
 *   usually into the data window; the oracle's frame lives elsewhere (CPL 3 -> kernel stack), so
 *   those bytes are left out of the memory comparison, and SP/EFLAGS are taken back from before
 *   the delivery (SP + frame size, EFLAGS from the pushed image). A 32-bit case may hold any ESP
 *   (e.g. an ALU case whose register operand is ESP): when the frame would fall outside the RAM a
 *   scratch slot is mapped there for the case, and the harness tables are rewritten after any
 *   case whose frame may have landed outside the window.
 * - `count` cases (the oracle single-steps with TF): the public API has no single-step, so they
 *   are stepped with breakpoints: the harness decodes the instruction at EIP (only the
 *   register-only forms of the `seq` template), puts a HLT on each possible successor, runs, and
 *   restores the bytes. A case whose code the small decoder does not know is classified `count`
 *   (unsupported) instead of being run.
 *
 * Classification: `pass`, `fail`, `unimplemented` (KVM_EXIT_INTERNAL_ERROR, or run() throwing an
 * emulator "not implemented" error), `count` (single-stepping the harness cannot express). The
 * x87 cases (see {@link isX87}) count like the others and are also tallied on their own.
 */
import { existsSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  emptyFpu, Kvm, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR,
  type KvmFpu, type KvmRegs, type KvmSegment, type KvmSregs, type VcpuFd, type VmFd,
} from '../../src/index.js';

export const CPU_ORACLE_DIR = resolve(fileURLToPath(import.meta.url), '../../../../../../shared/cpu-oracle');

export type Mode = 16 | 32;

export const REG_NAMES = ['eax', 'ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'esp'] as const;
type RegName = (typeof REG_NAMES)[number];
export type OracleRegs = Record<RegName | 'eflags', number>;

interface MemRun { addr: number; hex: string }

/** An x87 state in the oracle's form: `ftw` is the full tag word, `st` lists ST(0)..ST(7) as 20 hex digits, sign/exponent first. */
export interface OracleFpu { fcw: number; fsw: number; ftw: number; st: string[] }
/** Input `fpu`: `true` (the FNINIT state) or some of the fields (the rest from FNINIT, `st` may be short). */
export type OracleFpuInput = true | { fcw?: number | string; fsw?: number | string; ftw?: number | string; st?: string[] };

export interface OracleVector {
  id: string;
  name: string;
  input: {
    mode: Mode;
    code: string;
    regs: OracleRegs;
    mem?: MemRun[];
    count?: number;
    fpu?: OracleFpuInput;
  };
  expected: {
    regs: OracleRegs;
    eip?: number;
    mem: MemRun[];
    exception?: { vector: number; error: number; eip: number; addr?: number };
    fpu?: OracleFpu;
  };
  flagsMask: number;
  regsMask?: Partial<Record<RegName, number>>;
  fswMask?: number;
  memMask?: MemRun[];
}

export type Outcome = 'pass' | 'fail' | 'unimplemented' | 'count';

export interface CaseResult {
  outcome: Outcome;
  /** Mismatches (fail), the emulator's message (unimplemented), or why the case was skipped. */
  detail: string;
  /** The case ran through breakpoint stepping (it has `count`). */
  stepped: boolean;
}

export interface GroupStats {
  total: number;
  passed: number;
  failed: number;
  unimplemented: number;
  count: number;
}

export interface Failure { id: string; name: string; template: string; detail: string; vector: OracleVector }

export interface ModeResult extends GroupStats {
  mode: Mode;
  /** Cases with `count` that were run by breakpoint stepping, and how many of them passed. */
  stepped: number;
  steppedPassed: number;
  /** run() threw instead of returning KVM_EXIT_INTERNAL_ERROR (counted in `unimplemented`). */
  threw: number;
  /** Cases whose recording is an exception, and how many of them passed. */
  faulted: number;
  faultedPassed: number;
  /** The x87 cases alone (also counted in the totals), and by x87 sub-template (`x87Kind`). */
  x87: GroupStats;
  byX87Kind: Map<string, GroupStats>;
  byTemplate: Map<string, GroupStats>;
  byName: Map<string, GroupStats>;
  /** Unimplemented cases by the emulator's reason (message without the address and bytes). */
  unimplementedReasons: Map<string, number>;
  failures: Failure[];
}

/** Cases that count towards the pass rate: not unimplemented, not unsupported `count`. */
export function implementedCount(s: GroupStats): number {
  return s.total - s.unimplemented - s.count;
}

export function passRate(s: GroupStats): number {
  const n = implementedCount(s);
  return n === 0 ? 1 : s.passed / n;
}

// --- Layout --------------------------------------------------------------------------------

const MEM_SIZE = 1 << 20;
const WINDOW = 0x10000, WINDOW_SIZE = 0x10000;
const CODE_AREA = 0x30000, CODE_AREA_SIZE = 0x10000;
const CODE_LIN = 0x31000;
/** Real mode: IVT at 0, vector v -> 0000:(RM_STUBS + v), each a HLT. */
const RM_STUBS = 0x500;
/** Protected mode: IDT of 256 interrupt gates, GDT, and HLT stubs at PM_STUBS + v. */
const IDT_BASE = 0x50000, IDT_LIMIT = 0x7ff;
const GDT_BASE = 0x51000, GDT_LIMIT = 0x17;
const PM_STUBS = 0x52000;
const SEL_CODE32 = 0x08, SEL_DATA32 = 0x10;
/** Memory slot for an exception frame that a 32-bit ESP puts outside the RAM (see `mapFrameScratch`). */
const SCRATCH_SLOT = 1;
/** Bytes below ESP an exception frame may take: EIP, CS, EFLAGS and an error code. */
const FRAME_MAX = 16;

const HLT = 0xf4;
const CR0_PE = 0x1, CR0_MP = 0x2, CR0_ET = 0x10, CR0_NE = 0x20;
const CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, TF = 0x100, IF = 0x200, DF = 0x400, OF = 0x800, RF = 0x10000;
/** The flags the oracle takes from its input; bit 1 and IF are always set. */
const INPUT_FLAGS = CF | PF | AF | ZF | SF | DF | OF;
/** EFLAGS bits compared: all architectural bits but TF and RF, which the oracle never shows. */
const COMPARED_FLAGS = 0x3fffff & ~(TF | RF);
const FLAG_NAMES: [number, string][] = [
  [CF, 'CF'], [PF, 'PF'], [AF, 'AF'], [ZF, 'ZF'], [SF, 'SF'], [TF, 'TF'], [IF, 'IF'], [DF, 'DF'], [OF, 'OF'],
  [0x3000, 'IOPL'], [0x4000, 'NT'], [0x40000, 'AC'], [0x200000, 'ID'],
];

/** Vectors that push an error code in protected mode. */
function hasErrorCode(v: number): boolean {
  return v === 8 || (v >= 10 && v <= 14) || v === 17;
}

// --- Loading ---------------------------------------------------------------------------------

export function vectorFile(mode: Mode): string {
  return join(CPU_ORACLE_DIR, 'vectors', `public-${mode}.jsonl.gz`);
}

export function loadVectors(mode: Mode): OracleVector[] {
  return loadVectorFile(vectorFile(mode));
}

/** A vector file as gen.mjs writes it: JSON Lines, gzipped when the name ends in `.gz`. */
export function loadVectorFile(path: string): OracleVector[] {
  const raw = readFileSync(path);
  const text = (path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
  const out: OracleVector[] = [];
  for (const line of text.split('\n')) if (line.trim().length > 0) out.push(JSON.parse(line) as OracleVector);
  return out;
}

/** The mode a case runs in (`input.mode`, 32 when absent, as the oracle defaults). */
export function modeOf(v: OracleVector): Mode {
  return v.input.mode === 16 ? 16 : 32;
}

export function sharedVectorsPresent(): boolean {
  return existsSync(vectorFile(16)) && existsSync(vectorFile(32));
}

/** Whether a case is an x87 one (every x87-template case has an input `fpu`, and the FPU state is compared). */
export function isX87(v: OracleVector): boolean {
  return v.input.fpu !== undefined || v.name.startsWith('x87 ');
}

/** The x87 sub-template of an x87 case: the word after "x87 " (`arith-mem`, `comi`, `env`, ...). */
export function x87Kind(name: string): string {
  return /^x87 ([\w-]+):/.exec(name)?.[1] ?? 'other';
}

const TEMPLATE_BY_MNEMONIC: Record<string, string> = {};
for (const [t, ms] of Object.entries({
  alu: 'add or adc sbb and sub xor cmp', test: 'test', incdec: 'inc dec', negnot: 'neg not',
  shift: 'rol ror rcl rcr shl shr sal sar', shxd: 'shld shrd', mul: 'mul imul', div: 'div idiv',
  bt: 'bt bts btr btc', bsx: 'bsf bsr', bswap: 'bswap', xchg: 'xchg', cmpxchg: 'cmpxchg', xadd: 'xadd',
  movx: 'movzx movsx', lea: 'lea', bcd: 'daa das aaa aas aam aad', cvt: 'cbw cwde cwd cdq',
  string: 'rep repe repne movsb movsw movsd cmpsb cmpsw cmpsd stosb stosw stosd lodsb lodsw lodsd scasb scasw scasd',
  control: 'jcxz jecxz jmp loop loope loopne call', misc: 'mov xlat lahf sahf cmc clc stc cld std nop',
})) for (const m of ms.split(' ')) TEMPLATE_BY_MNEMONIC[m] = t;

/**
 * The gen.mjs template a case came from. Records carry only the `name`; the names are built
 * per template (see gen.mjs), so the mnemonic tells. Checked against the `.meta.json` counts.
 */
export function templateOf(name: string): string {
  if (name.startsWith('x87 ')) return 'x87';
  if (name.startsWith('seq: ')) return 'seq';
  if (name.startsWith('stack: ')) return 'stack';
  const m = /^(?:lock )?([a-z0-9]+)/.exec(name)?.[1] ?? '';
  const t = TEMPLATE_BY_MNEMONIC[m];
  if (t) return t;
  if (m.startsWith('set')) return 'setcc';
  if (m.startsWith('cmov')) return 'cmovcc';
  if (/^j[a-z]+$/.test(m)) return 'control';
  return 'other';
}

// --- Helpers -----------------------------------------------------------------------------------

function hexInto(dst: Uint8Array, at: number, hex: string): number {
  const h = hex.replace(/\s+/g, '');
  const n = h.length >> 1;
  for (let i = 0; i < n; i++) dst[at + i] = parseInt(h.substr(i * 2, 2), 16);
  return n;
}

function hexBytes(hex: string): Uint8Array {
  const b = new Uint8Array(hex.replace(/\s+/g, '').length >> 1);
  hexInto(b, 0, hex);
  return b;
}

const h = (v: number, w = 8) => `0x${(v >>> 0).toString(16).padStart(w, '0')}`;

/** An input integer: a JSON number or a hex string such as "0x37f" (as the oracle accepts). */
function num(v: number | string): number {
  return typeof v === 'number' ? v : Number(v);
}

const FSW_BITS: [number, string][] = [
  [0x1, 'IE'], [0x2, 'DE'], [0x4, 'ZE'], [0x8, 'OE'], [0x10, 'UE'], [0x20, 'PE'], [0x40, 'SF'], [0x80, 'ES'],
  [0x100, 'C0'], [0x200, 'C1'], [0x400, 'C2'], [0x3800, 'TOP'], [0x4000, 'C3'], [0x8000, 'B'],
];

export function fswNames(bits: number): string {
  return FSW_BITS.filter(([b]) => bits & b).map(([, n]) => n).join('|');
}

/** ST(i) of a KVM_GET_FPU image (10 bytes, little-endian) as the oracle writes it: 20 hex digits, sign/exponent first. */
export function fprHex(r: Uint8Array): string {
  let s = '';
  for (let k = 9; k >= 0; k--) s += r[k]!.toString(16).padStart(2, '0');
  return s;
}

/**
 * The full tag word (2 bits per physical register: 0 valid, 1 zero, 2 special, 3 empty) of an
 * FXSAVE-form state, computed from the abridged tags and the register contents as FSTENV
 * stores it (and as the oracle reports it): exponent 7FFFh is special (NaN, infinity); exponent 0
 * is zero, or special when the significand is not 0 (denormal, pseudo-denormal); any other
 * exponent is valid, or special without the integer bit (unnormal).
 */
export function fullTagWord(f: KvmFpu): number {
  const top = (f.fsw >> 11) & 7;
  let ftw = 0;
  for (let phys = 0; phys < 8; phys++) {
    let tag = 3;
    if ((f.ftw >> phys) & 1) {
      const r = f.fpr[(phys - top) & 7]!;
      const exp = r[8]! | ((r[9]! & 0x7f) << 8);
      const mantNonZero = r[0]! | r[1]! | r[2]! | r[3]! | r[4]! | r[5]! | r[6]! | r[7]!;
      if (exp === 0x7fff) tag = 2;
      else if (exp === 0) tag = mantNonZero ? 2 : 1;
      else tag = r[7]! & 0x80 ? 0 : 2;
    }
    ftw |= tag << (2 * phys);
  }
  return ftw;
}

/** The abridged tag byte (bit set: physical register not empty) of a full tag word. */
export function abridgedTags(ftw: number): number {
  let ab = 0;
  for (let phys = 0; phys < 8; phys++) if (((ftw >> (2 * phys)) & 3) !== 3) ab |= 1 << phys;
  return ab;
}

export function flagNames(bits: number): string {
  const out: string[] = [];
  for (const [b, n] of FLAG_NAMES) if (bits & b) out.push(n);
  const rest = bits & ~FLAG_NAMES.reduce((a, [b]) => a | b, 0);
  if (rest) out.push(h(rest, 1));
  return out.join('|');
}

/**
 * Decodes the instruction at `code[off]` for breakpoint stepping: its length and, for a
 * conditional jump, the taken target offset. Only the forms the `seq` template emits are known
 * (register-only ALU/INC/DEC/NEG/NOT/MOV/SETcc/CMOVcc, Jcc rel8, INC/DEC r); anything else
 * returns undefined.
 */
export function decodeForStep(code: Uint8Array, off: number): { len: number; target?: number } | undefined {
  let i = off;
  while (code[i] === 0x66) i++;
  if (i - off > 1) return undefined;
  const op = code[i];
  if (op === undefined) return undefined;
  const modrmReg = (at: number) => code[at] !== undefined && code[at]! >= 0xc0;
  if ([0x00, 0x01, 0x10, 0x11, 0x18, 0x19, 0x28, 0x29, 0x38, 0x39, 0x88, 0x89].includes(op)) {
    return modrmReg(i + 1) ? { len: i + 2 - off } : undefined;
  }
  if (op === 0xfe || op === 0xff) {
    return modrmReg(i + 1) && ((code[i + 1]! >> 3) & 7) <= 1 ? { len: i + 2 - off } : undefined;
  }
  if (op === 0xf6 || op === 0xf7) {
    const r = (code[i + 1]! >> 3) & 7;
    return modrmReg(i + 1) && (r === 2 || r === 3) ? { len: i + 2 - off } : undefined;
  }
  if (op === 0x0f) {
    const op2 = code[i + 1];
    if (op2 === undefined || !((op2 & 0xf0) === 0x90 || (op2 & 0xf0) === 0x40)) return undefined;
    return modrmReg(i + 2) ? { len: i + 3 - off } : undefined;
  }
  if (op >= 0x70 && op <= 0x7f && i === off) {
    const rel = code[i + 1];
    if (rel === undefined) return undefined;
    return { len: 2, target: off + 2 + ((rel << 24) >> 24) };
  }
  if (op >= 0x40 && op <= 0x4f) return { len: i + 1 - off };
  return undefined;
}

// --- The runner --------------------------------------------------------------------------------

interface RunOutcome {
  kind: 'done' | 'unimplemented' | 'error';
  detail: string;
  threw?: boolean;
}

function emptyStats(): GroupStats {
  return { total: 0, passed: 0, failed: 0, unimplemented: 0, count: 0 };
}

function bump(s: GroupStats, o: Outcome): void {
  s.total++;
  if (o === 'pass') s.passed++;
  else if (o === 'fail') s.failed++;
  else if (o === 'unimplemented') s.unimplemented++;
  else s.count++;
}

/** One VM reused for every case. */
export class CpuOracleRunner {
  readonly vm: VmFd;
  readonly vcpu: VcpuFd;
  readonly ram: Uint8Array;
  /** The data window as it was before the case ran (zeros plus `mem`). */
  private readonly initial = new Uint8Array(WINDOW_SIZE);
  private readonly ramWords: Int32Array;
  private readonly initialWords: Int32Array;
  private readonly sregs16: KvmSregs;
  private readonly sregs32: KvmSregs;
  private readonly regs: KvmRegs;
  /** The KVM_SET_FPU image, refilled for each case. */
  private readonly fpuIn: KvmFpu = emptyFpu();
  private lastCodeLen = 0;
  /** The scratch slot mapped for this case, if any. */
  private scratch: { base: number; bytes: Uint8Array } | undefined;
  /** Set by the last runCase: run() threw rather than exiting. */
  lastThrew = false;

  constructor() {
    const kvm = new Kvm();
    this.vm = kvm.createVm();
    const buf = new ArrayBuffer(MEM_SIZE);
    this.ram = new Uint8Array(buf);
    this.vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: MEM_SIZE, userspaceAddr: buf });
    this.vcpu = this.vm.createVcpu(0);
    this.ramWords = new Int32Array(buf, WINDOW, WINDOW_SIZE / 4);
    this.initialWords = new Int32Array(this.initial.buffer);
    this.writeHarness();

    const base = this.vcpu.getSregs();
    const seg = (sel: number, segBase: number, limit: number, type: number, db: number, g: number): KvmSegment => ({
      base: segBase, limit, selector: sel, type, present: 1, dpl: 0, db, s: 1, l: 0, g, avl: 0, unusable: 0,
    });
    this.sregs16 = {
      ...base,
      cs: seg(0x3000, 0x30000, 0xffff, 0xb, 0, 0),
      ds: seg(0x1000, WINDOW, 0xffff, 0x3, 0, 0), es: seg(0x1000, WINDOW, 0xffff, 0x3, 0, 0), ss: seg(0x1000, WINDOW, 0xffff, 0x3, 0, 0),
      fs: seg(0, 0, 0xffff, 0x3, 0, 0), gs: seg(0, 0, 0xffff, 0x3, 0, 0),
      gdt: { base: GDT_BASE, limit: GDT_LIMIT }, idt: { base: 0, limit: 0x3ff },
      cr0: CR0_MP | CR0_ET | CR0_NE,
    };
    const flatData = () => seg(SEL_DATA32, 0, 0xffffffff, 0x3, 1, 1);
    this.sregs32 = {
      ...base,
      cs: seg(SEL_CODE32, 0, 0xffffffff, 0xb, 1, 1),
      ds: flatData(), es: flatData(), ss: flatData(), fs: flatData(), gs: flatData(),
      gdt: { base: GDT_BASE, limit: GDT_LIMIT }, idt: { base: IDT_BASE, limit: IDT_LIMIT },
      cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE,
    };
    this.regs = this.vcpu.getRegs();
  }

  runVectors(mode: Mode, vectors: OracleVector[] = loadVectors(mode)): ModeResult {
    const res: ModeResult = {
      mode, ...emptyStats(), stepped: 0, steppedPassed: 0, threw: 0, faulted: 0, faultedPassed: 0,
      x87: emptyStats(), byX87Kind: new Map(),
      byTemplate: new Map(), byName: new Map(), unimplementedReasons: new Map(), failures: [],
    };
    for (const v of vectors) {
      if (modeOf(v) !== mode) throw new Error(`${v.id}: a ${modeOf(v)}-bit case among the ${mode}-bit ones`);
      const r = this.runCase(v);
      const template = templateOf(v.name);
      bump(res, r.outcome);
      const groups: [Map<string, GroupStats>, string][] = [[res.byTemplate, template], [res.byName, v.name]];
      if (isX87(v)) {
        bump(res.x87, r.outcome);
        groups.push([res.byX87Kind, x87Kind(v.name)]);
      }
      for (const [map, key] of groups) {
        let s = map.get(key);
        if (!s) map.set(key, (s = emptyStats()));
        bump(s, r.outcome);
      }
      if (r.stepped) { res.stepped++; if (r.outcome === 'pass') res.steppedPassed++; }
      if (v.expected.exception) { res.faulted++; if (r.outcome === 'pass') res.faultedPassed++; }
      if (r.outcome === 'fail') res.failures.push({ id: v.id, name: v.name, template, detail: r.detail, vector: v });
      if (r.outcome === 'unimplemented') {
        if (this.lastThrew) res.threw++;
        const reason = r.detail.replace(/ at [0-9a-f]{4}:[0-9a-f]+ \(linear.*$/, '').replace(/ vector \d+$/, ' vector N');
        res.unimplementedReasons.set(reason, (res.unimplementedReasons.get(reason) ?? 0) + 1);
      }
    }
    return res;
  }

  runCase(v: OracleVector): CaseResult {
    this.lastThrew = false;
    const mode = modeOf(v);
    const code = hexBytes(v.input.code);
    const count = v.input.count;
    if (count !== undefined && !this.canStep(code)) {
      return { outcome: 'count', detail: 'count: code not decodable for breakpoint stepping', stepped: false };
    }
    const { ram, vcpu } = this;

    // Data window and code.
    ram.fill(0, WINDOW, WINDOW + WINDOW_SIZE);
    for (const m of v.input.mem ?? []) hexInto(ram, m.addr, m.hex);
    this.initial.set(ram.subarray(WINDOW, WINDOW + WINDOW_SIZE));
    ram.fill(HLT, CODE_LIN, CODE_LIN + this.lastCodeLen + 1);
    ram.set(code, CODE_LIN);
    ram[CODE_LIN + code.length] = HLT;
    this.lastCodeLen = code.length;

    // Registers.
    const ip0 = mode === 16 ? 0x1000 : CODE_LIN;
    vcpu.setSregs(mode === 16 ? this.sregs16 : this.sregs32);
    const r = this.regs, i = v.input.regs;
    r.rax = i.eax >>> 0; r.rbx = i.ebx >>> 0; r.rcx = i.ecx >>> 0; r.rdx = i.edx >>> 0;
    r.rsi = i.esi >>> 0; r.rdi = i.edi >>> 0; r.rbp = i.ebp >>> 0; r.rsp = i.esp >>> 0;
    r.r8 = r.r9 = r.r10 = r.r11 = r.r12 = r.r13 = r.r14 = r.r15 = 0;
    r.rip = ip0;
    r.rflags = (i.eflags & INPUT_FLAGS) | IF | 2;
    vcpu.setRegs(r);
    this.setFpu(v.input.fpu);
    // A 32-bit exception frame goes below ESP, which need not lie in the window.
    const frameOutside = mode === 32 && !((i.esp >>> 0) >= WINDOW + FRAME_MAX && (i.esp >>> 0) <= WINDOW + WINDOW_SIZE);
    if (frameOutside) this.mapFrameScratch(i.esp >>> 0);

    const out = count === undefined ? this.runToHlt() : this.runSteps(code, ip0, count);
    const stepped = count !== undefined;
    if (out.kind !== 'done') this.afterCase(mode, frameOutside);
    if (out.kind === 'unimplemented') {
      this.lastThrew = out.threw === true;
      return { outcome: 'unimplemented', detail: out.detail, stepped };
    }
    if (out.kind === 'error') return { outcome: 'fail', detail: out.detail, stepped };
    const problems = this.compare(v, mode, ip0 + code.length);
    this.afterCase(mode, frameOutside);
    return problems.length === 0 ? { outcome: 'pass', detail: '', stepped } : { outcome: 'fail', detail: problems.join('; '), stepped };
  }

  /**
   * KVM_SET_FPU with the oracle's starting x87 state: FNINIT (FCW 0x37F, FSW 0, all registers
   * empty and +0, pointers 0, MXCSR 0x1F80), then the input's `fpu` fields: FCW, FSW (with TOP),
   * the full tag word (only empty versus not empty survives into the abridged tags, as with the
   * oracle's FXRSTOR) and ST(0)..ST(n-1).
   */
  private setFpu(input: OracleFpuInput | undefined): void {
    const f = this.fpuIn;
    f.fcw = 0x37f; f.fsw = 0;
    let ftw = 0xffff;
    for (const r of f.fpr) r.fill(0);
    if (typeof input === 'object') {
      if (input.fcw !== undefined) f.fcw = num(input.fcw) & 0xffff;
      if (input.fsw !== undefined) f.fsw = num(input.fsw) & 0xffff;
      if (input.ftw !== undefined) ftw = num(input.ftw) & 0xffff;
      (input.st ?? []).forEach((hex, k) => {
        const be = hexBytes(hex);
        if (k >= 8 || be.length !== 10) throw new Error(`fpu.st[${k}] must be 20 hex digits: ${hex}`);
        for (let j = 0; j < 10; j++) f.fpr[k]![j] = be[9 - j]!;
      });
    }
    f.ftw = abridgedTags(ftw);
    f.lastOpcode = 0; f.lastIp = 0; f.lastDp = 0;
    f.mxcsr = 0x1f80;
    this.vcpu.setFpu(f);
  }

  /**
   * Writes the harness's structures: the IVT and its stubs, the GDT, the IDT and its stubs, and
   * a HLT-filled code area. Called again after a 32-bit case whose exception frame may have
   * landed on them (an ESP outside the window).
   */
  private writeHarness(): void {
    const ram = this.ram;
    // Real-mode IVT: vector v -> 0000:(0x500 + v), a HLT.
    for (let v = 0; v < 256; v++) {
      ram[v * 4] = (RM_STUBS + v) & 0xff; ram[v * 4 + 1] = (RM_STUBS + v) >> 8;
      ram[v * 4 + 2] = 0; ram[v * 4 + 3] = 0;
      ram[RM_STUBS + v] = HLT;
    }
    // Protected mode: GDT (null, flat 32-bit code at 8, flat data at 0x10), IDT of interrupt gates.
    const desc = (at: number, type: number) => {
      // base 0, limit 0xFFFFF pages, P=1 DPL=0 S=1, G=1 D/B=1
      ram.set([0xff, 0xff, 0, 0, 0, 0x90 | type, 0xcf, 0], at);
    };
    desc(GDT_BASE + SEL_CODE32, 0xb);
    desc(GDT_BASE + SEL_DATA32, 0x3);
    for (let v = 0; v < 256; v++) {
      const target = PM_STUBS + v, at = IDT_BASE + v * 8;
      ram.set([target & 0xff, (target >> 8) & 0xff, SEL_CODE32, 0, 0, 0x8e, (target >> 16) & 0xff, target >>> 24], at);
      ram[PM_STUBS + v] = HLT;
    }
    ram.fill(HLT, CODE_AREA, CODE_AREA + CODE_AREA_SIZE);
    this.lastCodeLen = 0;
  }

  /**
   * In 32-bit mode an exception frame is pushed below ESP at CPL 0 (the oracle's kernel uses its
   * own stack), and the vectors may hold any ESP (e.g. an ALU case whose register operand is
   * ESP). So when the FRAME_MAX bytes below ESP fall outside the RAM, a zeroed scratch slot is
   * mapped there for the case. Nothing else in the vectors accesses memory outside the window.
   */
  private mapFrameScratch(esp: number): void {
    let lo = Infinity, hi = -Infinity;
    for (let k = 1; k <= FRAME_MAX; k++) {
      const page = ((esp - k) >>> 0) >>> 12;
      if (page * 4096 < MEM_SIZE) continue;
      lo = Math.min(lo, page); hi = Math.max(hi, page);
    }
    if (lo === Infinity) return;
    const bytes = new Uint8Array((hi - lo + 1) * 4096);
    this.vm.setUserMemoryRegion({ slot: SCRATCH_SLOT, flags: 0, guestPhysAddr: lo * 4096, memorySize: bytes.length, userspaceAddr: bytes });
    this.scratch = { base: lo * 4096, bytes };
  }

  private afterCase(mode: Mode, frameOutside: boolean): void {
    if (mode === 16) return;
    // Also when ESP left the window before an exception (not seen in these vectors).
    const esp = this.vcpu.getRegs().rsp >>> 0;
    if (!frameOutside && esp >= WINDOW && esp <= WINDOW + WINDOW_SIZE) return;
    this.writeHarness();
    if (!this.scratch) return;
    this.vm.setUserMemoryRegion({ slot: SCRATCH_SLOT, flags: 0, guestPhysAddr: this.scratch.base, memorySize: 0, userspaceAddr: this.scratch.bytes });
    this.scratch = undefined;
  }

  /** A byte of guest memory (RAM or the scratch slot) at linear = physical `addr`. */
  private readByte(addr: number): number {
    addr >>>= 0;
    if (addr < MEM_SIZE) return this.ram[addr]!;
    const s = this.scratch;
    if (s && addr >= s.base && addr < s.base + s.bytes.length) return s.bytes[addr - s.base]!;
    return 0;
  }

  /** Whether breakpoint stepping can follow every instruction of the code. */
  private canStep(code: Uint8Array): boolean {
    // Every byte reachable in straight-line order (and every Jcc target) must decode.
    const seen = new Set<number>();
    const todo = [0];
    while (todo.length) {
      const off = todo.pop()!;
      if (off === code.length || seen.has(off)) continue;
      if (off < 0 || off > code.length) return false;
      seen.add(off);
      const d = decodeForStep(code, off);
      if (!d) return false;
      todo.push(off + d.len);
      if (d.target !== undefined) todo.push(d.target);
    }
    return true;
  }

  /** Runs until a HLT exit. */
  private runToHlt(): RunOutcome {
    const { vcpu } = this;
    let intr = 0;
    for (;;) {
      let reason: number;
      try {
        reason = vcpu.run();
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        // Errors raised while a fault is being delivered (an unimplemented gate type, or an MMIO
        // access by the frame pushes) escape run() instead of becoming an exit.
        if (e instanceof Error && (e.constructor.name === 'EmulationGap' || /not implemented|protected-mode/.test(msg))) {
          return { kind: 'unimplemented', detail: `run() threw: not implemented: ${msg}`, threw: true };
        }
        return { kind: 'error', detail: `run() threw: ${msg}` };
      }
      if (reason === KVM_EXIT_HLT) return { kind: 'done', detail: '' };
      if (reason === KVM_EXIT_INTR && ++intr < 20) continue;
      if (reason === KVM_EXIT_INTERNAL_ERROR) return { kind: 'unimplemented', detail: vcpu.runData.internal.message };
      return { kind: 'error', detail: `unexpected exit ${reason}` };
    }
  }

  /**
   * Runs exactly `count` instructions (or until the end of the code or an exception), one at a
   * time with HLT breakpoints on the possible successors of each instruction.
   */
  private runSteps(code: Uint8Array, ip0: number, count: number): RunOutcome {
    const { ram, vcpu } = this;
    for (let step = 0; step < count; step++) {
      const regs = vcpu.getRegs();
      const off = regs.rip - ip0;
      if (off === code.length) break; // the oracle stops at the end of the code
      const d = off >= 0 && off < code.length ? decodeForStep(code, off) : undefined;
      if (!d) return { kind: 'error', detail: `stepping: no instruction to step at EIP ${h(regs.rip)}` };
      const stops = [off + d.len];
      if (d.target !== undefined && d.target !== off + d.len) stops.push(d.target);
      const saved = stops.map((s) => ram[CODE_LIN + s]!);
      for (const s of stops) ram[CODE_LIN + s] = HLT;
      const out = this.runToHlt();
      stops.forEach((s, k) => { ram[CODE_LIN + s] = saved[k]!; });
      if (out.kind !== 'done') return out;
      const after = vcpu.getRegs();
      const stoppedAt = after.rip - 1 - ip0;
      if (!stops.includes(stoppedAt)) return { kind: 'done', detail: '' }; // an exception stub, or a stray HLT: compare() reports it
      after.rip -= 1; // back onto the (restored) instruction the breakpoint covered
      vcpu.setRegs(after);
    }
    // Stop where we are: make the final state look like a HLT exit at the current EIP.
    const regs = vcpu.getRegs();
    regs.rip += 1;
    vcpu.setRegs(regs);
    return { kind: 'done', detail: '' };
  }

  /** Compares the state at the HLT exit with the recording; returns the mismatches. */
  private compare(v: OracleVector, mode: Mode, endIp: number): string[] {
    const { ram, vcpu } = this;
    const regs = vcpu.getRegs();
    const sregs = vcpu.getSregs();
    const problems: string[] = [];
    const exp = v.expected;
    const hltIp = (regs.rip - 1) >>> 0;
    const hltLin = (sregs.cs.base + hltIp) >>> 0;

    // Where did it stop: a vector's stub, or in the code?
    let vector = -1;
    if (mode === 16 && sregs.cs.base === 0 && hltLin >= RM_STUBS && hltLin < RM_STUBS + 256) vector = hltLin - RM_STUBS;
    if (mode === 32 && hltLin >= PM_STUBS && hltLin < PM_STUBS + 256) vector = hltLin - PM_STUBS;

    const frame = new Set<number>(); // linear addresses of the exception frame, left out of the memory comparison
    const actual: Record<RegName | 'eflags', number> = {
      eax: regs.rax, ebx: regs.rbx, ecx: regs.rcx, edx: regs.rdx, esi: regs.rsi, edi: regs.rdi, ebp: regs.rbp, esp: regs.rsp,
      eflags: regs.rflags,
    };
    let fault: { vector: number; error?: number; eip: number } | undefined;
    if (vector >= 0) {
      if (mode === 16) {
        const ssBase = sregs.ss.base, sp = regs.rsp & 0xffff;
        const rd16 = (k: number) => ram[ssBase + ((sp + k) & 0xffff)]! | (ram[ssBase + ((sp + k + 1) & 0xffff)]! << 8);
        for (let k = 0; k < 6; k++) frame.add(ssBase + ((sp + k) & 0xffff));
        fault = { vector, eip: rd16(0) };
        actual.eflags = (regs.rflags & ~0xffff) | rd16(4);
        actual.esp = ((regs.rsp & ~0xffff) | ((sp + 6) & 0xffff)) >>> 0;
      } else {
        const esp = regs.rsp >>> 0;
        const rd8 = (k: number) => this.readByte(esp + k);
        const rd32 = (k: number) => (rd8(k) | (rd8(k + 1) << 8) | (rd8(k + 2) << 16) | (rd8(k + 3) << 24)) >>> 0;
        const ec = hasErrorCode(vector) ? 4 : 0;
        for (let k = 0; k < 12 + ec; k++) frame.add((esp + k) >>> 0);
        fault = { vector, error: ec ? rd32(0) : undefined, eip: rd32(ec) };
        actual.eflags = rd32(ec + 8);
        actual.esp = (esp + 12 + ec) >>> 0;
      }
    }

    // Exception and EIP.
    const ee = exp.exception;
    if (ee && !fault) {
      problems.push(`expected #${vectorName(ee.vector)} at ${h(ee.eip, 4)}, but it completed with EIP ${h(hltIp, 4)}${hltIp === endIp ? ' (end of code)' : ''}`);
    } else if (!ee && fault) {
      problems.push(`unexpected #${vectorName(fault.vector)} at EIP ${h(fault.eip, 4)}${fault.error !== undefined ? ` error ${h(fault.error, 4)}` : ''}`);
    } else if (ee && fault) {
      if (fault.vector !== ee.vector) problems.push(`#${vectorName(fault.vector)} want #${vectorName(ee.vector)}`);
      if (fault.eip !== ee.eip) problems.push(`fault EIP ${h(fault.eip, 4)} want ${h(ee.eip, 4)}`);
      if (fault.error !== undefined && fault.error !== ee.error) problems.push(`error code ${h(fault.error, 4)} want ${h(ee.error, 4)}`);
    } else if (exp.eip !== undefined && hltIp !== exp.eip) {
      problems.push(`eip=${h(hltIp, 4)} want ${h(exp.eip, 4)}`);
    }
    if (!ee && fault) return problems; // the registers of an unexpected fault say little more

    // Registers and flags.
    for (const k of REG_NAMES) {
      const m = ~(v.regsMask?.[k] ?? 0);
      if (((actual[k] ^ exp.regs[k]) & m) !== 0) problems.push(`${k}=${h(actual[k])} want ${h(exp.regs[k])}`);
    }
    const fd = (actual.eflags ^ exp.regs.eflags) & ~v.flagsMask & COMPARED_FLAGS;
    if (fd !== 0) problems.push(`eflags=${h(actual.eflags, 3)} want ${h(exp.regs.eflags, 3)} (differ: ${flagNames(fd)})`);

    // Memory: the changed bytes of the window against the recording's list (under memMask).
    const want = new Map<number, number>();
    for (const m of exp.mem) {
      const b = hexBytes(m.hex);
      for (let k = 0; k < b.length; k++) want.set(m.addr + k, b[k]!);
    }
    const undef = new Map<number, number>();
    for (const m of v.memMask ?? []) {
      const b = hexBytes(m.hex);
      for (let k = 0; k < b.length; k++) undef.set(m.addr + k, b[k]!);
    }
    const addrs = new Set<number>(want.keys());
    const rw = this.ramWords, iw = this.initialWords;
    for (let w = 0; w < rw.length; w++) {
      if (rw[w] === iw[w]) continue;
      for (let k = 0; k < 4; k++) {
        const a = WINDOW + w * 4 + k;
        if (ram[a] !== this.initial[a - WINDOW]) addrs.add(a);
      }
    }
    const memProblems: string[] = [];
    for (const a of [...addrs].sort((x, y) => x - y)) {
      if (frame.has(a)) continue;
      const got = ram[a]!, e = want.get(a) ?? this.initial[a - WINDOW]!;
      if (((got ^ e) & ~(undef.get(a) ?? 0) & 0xff) !== 0) memProblems.push(`[${h(a, 5)}]=${got.toString(16).padStart(2, '0')} want ${e.toString(16).padStart(2, '0')}`);
    }
    if (memProblems.length) {
      problems.push(`mem ${memProblems.slice(0, 8).join(' ')}${memProblems.length > 8 ? ` (+${memProblems.length - 8} more bytes)` : ''}`);
    }

    // x87: FCW, FSW (under fswMask), the full tag word, and the ST(i) that are not empty.
    const ef = exp.fpu;
    if (ef) {
      const f = vcpu.getFpu();
      if (f.fcw !== ef.fcw) problems.push(`fcw=${h(f.fcw, 4)} want ${h(ef.fcw, 4)}`);
      const sd = (f.fsw ^ ef.fsw) & ~(v.fswMask ?? 0) & 0xffff;
      if (sd !== 0) problems.push(`fsw=${h(f.fsw, 4)} want ${h(ef.fsw, 4)} (differ: ${fswNames(sd)})`);
      const ftw = fullTagWord(f);
      if (ftw !== ef.ftw) problems.push(`ftw=${h(ftw, 4)} want ${h(ef.ftw, 4)}`);
      const top = (ef.fsw >> 11) & 7;
      for (let k = 0; k < 8; k++) {
        if (((ef.ftw >> (2 * ((top + k) & 7))) & 3) === 3) continue;
        const got = fprHex(f.fpr[k]!), want = ef.st[k]?.toLowerCase() ?? '(not recorded)';
        if (got !== want) problems.push(`st${k}=${got} want ${want}`);
      }
    }
    return problems;
  }
}

const VECTOR_NAMES: Record<number, string> = { 0: 'DE', 1: 'DB', 3: 'BP', 4: 'OF', 5: 'BR', 6: 'UD', 7: 'NM', 8: 'DF', 11: 'NP', 12: 'SS', 13: 'GP', 14: 'PF', 16: 'MF', 17: 'AC', 19: 'XM' };
function vectorName(v: number): string {
  return VECTOR_NAMES[v] ? `${VECTOR_NAMES[v]}(${v})` : String(v);
}

/** A failure as a few lines: the case, its code and inputs, and what differed. */
export function describeFailure(f: Failure): string {
  const i = f.vector.input;
  const regs = REG_NAMES.map((k) => `${k}=${h(i.regs[k])}`).join(' ') + ` eflags=${h(i.regs.eflags, 3)}`;
  const mem = (i.mem ?? []).map((m) => `${h(m.addr, 5)}:${m.hex.length > 40 ? `${m.hex.slice(0, 40)}…(${m.hex.length / 2} bytes)` : m.hex}`).join(' ');
  const e = f.vector.expected;
  const outcome = e.exception ? `#${vectorName(e.exception.vector)} at ${h(e.exception.eip, 4)}` : `eip ${h(e.eip ?? 0, 4)}`;
  const lines = [
    `${f.id} "${f.name}" code ${i.code}${i.count !== undefined ? ` count=${i.count}` : ''}`,
    `    in:  ${regs}${mem ? `  mem ${mem}` : ''}`,
  ];
  if (i.fpu !== undefined) lines.push(`    in fpu: ${JSON.stringify(i.fpu)}`);
  lines.push(`    want: ${outcome}, flagsMask ${h(f.vector.flagsMask, 3)}${e.mem.length ? `, mem ${e.mem.map((m) => `${h(m.addr, 5)}:${m.hex}`).join(' ')}` : ''}`);
  if (e.fpu) {
    const top = (e.fpu.fsw >> 11) & 7;
    const st = e.fpu.st.map((s, k) => (((e.fpu!.ftw >> (2 * ((top + k) & 7))) & 3) === 3 ? undefined : `st${k}=${s}`)).filter(Boolean);
    lines.push(
      `    want fpu: fcw ${h(e.fpu.fcw, 4)} fsw ${h(e.fpu.fsw, 4)} (fswMask ${h(f.vector.fswMask ?? 0, 4)}) ftw ${h(e.fpu.ftw, 4)}` +
      `${st.length ? ` ${st.join(' ')}` : ''}${f.vector.memMask ? `, memMask ${f.vector.memMask.map((m) => `${h(m.addr, 5)}:${m.hex}`).join(' ')}` : ''}`,
    );
  }
  lines.push(`    got:  ${f.detail}`);
  return lines.join('\n');
}
