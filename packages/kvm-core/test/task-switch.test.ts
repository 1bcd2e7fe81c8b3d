import { describe, expect, it } from 'vitest';
import { KVM_EXIT_SHUTDOWN } from '../src/index.js';
import { TSS, TSS16_OFF, runGuest, u16, u32 } from './guests/pm-kit.js';
import { MEM, SEL, buildTaskGuest } from './guests/tasks.js';

const CR0_TS = 8, NT = 0x4000, ZF = 0x40, CF = 0x1, IF = 0x200;

describe('hardware task switching and double faults (self-checking guest)', () => {
  const g = buildTaskGuest();
  const r = runGuest(g.bytes);
  const ram = r.ram;
  const v = (label: string, off = 0) => u32(ram, g.addr(label) + off);
  /** Type nibble of the TSS descriptor at `sel` in the guest's GDT (9/1 available, B/3 busy). */
  const tssType = (sel: number) => (u32(ram, g.addr('gdt') + sel + 4) >>> 8) & 0xf;

  it('passes every check in the guest', () => {
    expect(r.message).toBe('');
    expect(r.serial).toBe('PK');
    expect(r.exitCode).toBe(0);
    expect(v('check')).toBe(9);
  });

  it('ends in task A with TR busy, CR0.TS set by the switches and A\'s page directory', () => {
    expect(r.sregs.tr.selector).toBe(SEL.TSS_A);
    expect(r.sregs.tr.type).toBe(0xb);
    expect(r.sregs.tr.base).toBe(g.addr('tss_a'));
    expect(r.sregs.tr.limit).toBe(0x67);
    expect(r.sregs.cr0 & CR0_TS).toBe(CR0_TS);
    expect(r.sregs.cr3).toBe(MEM.PD_A);
    expect(r.regs.rflags & NT).toBe(0);
    expect(tssType(SEL.TSS_A)).toBe(0xb);
    for (const sel of [SEL.TSS_B, SEL.TSS_C, SEL.TSS_DF, SEL.TSS_PF, SEL.TSS_E, SEL.TSS_TS]) expect(tssType(sel)).toBe(0x9);
    expect(tssType(SEL.TSS_D)).toBe(0x1);
  });

  it('JMP saved both tasks\' state: A at its JMP, B at its JMP back (no back link)', () => {
    expect(v('tss_a', TSS.ebx)).toBe(0x11111111);
    expect(v('tss_b', TSS.eip)).toBe(g.addr('b_after_jmp_a'));
    expect(v('tss_b', TSS.eax)).toBe(0xb0b0beef);
    expect(v('tss_b', TSS.esp)).toBe(MEM.STACK_B);
    expect(u16(ram, g.addr('tss_b') + TSS.fs)).toBe(SEL.LDT_DATA);
    expect(u16(ram, g.addr('tss_b') + TSS.ldt)).toBe(SEL.LDT_B); // static: not rewritten
    expect(v('tss_b', TSS.cr3)).toBe(MEM.PD_B);
    expect(u16(ram, g.addr('tss_b') + TSS.link)).toBe(0);
    expect(v('b_ok')).toBe(1);
  });

  it('refused JMPs (busy TSS, LDT descriptor) raised #GP(selector)', () => {
    expect(v('gp_count')).toBe(2);
    expect(v('gp_first_err')).toBe(SEL.TSS_A);
    expect(v('gp_err')).toBe(SEL.LDT_B);
  });

  it('CALL through a task gate links back; IRET saves the callee with NT clear', () => {
    expect(u16(ram, g.addr('tss_c') + TSS.link)).toBe(SEL.TSS_A);
    expect(v('tss_c', TSS.eip)).toBe(g.addr('c_after_iret'));
    expect(v('tss_c', TSS.eflags) & NT).toBe(0);
    expect(v('tss_c', TSS.eax)).toBe(0xc0c0c0c0);
    expect(v('c_count')).toBe(1);
  });

  it('a 16-bit TSS is saved in its 16-bit layout', () => {
    const d = g.addr('tss_d');
    expect(u16(ram, d + TSS16_OFF.link)).toBe(SEL.TSS_A);
    expect(u16(ram, d + TSS16_OFF.ip)).toBe(g.addr('d_after_iret'));
    expect(u16(ram, d + TSS16_OFF.ax)).toBe(0xd1d1);
    expect(u16(ram, d + TSS16_OFF.sp)).toBe(MEM.STACK16_SP);
    expect(u16(ram, d + TSS16_OFF.ss)).toBe(SEL.STACK16);
    expect(u16(ram, d + TSS16_OFF.flags) & NT).toBe(0);
  });

  it('a bad SS in the new TSS raises #TS(SS) in the new task\'s context', () => {
    expect(v('ts_err')).toBe(SEL.CODE);
    expect(v('ts_link')).toBe(SEL.TSS_E);
    expect(v('ts_saved_eip')).toBe(g.addr('task_e'));
    expect(v('ts_saved_ss')).toBe(SEL.CODE);
    expect(v('e_ok')).toBe(1);
  });

  it('#PF during #PF delivery and #NP during #GP delivery become #DF, taken by a task gate', () => {
    expect(v('df_count')).toBe(2);
    expect(v('df_err')).toBe(0);
    expect(v('df_eip')).toBe(g.addr('bad_ds_load')); // the second one
    expect(u16(ram, g.addr('tss_df') + TSS.link)).toBe(SEL.TSS_A);
    expect(v('df_nt')).toBe(NT);
    expect(v('df_cr2')).toBe(MEM.GUARD + 0xffc);
  });

  it('#PF during #DE delivery is handled serially, not as #DF', () => {
    expect(v('pf_count')).toBe(1);
    expect(v('pf_err')).toBe(2);
    expect(v('pf_eip')).toBe(g.addr('div_insn'));
    expect(v('de_count')).toBe(1);
  });

  it('a fault while delivering an external interrupt is delivered with EXT, after the previous instruction\'s flags', () => {
    expect(r.injected).toEqual([0x30]);
    expect(v('np_count')).toBe(1);
    expect(v('np_err')).toBe(SEL.NP_CODE | 1);
    expect(v('np_eip')).toBe(g.addr('np_wait'));
    expect(v('np_flags') & (ZF | CF | IF)).toBe(ZF | CF | IF);
  });
});

describe('triple faults shut the VM down', () => {
  it('INT3 with an empty IDT: #GP, then #GP while delivering it (#DF), then #GP delivering #DF', () => {
    const g = buildTaskGuest('idt-limit');
    const r = runGuest(g.bytes, { stopAt: KVM_EXIT_SHUTDOWN });
    expect(r.message).toBe('');
    expect(r.exitReason).toBe(KVM_EXIT_SHUTDOWN);
    expect(r.serial).toBe('PT');
    expect(r.exitCode).toBeUndefined();
    expect(r.regs.rip).toBe(g.addr('triple'));
    expect(r.sregs.idt.limit).toBe(0);
  });

  it('#DF through a task gate naming the busy current TSS', () => {
    const g = buildTaskGuest('busy-df-task');
    const r = runGuest(g.bytes, { stopAt: KVM_EXIT_SHUTDOWN });
    expect(r.message).toBe('');
    expect(r.exitReason).toBe(KVM_EXIT_SHUTDOWN);
    expect(r.serial).toBe('P');
    expect(u32(r.ram, g.addr('check'))).toBe(5);
    expect(r.regs.rip).toBe(g.addr('overflow_push'));
    expect(r.regs.rsp).toBe(MEM.GUARD + 0x1000);
    expect(r.sregs.cr2).toBe(MEM.GUARD + 0xffc);
    expect(r.sregs.tr.selector).toBe(SEL.TSS_A);
    expect(u32(r.ram, g.addr('df_count'))).toBe(0);
  });
});
