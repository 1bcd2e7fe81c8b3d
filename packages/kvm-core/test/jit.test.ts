import { afterEach, describe, expect, it } from 'vitest';
import { KVM_EXIT_HLT, KVM_EXIT_INTR, type KvmRegs, type VcpuFd, type VmFd } from '../src/index.js';
import { X86Cpu } from '../src/x86/cpu.js';
import { Assembler, dword, reg } from '../src/x86/asm/index.js';
import { PM_GUEST_LOAD, buildProtectedModeGuest } from './guests/protected-mode.js';
import { flatGuest } from './helpers.js';

const ORIGIN = 0x1000;
const { eax, ebx, ecx, edx } = reg;

function guest(code: Uint8Array, origin = ORIGIN): { vm: VmFd; vcpu: VcpuFd; ram: Uint8Array } {
  return flatGuest(code, origin, { sp: 0x8000 });
}

function runToHlt(vcpu: VcpuFd): void {
  for (let i = 0; i < 1000; i++) {
    const r = vcpu.run();
    if (r === KVM_EXIT_HLT) return;
    if (r !== KVM_EXIT_INTR) throw new Error(`exit ${r}: ${vcpu.runData.internal.message}`);
  }
  throw new Error('no HLT');
}

afterEach(() => { X86Cpu.JIT_ENABLED = true; });

describe('block compiler', () => {
  it('compiles hot code and gives the same results as the interpreter (differential)', () => {
    const results: KvmRegs[] = [];
    for (const jit of [true, false]) {
      X86Cpu.JIT_ENABLED = jit;
      const a = new Assembler({ bits: 16, origin: ORIGIN });
      // A mix of compiled forms: ALU, shifts, memory, push/pop, call/ret, setcc, cmov, movzx.
      a.xor(eax, eax).mov(ecx, 5000).mov(edx, 0x12345678);
      a.label('top');
      a.add(eax, ecx).xor(edx, eax).shl(edx, 3).rol(edx, 5).sub(edx, ecx);
      a.mov(dword({ disp: 0x3000 }), edx).add(eax, dword({ disp: 0x3000 }));
      a.push(eax).call('f').pop(ebx);
      a.raw([0x0f, 0x9c, 0xc7]); // setl bh
      a.raw([0x66, 0x0f, 0x4f, 0xc2]); // cmovg eax, edx
      a.raw([0x66, 0x0f, 0xb6, 0xd8]); // movzx ebx, al
      a.raw([0x66, 0x0f, 0xaf, 0xd8]); // imul ebx, eax
      a.raw([0x66, 0x6b, 0xdb, 0xf9]); // imul ebx, ebx, -7
      a.raw([0x6a, 0xfe, 0x5e]); // push -2; pop si
      a.raw([0x66, 0x68, 0x78, 0x56, 0x34, 0x12, 0x66, 0x5f]); // push 0x12345678; pop edi
      a.dec(ecx).jnz('top');
      a.hlt();
      a.label('f').inc(eax).ret();
      const g = guest(a.bytes());
      runToHlt(g.vcpu);
      results.push(g.vcpu.getRegs());
    }
    expect(results[0]).toEqual(results[1]);
  });

  it('compiled code does not depend on the decode state the interpreter left behind', () => {
    // MOVSB is interpreted (16-bit operand size); the block after it, with a 32-bit IMUL, is
    // compiled. Regression: the compiled IMUL once read the interpreter's operand size.
    const results: number[] = [];
    for (const jit of [true, false]) {
      X86Cpu.JIT_ENABLED = jit;
      const a = new Assembler({ bits: 16, origin: ORIGIN });
      a.mov(ecx, 100).xor(reg.si, reg.si).mov(reg.di, 0x4000);
      a.label('top');
      a.raw([0xa4]); // movsb
      a.mov(eax, 0x12345).mov(edx, 0x10001);
      a.raw([0x66, 0x0f, 0xaf, 0xc2]); // imul eax, edx
      a.dec(ecx).jnz('top');
      a.hlt();
      const g = guest(a.bytes());
      runToHlt(g.vcpu);
      results.push(g.vcpu.getRegs().rax);
    }
    expect(results).toEqual([0x23462345, 0x23462345]);
  });

  it('the protected-mode guest passes with and without the compiler', () => {
    for (const jit of [true, false]) {
      X86Cpu.JIT_ENABLED = jit;
      const g = guest(buildProtectedModeGuest(), PM_GUEST_LOAD);
      let serial = '', code = -1;
      for (let i = 0; i < 10_000 && code < 0; i++) {
        const r = g.vcpu.run();
        const io = g.vcpu.runData.io;
        if (r === 2 && io.port === 0x3f8) serial += String.fromCharCode(io.data[0]!);
        else if (r === 2 && io.port === 0xf4) code = io.data[0]!;
        else if (r !== 2 && r !== KVM_EXIT_INTR) throw new Error(`exit ${r}: ${g.vcpu.runData.internal.message}`);
      }
      expect([jit, serial, code]).toEqual([jit, 'PK', 0]);
    }
  });

  it('self-modifying code: a guest write to a compiled block takes effect at once', () => {
    // At iteration 500 the guest rewrites the ADD's immediate from 0x11111111 to 1.
    const a = new Assembler({ bits: 16, origin: ORIGIN });
    a.xor(ebx, ebx).mov(ecx, 1000);
    a.label('loop');
    a.raw([0x66, 0x81, 0xc3]).label('imm').dd(0x11111111); // add ebx, imm32
    a.cmp(ecx, 500).jne('skip');
    a.mov(dword({ disp: 'imm' }), 1); // patch the immediate
    a.label('skip');
    a.dec(ecx).jnz('loop');
    a.hlt();
    const g = guest(a.bytes());
    runToHlt(g.vcpu);
    // Iterations with ECX = 1000..500 (501 of them) add 0x11111111; ECX = 499..1 add 1.
    expect(g.vcpu.getRegs().rbx).toBe(((501 * 0x11111111) + 499) % 2 ** 32);
  });

  it('device DMA through VmFd.memory into compiled code invalidates it', () => {
    const a = new Assembler({ bits: 16, origin: ORIGIN });
    a.label('again');
    a.raw([0x66, 0x81, 0xc3]).label('imm').dd(1); // add ebx, imm32
    a.dec(ecx).jnz('again');
    a.hlt();
    const bytes = a.bytes();
    const g = guest(bytes);
    const setEcx = (n: number) => { const r = g.vcpu.getRegs(); r.rcx = n; r.rip = ORIGIN; g.vcpu.setRegs(r); };
    setEcx(100);
    runToHlt(g.vcpu); // hot: compiled
    expect(g.vcpu.getRegs().rbx).toBe(100);
    g.vm.memory.writeU32(ORIGIN + 3, 1000); // the VMM patches the immediate
    setEcx(100);
    runToHlt(g.vcpu);
    expect(g.vcpu.getRegs().rbx).toBe(100 + 100 * 1000);
    // A direct write into the slot's buffer between runs (allowed, as with KVM) is seen too.
    g.ram[ORIGIN + 3] = 7; g.ram[ORIGIN + 4] = 0; g.ram[ORIGIN + 5] = 0; g.ram[ORIGIN + 6] = 0;
    setEcx(10);
    runToHlt(g.vcpu);
    expect(g.vcpu.getRegs().rbx).toBe(100 + 100 * 1000 + 70);
  });
});
