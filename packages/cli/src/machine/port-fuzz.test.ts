// A guest that writes nonsense to every device: random bytes, words and dwords to random ports
// and to the local APIC, I/O APIC and PCI hole, interleaved with reads. Whatever it does, the
// host process must not crash: the run ends with one of the machine's normal outcomes.
import { describe, expect, it } from 'vitest';
import { Assembler, dword, reg } from '@kvmts/kvm-core/asm';
import { PcMachine } from './pc.js';
import { PcRunLoop, type LoopOutcome } from './run-loop.js';

/** A small deterministic PRNG (mulberry32), so a failure can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ORIGIN = 0x1000;
const MMIO_TARGETS = [0xfee00000, 0xfec00000, 0xe0000000, 0xfebff000];

function fuzzGuest(seed: number, count: number): Uint8Array {
  const rnd = prng(seed);
  const a = new Assembler({ bits: 16, origin: ORIGIN });
  const { al, ax, eax, dx } = reg;
  for (let i = 0; i < count; i++) {
    const port = Math.floor(rnd() * 0x10000);
    const value = Math.floor(rnd() * 0x1_0000_0000) >>> 0;
    const kind = Math.floor(rnd() * 8);
    a.mov(dx, port);
    if (kind === 0) a.mov(al, value & 0xff).out(dx, al);
    else if (kind === 1) a.mov(ax, value & 0xffff).out(dx, ax);
    else if (kind === 2) a.mov(eax, value).out(dx, eax);
    else if (kind === 3) a.in(al, dx);
    else if (kind === 4) a.in(eax, dx);
    else {
      // MMIO through FS, based at one of the device windows (set by the test below).
      const off = Math.floor(rnd() * 0x400) & ~3;
      if (kind === 5) a.mov(eax, dword({ seg: reg.fs, disp: off }));
      else a.mov(dword({ seg: reg.fs, disp: off }), value | 0);
    }
    if (rnd() < 0.1) a.sti();
    if (rnd() < 0.05) a.cli();
  }
  a.cli().hlt();
  return a.bytes();
}

describe('a guest writing nonsense to the devices', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('never crashes the host (seed %i)', async (seed) => {
    for (const irqchip of ['kernel', 'userspace'] as const) {
      const m = new PcMachine({ memSize: 4 << 20, clockMode: 'instructions', startTime: 0, irqchip });
      try {
        m.vm.memory.write(ORIGIN, fuzzGuest(seed, 3000));
        const sregs = m.vcpu.getSregs();
        for (const s of [sregs.cs, sregs.ds, sregs.es, sregs.ss, sregs.gs]) { s.selector = 0; s.base = 0; }
        sregs.fs.selector = 0;
        sregs.fs.base = MMIO_TARGETS[seed % MMIO_TARGETS.length]!;
        m.vcpu.setSregs(sregs);
        const regs = m.vcpu.getRegs();
        regs.rip = ORIGIN; regs.rsp = 0x8000; regs.rflags = 2;
        m.vcpu.setRegs(regs);
        const loop = new PcRunLoop({
          vcpu: m.vcpu,
          io: m.ioBus,
          mmio: m.mmioBus,
          ...(m.pic ? { intc: m.pic } : {}),
          timers: m.vm.timers,
          clock: m.vm.clock,
          takeStop: () => m.takeStop(),
        });
        let outcome: LoopOutcome | undefined;
        for (let slice = 0; slice < 200 && outcome === undefined; slice++) {
          const r = loop.runSlice(50);
          if (r.kind === 'stop') outcome = r.outcome;
          else if (r.kind === 'wait') outcome = { kind: 'halted-forever', rip: 0 };
        }
        // Ending by a reset, power-off, halt or even a triple fault is the guest's business;
        // an internal error would mean the emulator broke on device input.
        expect(outcome, `seed ${seed}, ${irqchip}`).toBeDefined();
        expect(['reset', 'poweroff', 'halted', 'halted-forever', 'shutdown', 'debug-exit']).toContain(outcome!.kind);
      } finally {
        m.close();
      }
    }
  });
});
