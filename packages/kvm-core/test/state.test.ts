/**
 * vCPU state through KVM_GET/SET_REGS and KVM_GET/SET_SREGS: field-by-field round trips, and
 * a save in the middle of a run restored into a fresh VM that then behaves identically.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  Kvm, KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
  emptyRegs, type KvmRegs, type KvmSegment, type KvmSregs,
} from '../src/index.js';
import { F, closeGuests, createGuest, describeExit, type Guest } from './helpers.js';

afterEach(closeGuests);

describe('KVM_SET_REGS / KVM_GET_REGS', () => {
  it('round-trip every general register, RIP and RFLAGS', () => {
    const g = createGuest();
    const regs: KvmRegs = {
      ...emptyRegs(),
      rax: 0x11223344, rbx: 0x55667788, rcx: 0x99aabbcc, rdx: 0xddeeff00,
      rsi: 0x01234567, rdi: 0x89abcdef, rsp: 0xfedcba98, rbp: 0x76543210,
      rip: 0x0000beef,
      // CF PF AF ZF SF TF IF DF OF, IOPL=3, NT, AC, ID
      rflags: 0x2 | 0x0fd5 | 0x3000 | 0x4000 | 0x40000 | 0x200000,
    };
    g.vcpu.setRegs(regs);
    expect(g.vcpu.getRegs()).toEqual(regs);
  });

  it('read r8–r15 as 0, force RFLAGS bit 1 on and the reserved bits 3, 5, 15 off, and keep 32 bits of each register', () => {
    const g = createGuest();
    g.vcpu.setRegs({
      ...emptyRegs(),
      r8: 1, r9: 2, r10: 3, r11: 4, r12: 5, r13: 6, r14: 7, r15: 8,
      rax: 0x1_2345_6789, rip: 0x100, rflags: 0x8028 | F.CF,
    });
    const out = g.vcpu.getRegs();
    expect([out.r8, out.r9, out.r10, out.r11, out.r12, out.r13, out.r14, out.r15]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(out.rflags).toBe(0x2 | F.CF);
    expect(out.rax).toBe(0x23456789);
  });

  it('RFLAGS reflects the flags of the last instruction (computed, not stale)', () => {
    const g = createGuest({ code: '04 01 f4', regs: { rax: 0xff, rflags: 0x2 | F.OF | F.SF } }); // add al,1
    g.vcpu.run();
    expect(g.vcpu.getRegs().rflags).toBe(0x2 | F.CF | F.ZF | F.AF | F.PF);
  });
});

describe('KVM_SET_SREGS / KVM_GET_SREGS', () => {
  it('round-trip every field of every segment, the descriptor tables and the control registers', () => {
    const g = createGuest();
    const seg = (i: number): KvmSegment => ({
      base: (0x10000 * (i + 1) + 0xf0000000) >>> 0,
      limit: i === 0 ? 0xffffffff : 0xfff * (i + 1),
      selector: 0x08 * (i + 1) + (i & 3),
      type: (3 + i) & 0xf,
      present: i & 1,
      dpl: i & 3,
      db: (i >> 1) & 1,
      s: i < 6 ? 1 : 0,
      l: i === 5 ? 1 : 0,
      g: (i >> 2) & 1,
      avl: i === 3 ? 1 : 0,
      unusable: i === 4 ? 1 : 0,
    });
    const sregs: KvmSregs = {
      ...g.vcpu.getSregs(),
      cs: seg(0), ds: seg(1), es: seg(2), fs: seg(3), gs: seg(4), ss: seg(5), tr: seg(6), ldt: seg(7),
      gdt: { base: 0x00012340, limit: 0x27 },
      idt: { base: 0xfffff800, limit: 0x7ff },
      cr0: 0x60000030, cr2: 0xdeadb000, cr3: 0x12345000, cr4: 0x00000090,
      efer: 0, apicBase: 0xfec00900,
    };
    g.vcpu.setSregs(sregs);
    const out = g.vcpu.getSregs();
    expect(out).toEqual({ ...sregs, cr8: 0, interruptBitmap: [0, 0, 0, 0] });
    // Each segment's fields individually, so a failure names the field.
    for (const k of ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const) expect(out[k], k).toEqual(sregs[k]);
  });

  it('sregs with PAE paging round-trip; a PDPT that no slot backs is no error (the PDPTEs are left not present)', () => {
    for (const cr3 of [0x12345fe0, 0x000ff020]) { // beyond the 1 MiB slot; in RAM (zeros)
      const g = createGuest();
      const sregs: KvmSregs = { ...g.vcpu.getSregs(), cr0: 0xe0000011, cr3, cr4: 0x000000b0 };
      expect(() => g.vcpu.setSregs(sregs)).not.toThrow();
      expect(g.vcpu.getSregs()).toEqual(sregs);
    }
  });

  it('the sregs a vCPU reports can be fed back unchanged', () => {
    const g = createGuest();
    const a = g.vcpu.getSregs();
    g.vcpu.setSregs(a);
    expect(g.vcpu.getSregs()).toEqual(a);
    expect(a.cs).toMatchObject({ selector: 0x1000, base: 0x10000, limit: 0xffff, type: 0xb, s: 1, present: 1 });
  });

  it('loading a segment register in real mode updates selector and base and keeps limit and attributes', () => {
    // mov ax,0x1234 ; mov es,ax ; hlt
    const g = createGuest({ code: 'b8 34 12 8e c0 f4' });
    const s = g.vcpu.getSregs();
    s.es = { ...s.es, limit: 0xfffff, g: 1, db: 1 }; // "unreal" cached limit
    g.vcpu.setSregs(s);
    expect(g.vcpu.run()).toBe(KVM_EXIT_HLT);
    expect(g.vcpu.getSregs().es).toMatchObject({ selector: 0x1234, base: 0x12340, limit: 0xfffff, g: 1, db: 1, type: 3 });
  });
});

describe('save and restore in the middle of a run', () => {
  /*
   * DS = 0x2000, SI = 0x40, DX = 4, BL = 0, CF = 0:
   *   top: in al,0x60 ; adc bl,al ; mov [si],bl ; inc si ; out 0x61,al ; dec dx ; jnz top
   *        mov al,bl ; out 0x62,al ; hlt
   * ADC makes every iteration depend on the CF left by the previous one, so a restored vCPU
   * must get RFLAGS right, not just the registers.
   */
  const CODE = 'e4 60 10 c3 88 1c 46 e6 61 4a 75 f4 88 d8 e6 62 f4';
  const ANSWERS = [0xf0, 0x20, 0x30, 0xff];

  type Ev = string;
  /** Records exits until HLT, answering INs from `answers`; `pending` says the vCPU already sits at an exit. */
  function trace(g: Guest, answers: number[], pending: boolean): Ev[] {
    const evs: Ev[] = [];
    let r = pending ? g.run.exitReason : g.vcpu.run();
    for (let i = 0; r !== KVM_EXIT_HLT; i++) {
      expect(r, describeExit(g.run)).toBe(KVM_EXIT_IO);
      expect(i).toBeLessThan(20);
      const io = g.run.io;
      if (io.direction === KVM_EXIT_IO_IN) {
        evs.push(`in ${io.port.toString(16)}/${io.size}`);
        io.data[0] = answers.shift()!;
      } else {
        expect(io.direction).toBe(KVM_EXIT_IO_OUT);
        evs.push(`out ${io.port.toString(16)}/${io.size} ${[...io.data.subarray(0, io.size)].map((b) => b.toString(16)).join(' ')}`);
      }
      r = g.vcpu.run();
    }
    return evs;
  }

  function program(): Guest {
    return createGuest({ code: CODE, regs: { rsi: 0x40, rdx: 4, rbx: 0 } });
  }

  it('the uninterrupted run is what the program says', () => {
    const g = program();
    expect(trace(g, [...ANSWERS], false)).toEqual([
      'in 60/1', 'out 61/1 f0', 'in 60/1', 'out 61/1 20', 'in 60/1', 'out 61/1 30', 'in 60/1', 'out 61/1 ff', 'out 62/1 40',
    ]);
    expect([...g.ram.subarray(0x20040, 0x20044)]).toEqual([0xf0, 0x10, 0x41, 0x40]);
  });

  it('state saved at an IN exit, restored into a fresh VM with a copy of memory, continues identically', () => {
    const a = program();
    // Run to the third IN (two iterations done; the second ADC carried, so CF = 1).
    const answers = [...ANSWERS];
    let ins = 0;
    for (;;) {
      expect(a.vcpu.run()).toBe(KVM_EXIT_IO);
      if (a.run.io.direction === KVM_EXIT_IO_IN && ++ins === 3) break;
      if (a.run.io.direction === KVM_EXIT_IO_IN) a.run.io.data[0] = answers.shift()!;
    }
    const regs = a.vcpu.getRegs();
    const sregs = a.vcpu.getSregs();
    const memory = a.ram.slice();
    expect(regs.rflags & F.CF).toBe(F.CF);
    expect(regs.rip).toBe(0x100); // at the IN: its completion is not part of the saved state (as in KVM)

    // A fresh VM: new /dev/kvm, new VM, a copy of the memory, a new vCPU, then the state.
    const kvm = new Kvm();
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: memory.length, userspaceAddr: memory.buffer });
    const vcpu = vm.createVcpu(0);
    vcpu.setSregs(sregs);
    vcpu.setRegs(regs);
    const b: Guest = { ...a, kvm, vm, vcpu, run: vcpu.runData, ram: memory, close: () => { vcpu.close(); vm.close(); kvm.close(); } };
    try {
      expect(vcpu.getRegs()).toEqual(regs);
      expect(vcpu.getSregs()).toEqual(sregs);

      const ta = trace(a, [...answers], true);
      // The restored vCPU re-executes the IN it was stopped at, and asks the same question.
      const tb = trace(b, [...answers], false);
      expect(ta).toEqual(['in 60/1', 'out 61/1 30', 'in 60/1', 'out 61/1 ff', 'out 62/1 40']);
      expect(tb).toEqual(ta);
      expect(b.vcpu.getRegs()).toEqual(a.vcpu.getRegs());
      expect(b.vcpu.getSregs()).toEqual(a.vcpu.getSregs());
      expect(Buffer.compare(b.ram, a.ram)).toBe(0);
      expect([...b.ram.subarray(0x20040, 0x20044)]).toEqual([0xf0, 0x10, 0x41, 0x40]);
    } finally {
      b.close();
    }
  });

  it('state saved at a HLT between two halves of a program transfers with no re-execution', () => {
    // add ax,bx ; hlt ; adc ax,bx ; hlt      with AX = BX = 0x8000: the first add carries.
    const a = createGuest({ code: '01 d8 f4 11 d8 f4', regs: { rax: 0x8000, rbx: 0x8000 } });
    expect(a.vcpu.run()).toBe(KVM_EXIT_HLT);
    const regs = a.vcpu.getRegs(), sregs = a.vcpu.getSregs(), memory = a.ram.slice();
    const b = createGuest(); // a fresh VM; its RAM gets a copy of a's
    b.ram.set(memory);
    b.vcpu.setSregs(sregs);
    b.vcpu.setRegs(regs);
    expect(a.vcpu.run()).toBe(KVM_EXIT_HLT);
    expect(b.vcpu.run()).toBe(KVM_EXIT_HLT);
    const ra = a.vcpu.getRegs(), rb = b.vcpu.getRegs();
    expect(rb).toEqual(ra);
    expect(ra.rax).toBe(0x8001); // 0 + 0x8000 + CF
    expect(ra.rip).toBe(0x106);
  });
});
