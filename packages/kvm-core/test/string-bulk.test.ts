import { afterEach, describe, expect, it } from 'vitest';
import { Kvm, KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_MMIO, KVM_MEM_LOG_DIRTY_PAGES, type KvmSregs, type VcpuFd, type VmFd } from '../src/index.js';
import { Assembler, dword, reg } from '../src/x86/asm/index.js';

/**
 * REP MOVS/STOS in flat 32-bit code, where the CPU copies or fills whole in-page runs at once:
 * every result is compared with what the element-by-element definition gives (a model in the
 * test), including the cases the bulk path must hand back to the element loop — a forward
 * copy onto its own source, a page fault in the middle, MMIO, unaligned elements across pages —
 * and the side effects it must keep: dirty logging and dropping compiled code that is overwritten.
 */
const RAM = 4 << 20;
const CODE = 0x1000;
const { eax, ecx, esi, edi } = reg;

interface Guest { vm: VmFd; vcpu: VcpuFd; ram: Uint8Array; close(): void }
const open: Guest[] = [];
afterEach(() => { for (const g of open.splice(0)) g.close(); });

/** A flat protected-mode guest (paging off unless `paging`), running `body` then HLT. */
function guest(body: (a: Assembler) => void, opts: { paging?: boolean; flags?: number } = {}): Guest {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const buf = new ArrayBuffer(RAM);
  const ram = new Uint8Array(buf);
  vm.setUserMemoryRegion({ slot: 0, flags: opts.flags ?? 0, guestPhysAddr: 0, memorySize: RAM, userspaceAddr: buf });
  const dv = new DataView(buf);
  dv.setUint32(0x6010, 0x0000ffff, true); dv.setUint32(0x6014, 0x00cf9b00, true);
  dv.setUint32(0x6018, 0x0000ffff, true); dv.setUint32(0x601c, 0x00cf9300, true);
  // IDT at 0x7000: #PF (14) → a HLT at 0x7f00.
  dv.setUint32(0x7000 + 14 * 8, (0x10 << 16) | 0x7f00, true);
  dv.setUint32(0x7000 + 14 * 8 + 4, 0x8e00, true);
  ram[0x7f00] = 0xf4;
  const a = new Assembler({ bits: 32, origin: CODE });
  body(a);
  a.hlt();
  ram.set(a.bytes(), CODE);
  const vcpu = vm.createVcpu(0);
  const s: KvmSregs = vcpu.getSregs();
  const flat = (sel: number, code: boolean) => ({ base: 0, limit: 0xffffffff, selector: sel, type: code ? 0xb : 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  s.cs = flat(0x10, true); s.ds = flat(0x18, false); s.es = flat(0x18, false); s.ss = flat(0x18, false); s.fs = flat(0x18, false); s.gs = flat(0x18, false);
  s.gdt = { base: 0x6000, limit: 0x1f }; s.idt = { base: 0x7000, limit: 0x7ff };
  s.cr0 = 0x11;
  if (opts.paging) {
    // Identity-map the first 4 MiB with 4 KiB pages, except page 0x205 (not present).
    const PD = 0x8000, PT = 0x9000;
    for (let i = 0; i < 1024; i++) dv.setUint32(PT + i * 4, i === 0x205 ? 0 : (i << 12) | 3, true);
    dv.setUint32(PD, PT | 3, true);
    s.cr3 = PD; s.cr0 = 0x80000011;
  }
  vcpu.setSregs(s);
  const r = vcpu.getRegs(); r.rip = CODE; r.rsp = 0x7e00; r.rflags = 2; vcpu.setRegs(r);
  const g = { vm, vcpu, ram, close: () => { vcpu.close(); vm.close(); kvm.close(); } };
  open.push(g);
  return g;
}

function runToHlt(g: Guest): void {
  let r: number;
  do r = g.vcpu.run(); while (r === KVM_EXIT_INTR);
  expect(r).toBe(KVM_EXIT_HLT);
}

/** The element-by-element definition of forward REP MOVS/STOS on a byte array. */
function model(mem: Uint8Array, op: 'movs' | 'stos', size: number, dst: number, src: number, count: number, value: number): void {
  for (let k = 0; k < count; k++) {
    for (let b = 0; b < size; b++) mem[dst + k * size + b] = op === 'stos' ? (value >>> (8 * b)) & 0xff : mem[src + k * size + b]!;
  }
}

function pattern(ram: Uint8Array, from: number, len: number, seed: number): void {
  let x = seed;
  for (let i = 0; i < len; i++) { x = (x * 1103515245 + 12345) >>> 0; ram[from + i] = x >>> 24; }
}

describe('REP MOVS/STOS bulk runs (flat 32-bit code)', () => {
  const cases: { name: string; op: 'movs' | 'stos'; size: 1 | 2 | 4; dst: number; src: number; count: number; value: number }[] = [
    { name: 'stosd of a non-uniform dword over 3 pages from an unaligned address', op: 'stos', size: 4, dst: 0x100ffe, src: 0, count: 3000, value: 0x12345678 },
    { name: 'stosd of zero (clear_page)', op: 'stos', size: 4, dst: 0x101000, src: 0, count: 1024, value: 0 },
    { name: 'stosw of 0xABAB and stosb', op: 'stos', size: 2, dst: 0x100001, src: 0, count: 5000, value: 0xabab },
    { name: 'stosb across 2 pages', op: 'stos', size: 1, dst: 0x100f00, src: 0, count: 4400, value: 0x5a },
    { name: 'movsd between unaligned, non-overlapping buffers across pages', op: 'movs', size: 4, dst: 0x180ffd, src: 0x100003, count: 4000, value: 0 },
    { name: 'movsb onto its own source + 1 (replicates the first byte)', op: 'movs', size: 1, dst: 0x100101, src: 0x100100, count: 9000, value: 0 },
    { name: 'movsd onto its own source + 8 (replicates the first 8 bytes)', op: 'movs', size: 4, dst: 0x100108, src: 0x100100, count: 3000, value: 0 },
    { name: 'movsd onto its own source − 6 (memmove-like)', op: 'movs', size: 4, dst: 0x1000fa, src: 0x100100, count: 3000, value: 0 },
    { name: 'movsw with a zero count does nothing', op: 'movs', size: 2, dst: 0x100000, src: 0x110000, count: 0, value: 0 },
  ];
  for (const k of cases) {
    it(k.name, () => {
      const insn = (a: Assembler) => {
        a.mov(edi, k.dst).mov(esi, k.src).mov(ecx, k.count).mov(eax, k.value).cld().rep();
        if (k.op === 'stos') { if (k.size === 1) a.stosb(); else if (k.size === 2) a.stosw(); else a.stosd(); }
        else if (k.size === 1) a.movsb(); else if (k.size === 2) a.movsw(); else a.movsd();
      };
      const g = guest(insn);
      pattern(g.ram, 0x100000, 0x100000, 7);
      const want = g.ram.slice();
      model(want, k.op, k.size, k.dst, k.src, k.count, k.value);
      runToHlt(g);
      expect(Buffer.compare(Buffer.from(g.ram.subarray(0x100000, 0x200000)), Buffer.from(want.subarray(0x100000, 0x200000)))).toBe(0);
      const r = g.vcpu.getRegs();
      expect(r.rcx).toBe(0);
      expect(r.rdi).toBe(k.dst + k.count * k.size);
      if (k.op === 'movs') expect(r.rsi).toBe(k.src + k.count * k.size);
    });
  }

  it('a page fault part-way leaves ECX/EDI/ESI at the faulting element and everything before it copied', () => {
    // Page 0x205 is not present: the copy to 0x204800.. faults at 0x205000.
    const g = guest((a) => a.mov(edi, 0x204800).mov(esi, 0x100000).mov(ecx, 1024).cld().rep().movsd(), { paging: true });
    pattern(g.ram, 0x100000, 0x2000, 3);
    runToHlt(g);
    const r = g.vcpu.getRegs();
    expect(r.rip).toBe(0x7f01); // in the #PF handler
    expect(g.vcpu.getSregs().cr2).toBe(0x205000);
    expect(r.rdi).toBe(0x205000);
    expect(r.rsi).toBe(0x100800);
    expect(r.rcx).toBe(1024 - 0x200);
    expect(Buffer.compare(Buffer.from(g.ram.subarray(0x204800, 0x205000)), Buffer.from(g.ram.subarray(0x100000, 0x100800)))).toBe(0);
  });

  it('a fill that reaches MMIO exits per element there, with the RAM part done', () => {
    const g = guest((a) => a.mov(edi, RAM - 8).mov(ecx, 4).mov(eax, 0xdeadbeef).cld().rep().stosd());
    let r: number;
    do r = g.vcpu.run(); while (r === KVM_EXIT_INTR);
    expect(r).toBe(KVM_EXIT_MMIO);
    const run = g.vcpu.runData;
    expect(run.mmio.physAddr).toBe(RAM);
    expect(run.mmio.isWrite).toBe(true);
    expect(new DataView(g.ram.buffer).getUint32(RAM - 4, true)).toBe(0xdeadbeef);
    expect(g.vcpu.getRegs().rcx).toBe(2);
  });

  it('marks every page it writes in the dirty log', () => {
    const g = guest((a) => a.mov(edi, 0x300000).mov(ecx, 5 * 1024).xor(eax, eax).cld().rep().stosd(), { flags: KVM_MEM_LOG_DIRTY_PAGES });
    g.vm.getDirtyLog(0, RAM);
    runToHlt(g);
    const bm = g.vm.getDirtyLog(0, RAM);
    for (let p = 0x300; p < 0x305; p++) expect((bm[p >> 3]! >> (p & 7)) & 1, `page 0x${p.toString(16)}`).toBe(1);
    expect((bm[0x305 >> 3]! >> (0x305 & 7)) & 1).toBe(0);
  });

  it('drops compiled code that a bulk copy overwrites (self-modifying code)', () => {
    // A hot loop at 0x3000 returns 1 in EAX; it is compiled, then overwritten by a copy of a
    // version returning 2 from 0x3800, and called again.
    const g = guest((a) => {
      a.mov(ecx, 200).label('warm').call(0x3000).loop('warm');
      a.mov(dword(0x2ffc), eax);
      a.mov(edi, 0x3000).mov(esi, 0x3800).mov(ecx, 4).cld().rep().movsd();
      a.call(0x3000);
    });
    g.ram.set([0xb8, 1, 0, 0, 0, 0xc3], 0x3000); // mov eax, 1 ; ret
    g.ram.set([0xb8, 2, 0, 0, 0, 0xc3], 0x3800); // mov eax, 2 ; ret
    runToHlt(g);
    expect(new DataView(g.ram.buffer).getUint32(0x2ffc, true)).toBe(1);
    expect(g.vcpu.getRegs().rax).toBe(2);
  });
});
