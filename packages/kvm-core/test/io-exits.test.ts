/**
 * Port I/O exits (KVM_EXIT_IO) for IN/OUT in all forms and sizes and for REP INS/OUTS,
 * KVM_EXIT_HLT, and `immediateExit`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, type KvmRunIo,
} from '../src/index.js';
import { F, closeGuests, createGuest, describeExit, lin, runExpect, runToHlt, type Guest } from './helpers.js';

afterEach(closeGuests);

interface IoExit { direction: number; port: number; size: number; count: number; data: number[] }
function ioExit(io: KvmRunIo): IoExit {
  return { direction: io.direction, port: io.port, size: io.size, count: io.count, data: [...io.data.subarray(0, io.size * io.count)] };
}
const out = (port: number, data: number[]): IoExit => ({ direction: KVM_EXIT_IO_OUT, port, size: data.length, count: 1, data });

/** Runs `g` until HLT, recording OUT exits and answering IN exits from `answers` (little-endian). */
function collect(g: Guest, answers: number[][] = []): { exits: IoExit[]; rips: number[] } {
  const exits: IoExit[] = [], rips: number[] = [];
  for (let i = 0; i < 100; i++) {
    const r = g.vcpu.run();
    if (r === KVM_EXIT_HLT) return { exits, rips };
    if (r !== KVM_EXIT_IO) throw new Error(`unexpected ${describeExit(g.run)}`);
    if (g.run.io.direction === KVM_EXIT_IO_IN) g.run.io.data.set(answers.shift() ?? []);
    exits.push(ioExit(g.run.io));
    rips.push(g.vcpu.getRegs().rip);
  }
  throw new Error('no HLT');
}

describe('OUT', () => {
  it('imm8 and DX forms with sizes 1, 2 and 4 give one exit each, little-endian, RIP at the instruction', () => {
    const g = createGuest({
      // out 0x80,al ; out 0x81,ax ; out 0x82,eax ; out dx,al ; out dx,ax ; out dx,eax ; hlt
      code: 'e6 80 e7 81 66 e7 82 ee ef 66 ef f4',
      regs: { rax: 0x44332211, rdx: 0x3f8 },
    });
    const { exits, rips } = collect(g);
    expect(exits).toEqual([
      out(0x80, [0x11]),
      out(0x81, [0x11, 0x22]),
      out(0x82, [0x11, 0x22, 0x33, 0x44]),
      out(0x3f8, [0x11]),
      out(0x3f8, [0x11, 0x22]),
      out(0x3f8, [0x11, 0x22, 0x33, 0x44]),
    ]);
    // Under KVM, RIP at an I/O exit still points at the instruction; run() completes it.
    expect(rips).toEqual([0x100, 0x102, 0x104, 0x107, 0x108, 0x109]);
    expect(g.vcpu.getRegs().rip).toBe(0x10c);
  });

  it('uses all 16 bits of DX and only the low byte of an imm8 port', () => {
    const g = createGuest({ code: 'ee e6 ff f4', regs: { rax: 0x7f, rdx: 0x1234ffff } });
    expect(collect(g).exits).toEqual([out(0xffff, [0x7f]), out(0xff, [0x7f])]);
  });

  it('completes exactly once: run() after the exit continues after the OUT', () => {
    const g = createGuest({ code: 'e6 10 40 e6 11 f4', regs: { rax: 1 } }); // out 0x10,al ; inc ax ; out 0x11,al ; hlt
    runExpect(g, KVM_EXIT_IO);
    expect(ioExit(g.run.io)).toEqual(out(0x10, [1]));
    runExpect(g, KVM_EXIT_IO);
    expect(ioExit(g.run.io)).toEqual(out(0x11, [2]));
    expect(runToHlt(g, 1).rax).toBe(2);
  });
});

describe('IN', () => {
  it('imm8 and DX forms: the VMM fills run.io.data and the register holds it after the next run()', () => {
    const g = createGuest({
      // in al,0x60 ; mov bx,ax ; in ax,0x61 ; mov cx,ax ; in eax,0x62 ; mov esi,eax ; in al,dx ; in ax,dx ; in eax,dx ; hlt
      code: 'e4 60 89 c3 e5 61 89 c1 66 e5 62 66 89 c6 ec ed 66 ed f4',
      regs: { rax: 0xaabbccdd, rdx: 0x71 },
    });
    const steps: [port: number, size: number, data: number[], eaxAfter: number][] = [
      [0x60, 1, [0x5a], 0xaabbcc5a], // IN AL keeps the rest of EAX
      [0x61, 2, [0x34, 0x12], 0xaabb1234], // IN AX keeps the upper half
      [0x62, 4, [0x78, 0x56, 0x34, 0x12], 0x12345678],
      [0x71, 1, [0xfe], 0x123456fe],
      [0x71, 2, [0xcd, 0xab], 0x1234abcd],
      [0x71, 4, [0x01, 0x02, 0x03, 0x04], 0x04030201],
    ];
    let r = g.vcpu.run();
    for (const [port, size, data, eaxAfter] of steps) {
      expect(r, describeExit(g.run)).toBe(KVM_EXIT_IO);
      expect(g.run.io.direction).toBe(KVM_EXIT_IO_IN);
      expect(g.run.io.port).toBe(port);
      expect(g.run.io.size).toBe(size);
      expect(g.run.io.count).toBe(1);
      // Nothing is committed before the VMM answers.
      expect(g.vcpu.getRegs().rax).not.toBe(eaxAfter);
      g.run.io.data.set(data);
      r = g.vcpu.run();
      expect(g.vcpu.getRegs().rax).toBe(eaxAfter);
    }
    expect(r).toBe(KVM_EXIT_HLT);
    const regs = g.vcpu.getRegs();
    expect(regs.rbx).toBe(0xcc5a);
    expect(regs.rcx).toBe(0x1234);
    expect(regs.rsi).toBe(0x12345678);
    expect(regs.rip).toBe(0x113);
  });

  it('IN AL,DX then OUT DX,AL round-trips the VMM value through the guest', () => {
    const g = createGuest({ code: 'ec 04 01 ee f4', regs: { rdx: 0x2f8 } }); // in al,dx ; add al,1 ; out dx,al ; hlt
    const { exits } = collect(g, [[0x41]]);
    expect(exits).toEqual([
      { direction: KVM_EXIT_IO_IN, port: 0x2f8, size: 1, count: 1, data: [0x41] },
      out(0x2f8, [0x42]),
    ]);
  });
});

describe('string I/O', () => {
  it('REP OUTSB exits once per byte with the right data while CX counts down', () => {
    const g = createGuest({ code: 'f3 6e f4', regs: { rcx: 3, rsi: 0x10, rdx: 0xe9 } });
    g.ram.set([0x61, 0x62, 0x63, 0x64], lin(0x2000, 0x10)); // "abcd" at DS:0x10
    const seen: [number[], number, number][] = [];
    for (let i = 0; i < 3; i++) {
      runExpect(g, KVM_EXIT_IO);
      const regs = g.vcpu.getRegs();
      expect(ioExit(g.run.io)).toMatchObject({ direction: KVM_EXIT_IO_OUT, port: 0xe9, size: 1, count: 1 });
      seen.push([[...g.run.io.data.subarray(0, 1)], regs.rcx, regs.rsi]);
      expect(regs.rip).toBe(0x100);
    }
    expect(seen).toEqual([[[0x61], 3, 0x10], [[0x62], 2, 0x11], [[0x63], 1, 0x12]]);
    const regs = runToHlt(g, 1);
    expect(regs.rcx).toBe(0);
    expect(regs.rsi).toBe(0x13);
    expect(regs.rip).toBe(0x103);
  });

  it('REP OUTSW sends words; with CX = 0 it does nothing', () => {
    const g = createGuest({ code: 'f3 6f f3 6f f4', regs: { rcx: 2, rsi: 0x20, rdx: 0x500 } });
    g.ram.set([0x01, 0x02, 0x03, 0x04], lin(0x2000, 0x20));
    const { exits } = collect(g);
    expect(exits).toEqual([out(0x500, [0x01, 0x02]), out(0x500, [0x03, 0x04])]);
    expect(g.vcpu.getRegs().rsi).toBe(0x24);
  });

  it('REP INSB stores each byte the VMM supplies at ES:DI', () => {
    const g = createGuest({ code: 'f3 6c f4', seg: { es: 0x5000 }, regs: { rcx: 4, rdi: 0x20, rdx: 0x60 } });
    const { exits } = collect(g, [[0xa0], [0xa1], [0xa2], [0xa3]]);
    expect(exits.map((e) => [e.direction, e.port, e.size, e.count])).toEqual(Array(4).fill([KVM_EXIT_IO_IN, 0x60, 1, 1]));
    expect([...g.ram.subarray(0x50020, 0x50025)]).toEqual([0xa0, 0xa1, 0xa2, 0xa3, 0]);
    const regs = g.vcpu.getRegs();
    expect(regs.rdi).toBe(0x24);
    expect(regs.rcx).toBe(0);
  });

  it('INSW with DF = 1 stores downwards', () => {
    const g = createGuest({ code: 'fd 6d 6d f4', seg: { es: 0x5000 }, regs: { rdi: 0x40, rdx: 0x60 } }); // std ; insw ; insw ; hlt
    collect(g, [[0x11, 0x22], [0x33, 0x44]]);
    expect([...g.ram.subarray(0x5003e, 0x50042)]).toEqual([0x33, 0x44, 0x11, 0x22]);
    expect(g.vcpu.getRegs().rdi).toBe(0x3c);
    expect(g.vcpu.getRegs().rflags & F.DF).toBe(F.DF);
  });
});

describe('HLT and immediateExit', () => {
  it('HLT exits with RIP after the HLT byte, and run() resumes after it', () => {
    const g = createGuest({ code: '90 90 f4 40 f4', regs: { rax: 0 } }); // nop ; nop ; hlt ; inc ax ; hlt
    expect(g.vcpu.run()).toBe(KVM_EXIT_HLT);
    expect(g.run.exitReason).toBe(KVM_EXIT_HLT);
    expect(g.vcpu.getRegs().rip).toBe(0x103);
    expect(g.vcpu.run()).toBe(KVM_EXIT_HLT);
    const regs = g.vcpu.getRegs();
    expect(regs.rip).toBe(0x105);
    expect(regs.rax).toBe(1);
  });

  it('immediateExit makes run() return KVM_EXIT_INTR without executing anything', () => {
    const g = createGuest({ code: 'c6 06 00 00 77 40 f4', regs: { rax: 5 } }); // mov byte [0],0x77 ; inc ax ; hlt
    const before = g.vcpu.getRegs();
    g.run.immediateExit = true;
    expect(g.vcpu.run()).toBe(KVM_EXIT_INTR);
    expect(g.run.exitReason).toBe(KVM_EXIT_INTR);
    expect(g.vcpu.run()).toBe(KVM_EXIT_INTR); // it stays set until the VMM clears it
    expect(g.vcpu.getRegs()).toEqual(before);
    expect(g.ram[0x20000]).toBe(0);
    g.run.immediateExit = false;
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(6);
    expect(g.ram[0x20000]).toBe(0x77);
  });

  it('an IN answered around an immediateExit run still completes with the VMM data', () => {
    const g = createGuest({ code: 'e4 60 f4' });
    runExpect(g, KVM_EXIT_IO);
    g.run.io.data[0] = 0x42;
    g.run.immediateExit = true;
    expect(g.vcpu.run()).toBe(KVM_EXIT_INTR);
    g.run.immediateExit = false;
    expect(runToHlt(g, 1).rax & 0xff).toBe(0x42);
  });

  it('a guest that never exits comes back with KVM_EXIT_INTR at the end of its time slice, and continues', () => {
    const g = createGuest({ code: '66 40 eb fc', regs: { rax: 0 } }); // l: inc eax ; jmp l
    expect(g.vcpu.run()).toBe(KVM_EXIT_INTR);
    const a = g.vcpu.getRegs().rax;
    expect(a).toBeGreaterThan(1000);
    expect(g.vcpu.run()).toBe(KVM_EXIT_INTR);
    expect(g.vcpu.getRegs().rax).toBeGreaterThan(a);
  });
});
