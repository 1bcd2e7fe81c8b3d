import { describe, expect, it } from 'vitest';
import {
  KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN, type VcpuFd,
} from '../src/index.js';
import { flatGuest } from './helpers.js';

/** xorshift32: a seeded generator, so a failure names a reproducible case. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
}

const KNOWN_EXITS = new Set([KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN]);

/** Runs until HLT, shutdown, an internal error or `runs` exits, answering IN/MMIO reads with junk. */
function drive(vcpu: VcpuFd, next: () => number, runs: number): number[] {
  const seen: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = vcpu.run();
    seen.push(r);
    if (r === KVM_EXIT_IO && vcpu.runData.io.direction === KVM_EXIT_IO_IN) vcpu.runData.io.data.fill(next() & 0xff, 0, 8);
    if (r === KVM_EXIT_MMIO && !vcpu.runData.mmio.isWrite) vcpu.runData.mmio.data.fill(next() & 0xff);
    if (r === KVM_EXIT_HLT || r === KVM_EXIT_SHUTDOWN || r === KVM_EXIT_INTERNAL_ERROR) break;
  }
  return seen;
}

describe('garbage guest code', () => {
  // 2 MiB of RAM below a hole: random pointers often land outside the slot (MMIO exits) and
  // random code often loads junk descriptors, IDTs and page tables.
  for (const mode of ['real', 'protected'] as const) {
    it(`never throws out of run() and only ends with KVM exit reasons (${mode} mode, 60 random programs)`, () => {
      for (let seed = 1; seed <= 60; seed++) {
        const next = rng(seed * 7919);
        const code = new Uint8Array(512);
        for (let i = 0; i < code.length; i++) code[i] = next() & 0xff;
        const g = flatGuest(code, 0x1000, { ramSize: 2 << 20, sp: 0x8000 });
        // Random IVT/IDT and stack contents too.
        for (let i = 0; i < 0x1000; i++) g.ram[i] = next() & 0xff;
        if (mode === 'protected') {
          const s = g.vcpu.getSregs();
          const flat = (sel: number, c: boolean) => ({ base: 0, limit: 0xffffffff, selector: sel, type: c ? 0xb : 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
          s.cs = flat(8, true); s.ds = flat(16, false); s.es = flat(16, false); s.ss = flat(16, false); s.fs = flat(16, false); s.gs = flat(16, false);
          s.cr0 = 0x11; s.idt = { base: 0, limit: 0x7ff }; s.gdt = { base: 0x800, limit: 0x7ff };
          g.vcpu.setSregs(s);
        }
        let seen: number[] = [];
        expect(() => { seen = drive(g.vcpu, next, 3); }, `seed ${seed}`).not.toThrow();
        for (const r of seen) expect(KNOWN_EXITS.has(r), `seed ${seed}: exit ${r}`).toBe(true);
        // An access outside guest memory would surface as undefined/NaN in a register.
        for (const [name, v] of Object.entries(g.vcpu.getRegs())) {
          expect(Number.isInteger(v) && v >= 0 && v < 2 ** 32, `seed ${seed}: ${name} = ${String(v)}`).toBe(true);
        }
        g.vcpu.close(); g.vm.close(); g.kvm.close();
      }
    });
  }
});
