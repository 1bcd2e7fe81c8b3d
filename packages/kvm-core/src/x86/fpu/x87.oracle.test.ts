/**
 * Conformance of the x87 unit with the hardware-recorded cpu-oracle vectors
 * (shared/cpu-oracle/vectors/public-{32,16}.jsonl.gz, the cases with an `fpu` field).
 *
 * Each case runs on a real X86Cpu set up as the oracle's README describes (flat 32-bit or
 * 16-bit protected mode at CPL 3, CR0 with PE MP NE ET, data window at 0x10000, code at
 * 0x31000), one instruction at a time through the interpreter's `step`, until EIP reaches the
 * end of the code or an exception. Registers, EFLAGS (flagsMask), the data window (memMask),
 * FCW, FSW (fswMask), FTW and the non-empty ST registers are compared in full.
 *
 * Set X87_ORACLE_VERBOSE=1 to print every failing case.
 */
import { existsSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../memory/guest-memory.js';
import { KvmRun } from '../../kvm-run.js';
import { X86Cpu } from '../cpu.js';
import { step } from '../interpreter.js';
import { FAULT } from '../exceptions.js';
import { AR_DB, AR_G, AR_P, AR_S, CS, DS, ES, FS, GS, SS } from '../constants.js';
import { fromHex, toHex } from './float80.js';

// The unit is off by default (X86Cpu.FPU_AVAILABLE); these tests run with it on.
X86Cpu.FPU_AVAILABLE = true;

const VECTORS = resolve(fileURLToPath(import.meta.url), '../../../../../../../shared/cpu-oracle/vectors');

interface OracleCase {
  id: string;
  name: string;
  input: {
    mode?: number;
    code: string;
    regs: Record<string, number>;
    mem?: { addr: number; hex: string }[];
    count?: number;
    fpu?: true | { fcw?: number; fsw?: number; ftw?: number; st?: string[] };
  };
  expected: {
    regs: Record<string, number>;
    eip?: number;
    mem: { addr: number; hex: string }[];
    exception?: { vector: number; error: number; eip: number };
    fpu?: { fcw: number; fsw: number; ftw: number; st: string[] };
  };
  flagsMask: number;
  fswMask?: number;
  memMask?: { addr: number; hex: string }[];
}

const REG_NAMES = ['eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi'] as const;
const WINDOW = 0x10000, WINDOW_END = 0x20000, CODE = 0x31000;
const MEM_SIZE = 1 << 20;

function hexBytes(h: string): number[] {
  const s = h.replace(/\s+/g, '');
  const out: number[] = [];
  for (let i = 0; i < s.length; i += 2) out.push(parseInt(s.slice(i, i + 2), 16));
  return out;
}

class Harness {
  readonly ram: Uint8Array;
  readonly cpu: X86Cpu;
  private readonly initial = new Uint8Array(WINDOW_END - WINDOW);

  constructor() {
    const buf = new ArrayBuffer(MEM_SIZE);
    this.ram = new Uint8Array(buf);
    const memory = new GuestMemory();
    memory.setRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: MEM_SIZE, userspaceAddr: buf });
    this.cpu = new X86Cpu(memory, new KvmRun());
    // Let the CPU pick up the memory slot without running anything.
    this.cpu.timeSlice = 0;
    this.cpu.runLoop();
  }

  /** Runs one case; returns a list of mismatches (empty: pass). */
  run(t: OracleCase): string[] {
    const { cpu: c, ram } = this;
    const inp = t.input;
    const mode16 = inp.mode === 16;
    ram.fill(0, WINDOW, WINDOW_END);
    for (const m of inp.mem ?? []) ram.set(hexBytes(m.hex), m.addr);
    this.initial.set(ram.subarray(WINDOW, WINDOW_END));
    const code = hexBytes(inp.code);
    ram.fill(0xcc, CODE - 16, CODE + code.length + 32);
    ram.set(code, CODE);

    const dpl3 = 3 << 5;
    if (mode16) {
      c.loadSegRaw(CS, 0x3000 | 7, 0x30000, 0xffff, AR_P | AR_S | dpl3 | 0xb);
      for (const s of [DS, ES, SS]) c.loadSegRaw(s, 0x1000 | 7, 0x10000, 0xffff, AR_P | AR_S | dpl3 | 0x3);
    } else {
      c.loadSegRaw(CS, 0x23, 0, 0xffffffff, AR_P | AR_S | dpl3 | 0xb | AR_DB | AR_G);
      for (const s of [DS, ES, SS]) c.loadSegRaw(s, 0x2b, 0, 0xffffffff, AR_P | AR_S | dpl3 | 0x3 | AR_DB | AR_G);
    }
    for (const s of [FS, GS]) c.loadSegRaw(s, 0, 0, 0xffffffff, AR_P | AR_S | dpl3 | 0x3 | AR_DB | AR_G);
    c.cr0 = 0x33; // PE MP ET NE
    for (let i = 0; i < 8; i++) c.r32[i] = inp.regs[REG_NAMES[i]!] ?? 0;
    c.setEflags(((inp.regs.eflags ?? 0x202) & 0x8d5) | 0x202);
    c.updateMode();
    const start = mode16 ? 0x1000 : CODE;
    c.eip = start;

    const x = c.x87;
    x.init();
    if (typeof inp.fpu === 'object') {
      const f = inp.fpu;
      if (f.fcw !== undefined) x.fcw = f.fcw;
      if (f.fsw !== undefined) x.fsw = f.fsw;
      if (f.ftw !== undefined) x.ftw = f.ftw;
      (f.st ?? []).forEach((h, i) => { x.regs[x.phys(i)] = fromHex(h); });
      x.updateEs();
    }

    const end = start + code.length;
    let fault: { vector: number; error: number; eip: number } | undefined;
    let n = 0;
    const limit = inp.count ?? 10_000;
    while (c.eip !== end && n < limit) {
      c.startEip = c.eip;
      try {
        step(c);
      } catch (e) {
        if (e !== FAULT) return [`internal: ${e instanceof Error ? e.message : String(e)}`];
        fault = { vector: c.faultVector, error: c.faultHasError ? c.faultError : 0, eip: c.startEip };
        c.eip = c.startEip;
        c.r32[4] = c.startEsp;
        break;
      }
      n++;
    }

    const exp = t.expected;
    const problems: string[] = [];
    if (exp.exception || fault) {
      const a = fault ? `#${fault.vector}(${fault.error})@${fault.eip.toString(16)}` : 'none';
      const e = exp.exception ? `#${exp.exception.vector}(${exp.exception.error})@${exp.exception.eip.toString(16)}` : 'none';
      if (a !== e) problems.push(`exception ${a} want ${e}`);
    } else if (exp.eip !== undefined && (c.eip >>> 0) !== exp.eip) {
      problems.push(`eip ${c.eip.toString(16)} want ${exp.eip.toString(16)}`);
    }
    for (let i = 0; i < 8; i++) {
      const name = REG_NAMES[i]!;
      const want = exp.regs[name];
      if (want !== undefined && c.r32[i]! >>> 0 !== want >>> 0) problems.push(`${name}=${(c.r32[i]! >>> 0).toString(16)} want ${want.toString(16)}`);
    }
    const fl = c.getEflags() & ~0x10000;
    if (((fl ^ exp.regs.eflags!) & ~t.flagsMask & 0x3fffff) !== 0) problems.push(`eflags=${fl.toString(16)} want ${exp.regs.eflags!.toString(16)}`);

    // Data window: expected final bytes, with the undefined bits of memMask ignored.
    const want = new Uint8Array(this.initial);
    for (const m of exp.mem) want.set(hexBytes(m.hex), m.addr - WINDOW);
    const maskBits = new Map<number, number>();
    for (const m of t.memMask ?? []) hexBytes(m.hex).forEach((b, k) => maskBits.set(m.addr + k, b));
    let memBad = 0;
    for (let a = WINDOW; a < WINDOW_END; a++) {
      const d = (ram[a]! ^ want[a - WINDOW]!) & ~(maskBits.get(a) ?? 0) & 0xff;
      if (d !== 0 && memBad++ < 4) problems.push(`mem[${a.toString(16)}]=${ram[a]!.toString(16)} want ${want[a - WINDOW]!.toString(16)}`);
    }

    const ef = exp.fpu;
    if (ef) {
      if (x.fcw !== ef.fcw) problems.push(`fcw=${x.fcw.toString(16)} want ${ef.fcw.toString(16)}`);
      const fsw = x.fsw;
      if (((fsw ^ ef.fsw) & ~(t.fswMask ?? 0) & 0xffff) !== 0) problems.push(`fsw=${fsw.toString(16)} want ${ef.fsw.toString(16)}`);
      if (x.ftw !== ef.ftw) problems.push(`ftw=${x.ftw.toString(16)} want ${ef.ftw.toString(16)}`);
      const top = (ef.fsw >> 11) & 7;
      for (let i = 0; i < 8; i++) {
        const p = (top + i) & 7;
        if (((ef.ftw >> (2 * p)) & 3) === 3) continue;
        const a = toHex(x.regs[p]!);
        if (a !== ef.st[i]) problems.push(`st${i}=${a} want ${ef.st[i]}`);
      }
    }
    return problems;
  }
}

function loadX87Cases(file: string): OracleCase[] {
  const text = gunzipSync(readFileSync(resolve(VECTORS, file))).toString('utf8');
  const out: OracleCase[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"fpu"')) continue;
    const t = JSON.parse(line) as OracleCase;
    if (t.input.fpu !== undefined) out.push(t);
  }
  return out;
}

/** Sub-template: the word after "x87 " in the case name. */
function kindOf(name: string): string {
  return /^x87 ([\w-]+):/.exec(name)?.[1] ?? name;
}

const present = existsSync(resolve(VECTORS, 'public-32.jsonl.gz'));

describe.skipIf(!present)('x87 against the cpu-oracle vectors', () => {
  for (const file of ['public-32.jsonl.gz', 'public-16.jsonl.gz']) {
    it(`${file}: at least 99.9% of the x87 cases match`, () => {
      const cases = loadX87Cases(file);
      const h = new Harness();
      const per = new Map<string, { total: number; passed: number }>();
      const failures: string[] = [];
      for (const t of cases) {
        const k = kindOf(t.name);
        const s = per.get(k) ?? { total: 0, passed: 0 };
        per.set(k, s);
        s.total++;
        const p = h.run(t);
        if (p.length === 0) s.passed++;
        else failures.push(`${t.id} ${t.name} [${t.input.code}]: ${p.join('; ')}`);
      }
      const passed = cases.length - failures.length;
      const lines = [...per].sort().map(([k, s]) => `  ${k.padEnd(10)} ${s.passed}/${s.total}`);
      console.log(`${file}: ${passed}/${cases.length} x87 cases pass (${((100 * passed) / cases.length).toFixed(2)}%)\n${lines.join('\n')}`);
      if (failures.length) console.log(failures.slice(0, process.env.X87_ORACLE_VERBOSE ? failures.length : 10).join('\n'));
      expect(cases.length).toBeGreaterThan(500);
      expect(passed / cases.length).toBeGreaterThanOrEqual(0.999);
    });
  }
});
