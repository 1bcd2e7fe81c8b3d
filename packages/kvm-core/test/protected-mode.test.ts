import { describe, expect, it } from 'vitest';
import { Kvm, KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_OUT } from '../src/index.js';
import { PM_GUEST_LOAD, buildProtectedModeGuest } from './guests/protected-mode.js';

/** Boots a flat image at 0000:7C00 in real mode and collects COM1 output and the debug-exit code. */
function runBootSector(image: Uint8Array): { serial: string; exitCode: number | undefined; message: string } {
  const vm = new Kvm().createVm();
  const ram = new ArrayBuffer(8 << 20);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: ram.byteLength, userspaceAddr: ram });
  new Uint8Array(ram).set(image, PM_GUEST_LOAD);
  const vcpu = vm.createVcpu(0);
  const sregs = vcpu.getSregs();
  for (const s of [sregs.cs, sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs]) { s.selector = 0; s.base = 0; }
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.rip = PM_GUEST_LOAD;
  vcpu.setRegs(regs);
  let serial = '';
  for (let i = 0; i < 10_000; i++) {
    const r = vcpu.run();
    const io = vcpu.runData.io;
    if (r === KVM_EXIT_IO && io.direction === KVM_EXIT_IO_OUT) {
      if (io.port === 0x3f8) serial += String.fromCharCode(io.data[0]!);
      if (io.port === 0xf4) return { serial, exitCode: io.data[0]!, message: '' };
      continue;
    }
    if (r === KVM_EXIT_INTR) continue;
    if (r === KVM_EXIT_HLT) return { serial, exitCode: undefined, message: 'halted' };
    return { serial, exitCode: undefined, message: `exit ${r}: ${vcpu.runData.internal.message}` };
  }
  return { serial, exitCode: undefined, message: 'ran too long' };
}

describe('protected mode and paging (self-checking guest)', () => {
  it('passes every check: far jump to 32-bit, #PF fix-up, PSE, ring 3, INT 0x80, user #PF, A/D bits', () => {
    const result = runBootSector(buildProtectedModeGuest());
    expect(result.message).toBe('');
    expect(result.serial).toBe('PK');
    expect(result.exitCode).toBe(0);
  });
});
