import { describe, expect, it } from 'vitest';
import { Kvm, KVM_EXIT_HLT, KVM_EXIT_INTR } from '../src/index.js';
import { X86Cpu } from '../src/x86/cpu.js';

/**
 * Linux i386's switch to paging (head_32.S): page tables map the kernel both at its physical
 * address and at PAGE_OFFSET (0xC0000000 + phys); after MOV CR0 the code far-jumps to its
 * virtual address and keeps running there. Linear addresses above 2 GiB that map low
 * physical memory exercise every wrap-around in the TLB and the fetch path.
 */
function bootStyleGuest(loopIterations: number) {
  const RAM = 32 << 20;
  const vm = new Kvm().createVm();
  const buf = new ArrayBuffer(RAM);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: RAM, userspaceAddr: buf });
  const dv = new DataView(buf);
  const PD = 0x10000, PT_LOW = 0x11000, PT_KERNEL = 0x12000;
  for (let i = 0; i < 1024; i++) {
    dv.setUint32(PT_LOW + i * 4, (i << 12) | 3, true);
    dv.setUint32(PT_KERNEL + i * 4, (0x1000000 + (i << 12)) | 3, true);
  }
  dv.setUint32(PD, PT_LOW | 3, true); // identity: the first 4 MiB (the GDT lives there)
  dv.setUint32(PD + 4 * 4, PT_KERNEL | 3, true); // identity: 0x01000000
  dv.setUint32(PD + 0x304 * 4, PT_KERNEL | 3, true); // virtual: 0xC1000000
  dv.setUint32(0x6010, 0x0000ffff, true); dv.setUint32(0x6014, 0x00cf9b00, true); // 0x10 code
  dv.setUint32(0x6018, 0x0000ffff, true); dv.setUint32(0x601c, 0x00cf9300, true); // 0x18 data
  const code = [
    0xb8, 0x00, 0x00, 0x01, 0x00, // mov eax, PD
    0x0f, 0x22, 0xd8, //            mov cr3, eax
    0xb8, 0x33, 0x00, 0x05, 0x80, // mov eax, 0x80050033 (PG|WP|NE|ET|MP|PE)
    0x0f, 0x22, 0xc0, //            mov cr0, eax
    0xea, 0x38, 0x01, 0x00, 0xc1, 0x10, 0x00, // ljmp 0x10:0xc1000138
  ];
  const at = 0x1000138 - code.length;
  const ram = new Uint8Array(buf);
  ram.set(code, at);
  ram.set([
    0x81, 0xc4, 0x00, 0x00, 0x00, 0xc0, // add esp, 0xc0000000 (the stack moves to its virtual address)
    0xb9, ...[loopIterations & 0xff, (loopIterations >> 8) & 0xff, 0, 0], // mov ecx, n
    0x01, 0xc8, //                        loop: add eax, ecx
    0x89, 0x04, 0x24, //                  mov [esp], eax
    0x49, //                              dec ecx
    0x75, 0xf8, //                        jnz loop
    0xf4, //                              hlt
  ], 0x1000138);
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregs();
  const flat = (sel: number, c: boolean) => ({ base: 0, limit: 0xffffffff, selector: sel, type: c ? 0xb : 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  s.cs = flat(0x10, true); s.ds = flat(0x18, false); s.es = flat(0x18, false); s.ss = flat(0x18, false); s.fs = flat(0x18, false); s.gs = flat(0x18, false);
  s.gdt = { base: 0x6000, limit: 0x1f }; s.cr0 = 0x11;
  vcpu.setSregs(s);
  const r = vcpu.getRegs(); r.rip = at; r.rsp = 0x1100000; r.rax = 0; vcpu.setRegs(r);
  return { vcpu, dv };
}

describe('code running at kernel virtual addresses (PAGE_OFFSET mapping)', () => {
  for (const jit of [true, false]) {
    it(`switches to paging, jumps to 0xC1000138 and runs a hot loop there (compiler ${jit ? 'on' : 'off'})`, () => {
      X86Cpu.JIT_ENABLED = jit;
      try {
        const { vcpu, dv } = bootStyleGuest(1000);
        let r: number;
        do r = vcpu.run(); while (r === KVM_EXIT_INTR);
        expect(r).toBe(KVM_EXIT_HLT);
        const regs = vcpu.getRegs();
        expect(regs.rip).toBe(0xc100014c);
        expect(regs.rsp).toBe(0xc1100000);
        // EAX still holds the CR0 value, plus 1000 + 999 + … + 1.
        expect(regs.rax).toBe(0x80050033 + 500500);
        expect(dv.getUint32(0x1100000, true)).toBe(0x80050033 + 500500); // stored through the virtual stack address
      } finally {
        X86Cpu.JIT_ENABLED = true;
      }
    });
  }
});
