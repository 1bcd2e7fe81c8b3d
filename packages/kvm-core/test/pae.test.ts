import { describe, expect, it } from 'vitest';
import { CpuidFeature, Kvm, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_SHUTDOWN, type KvmSegment } from '../src/index.js';
import { X86Cpu } from '../src/x86/cpu.js';
import { MEM, buildPaeGuest } from './guests/pae.js';
import { runGuest, u32 } from './guests/pm-kit.js';

describe('PAE paging (self-checking guest)', () => {
  for (const jit of [true, false]) {
    describe(`compiler ${jit ? 'on' : 'off'}`, () => {
      const g = buildPaeGuest();
      X86Cpu.JIT_ENABLED = jit;
      let r: ReturnType<typeof runGuest>;
      try {
        r = runGuest(g.bytes, { maxRuns: 10_000 });
      } finally {
        X86Cpu.JIT_ENABLED = true;
      }

      it('passes every check: 4 KiB/2 MiB pages, 0xC0000000, A/D, #PF incl. RSVD, PGE, INVLPG, cached PDPTEs, #GP, PAE off/on, ring 3', () => {
        expect(r.message).toBe('');
        // On a failure the guest exits with check * 16 + step (see guests/pae.ts).
        expect(`0x${(r.exitCode ?? -1).toString(16)}`).toBe('0x0');
        expect(r.serial).toBe('PAK');
        expect(r.sregs.cr4 & 0x20).toBe(0x20);
        expect(r.sregs.cr3).toBe(MEM.PDPT);
      });

      it('accesses to frames above 4 GiB left as MMIO exits at their full 36-bit addresses', () => {
        expect(r.mmio).toEqual([
          { addr: 0x1_0000_0000, len: 4, write: false, value: 0 },
          { addr: 0x1_0000_0008, len: 4, write: true, value: 0xabcd1234 },
          { addr: 0xf_ffe0_0010, len: 4, write: false, value: 0 },
        ]);
        // Physical 0 and 8 (what a 32-bit truncation would have hit) were not written.
        expect(u32(r.ram, 8)).not.toBe(0xabcd1234);
      });

      it('set A and D in the low dwords of the 64-bit entries only', () => {
        expect(u32(r.ram, MEM.PT_TEST + 4 * 8)).toBe(0x63); // the >4 GiB leaf: accessed, written
        expect(u32(r.ram, MEM.PT_TEST + 4 * 8 + 4)).toBe(1);
        expect(u32(r.ram, MEM.PD0 + 7 * 8)).toBe((0xffe00000 | 0xa3) >>> 0); // 2 MiB leaf, read only
        expect(u32(r.ram, MEM.PD0 + 7 * 8 + 4)).toBe(0xf);
        expect(u32(r.ram, MEM.PT_TEST + 8 * 8)).toBe(0x38007); // reserved-bit leaf: the faults set nothing
      });
    });
  }
});

/** A vCPU put straight into flat 32-bit protected mode with PAE paging by KVM_SET_SREGS. */
function paeVm(setup: (dv: DataView) => void, code: number[], cr3 = 0x10000) {
  const RAM = 4 << 20;
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const buf = new ArrayBuffer(RAM);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: RAM, userspaceAddr: buf });
  const dv = new DataView(buf);
  setup(dv);
  new Uint8Array(buf).set(code, 0x1000);
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregs();
  const flat = (sel: number, c: boolean): KvmSegment => ({ base: 0, limit: 0xffffffff, selector: sel, type: c ? 0xb : 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  s.cs = flat(8, true); s.ds = flat(16, false); s.es = flat(16, false); s.ss = flat(16, false); s.fs = flat(16, false); s.gs = flat(16, false);
  s.cr0 = 0x80000011; s.cr3 = cr3; s.cr4 = 0x20;
  vcpu.setSregs(s);
  const regs = vcpu.getRegs(); regs.rip = 0x1000; regs.rsp = 0x8000; regs.rflags = 2; vcpu.setRegs(regs);
  const run = (): number => {
    let e: number;
    do e = vcpu.run(); while (e === KVM_EXIT_INTR);
    return e;
  };
  return { kvm, vm, vcpu, dv, ram: new Uint8Array(buf), run };
}

/** PDPT at 0x10000 -> PD at 0x11000, whose entry 0 is a 2 MiB identity page. */
function identityTables(dv: DataView): void {
  dv.setUint32(0x10000, 0x11001, true);
  dv.setUint32(0x11000, 0x83, true);
}

describe('PAE paging through the KVM interface', () => {
  it('CPUID (supported and default) announces PAE', () => {
    const kvm = new Kvm();
    const leaf1 = kvm.getSupportedCpuid().find((e) => e.function === 1)!;
    expect(leaf1.edx & CpuidFeature.PAE).toBe(CpuidFeature.PAE);
    const vcpu = kvm.createVm().createVcpu(0);
    expect(vcpu.getCpuid2().find((e) => e.function === 1)!.edx & CpuidFeature.PAE).toBe(CpuidFeature.PAE);
    // No leaf 0x80000008: MAXPHYADDR is 36, as the SDM says for a PAE CPU without it.
    expect(kvm.getSupportedCpuid().some((e) => e.function === 0x80000008)).toBe(false);
  });

  it('KVM_SET_SREGS with PAE paging loads the PDPTEs from memory; KVM_GET_SREGS gives CR4.PAE back', () => {
    const g = paeVm(identityTables, [
      0xa1, 0x00, 0x30, 0x00, 0x00, //   mov eax, [0x3000]
      0xa3, 0x04, 0x30, 0x00, 0x00, //   mov [0x3004], eax
      0xf4, //                            hlt
    ]);
    g.dv.setUint32(0x3000, 0x5eed5eed, true);
    expect(g.run()).toBe(KVM_EXIT_HLT);
    expect(g.dv.getUint32(0x3004, true)).toBe(0x5eed5eed);
    const s = g.vcpu.getSregs();
    expect(s.cr4).toBe(0x20);
    expect(s.cr0 >>> 0).toBe(0x80000011);
    expect(g.dv.getUint32(0x11000, true)).toBe(0xe3); // A and D set by the walk
  });

  it('KVM_SET_SREGS with a bad PDPT leaves the PDPTEs not present (the guest faults; nothing crashes)', () => {
    const g = paeVm((dv) => {
      identityTables(dv);
      dv.setUint32(0x10000, 0x11003, true); // bit 1 is reserved in a PDPTE
    }, [0xf4]);
    expect(g.run()).toBe(KVM_EXIT_SHUTDOWN); // #PF on the fetch, no IDT: triple fault
  });

  it('page tables above 4 GiB stop the vCPU with an internal error and nothing outside RAM is touched', () => {
    for (const where of ['pd', 'pt'] as const) {
      const g = paeVm((dv) => {
        identityTables(dv);
        if (where === 'pd') dv.setUint32(0x10008, 0x00001001, true), dv.setUint32(0x1000c, 1, true); // PDPTE 1 -> PD at 0x1_0000_1000
        else dv.setUint32(0x11008, 0x00002007, true), dv.setUint32(0x1100c, 1, true); // PDE 1 -> PT at 0x1_0000_2000
      }, [
        0xa1, 0x00, 0x00, where === 'pd' ? 0x00 : 0x20, where === 'pd' ? 0x40 : 0x00, // mov eax, [0x40000000] / [0x200000]
        0xf4,
      ]);
      const before = g.ram.slice();
      expect(g.run()).toBe(KVM_EXIT_INTERNAL_ERROR);
      expect(g.vcpu.runData.internal.message).toContain(`page table at unbacked physical address 0x${where === 'pd' ? '100001000' : '100002000'}`);
      const after = g.ram;
      // Only the A/D bits of the code page's 2 MiB PDE (set by the fetch) may differ.
      after[0x11000] = before[0x11000]!;
      expect(Buffer.compare(after, before)).toBe(0);
      g.vcpu.close(); g.vm.close(); g.kvm.close();
    }
  });
});
