/**
 * Runs the hardware-captured 80286 real-mode vectors of `shared/cpu-tests/singlestep-80286`
 * through kvm-core's public interface, following the folder's README (memory, register set-up,
 * IO handling, flag masks, and the documented 286-versus-386 differences).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Kvm, KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR,
  type KvmSegment, type VcpuFd, type VmFd,
} from '../../src/index.js';

export const SINGLESTEP_DIR = resolve(fileURLToPath(import.meta.url), '../../../../../../shared/cpu-tests/singlestep-80286');

interface Regs16 { ax: number; bx: number; cx: number; dx: number; cs: number; ss: number; ds: number; es: number; sp: number; bp: number; si: number; di: number; ip: number; flags: number }
interface SingleStepTest {
  idx: number;
  name: string;
  bytes: string;
  initial: { regs: Regs16; ram: [number, number][] };
  final: { regs: Partial<Regs16>; ram: [number, number][] };
  exception?: { number: number; flag_address: number };
  hash: string;
}

export interface CaseResult {
  ok: boolean;
  /** A documented 286 behaviour that a 386+/i686 does not reproduce. */
  known286Difference: boolean;
  /** The core reported the instruction as not implemented (INTERNAL_ERROR). */
  unimplemented: boolean;
  detail: string;
}

export interface FileResult {
  file: string;
  total: number;
  passed: number;
  known286: number;
  unimplemented: number;
  failures: { idx: number; name: string; detail: string }[];
}

const MEM_SIZE = 16 << 20;
const REG_NAMES = ['ax', 'bx', 'cx', 'dx', 'cs', 'ss', 'ds', 'es', 'sp', 'bp', 'si', 'di', 'ip', 'flags'] as const;

function flagsMask(meta: any, file: string): number {
  const [op, reg] = file.replace('.jsonl.gz', '').split('.');
  const entry = meta.opcodes[op!];
  const m = reg !== undefined ? entry?.reg?.[reg]?.['flags-mask'] : entry?.['flags-mask'];
  return (m ?? 0xffff) & 0x0fff;
}

export function listFiles(): string[] {
  return readdirSync(SINGLESTEP_DIR).filter((f) => f.endsWith('.jsonl.gz')).sort();
}

export function loadTests(file: string): SingleStepTest[] {
  const text = gunzipSync(readFileSync(join(SINGLESTEP_DIR, file))).toString('utf8');
  return text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as SingleStepTest);
}

/** One VM reused for every case, as the README allows (cases write all bytes they depend on). */
export class SingleStepRunner {
  readonly vm: VmFd;
  readonly vcpu: VcpuFd;
  readonly ram: Uint8Array;
  private readonly meta: any;

  constructor() {
    const kvm = new Kvm();
    this.vm = kvm.createVm();
    const buf = new ArrayBuffer(MEM_SIZE);
    this.ram = new Uint8Array(buf);
    this.vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: MEM_SIZE, userspaceAddr: buf });
    this.vcpu = this.vm.createVcpu(0);
    this.meta = JSON.parse(readFileSync(join(SINGLESTEP_DIR, 'metadata.json'), 'utf8'));
  }

  runFile(file: string): FileResult {
    const mask = flagsMask(this.meta, file);
    const res: FileResult = { file, total: 0, passed: 0, known286: 0, unimplemented: 0, failures: [] };
    for (const t of loadTests(file)) {
      const r = this.runCase(t, mask);
      res.total++;
      if (r.ok) res.passed++;
      else if (r.known286Difference) res.known286++;
      else if (r.unimplemented) res.unimplemented++;
      else res.failures.push({ idx: t.idx, name: t.name, detail: r.detail });
    }
    return res;
  }

  runCase(t: SingleStepTest, mask: number): CaseResult {
    const first = this.runOnce(t, mask, false);
    if (first.ok) return first;
    const lockAt = lockPrefixIndex(t.bytes);
    if (lockAt >= 0 && t.exception?.number !== 6) {
      // The 286 ignores LOCK everywhere; a 386+ raises #UD unless the instruction is a locked
      // read-modify-write of memory. The case is a 286 difference only if it passes with the
      // LOCK byte replaced by a segment prefix that changes nothing: the instruction's default
      // segment, or the override it already has (the last segment prefix wins); any of them
      // is ignored when there is no memory operand.
      for (const prefix of [0x3e, 0x36, 0x26, 0x2e]) {
        const again = this.runCase(withPrefixByte(t, lockAt, prefix), mask);
        if (again.ok || again.known286Difference) return { ok: false, known286Difference: true, unimplemented: false, detail: '#UD for LOCK on a 386+' };
      }
      return first;
    }
    if (t.exception?.number !== 13) return first;
    // The 286 raises #GP(13) for a word at offset 0xFFFF even through SS, where a 386+ raises
    // #SS(12). Route vector 12 to the test's #GP handler and run again: a pass then means the
    // only difference is that documented one.
    const ivt12 = t.initial.ram.some(([a]) => a >= 48 && a < 52);
    if (!ivt12) {
      const again = this.runOnce(t, mask, true);
      if (again.ok || again.known286Difference) return { ok: false, known286Difference: true, unimplemented: false, detail: '#SS instead of the 286\'s #GP' };
    }
    return first;
  }

  private runOnce(t: SingleStepTest, mask: number, aliasSsToGp: boolean): CaseResult {
    const { vcpu, ram } = this;
    const init = t.initial.regs;
    const sregs = vcpu.getSregs();
    const seg = (s: KvmSegment, sel: number, code: boolean) => {
      s.selector = sel; s.base = sel << 4; s.limit = 0xffff; s.present = 1; s.s = 1; s.dpl = 0;
      s.type = code ? 0xb : 0x3; s.db = 0; s.g = 0; s.l = 0; s.unusable = 0;
    };
    seg(sregs.cs, init.cs, true); seg(sregs.ds, init.ds, false); seg(sregs.es, init.es, false); seg(sregs.ss, init.ss, false);
    seg(sregs.fs, 0, false); seg(sregs.gs, 0, false);
    sregs.cr0 = 0x10; sregs.idt = { base: 0, limit: 0x3ff };
    vcpu.setSregs(sregs);
    vcpu.setRegs({
      rax: init.ax, rbx: init.bx, rcx: init.cx, rdx: init.dx, rsi: init.si, rdi: init.di, rsp: init.sp, rbp: init.bp,
      r8: 0, r9: 0, r10: 0, r11: 0, r12: 0, r13: 0, r14: 0, r15: 0, rip: init.ip, rflags: (init.flags & 0x0fff) | 2,
    });
    for (const [a, b] of t.initial.ram) ram[a] = b;
    if (aliasSsToGp) ram.copyWithin(48, 52, 56);
    // LOCK on a form that cannot be locked is #UD on a 386+ but ignored by the 286: point #UD
    // at the test's closing HLT so such a case stops at once (and is classified below).
    const locked = /^(26|2e|36|3e|f2|f3)*f0/.test(t.bytes);
    if (locked && !t.initial.ram.some(([a]) => a >= 24 && a < 28)) {
      const hltIp = init.ip + t.bytes.length / 2 - 1;
      ram[24] = hltIp & 0xff; ram[25] = hltIp >> 8; ram[26] = init.cs & 0xff; ram[27] = init.cs >> 8;
    }

    const run = vcpu.runData;
    let intr = 0;
    for (;;) {
      const reason = vcpu.run();
      if (reason === KVM_EXIT_HLT) break;
      if (reason === KVM_EXIT_IO) {
        if (run.io.direction === KVM_EXIT_IO_IN) run.io.data.fill(0xff, 0, run.io.size * run.io.count);
        continue;
      }
      if (reason === KVM_EXIT_INTR && ++intr < 2) continue;
      if (reason === KVM_EXIT_INTERNAL_ERROR) {
        return { ok: false, known286Difference: false, unimplemented: true, detail: run.internal.message };
      }
      return { ok: false, known286Difference: false, unimplemented: false, detail: `unexpected exit ${reason}` };
    }

    const regs = vcpu.getRegs();
    const sr = vcpu.getSregs();
    const actual: Regs16 = {
      ax: regs.rax & 0xffff, bx: regs.rbx & 0xffff, cx: regs.rcx & 0xffff, dx: regs.rdx & 0xffff,
      cs: sr.cs.selector, ss: sr.ss.selector, ds: sr.ds.selector, es: sr.es.selector,
      sp: regs.rsp & 0xffff, bp: regs.rbp & 0xffff, si: regs.rsi & 0xffff, di: regs.rdi & 0xffff,
      ip: regs.rip & 0xffff, flags: regs.rflags & 0xffff,
    };
    const expected: Regs16 = { ...init, ...t.final.regs };
    const problems: string[] = [];
    for (const k of REG_NAMES) {
      let a = actual[k], e = expected[k];
      if (k === 'flags') { a &= mask; e &= mask; }
      if (a !== e) problems.push(`${k}=${a.toString(16)} want ${e.toString(16)}`);
    }
    // Pushed FLAGS words are compared under the same masks.
    const maskedBytes = new Map<number, number>();
    const maskWord = (addr: number, m: number) => { maskedBytes.set(addr, m & 0xff); maskedBytes.set(addr + 1, (m >> 8) & 0xff); };
    if (t.exception) maskWord((expected.ss << 4) + ((expected.sp + 4) & 0xffff), mask);
    if (t.bytes.startsWith('9c') || /^(26|2e|36|3e|f0|f2|f3)*9c/.test(t.bytes)) maskWord((expected.ss << 4) + expected.sp, 0x0fff);
    const finalRam = new Map(t.final.ram);
    const check = (addr: number, want: number) => {
      const m = maskedBytes.get(addr) ?? 0xff;
      if ((ram[addr]! & m) !== (want & m)) problems.push(`ram[${addr.toString(16)}]=${ram[addr]!.toString(16)} want ${want.toString(16)}`);
    };
    for (const [a, b] of t.final.ram) check(a, b);
    for (const [a, b] of t.initial.ram) if (!finalRam.has(a)) check(a, b);
    if (problems.length === 0) return { ok: true, known286Difference: false, unimplemented: false, detail: '' };
    return { ok: false, known286Difference: isKnown286Difference(t, problems), unimplemented: false, detail: problems.slice(0, 6).join(', ') };
  }
}

/** The 16-bit offset of a ModRM memory operand (null for a register operand); `rest` is the hex after the ModRM byte. */
function effectiveAddress16(modrm: number, r: Regs16, rest: string): number | null {
  const mod = modrm >> 6, rm = modrm & 7;
  if (mod === 3) return null;
  const byte = (i: number) => parseInt(rest.slice(i * 2, i * 2 + 2), 16);
  if (mod === 0 && rm === 6) return byte(0) | (byte(1) << 8);
  const base = [r.bx + r.si, r.bx + r.di, r.bp + r.si, r.bp + r.di, r.si, r.di, r.bp, r.bx][rm]!;
  const disp = mod === 1 ? (byte(0) << 24) >> 24 : mod === 2 ? byte(0) | (byte(1) << 8) : 0;
  return (base + disp) & 0xffff;
}

/** Position of a LOCK (F0) byte among the instruction's prefixes, or -1. */
function lockPrefixIndex(bytes: string): number {
  for (let i = 0; i < bytes.length; i += 2) {
    const b = bytes.slice(i, i + 2);
    if (b === 'f0') return i / 2;
    if (!['26', '2e', '36', '3e', 'f2', 'f3'].includes(b)) return -1;
  }
  return -1;
}

/** A copy of the case with instruction byte `index` replaced by `value` (in `bytes` and in RAM). */
function withPrefixByte(t: SingleStepTest, index: number, value: number): SingleStepTest {
  const r = t.initial.regs;
  const addr = (r.cs << 4) + ((r.ip + index) & 0xffff);
  const hex = value.toString(16).padStart(2, '0');
  return {
    ...t,
    bytes: t.bytes.slice(0, index * 2) + hex + t.bytes.slice(index * 2 + 2),
    initial: { ...t.initial, ram: t.initial.ram.map(([a, b]) => [a, a === addr ? value : b] as [number, number]) },
  };
}

/** 286 behaviours that a 386+/i686 core does not reproduce (the README's list, and the 286's lack of FS/GS). */
function isKnown286Difference(t: SingleStepTest, problems: string[]): boolean {
  const len = t.bytes.length / 2 - 1; // the trailing f4 is not part of the instruction
  // Instructions longer than 10 bytes: #GP on the 286; a 386+ allows 15.
  if (t.exception?.number === 13 && len > 10) return true;
  // The 286 updates SP, SI, DI or CX before it faults on a word at offset 0xFFFF; a 386+
  // restarts the instruction with nothing changed.
  if (t.exception?.number === 13 && problems.every((p) => /^(sp|si|di|cx)=/.test(p))) return true;
  // ESC (D8) on the test machine, which had no FPU, only computed the address. An i686 with an
  // FPU reads the 4-byte operand and faults (#SS/#GP) when it runs past offset 0xFFFF.
  const esc = /^((?:26|2e|36|3e|f0|f2|f3)*)d8([0-9a-f]{2})/.exec(t.bytes);
  if (esc && !t.exception) {
    const ea = effectiveAddress16(parseInt(esc[2]!, 16), t.initial.regs, t.bytes.slice(esc[1]!.length + 4));
    if (ea !== null && ea + 3 > 0xffff) return true;
  }
  // POP r/m: the 286 commits the SP increment before the faulting write, so its exception frame sits 2 bytes higher.
  if (t.exception?.number === 13 && /^(26|2e|36|3e|f0|f2|f3)*8f/.test(t.bytes) && problems.some((p) => p.startsWith('sp='))) return true;
  // FS and GS (sreg 4, 5) arrived with the 386: on the 286, MOV to or from them is #UD.
  const body = t.bytes.replace(/^(26|2e|36|3e|f0|f2|f3)+/, '');
  if (t.exception?.number === 6 && /^8[ce]/.test(body) && ((parseInt(body.slice(2, 4), 16) >> 3) & 7) >= 4) return true;
  return false;
}

export function sharedVectorsPresent(): boolean {
  return existsSync(SINGLESTEP_DIR);
}
