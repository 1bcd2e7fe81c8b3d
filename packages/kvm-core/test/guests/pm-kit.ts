/**
 * Shared pieces of the self-checking protected-mode guests (task switching, call gates, V86):
 * descriptor and TSS layouts for the assembler, the check/fail convention, and a runner that
 * boots an image at 0000:7C00 and plays the VMM (COM1 text, debug exit, IRQ requests, port
 * reads).
 *
 * Convention: a guest stores the number of the check it is on in `check` (via `expect`), and
 * on a mismatch jumps to `fail`, which prints 'F' and writes that number to the debug-exit
 * port 0xF4. Passing guests print their last letter and write 0.
 */
import { flatGuest } from '../helpers.js';
import {
  KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO,
  type KvmRegs, type KvmSregs,
} from '../../src/index.js';
import { Assembler, dword, mem, reg, sym, type Imm, type Mem, type Register } from '../../src/x86/asm/index.js';

export const GUEST_LOAD = 0x7c00;
export const COM1 = 0x3f8;
export const DEBUG_EXIT = 0xf4;
/** An OUT of vector v (byte) to this port asks the runner to inject external interrupt v (KVM_INTERRUPT). */
export const IRQ_REQUEST = 0x510;

// Access bytes.
export const CODE0 = 0x9a, DATA0 = 0x92, CODE3 = 0xfa, DATA3 = 0xf2;
/** Gate attribute words (P, DPL, type): interrupt 32, trap 32, task, call 32, call 16. */
export const INT_GATE = 0x8e00, TRAP_GATE = 0x8f00, TASK_GATE = 0x8500, CALL_GATE32 = 0x8c00, CALL_GATE16 = 0x8400;
/** TSS descriptor access bytes: available 32-bit, available 16-bit. */
export const TSS32 = 0x89, TSS16 = 0x81;

/** Emits a code/data descriptor with a numeric base: flags 0xC = 4 KiB granularity, 32-bit. */
export function segDesc(a: Assembler, base: number, limit: number, access: number, flags = 0xc): void {
  const lo = ((base & 0xffff) << 16) | (limit & 0xffff);
  const hi = (base & 0xff000000) | (flags << 20) | (((limit >>> 16) & 0xf) << 16) | (access << 8) | ((base >>> 16) & 0xff);
  a.dd(lo >>> 0, hi >>> 0);
}

/** Emits a byte-granular system descriptor (TSS, LDT) whose base is a label below 64 KiB. */
export function sysDesc(a: Assembler, base: string, limit: number, access: number): void {
  a.dw(limit, base).db(0, access, 0, 0);
}

/**
 * Emits the usual two-ring flat GDT at label `gdt`: null, ring-0 code 0x08 and data 0x10, ring-3
 * code 0x18 and data 0x20, and a 32-bit TSS at 0x28 (label `tss`, byte limit `tssLimit`).
 */
export function emitFlatTwoRingGdt(a: Assembler, tssLimit: number): void {
  a.label('gdt');
  a.dd(0, 0);
  segDesc(a, 0, 0xfffff, CODE0); // 0x08
  segDesc(a, 0, 0xfffff, DATA0); // 0x10
  segDesc(a, 0, 0xfffff, CODE3); // 0x18
  segDesc(a, 0, 0xfffff, DATA3); // 0x20
  sysDesc(a, 'tss', tssLimit, TSS32); // 0x28
}

/** Emits a gate: `attrs` from the *_GATE constants (| DPL << 13 | parameter count); offset label below 64 KiB. */
export function gateDesc(a: Assembler, sel: number, offset: Imm, attrs: number): void {
  a.dw(offset, sel, attrs, 0);
}

export interface Tss32Fields {
  link?: number; esp0?: number; ss0?: number; esp1?: number; ss1?: number; esp2?: number; ss2?: number;
  cr3?: number; eip?: Imm; eflags?: number;
  eax?: number; ecx?: number; edx?: number; ebx?: number; esp?: number; ebp?: number; esi?: number; edi?: number;
  es?: number; cs?: number; ss?: number; ds?: number; fs?: number; gs?: number; ldt?: number;
  /** I/O map base (offset of the permission bitmap in the TSS). Default 0x68: just past the TSS. */
  iomap?: number;
}

/** Offsets of the 32-bit TSS fields. */
export const TSS = {
  link: 0x00, esp0: 0x04, ss0: 0x08, cr3: 0x1c, eip: 0x20, eflags: 0x24, eax: 0x28, ecx: 0x2c, edx: 0x30, ebx: 0x34,
  esp: 0x38, ebp: 0x3c, esi: 0x40, edi: 0x44, es: 0x48, cs: 0x4c, ss: 0x50, ds: 0x54, fs: 0x58, gs: 0x5c, ldt: 0x60, iomap: 0x66,
} as const;
/** Offsets of the 16-bit TSS fields. */
export const TSS16_OFF = {
  link: 0x00, ip: 0x0e, flags: 0x10, ax: 0x12, cx: 0x14, dx: 0x16, bx: 0x18, sp: 0x1a, bp: 0x1c, si: 0x1e, di: 0x20,
  es: 0x22, cs: 0x24, ss: 0x26, ds: 0x28, ldt: 0x2a,
} as const;

/** Emits a 104-byte 32-bit TSS at label `name` (aligned to 4). */
export function tss32(a: Assembler, name: string, f: Tss32Fields): void {
  a.align(4, 0).label(name);
  a.dd(f.link ?? 0, f.esp0 ?? 0, f.ss0 ?? 0, f.esp1 ?? 0, f.ss1 ?? 0, f.esp2 ?? 0, f.ss2 ?? 0, f.cr3 ?? 0, f.eip ?? 0, f.eflags ?? 2);
  a.dd(f.eax ?? 0, f.ecx ?? 0, f.edx ?? 0, f.ebx ?? 0, f.esp ?? 0, f.ebp ?? 0, f.esi ?? 0, f.edi ?? 0);
  a.dd(f.es ?? 0, f.cs ?? 0, f.ss ?? 0, f.ds ?? 0, f.fs ?? 0, f.gs ?? 0, f.ldt ?? 0);
  a.dw(0, f.iomap ?? 0x68);
}

/** Emits a 44-byte 16-bit TSS at label `name`. */
export function tss16(a: Assembler, name: string, f: {
  ip: Imm; flags?: number; ax?: number; cx?: number; dx?: number; bx?: number; sp?: number; bp?: number; si?: number; di?: number;
  es?: number; cs?: number; ss?: number; ds?: number; ldt?: number;
}): void {
  a.align(4, 0).label(name);
  a.dw(0, 0, 0, 0, 0, 0, 0, f.ip, f.flags ?? 2, f.ax ?? 0, f.cx ?? 0, f.dx ?? 0, f.bx ?? 0, f.sp ?? 0, f.bp ?? 0, f.si ?? 0, f.di ?? 0);
  a.dw(f.es ?? 0, f.cs ?? 0, f.ss ?? 0, f.ds ?? 0, f.ldt ?? 0);
}

/** `check = code; cmp x, v; jne fail` (through DS: keep DS flat where this is used). */
export function expect(a: Assembler, code: number, x: Register | Mem, v: Imm): void {
  a.mov(dword({ disp: 'check' }), code);
  a.cmp(x, v).jne('fail', 'near');
}

/** A memory operand at label + offset (dword unless `size` says otherwise). */
export function at(label: string, offset = 0, size: 8 | 16 | 32 = 32): Mem {
  return mem({ disp: offset === 0 ? label : sym(label, offset), size });
}

/**
 * Real-mode prologue: loads `gdtr`/`idtr` (labels), sets PE, far-jumps to `pm32` in selector
 * `codeSel`; then 32-bit code at `pm32` loads DS/ES/SS/FS/GS with `dataSel` and ESP.
 * Leaves the assembler in 32-bit mode after those loads.
 */
export function enterProtectedMode(a: Assembler, codeSel: number, dataSel: number, esp: number): void {
  const { ax, eax } = reg;
  a.cli();
  a.xor(ax, ax).mov(reg.ds, ax).mov(reg.ss, ax).mov(reg.sp, 0x7000);
  a.lgdt(mem({ disp: 'gdtr', size: 16 }));
  a.lidt(mem({ disp: 'idtr', size: 16 }));
  a.mov(eax, reg.cr0).or(eax, 1).mov(reg.cr0, eax);
  a.jmpFar(codeSel, 'pm32');
  a.use32();
  a.label('pm32');
  a.mov(ax, dataSel).mov(reg.ds, ax).mov(reg.es, ax).mov(reg.ss, ax).mov(reg.fs, ax).mov(reg.gs, ax).mov(reg.esp, esp);
}

/**
 * `putc` (AL to COM1), `pass` (print `letter`, exit 0) and `fail` (print 'F', exit with
 * [check]), at ring 0 with the flat data segment `dataSel`. With `userFailVector`, `fail`
 * reached outside ring 0 first raises that interrupt, whose DPL-3 gate must lead to `fail`.
 */
export function emitReporting(a: Assembler, dataSel: number, letter: string, userFailVector?: number): void {
  const { al, ax, dx, eax } = reg;
  a.label('pass');
  a.mov(al, letter.charCodeAt(0)).call('putc');
  a.mov(al, 0).out(DEBUG_EXIT, al);
  a.hlt();
  a.label('fail');
  if (userFailVector !== undefined) {
    a.mov(ax, reg.cs).test(al, 3).jz('fail_ring0');
    a.int(userFailVector);
    a.label('fail_ring0');
  }
  a.mov(ax, dataSel).mov(reg.ds, ax);
  a.mov(al, 'F'.charCodeAt(0)).call('putc');
  a.mov(eax, dword({ disp: 'check' })).out(DEBUG_EXIT, al);
  a.hlt();
  a.label('putc');
  a.mov(dx, COM1).out(dx, al).ret();
  a.align(4, 0).label('check').dd(0);
}

// --- Running ------------------------------------------------------------------------------------

export interface GuestResult {
  serial: string;
  /** The byte written to the debug-exit port, or undefined if the guest stopped otherwise. */
  exitCode: number | undefined;
  /** The last exit reason from run(). */
  exitReason: number;
  /** '' or a description of an unexpected stop. */
  message: string;
  regs: KvmRegs;
  sregs: KvmSregs;
  ram: Uint8Array;
  /** OUTs to ports other than COM1, the debug exit and the IRQ-request port, in order. */
  outs: { port: number; size: number; value: number }[];
  /** Vectors injected on request. */
  injected: number[];
  /** MMIO exits (accesses to physical addresses no slot backs), in order; reads got 0xFF bytes. */
  mmio: { addr: number; len: number; write: boolean; value: number }[];
}

export interface RunOptions {
  /** Values returned by IN, by port. Unlisted ports read as 0xFF.. */
  inputs?: Record<number, number>;
  /** Stop at this exit reason (e.g. KVM_EXIT_SHUTDOWN) and report it rather than a failure. */
  stopAt?: number;
  /** run() calls before giving up (each is at most one time slice). Default 500. */
  maxRuns?: number;
}

/** Boots `image` at 0000:7C00 in real mode (8 MiB RAM) and plays the VMM until the debug exit. */
export function runGuest(image: Uint8Array, opts: RunOptions = {}): GuestResult {
  const { kvm, vm, vcpu, ram } = flatGuest(image, GUEST_LOAD, { sp: 0 });
  let serial = '';
  let exitCode: number | undefined;
  let message = 'ran too long';
  let exitReason = 0;
  const outs: GuestResult['outs'] = [];
  const injected: number[] = [];
  const mmio: GuestResult['mmio'] = [];
  for (let i = 0; i < (opts.maxRuns ?? 500); i++) {
    const r = vcpu.run();
    exitReason = r;
    const io = vcpu.runData.io;
    if (r === KVM_EXIT_IO && io.direction === KVM_EXIT_IO_OUT) {
      let value = 0;
      for (let k = io.size - 1; k >= 0; k--) value = (value << 8) | io.data[k]!;
      if (io.port === COM1) serial += String.fromCharCode(io.data[0]!);
      else if (io.port === DEBUG_EXIT) { exitCode = io.data[0]!; message = ''; break; }
      else if (io.port === IRQ_REQUEST) { vcpu.interrupt(io.data[0]!); injected.push(io.data[0]!); }
      else outs.push({ port: io.port, size: io.size, value: value >>> 0 });
      continue;
    }
    if (r === KVM_EXIT_IO && io.direction === KVM_EXIT_IO_IN) {
      const v = opts.inputs?.[io.port] ?? 0xffffffff;
      for (let k = 0; k < io.size; k++) io.data[k] = (v >>> (8 * k)) & 0xff;
      continue;
    }
    if (r === KVM_EXIT_MMIO) {
      const m = vcpu.runData.mmio;
      let value = 0;
      for (let k = m.len - 1; k >= 0; k--) value = (value << 8) | m.data[k]!;
      mmio.push({ addr: m.physAddr, len: m.len, write: m.isWrite, value: m.isWrite ? value >>> 0 : 0 });
      if (!m.isWrite) m.data.fill(0xff);
      continue;
    }
    if (r === KVM_EXIT_INTR) continue;
    if (r === opts.stopAt) { message = ''; break; }
    message = r === KVM_EXIT_HLT ? 'halted' : `exit ${r}: ${vcpu.runData.internal.message}`;
    break;
  }
  const regs = vcpu.getRegs();
  const sregs = vcpu.getSregs();
  vcpu.close(); vm.close(); kvm.close();
  return { serial, exitCode, exitReason, message, regs, sregs, ram, outs, injected, mmio };
}

/** Little-endian dword / word of guest RAM. */
export function u32(ram: Uint8Array, addr: number): number {
  return (ram[addr]! | (ram[addr + 1]! << 8) | (ram[addr + 2]! << 16) | (ram[addr + 3]! << 24)) >>> 0;
}
export function u16(ram: Uint8Array, addr: number): number {
  return ram[addr]! | (ram[addr + 1]! << 8);
}

/** Assembles and returns the bytes with every label's address. */
export function build(a: Assembler): { bytes: Uint8Array; labels: ReadonlyMap<string, number>; addr(label: string): number } {
  const { bytes, labels } = a.assemble();
  return {
    bytes, labels,
    addr(label: string): number {
      const v = labels.get(label);
      if (v === undefined) throw new Error(`no label ${label}`);
      return v;
    },
  };
}

export { Assembler };
