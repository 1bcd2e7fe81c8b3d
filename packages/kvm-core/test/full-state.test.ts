import { describe, expect, it } from 'vitest';
import { KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_MMIO, Msr, type VcpuFd, type VmFd } from '../src/index.js';
import { Assembler, reg } from '../src/x86/asm/index.js';
import { PM_GUEST_LOAD, buildProtectedModeGuest } from './guests/protected-mode.js';
import { MEM as PAE_MEM, buildPaeGuest } from './guests/pae.js';
import { GUEST_LOAD } from './guests/pm-kit.js';
import { flatGuest } from './helpers.js';

const RAM = 8 << 20;

function makeVm(image: Uint8Array, at: number): { vm: VmFd; vcpu: VcpuFd; ram: Uint8Array } {
  return flatGuest(image, at, { ramSize: RAM });
}

/**
 * Everything KVM lets a VMM save about a vCPU. First, as with KVM, a run with immediate_exit
 * completes a port or MMIO access the vCPU exited for; otherwise the restored vCPU repeats it.
 */
function saveVcpu(vcpu: VcpuFd) {
  vcpu.runData.immediateExit = true;
  expect(vcpu.run()).toBe(KVM_EXIT_INTR);
  vcpu.runData.immediateExit = false;
  return {
    sregs: vcpu.getSregs(),
    regs: vcpu.getRegs(),
    fpu: vcpu.getFpu(),
    msrs: vcpu.getMsrs([Msr.TSC, Msr.APIC_BASE, Msr.SYSENTER_CS, Msr.SYSENTER_ESP, Msr.SYSENTER_EIP]),
    events: vcpu.getVcpuEvents(),
  };
}

function restoreVcpu(vcpu: VcpuFd, s: ReturnType<typeof saveVcpu>): void {
  vcpu.setSregs(s.sregs);
  vcpu.setRegs(s.regs);
  vcpu.setFpu(s.fpu);
  vcpu.setMsrs(s.msrs);
  vcpu.setVcpuEvents(s.events);
}

/** Runs until `stopAfter` port writes (or the end); returns the bytes written to COM1 and 0xF4. */
function runIo(vcpu: VcpuFd, stopAfter = Infinity): { out: number[]; done: boolean } {
  const out: number[] = [];
  for (let i = 0; i < 100_000; i++) {
    const r = vcpu.run();
    if (r === KVM_EXIT_IO) {
      const io = vcpu.runData.io;
      out.push(io.port === 0xf4 ? 0x100 | io.data[0]! : io.data[0]!);
      if (io.port === 0xf4) return { out, done: true };
      if (out.length >= stopAfter) return { out, done: false };
      continue;
    }
    if (r === KVM_EXIT_HLT) return { out, done: true };
    if (r === KVM_EXIT_MMIO) { // nothing is mapped there: reads see 0xFF bytes
      if (!vcpu.runData.mmio.isWrite) vcpu.runData.mmio.data.fill(0xff);
      continue;
    }
    if (r !== KVM_EXIT_INTR) throw new Error(`exit ${r}: ${vcpu.runData.internal.message}`);
  }
  throw new Error('runaway guest');
}

describe('saving and restoring a vCPU mid-run', () => {
  it('an x87 + integer computation continues in a fresh VM exactly as in the original', () => {
    // Prints a byte after each step of an x87 series; the FPU stack carries state across the save.
    const a = new Assembler({ bits: 16, origin: 0x1000 });
    a.raw([0xdb, 0xe3]); // fninit
    a.raw([0xd9, 0xe8]); // fld1
    a.mov(reg.ecx, 40);
    a.label('loop');
    a.raw([0xd9, 0xc0]); // fld st0
    a.raw([0xde, 0xc1]); // faddp: st0 = 2*st0
    a.raw([0xdd, 0x1e, 0x00, 0x30]); // fstp qword [0x3000]... keep a copy
    a.raw([0xdd, 0x06, 0x00, 0x30]); // fld qword [0x3000]
    a.raw([0xa0, 0x06, 0x30]); // mov al, [0x3006] (exponent byte of the double)
    a.raw([0xe6, 0x80]); // out 0x80, al
    a.dec(reg.ecx).jnz('loop');
    a.hlt();
    const image = a.bytes();

    const whole = makeVm(image, 0x1000);
    const reference = runIo(whole.vcpu).out;
    expect(reference.length).toBe(40);

    const first = makeVm(image, 0x1000);
    const head = runIo(first.vcpu, 17).out;
    const saved = saveVcpu(first.vcpu);
    const memory = first.ram.slice();

    const second = makeVm(new Uint8Array(0), 0);
    second.ram.set(memory);
    restoreVcpu(second.vcpu, saved);
    const tail = runIo(second.vcpu).out;
    expect([...head, ...tail]).toEqual(reference);
    expect(saved.fpu.ftw).not.toBe(0); // the FPU stack really was live at the save
  });

  it('the protected-mode guest saved after its first output line finishes in a fresh VM', () => {
    const first = makeVm(buildProtectedModeGuest(), PM_GUEST_LOAD);
    const head = runIo(first.vcpu, 1).out; // 'P': now in 32-bit protected mode
    expect(head).toEqual(['P'.charCodeAt(0)]);
    const saved = saveVcpu(first.vcpu);
    expect(saved.sregs.cr0 & 1).toBe(1);
    const second = makeVm(new Uint8Array(0), 0);
    second.ram.set(first.ram);
    restoreVcpu(second.vcpu, saved);
    const tail = runIo(second.vcpu).out;
    expect(tail).toEqual(['K'.charCodeAt(0), 0x100]); // 'K' then debug-exit 0: every check passed
  });

  it('the PAE guest saved once PAE paging is on finishes in a fresh VM (KVM_SET_SREGS reloads the PDPTEs)', () => {
    const first = makeVm(buildPaeGuest().bytes, GUEST_LOAD);
    const head = runIo(first.vcpu, 2).out; // 'P', then 'A': PAE paging is on
    expect(head).toEqual(['P'.charCodeAt(0), 'A'.charCodeAt(0)]);
    const saved = saveVcpu(first.vcpu);
    expect(saved.sregs.cr4 & 0x20).toBe(0x20);
    expect(saved.sregs.cr0 >>> 31).toBe(1);
    expect(saved.sregs.cr3).toBe(PAE_MEM.PDPT);
    const second = makeVm(new Uint8Array(0), 0);
    second.ram.set(first.ram);
    restoreVcpu(second.vcpu, saved);
    expect(second.vcpu.getSregs()).toEqual(saved.sregs);
    const tail = runIo(second.vcpu).out;
    expect(tail).toEqual(['K'.charCodeAt(0), 0x100]);
  });
});
