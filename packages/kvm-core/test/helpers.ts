/**
 * Shared set-up for kvm-core unit tests: a real-mode guest (Kvm -> VM -> one RAM slot at 0 ->
 * vCPU 0 with real-mode segments), hex code loading, and run loops that fail loudly on an
 * unexpected exit. Guests are tracked so a test file can close every descriptor with
 * `afterEach(closeGuests)` (each vCPU owns a 16 MiB software TLB).
 */
import {
  Kvm, KvmError, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO,
  emptyRegs, emptySegment,
  type KvmRegs, type KvmRun, type KvmSegment, type KvmSregs, type VcpuFd, type VmFd,
} from '../src/index.js';

/** EFLAGS bits, for assertions. */
export const F = {
  CF: 0x1, PF: 0x4, AF: 0x10, ZF: 0x40, SF: 0x80, TF: 0x100, IF: 0x200, DF: 0x400, OF: 0x800,
} as const;
/** The six arithmetic flags. */
export const ARITH = F.CF | F.PF | F.AF | F.ZF | F.SF | F.OF;

/** Default real-mode layout used by {@link createGuest}. */
export const LAYOUT = {
  cs: 0x1000, ip: 0x0100,
  ds: 0x2000, es: 0x2000,
  ss: 0x3000, sp: 0xfff0,
} as const;

/** A real-mode segment register: selector s, base s<<4, limit 0xFFFF, present, S=1, type 3 (0xB for CS). */
export function realSeg(selector: number, code = false): KvmSegment {
  const s = emptySegment();
  s.selector = selector & 0xffff;
  s.base = (selector & 0xffff) << 4;
  s.limit = 0xffff;
  s.present = 1;
  s.s = 1;
  s.type = code ? 0xb : 0x3;
  return s;
}

/** Parses "b8 34 12  f4" (whitespace-separated hex bytes) into bytes. */
export function hex(text: string): Uint8Array {
  const parts = text.trim().split(/\s+/).filter((p) => p.length > 0);
  const out = new Uint8Array(parts.length);
  parts.forEach((p, i) => {
    if (!/^[0-9a-fA-F]{2}$/.test(p)) throw new Error(`hex(): bad byte '${p}'`);
    out[i] = parseInt(p, 16);
  });
  return out;
}

/** Little-endian bytes of `v` in `n` bytes. */
export function le(v: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((v >>> (8 * i)) & 0xff);
  return out;
}

export interface Segments {
  cs: number; ds: number; es: number; fs: number; gs: number; ss: number;
}

export interface GuestOptions {
  /** RAM slot 0 size in bytes (at guest-physical 0). Default 1 MiB. */
  ramSize?: number;
  /** Slot 0 flags. Default 0. */
  flags?: number;
  /** Segment selectors; defaults from {@link LAYOUT} (fs = gs = 0). */
  seg?: Partial<Segments>;
  ip?: number;
  sp?: number;
  /** Register values (rip/rsp default to ip/sp, rflags to 2). */
  regs?: Partial<KvmRegs>;
  /** Guest code, placed at cs:ip. */
  code?: Uint8Array | string;
}

export interface Guest {
  kvm: Kvm;
  vm: VmFd;
  vcpu: VcpuFd;
  run: KvmRun;
  /** Slot 0's backing bytes (writes here bypass dirty logging). */
  ram: Uint8Array;
  seg: Segments;
  /** Linear address of cs:ip at start. */
  codeAddr: number;
  close(): void;
}

const open: Guest[] = [];

/** Closes every guest created since the last call (use in afterEach). */
export function closeGuests(): void {
  for (const g of open.splice(0)) g.close();
}

/** Real-mode sregs for the given selectors, IDT at 0 with limit 0x3FF. */
export function realModeSregs(vcpu: VcpuFd, seg: Segments): KvmSregs {
  const sregs = vcpu.getSregs();
  sregs.cs = realSeg(seg.cs, true);
  sregs.ds = realSeg(seg.ds);
  sregs.es = realSeg(seg.es);
  sregs.fs = realSeg(seg.fs);
  sregs.gs = realSeg(seg.gs);
  sregs.ss = realSeg(seg.ss);
  sregs.idt = { base: 0, limit: 0x3ff };
  sregs.cr0 = 0x60000010;
  return sregs;
}

export function createGuest(opts: GuestOptions = {}): Guest {
  const ramSize = opts.ramSize ?? 0x100000;
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const ram = new Uint8Array(new ArrayBuffer(ramSize));
  vm.setUserMemoryRegion({ slot: 0, flags: opts.flags ?? 0, guestPhysAddr: 0, memorySize: ramSize, userspaceAddr: ram.buffer });
  const vcpu = vm.createVcpu(0);
  const seg: Segments = { cs: LAYOUT.cs, ds: LAYOUT.ds, es: LAYOUT.es, fs: 0, gs: 0, ss: LAYOUT.ss, ...opts.seg };
  vcpu.setSregs(realModeSregs(vcpu, seg));
  const ip = opts.ip ?? LAYOUT.ip;
  const regs = { ...emptyRegs(), rip: ip, rsp: opts.sp ?? LAYOUT.sp, ...opts.regs };
  vcpu.setRegs(regs);
  const codeAddr = (seg.cs << 4) + ip;
  if (opts.code !== undefined && codeAddr >= ramSize) throw new Error(`createGuest: code at 0x${codeAddr.toString(16)} lies beyond RAM (0x${ramSize.toString(16)})`);
  if (opts.code !== undefined) ram.set(typeof opts.code === 'string' ? hex(opts.code) : opts.code, codeAddr);
  let closed = false;
  const guest: Guest = {
    kvm, vm, vcpu, run: vcpu.runData, ram, seg, codeAddr,
    close() {
      if (closed) return;
      closed = true;
      for (const c of [() => vcpu.close(), () => vm.close(), () => kvm.close()]) {
        try { c(); } catch (e) { if (!(e instanceof KvmError)) throw e; }
      }
    },
  };
  open.push(guest);
  return guest;
}

/** Short description of the last exit, for failure messages. */
export function describeExit(run: KvmRun): string {
  switch (run.exitReason) {
    case KVM_EXIT_IO: return `IO ${run.io.direction === KVM_EXIT_IO_OUT ? 'OUT' : 'IN'} port 0x${run.io.port.toString(16)} size ${run.io.size}`;
    case KVM_EXIT_MMIO: return `MMIO ${run.mmio.isWrite ? 'write' : 'read'} 0x${run.mmio.physAddr.toString(16)} len ${run.mmio.len}`;
    case KVM_EXIT_INTERNAL_ERROR: return `INTERNAL_ERROR: ${run.internal.message}`;
    default: return `exit reason ${run.exitReason}`;
  }
}

/** Runs until HLT; any other exit except KVM_EXIT_INTR (time slice) fails the test. */
export function runToHlt(g: Guest, maxRuns = 100): KvmRegs {
  for (let i = 0; i < maxRuns; i++) {
    const r = g.vcpu.run();
    if (r === KVM_EXIT_HLT) return g.vcpu.getRegs();
    if (r !== 10 /* KVM_EXIT_INTR */) throw new Error(`expected HLT, got ${describeExit(g.run)}`);
  }
  throw new Error(`no HLT after ${maxRuns} runs`);
}

/** Runs once and requires exit `reason`. */
export function runExpect(g: Guest, reason: number): void {
  const r = g.vcpu.run();
  if (r !== reason) throw new Error(`expected exit ${reason}, got ${describeExit(g.run)}`);
}

/** Sets up a real-mode guest with `code` at cs:ip, runs to HLT, and returns the registers. */
export function execToHlt(code: string | Uint8Array, opts: Omit<GuestOptions, 'code'> = {}): { g: Guest; regs: KvmRegs } {
  const g = createGuest({ ...opts, code });
  const regs = runToHlt(g);
  return { g, regs };
}

/** Writes a real-mode IVT entry: vector -> seg:off. */
export function setIvt(g: Guest, vector: number, seg: number, off: number): void {
  const m = g.vm.memory;
  m.writeU16(vector * 4, off);
  m.writeU16(vector * 4 + 2, seg);
}

/** Linear address of seg:off. */
export function lin(seg: number, off: number): number {
  return (seg << 4) + (off & 0xffff);
}

/** The set bits of a dirty bitmap, as page numbers. */
export function pagesOf(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bitmap.length * 8; i++) if (bitmap[i >>> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

/** Reads a little-endian word of guest RAM (slot 0 bytes). */
export function ramU16(g: Guest, addr: number): number {
  return g.ram[addr]! | (g.ram[addr + 1]! << 8);
}

/**
 * A VM with `ramSize` bytes of RAM at guest-physical 0, `image` copied to `at`, and vCPU 0 in
 * real mode with every segment at 0 and CS:IP = 0000:`at` — how a BIOS starts a boot sector.
 */
export function flatGuest(image: Uint8Array, at: number, opts: { ramSize?: number; sp?: number } = {}): { kvm: Kvm; vm: VmFd; vcpu: VcpuFd; ram: Uint8Array } {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const ram = new Uint8Array(new ArrayBuffer(opts.ramSize ?? 8 << 20));
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: ram.byteLength, userspaceAddr: ram.buffer });
  ram.set(image, at);
  const vcpu = vm.createVcpu(0);
  const sregs = vcpu.getSregs();
  for (const seg of [sregs.cs, sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs]) { seg.selector = 0; seg.base = 0; }
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.rip = at;
  regs.rsp = opts.sp ?? 0x7000;
  regs.rflags = 2;
  vcpu.setRegs(regs);
  return { kvm, vm, vcpu, ram };
}

/** Runs `fn`, requires it to throw a KvmError, and returns that error (for errno and message checks). */
export function kvmError(fn: () => unknown): KvmError {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof KvmError)) throw new Error(`expected a KvmError, got ${String(e)}`);
    return e;
  }
  throw new Error('expected a KvmError, nothing was thrown');
}
