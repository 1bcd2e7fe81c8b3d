/**
 * `pnpm bench`: guest MIPS of the software CPU on CPU-bound loops, written to a JSON report.
 * Speed is measured here, never in timed unit tests.
 *
 *   pnpm bench [--out FILE] [--seconds N]
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { cpus } from 'node:os';
// The built package, as users run it (the TypeScript sources run through a transform that makes
// every cross-module constant a getter call, which is several times slower).
import { Kvm, KVM_EXIT_HLT, KVM_EXIT_INTR, type KvmSegment } from '@kvmts/kvm-core';

interface Workload {
  name: string;
  description: string;
  /** 32-bit code segment (flat, CPL 0, protected mode). */
  code32: boolean;
  /** Paging on: 4 KiB pages identity-mapping the first 1 MiB, through 32-bit or PAE page tables. */
  paging?: '32' | 'pae';
  code: number[];
}

// Both loops: a counter runs down from ECX; each pass does ALU work, a load, a store and a
// compare, like an interpreter's inner loop. Bytes are hand-assembled (see the comments).
const REAL_MODE_LOOP: number[] = [
  0x66, 0xb9, 0x00, 0x00, 0x00, 0x00, //       mov ecx, 0 (patched: iterations)
  0xbe, 0x00, 0x10, //                         mov si, 0x1000
  // loop:
  0x8b, 0x04, //                               mov ax, [si]
  0x01, 0xc3, //                               add bx, ax
  0x31, 0xda, //                               xor dx, bx
  0xd1, 0xe2, //                               shl dx, 1
  0x89, 0x54, 0x02, //                         mov [si+2], dx
  0x83, 0xc6, 0x02, //                         add si, 2
  0x81, 0xe6, 0xff, 0x1f, //                   and si, 0x1fff
  0x66, 0x49, //                               dec ecx
  0x75, 0xea, //                               jnz loop
  0xf4, //                                     hlt
];
const PROTECTED_MODE_LOOP: number[] = [
  0xb9, 0x00, 0x00, 0x00, 0x00, //             mov ecx, 0 (patched)
  0xbe, 0x00, 0x10, 0x01, 0x00, //             mov esi, 0x11000
  // loop:
  0x8b, 0x06, //                               mov eax, [esi]
  0x01, 0xc3, //                               add ebx, eax
  0x31, 0xda, //                               xor edx, ebx
  0xd1, 0xe2, //                               shl edx, 1
  0x89, 0x56, 0x04, //                         mov [esi+4], edx
  0x83, 0xc6, 0x04, //                         add esi, 4
  0x81, 0xe6, 0xff, 0x3f, 0x01, 0x00, //       and esi, 0x13fff
  0x49, //                                     dec ecx
  0x75, 0xe9, //                               jnz loop
  0xf4, //                                     hlt
];
const INSNS_PER_PASS = 9;

const workloads: Workload[] = [
  { name: 'real-mode-loop', description: '16-bit real mode: load, ALU, shift, store, loop', code32: false, code: REAL_MODE_LOOP },
  { name: 'protected-mode-flat-loop', description: '32-bit flat protected mode, paging off: load, ALU, shift, store, loop', code32: true, code: PROTECTED_MODE_LOOP },
  { name: 'protected-mode-paged-loop', description: '32-bit flat protected mode, 4 KiB paging: load, ALU, shift, store, loop', code32: true, paging: '32', code: PROTECTED_MODE_LOOP },
  { name: 'protected-mode-pae-loop', description: '32-bit flat protected mode, 4 KiB PAE paging: load, ALU, shift, store, loop', code32: true, paging: 'pae', code: PROTECTED_MODE_LOOP },
];

function measure(w: Workload, seconds: number): { mips: number; instructions: number; seconds: number } {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const mem = new ArrayBuffer(1 << 20);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: mem.byteLength, userspaceAddr: mem });
  const vcpu = vm.createVcpu(0);
  const iterations = 2_000_000;
  const code = w.code.slice();
  const immAt = w.code32 ? 1 : 2;
  code[immAt] = iterations & 0xff; code[immAt + 1] = (iterations >> 8) & 0xff; code[immAt + 2] = (iterations >> 16) & 0xff;
  new Uint8Array(mem).set(code, 0x8000);
  const PD = 0x80000, PT = 0x81000, PDPT = 0x82000;
  if (w.paging) {
    // PAE: PDPT -> PD -> PT with 8-byte entries (the high dwords stay 0).
    const dv = new DataView(mem), entry = w.paging === 'pae' ? 8 : 4;
    if (w.paging === 'pae') dv.setUint32(PDPT, PD | 1, true);
    dv.setUint32(PD, PT | 3, true);
    for (let i = 0; i < 256; i++) dv.setUint32(PT + i * entry, (i << 12) | 3, true);
  }

  let total = 0, elapsed = 0;
  while (elapsed < seconds * 1000) {
    const sregs = vcpu.getSregs();
    const seg = (s: KvmSegment, code: boolean) => {
      s.selector = w.code32 ? (code ? 8 : 16) : 0; s.base = 0; s.limit = w.code32 ? 0xffffffff : 0xffff;
      s.present = 1; s.s = 1; s.type = code ? 0xb : 0x3; s.db = w.code32 ? 1 : 0; s.g = w.code32 ? 1 : 0; s.dpl = 0;
    };
    for (const s of [sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs]) seg(s, false);
    seg(sregs.cs, true);
    sregs.cr0 = w.code32 ? 0x11 : 0x10;
    if (w.paging) { sregs.cr0 |= 0x80000000; sregs.cr3 = w.paging === 'pae' ? PDPT : PD; sregs.cr4 = w.paging === 'pae' ? 0x20 : 0; }
    vcpu.setSregs(sregs);
    const regs = vcpu.getRegs();
    regs.rip = 0x8000; regs.rsp = 0x7000; regs.rflags = 2;
    vcpu.setRegs(regs);
    const t0 = performance.now();
    for (;;) {
      const r = vcpu.run();
      if (r === KVM_EXIT_HLT) break;
      if (r !== KVM_EXIT_INTR) throw new Error(`${w.name}: unexpected exit ${r}: ${vcpu.runData.internal.message}`);
    }
    elapsed += performance.now() - t0;
    total += iterations * INSNS_PER_PASS + (w.code32 ? 3 : 3);
  }
  return { mips: total / elapsed / 1000, instructions: total, seconds: elapsed / 1000 };
}

const args = process.argv.slice(2);
const out = resolve(args.includes('--out') ? args[args.indexOf('--out') + 1]! : 'bench-report.json');
const seconds = args.includes('--seconds') ? Number(args[args.indexOf('--seconds') + 1]) : 3;

const results = [];
for (const w of workloads) {
  measure(w, 0.5); // warm-up: let V8 optimise the interpreter
  const m = measure(w, seconds);
  results.push({ name: w.name, description: w.description, mips: Number(m.mips.toFixed(2)), instructions: m.instructions, seconds: Number(m.seconds.toFixed(3)) });
  console.log(`${w.name.padEnd(28)} ${m.mips.toFixed(1).padStart(7)} MIPS  (${m.instructions} instructions in ${m.seconds.toFixed(2)} s)`);
}
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  results,
};
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`report: ${out}`);
