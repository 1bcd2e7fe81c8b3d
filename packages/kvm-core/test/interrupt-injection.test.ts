import { describe, expect, it } from 'vitest';
import {
  Kvm, KvmError, KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IRQ_WINDOW_OPEN, Msr,
  type VcpuFd, type VmFd,
} from '../src/index.js';
import { Assembler, reg, word } from '../src/x86/asm/index.js';
import { flatGuest } from './helpers.js';

const ORIGIN = 0x1000;
const { ax } = reg;

/** A real-mode guest at 0000:1000 with the IVT at 0 and a stack below 0x8000. */
function guest(build: (a: Assembler) => void): { vm: VmFd; vcpu: VcpuFd; ram: Uint8Array } {
  const a = new Assembler({ bits: 16, origin: ORIGIN });
  build(a);
  return flatGuest(a.bytes(), ORIGIN, { ramSize: 1 << 20, sp: 0x8000 });
}

/** Installs IVT entry `vector` -> 0000:label address (patched after assembly). */
function setVector(ram: Uint8Array, vector: number, ip: number): void {
  ram[vector * 4] = ip & 0xff; ram[vector * 4 + 1] = ip >> 8; ram[vector * 4 + 2] = 0; ram[vector * 4 + 3] = 0;
}

function runUntil(vcpu: VcpuFd, want: number): void {
  for (let i = 0; i < 50; i++) {
    const r = vcpu.run();
    if (r === want) return;
    if (r !== KVM_EXIT_INTR) throw new Error(`exit ${r} while waiting for ${want}: ${vcpu.runData.internal.message}`);
  }
  throw new Error(`no exit ${want}`);
}

const COUNTER = 0x500;

/** sti; loop: hlt; jmp loop — with an ISR at `isr` that increments [COUNTER] and IRETs. */
function haltLoopGuest() {
  let isr = 0;
  const g = guest((a) => {
    a.sti();
    a.label('loop').hlt().jmp('loop');
    a.label('isr').inc(word({ disp: COUNTER })).iret();
    isr = 0;
  });
  // The ISR is 3 bytes after the loop: sti (1) + hlt (1) + jmp short (2) = offset 4.
  isr = ORIGIN + 4;
  setVector(g.ram, 0x20, isr);
  return g;
}

describe('interrupt injection (KVM_INTERRUPT)', () => {
  it('delivers a queued vector at the next run when IF=1, through the IVT, and resumes after HLT', () => {
    const { vcpu, ram } = haltLoopGuest();
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(vcpu.runData.readyForInterruptInjection).toBe(true);
    expect(vcpu.getRegs().rip).toBe(ORIGIN + 2);
    for (let n = 1; n <= 3; n++) {
      vcpu.interrupt(0x20);
      runUntil(vcpu, KVM_EXIT_HLT);
      expect(ram[COUNTER]).toBe(n);
    }
    // The ISR returned to the instruction after HLT: the loop's JMP, then HLT again.
    expect(vcpu.getRegs().rip).toBe(ORIGIN + 2);
    expect(vcpu.getRegs().rsp).toBe(0x8000);
  });

  it('keeps the vector pending while IF=0 and refuses a second one (EEXIST)', () => {
    const { vcpu, ram } = guest((a) => {
      a.cli().mov(ax, 1).hlt(); // HLT with IF=0
      a.sti().nop().hlt();
      a.label('isr').inc(word({ disp: COUNTER })).iret();
    });
    setVector(ram, 0x21, ORIGIN + 8);
    vcpu.interrupt(0x21);
    expect(() => vcpu.interrupt(0x22)).toThrow(KvmError);
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(ram[COUNTER]).toBe(0); // still masked
    expect(vcpu.getVcpuEvents().interrupt).toMatchObject({ injected: 1, nr: 0x21 });
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(ram[COUNTER]).toBe(1); // taken after STI's shadow (the NOP)
    expect(vcpu.getVcpuEvents().interrupt.injected).toBe(0);
  });

  it('exits with KVM_EXIT_IRQ_WINDOW_OPEN one instruction after STI when the window is requested', () => {
    const { vcpu } = guest((a) => {
      a.cli().mov(ax, 5).sti().mov(ax, 6).mov(ax, 7).hlt();
    });
    vcpu.runData.requestInterruptWindow = true;
    runUntil(vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
    // cli(1) mov(3) sti(1) mov(3): the shadow covers the first MOV after STI.
    expect(vcpu.getRegs().rip).toBe(ORIGIN + 8);
    expect(vcpu.getRegs().rax & 0xffff).toBe(6);
    expect(vcpu.runData.readyForInterruptInjection).toBe(true);
    vcpu.runData.requestInterruptWindow = false;
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(vcpu.getRegs().rax & 0xffff).toBe(7);
  });

  it('delivers an NMI with IF=0 and blocks further NMIs until IRET', () => {
    const { vcpu, ram } = guest((a) => {
      a.cli();
      a.label('loop').hlt().jmp('loop');
      // NMI handler: count, then halt inside the handler once so the test can inject another NMI.
      a.label('nmi').inc(word({ disp: COUNTER })).hlt().iret();
    });
    setVector(ram, 2, ORIGIN + 4);
    runUntil(vcpu, KVM_EXIT_HLT);
    vcpu.nmi();
    runUntil(vcpu, KVM_EXIT_HLT); // halted inside the handler
    expect(ram[COUNTER]).toBe(1);
    expect(vcpu.getVcpuEvents().nmi.masked).toBe(1);
    vcpu.nmi(); // blocked: stays pending until the handler's IRET
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(ram[COUNTER]).toBe(2);
  });

  it('carries a pending interrupt and the interrupt shadow through KVM_GET/SET_VCPU_EVENTS', () => {
    const a = haltLoopGuest();
    runUntil(a.vcpu, KVM_EXIT_HLT);
    a.vcpu.interrupt(0x20);
    const events = a.vcpu.getVcpuEvents();
    const b = haltLoopGuest();
    runUntil(b.vcpu, KVM_EXIT_HLT);
    b.vcpu.setVcpuEvents(events);
    runUntil(b.vcpu, KVM_EXIT_HLT);
    expect(b.ram[COUNTER]).toBe(1);
    expect(a.ram[COUNTER]).toBe(0);
  });
});

describe('MSRs and CPUID', () => {
  it('round-trips the SYSENTER MSRs and the TSC, and stops at an unknown MSR', () => {
    const { vcpu } = guest((a) => a.hlt());
    expect(vcpu.setMsrs([
      { index: Msr.SYSENTER_CS, data: 0x10 }, { index: Msr.SYSENTER_ESP, data: 0xc0001000 },
      { index: Msr.SYSENTER_EIP, data: 0xc0100000 }, { index: 0x12345, data: 1 }, { index: Msr.TSC, data: 5 },
    ])).toBe(3);
    expect(vcpu.getMsrs([Msr.SYSENTER_CS, Msr.SYSENTER_ESP, Msr.SYSENTER_EIP])).toEqual([
      { index: Msr.SYSENTER_CS, data: 0x10 }, { index: Msr.SYSENTER_ESP, data: 0xc0001000 }, { index: Msr.SYSENTER_EIP, data: 0xc0100000 },
    ]);
    vcpu.setMsrs([{ index: Msr.TSC, data: 2 ** 40 }]);
    const tsc = vcpu.getMsrs([Msr.TSC])[0]!.data;
    expect(tsc).toBeGreaterThanOrEqual(2 ** 40);
    expect(tsc).toBeLessThan(2 ** 40 + 1e9); // the host clock runs on between the two calls
  });

  it('the TSC follows the instruction clock exactly: 1 GHz, one instruction per ns', () => {
    const { vm, vcpu } = guest((a) => {
      a.raw([0x0f, 0x31]); // rdtsc
      a.nop().nop().nop();
      a.raw([0x66, 0x89, 0xc3]); // mov ebx, eax
      a.raw([0x0f, 0x31]); // rdtsc
      a.hlt();
    });
    vm.setClockMode('instructions');
    vcpu.setMsrs([{ index: Msr.TSC, data: 1000 }]);
    runUntil(vcpu, KVM_EXIT_HLT);
    const r = vcpu.getRegs();
    expect(r.rbx).toBe(1000); // first RDTSC: no instruction had retired yet
    expect(r.rax).toBe(1005); // RDTSC + 3 NOPs + MOV retired before the second RDTSC
    expect(vm.getClock()).toBe(7); // 7 instructions, 1 ns each (TSC offset not included)
  });

  it('RDMSR/WRMSR/RDTSC/CPUID from the guest, and KVM_SET_CPUID2 changes what CPUID returns', () => {
    const { vcpu, ram } = guest((a) => {
      a.raw([0x66, 0x31, 0xc0]); // xor eax, eax
      a.raw([0x0f, 0xa2]); // cpuid
      a.raw([0x66, 0x89, 0x1e, 0x00, 0x06]); // mov [0x600], ebx
      a.raw([0x66, 0x89, 0x16, 0x04, 0x06]); // mov [0x604], edx
      a.raw([0x66, 0x89, 0x0e, 0x08, 0x06]); // mov [0x608], ecx
      a.raw([0x66, 0xb8, 0x01, 0x00, 0x00, 0x00]); // mov eax, 1
      a.raw([0x0f, 0xa2]); // cpuid
      a.raw([0x66, 0x89, 0x16, 0x0c, 0x06]); // mov [0x60c], edx (features)
      a.raw([0x66, 0xb9, 0x74, 0x01, 0x00, 0x00]); // mov ecx, 0x174 (SYSENTER_CS)
      a.raw([0x66, 0xb8, 0x08, 0x00, 0x00, 0x00]); // mov eax, 8
      a.raw([0x66, 0x31, 0xd2]); // xor edx, edx
      a.raw([0x0f, 0x30]); // wrmsr
      a.raw([0x0f, 0x31]); // rdtsc
      a.hlt();
    });
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(new TextDecoder().decode(ram.subarray(0x600, 0x60c))).toBe('GenuineIntel');
    const features = ram[0x60c]! | (ram[0x60d]! << 8) | (ram[0x60e]! << 16) | (ram[0x60f]! << 24);
    const TSC = 1 << 4, CX8 = 1 << 8, SEP = 1 << 11, PGE = 1 << 13, CMOV = 1 << 15, PAE = 1 << 6, APIC = 1 << 9, MTRR = 1 << 12;
    expect(features & (TSC | CX8 | SEP | PGE | CMOV | PAE)).toBe(TSC | CX8 | SEP | PGE | CMOV | PAE);
    expect(features & (APIC | MTRR)).toBe(0); // not implemented (no local APIC in this VM), so not advertised
    expect(vcpu.getMsrs([Msr.SYSENTER_CS])[0]!.data).toBe(8);
    expect(vcpu.getRegs().rax).toBeGreaterThan(10); // RDTSC counts retired instructions

    const mine = vcpu.getCpuid2().map((e) => (e.function === 0 ? { ...e, ebx: 0x61626364 } : e));
    vcpu.setCpuid2(mine);
    const regs = vcpu.getRegs();
    regs.rip = ORIGIN;
    vcpu.setRegs(regs);
    runUntil(vcpu, KVM_EXIT_HLT);
    expect(new TextDecoder().decode(ram.subarray(0x600, 0x604))).toBe('dcba');
  });

  it('reports supported CPUID and the MSR index list at the system level', () => {
    const kvm = new Kvm();
    const leaves = kvm.getSupportedCpuid();
    expect(leaves.find((e) => e.function === 1)?.eax).toBe(0x633);
    expect(kvm.getMsrIndexList()).toEqual(expect.arrayContaining([Msr.TSC, Msr.SYSENTER_CS, Msr.SYSENTER_ESP, Msr.SYSENTER_EIP]));
    void KVM_EXIT_IO;
  });
});
