/**
 * A self-checking guest for hardware task switching and the double-fault rules (run from
 * 0000:7C00 like a boot sector; see pm-kit.ts for the reporting convention). Task A is the
 * main task; paging is on. Checks (number in `check`, sub-checks 0xN0..0xNF):
 *   1. JMP to our own (busy) TSS and to an LDT descriptor: #GP(selector), no switch;
 *      JMP to TSS B: B's registers, LDTR (DS from B's LDT), CR3 (an aliased page reads
 *      differently, so the TLB was flushed), CR0.TS, busy bits, NT clear; B JMPs back and
 *      A's registers come back from TSS A, B's were saved into TSS B
 *   2. CALL through a task gate to C: NT set in C, back link = A, both busy; C's IRET returns
 *      to A (NT clear, C available again, C's saved EFLAGS without NT)
 *   3. CALL to a 16-bit TSS D (AX, SS from the TSS, FS/GS null, 16-bit fields saved on IRET)
 *   4. JMP to TSS E whose SS is a code segment: #TS(SS selector) raised in E's context and
 *      taken by a task gate; the #TS task fixes TSS E and IRETs into E, which JMPs back to A
 *   5. a kernel stack overflow: #PF whose delivery faults with #PF -> #DF through a task gate
 *      (error code 0, TSS A saved with the faulting EIP and ESP); the #DF task resumes A
 *   6. #GP whose gate names a not-present code segment: #NP during delivery -> #DF
 *   7. #DE whose delivery hits a not-present stack page: #PF is taken serially (not #DF),
 *      through a task gate; A restarts the DIV, #DE is delivered normally
 *   8. an external interrupt (KVM_INTERRUPT) whose gate names a not-present code segment:
 *      #NP(sel | EXT) delivered serially, with the EFLAGS of the instruction before it
 * Variants end in a triple fault instead of passing: 'idt-limit' (INT3 with an empty IDT:
 * #GP, #GP -> #DF, #GP -> shutdown) and 'busy-df-task' (#DF's task gate names the busy
 * current TSS).
 */
import { Assembler, dword, mem, reg, sym, word } from '../../src/x86/asm/index.js';
import {
  CODE0, DATA0, GUEST_LOAD, INT_GATE, IRQ_REQUEST, TASK_GATE, TSS, TSS16, TSS16_OFF, TSS32,
  at, build, emitReporting, enterProtectedMode, expect, gateDesc, segDesc, sysDesc, tss16, tss32,
} from './pm-kit.js';

const { eax, ebx, ecx, edx, esi, edi, ebp, esp, ax, cx, al } = reg;

// Selectors.
export const SEL = {
  CODE: 0x08, DATA: 0x10, STACK16: 0x18, TSS_A: 0x20, TSS_B: 0x28, TSS_C: 0x30, GATE_C: 0x38, LDT_B: 0x40,
  TSS_D: 0x48, TSS_DF: 0x50, TSS_PF: 0x58, NP_CODE: 0x60, TSS_E: 0x68, TSS_TS: 0x70,
  /** Entry 1 of B's LDT (TI = 1). */
  LDT_DATA: 0x0c,
} as const;
// Memory.
export const MEM = {
  PD_A: 0x20000, PT_A: 0x21000, PD_B: 0x22000, PT_B: 0x23000,
  LDT_DATA_BASE: 0x30000,
  /** Linear page that maps to itself under PD_A and to ALIAS_B_PHYS under PD_B. */
  ALIAS: 0xa1000, ALIAS_B_PHYS: 0xa2000,
  /** Not present in PT_A: a kernel stack running into it overflows. */
  GUARD: 0x70000,
  STACK_A: 0x80000, STACK_B: 0x81000, STACK_C: 0x82000, STACK_DF: 0x83000, STACK_PF: 0x84000, STACK_TS: 0x85000, STACK_E: 0x86000,
  STACK16_BASE: 0x88000, STACK16_SP: 0xfff0,
} as const;
const NT = 0x4000, IF = 0x200, ZF = 0x40, CF = 0x1;
const IDT_ENTRIES = 0x31;
const CLTS = [0x0f, 0x06];
const STR_EAX = [0x0f, 0x00, 0xc8];
const SLDT_EAX = [0x0f, 0x00, 0xc0];

export type TaskGuestVariant = 'pass' | 'idt-limit' | 'busy-df-task';

const VARS = [
  'b_ok', 'c_count', 'd_ok', 'e_ok', 'ts_err', 'ts_link', 'ts_saved_eip', 'ts_saved_ss',
  'df_count', 'df_err', 'df_eip', 'df_esp', 'df_cr2', 'df_link', 'df_nt', 'df_sp', 'df_resume', 'df_resume_esp',
  'pf_count', 'pf_err', 'pf_cr2', 'pf_eip', 'de_count', 'de_eip', 'counter', 'np_count', 'np_err', 'np_eip', 'np_flags',
  'gp_count', 'gp_err', 'gp_first_err', 'gp_eip', 'skip',
] as const;

/** Busy/available check of the TSS descriptor at `sel`: (hi & 0xF00) must be `type << 8`. */
function expectTssType(a: Assembler, code: number, sel: number, type: number): void {
  a.mov(eax, at('gdt', sel + 4)).and(eax, 0xf00);
  expect(a, code, eax, type << 8);
}

export function buildTaskGuest(variant: TaskGuestVariant = 'pass') {
  const a = new Assembler({ bits: 16, origin: GUEST_LOAD });
  enterProtectedMode(a, SEL.CODE, SEL.DATA, MEM.STACK_A);
  a.mov(al, 'P'.charCodeAt(0)).call('putc');

  // Page tables: PT_A and PT_B identity-map 4 MiB; PT_A leaves GUARD out, PT_B moves ALIAS.
  a.xor(ecx, ecx);
  a.label('fill');
  a.mov(eax, ecx).shl(eax, 12).or(eax, 3);
  a.mov(mem({ disp: MEM.PT_A, index: ecx, scale: 4, size: 32 }), eax);
  a.mov(mem({ disp: MEM.PT_B, index: ecx, scale: 4, size: 32 }), eax);
  a.inc(ecx).cmp(ecx, 1024).jb('fill');
  a.mov(dword({ disp: MEM.PT_A + (MEM.GUARD >>> 12) * 4 }), 0);
  a.mov(dword({ disp: MEM.PT_B + (MEM.ALIAS >>> 12) * 4 }), MEM.ALIAS_B_PHYS | 3);
  a.mov(dword({ disp: MEM.PD_A }), MEM.PT_A | 3);
  a.mov(dword({ disp: MEM.PD_B }), MEM.PT_B | 3);
  a.mov(eax, MEM.PD_A).mov(reg.cr3, eax);
  a.mov(eax, reg.cr0).or(eax, 0x80000000).mov(reg.cr0, eax);
  a.mov(ax, SEL.TSS_A).ltr(ax);
  a.mov(dword({ disp: MEM.ALIAS }), 0x1111);
  a.mov(dword({ disp: MEM.ALIAS_B_PHYS }), 0x2222);
  a.mov(dword({ disp: MEM.LDT_DATA_BASE }), 0xcafef00d);

  // --- 1. Refused switches (#GP, nothing switched), then JMP to TSS B and back.
  a.mov(dword({ disp: 'check' }), 1);
  a.mov(dword({ disp: 'skip' }), 7);
  a.label('jmp_busy');
  a.jmpFar(SEL.TSS_A, 0); // our own TSS: busy
  a.label('jmp_ldt');
  a.jmpFar(SEL.LDT_B, 0); // not a TSS, gate or code segment
  expect(a, 0x0a, at('gp_count'), 2);
  expect(a, 0x0b, at('gp_err'), SEL.LDT_B);
  expect(a, 0x0c, at('gp_eip'), 'jmp_ldt');
  expect(a, 0x0d, at('gp_first_err'), SEL.TSS_A);
  a.raw(STR_EAX);
  expect(a, 0x0e, eax, SEL.TSS_A);
  a.mov(eax, dword({ disp: MEM.ALIAS })); // cache A's translation of ALIAS
  expect(a, 0x10, eax, 0x1111);
  a.raw(CLTS);
  a.mov(eax, 0xa0a0a0a0).mov(ebx, 0x11111111).mov(esi, 0x22222222).mov(edi, 0x33333333).mov(ebp, 0x44444444);
  a.jmpFar(SEL.TSS_B, 0);
  a.label('a_after_jmp_b');
  expect(a, 0x11, eax, 0xa0a0a0a0);
  expect(a, 0x12, ebx, 0x11111111);
  expect(a, 0x13, esi, 0x22222222);
  expect(a, 0x14, edi, 0x33333333);
  expect(a, 0x15, ebp, 0x44444444);
  expect(a, 0x16, at('tss_a', TSS.eip), 'a_after_jmp_b');
  expect(a, 0x17, at('tss_a', TSS.ebx), 0x11111111);
  expect(a, 0x18, at('tss_a', TSS.esp), MEM.STACK_A);
  expect(a, 0x19, at('tss_b', TSS.eip), 'b_after_jmp_a');
  expect(a, 0x1a, at('tss_b', TSS.eax), 0xb0b0beef);
  a.movzx(eax, at('tss_b', TSS.fs, 16));
  expect(a, 0x1b, eax, SEL.LDT_DATA);
  expectTssType(a, 0x1c, SEL.TSS_A, 0xb);
  expectTssType(a, 0x1d, SEL.TSS_B, 0x9);
  a.mov(eax, reg.cr0).and(eax, 8);
  expect(a, 0x1e, eax, 8); // B cleared TS; the switch back set it again
  a.mov(eax, reg.cr3);
  expect(a, 0x1f, eax, MEM.PD_A);
  a.mov(eax, dword({ disp: MEM.ALIAS }));
  expect(a, 0x10, eax, 0x1111);
  expect(a, 0x10, at('b_ok'), 1);

  // --- 2. CALL through a task gate to C, IRET back.
  a.mov(dword({ disp: 'check' }), 2);
  a.raw(CLTS);
  a.mov(eax, 0x12345678);
  a.callFar(SEL.GATE_C, 0);
  a.label('a_after_call_c');
  expect(a, 0x20, eax, 0x12345678);
  a.pushfd().pop(eax).and(eax, NT);
  expect(a, 0x21, eax, 0);
  expect(a, 0x22, at('tss_c', TSS.eip), 'c_after_iret');
  a.mov(eax, at('tss_c', TSS.eflags)).and(eax, NT);
  expect(a, 0x23, eax, 0);
  expect(a, 0x24, at('tss_c', TSS.eax), 0xc0c0c0c0);
  expect(a, 0x25, at('tss_a', TSS.eip), 'a_after_call_c');
  a.movzx(eax, at('tss_c', TSS.link, 16));
  expect(a, 0x26, eax, SEL.TSS_A);
  expectTssType(a, 0x27, SEL.TSS_C, 0x9);
  expectTssType(a, 0x28, SEL.TSS_A, 0xb);
  a.mov(eax, reg.cr0).and(eax, 8);
  expect(a, 0x29, eax, 8);
  expect(a, 0x2a, at('c_count'), 1);

  // --- 3. CALL to a 16-bit TSS.
  a.mov(dword({ disp: 'check' }), 3);
  a.callFar(SEL.TSS_D, 0);
  a.label('a_after_call_d');
  a.movzx(eax, at('tss_d', TSS16_OFF.ip, 16));
  expect(a, 0x30, eax, 'd_after_iret');
  a.movzx(eax, at('tss_d', TSS16_OFF.sp, 16));
  expect(a, 0x31, eax, MEM.STACK16_SP);
  a.movzx(eax, at('tss_d', TSS16_OFF.ax, 16));
  expect(a, 0x32, eax, 0xd1d1);
  a.movzx(eax, at('tss_d', TSS16_OFF.flags, 16)).and(eax, NT);
  expect(a, 0x33, eax, 0);
  expectTssType(a, 0x34, SEL.TSS_D, 0x1);
  expect(a, 0x35, at('d_ok'), 1);

  // --- 4. #TS in the new task's context.
  a.mov(dword({ disp: 'check' }), 4);
  a.jmpFar(SEL.TSS_E, 0);
  a.label('a_after_jmp_e');
  expect(a, 0x40, at('e_ok'), 1);
  expect(a, 0x41, at('ts_err'), SEL.CODE);
  expect(a, 0x42, at('ts_link'), SEL.TSS_E);
  expect(a, 0x43, at('ts_saved_eip'), 'task_e');
  expect(a, 0x44, at('ts_saved_ss'), SEL.CODE);
  expectTssType(a, 0x45, SEL.TSS_E, 0x9);
  expectTssType(a, 0x46, SEL.TSS_TS, 0x9);
  expectTssType(a, 0x47, SEL.TSS_A, 0xb);

  // --- 5. Kernel stack overflow: #PF, #PF -> #DF through a task gate.
  a.mov(dword({ disp: 'check' }), 5);
  if (variant === 'busy-df-task') a.mov(word({ disp: sym('idt', 8 * 8 + 2) }), SEL.TSS_A);
  a.mov(dword({ disp: 'df_resume' }), 'after_df1').mov(dword({ disp: 'df_resume_esp' }), MEM.STACK_A);
  a.mov(esp, MEM.GUARD + 0x1000);
  a.label('overflow_push');
  a.push(eax);
  a.jmp('fail', 'near');
  a.label('after_df1');
  a.mov(eax, esp);
  expect(a, 0x50, eax, MEM.STACK_A);
  expect(a, 0x51, at('df_count'), 1);
  expect(a, 0x52, at('df_err'), 0);
  expect(a, 0x53, at('df_eip'), 'overflow_push');
  expect(a, 0x54, at('df_esp'), MEM.GUARD + 0x1000);
  expect(a, 0x55, at('df_cr2'), MEM.GUARD + 0xffc);
  expect(a, 0x56, at('df_link'), SEL.TSS_A);
  expect(a, 0x57, at('df_nt'), NT);
  expect(a, 0x58, at('df_sp'), MEM.STACK_DF);
  expectTssType(a, 0x59, SEL.TSS_DF, 0x9);

  // --- 6. #GP through a gate to a not-present segment: #NP during delivery -> #DF.
  a.mov(dword({ disp: 'check' }), 6);
  a.mov(word({ disp: sym('idt', 13 * 8 + 2) }), SEL.NP_CODE);
  a.mov(dword({ disp: 'df_resume' }), 'after_df2');
  a.mov(ax, 0xfff8);
  a.label('bad_ds_load');
  a.mov(reg.ds, ax);
  a.jmp('fail', 'near');
  a.label('after_df2');
  a.mov(word({ disp: sym('idt', 13 * 8 + 2) }), SEL.CODE);
  expect(a, 0x60, at('df_count'), 2);
  expect(a, 0x61, at('df_err'), 0);
  expect(a, 0x62, at('df_eip'), 'bad_ds_load');
  a.mov(ax, reg.ds);
  expect(a, 0x63, ax, SEL.DATA);

  // --- 7. #DE, then #PF while delivering it: handled serially (a task gate takes the #PF).
  a.mov(dword({ disp: 'check' }), 7);
  a.mov(dword({ disp: sym('idt', 14 * 8) }), SEL.TSS_PF << 16);
  a.mov(dword({ disp: sym('idt', 14 * 8 + 4) }), TASK_GATE);
  a.mov(esp, MEM.GUARD + 0x1000);
  a.xor(ecx, ecx);
  a.label('div_insn');
  a.div(ecx); // F7 F1
  a.mov(eax, esp);
  expect(a, 0x70, eax, MEM.STACK_A);
  expect(a, 0x71, at('pf_count'), 1);
  expect(a, 0x72, at('pf_err'), 2); // not present, write, supervisor
  expect(a, 0x73, at('pf_cr2'), MEM.GUARD + 0xffc);
  expect(a, 0x74, at('pf_eip'), 'div_insn');
  expect(a, 0x75, at('de_count'), 1);
  expect(a, 0x76, at('de_eip'), 'div_insn');
  expect(a, 0x77, at('df_count'), 2);

  // --- 8. A fault while delivering an external interrupt.
  a.mov(dword({ disp: 'check' }), 8);
  a.mov(dword({ disp: 'counter' }), 0xffffffff);
  a.mov(al, 0x30).mov(reg.dx, IRQ_REQUEST).out(reg.dx, al);
  a.xor(eax, eax).or(eax, 1); // ZF = CF = 0 before the ADD
  a.sti();
  a.add(dword({ disp: 'counter' }), 1); // ZF = CF = 1; the interrupt comes right after it
  a.label('np_wait');
  a.cli();
  expect(a, 0x80, at('np_count'), 1);
  expect(a, 0x81, at('np_err'), SEL.NP_CODE | 1); // EXT: an external event was being delivered
  expect(a, 0x82, at('np_eip'), 'np_wait');
  a.mov(eax, at('np_flags')).and(eax, ZF | CF | IF);
  expect(a, 0x83, eax, ZF | CF | IF);
  expect(a, 0x84, at('df_count'), 2);

  a.mov(dword({ disp: 'check' }), 9);
  if (variant === 'idt-limit') {
    a.mov(al, 'T'.charCodeAt(0)).call('putc');
    a.lidt(mem({ disp: 'empty_idtr', size: 16 }));
    a.label('triple');
    a.int3();
    a.jmp('fail', 'near');
  }
  a.jmp('pass', 'near');

  // --- Task B (JMP target; LDT, CR3 = PD_B).
  a.label('task_b');
  a.mov(cx, reg.ds);
  a.mov(edx, dword({ disp: 0 })); // DS comes from B's LDT: base LDT_DATA_BASE
  a.mov(ax, SEL.DATA).mov(reg.ds, ax);
  expect(a, 0xb0, cx, SEL.LDT_DATA);
  expect(a, 0xb1, edx, 0xcafef00d);
  a.raw(SLDT_EAX);
  expect(a, 0xb2, eax, SEL.LDT_B);
  a.raw(STR_EAX);
  expect(a, 0xb3, eax, SEL.TSS_B);
  expect(a, 0xb4, ebx, 0xb1b1b1b1);
  a.mov(eax, esp);
  expect(a, 0xb5, eax, MEM.STACK_B);
  a.mov(eax, reg.cr0).and(eax, 8);
  expect(a, 0xb6, eax, 8);
  a.mov(eax, reg.cr3);
  expect(a, 0xb7, eax, MEM.PD_B);
  a.mov(eax, dword({ disp: MEM.ALIAS }));
  expect(a, 0xb8, eax, 0x2222); // new CR3, and A's cached translation is gone
  a.pushfd().pop(eax).and(eax, NT);
  expect(a, 0xb9, eax, 0);
  expectTssType(a, 0xba, SEL.TSS_B, 0xb);
  expectTssType(a, 0xbb, SEL.TSS_A, 0x9);
  a.movzx(eax, at('tss_b', TSS.link, 16));
  expect(a, 0xbc, eax, 0);
  a.mov(dword({ disp: 'b_ok' }), 1);
  a.raw(CLTS);
  a.mov(ax, SEL.LDT_DATA).mov(reg.fs, ax);
  a.mov(eax, 0xb0b0beef);
  a.jmpFar(SEL.TSS_A, 0);
  a.label('b_after_jmp_a');
  a.jmp('fail', 'near');

  // --- Task C (CALL through a task gate).
  a.label('task_c');
  a.pushfd().pop(eax).and(eax, NT);
  expect(a, 0xc0, eax, NT);
  a.movzx(eax, at('tss_c', TSS.link, 16));
  expect(a, 0xc1, eax, SEL.TSS_A);
  expectTssType(a, 0xc2, SEL.TSS_A, 0xb);
  expectTssType(a, 0xc3, SEL.TSS_C, 0xb);
  a.raw(STR_EAX);
  expect(a, 0xc4, eax, SEL.TSS_C);
  a.mov(eax, reg.cr0).and(eax, 8);
  expect(a, 0xc5, eax, 8);
  a.inc(dword({ disp: 'c_count' }));
  a.mov(eax, 0xc0c0c0c0);
  a.iretd();
  a.label('c_after_iret');
  a.jmp('task_c', 'near');

  // --- Task D (16-bit TSS; 32-bit code on a 16-bit stack).
  a.label('task_d');
  expect(a, 0xd0, ax, 0xd00d);
  a.mov(ax, reg.ss);
  expect(a, 0xd1, ax, SEL.STACK16);
  a.mov(ax, reg.fs);
  expect(a, 0xd2, ax, 0);
  a.mov(ax, reg.gs);
  expect(a, 0xd3, ax, 0);
  a.mov(ax, reg.sp);
  expect(a, 0xd4, ax, MEM.STACK16_SP);
  a.pushfd().pop(eax).and(eax, NT);
  expect(a, 0xd5, eax, NT);
  a.movzx(eax, at('tss_d', TSS16_OFF.link, 16));
  expect(a, 0xd6, eax, SEL.TSS_A);
  a.raw(STR_EAX);
  expect(a, 0xd7, ax, SEL.TSS_D);
  expectTssType(a, 0xd8, SEL.TSS_D, 0x3);
  a.mov(dword({ disp: 'd_ok' }), 1);
  a.mov(ax, 0xd1d1);
  a.iretd();
  a.label('d_after_iret');
  a.jmp('task_d', 'near');

  // --- Task E (its TSS names a code segment as SS until the #TS task fixes it).
  a.label('task_e');
  a.mov(ax, reg.ss);
  expect(a, 0xe0, ax, SEL.DATA);
  a.mov(dword({ disp: 'e_ok' }), 1);
  a.jmpFar(SEL.TSS_A, 0);

  // --- The #TS task.
  a.label('task_ts');
  a.pop(eax).mov(at('ts_err'), eax);
  a.movzx(eax, at('tss_ts', TSS.link, 16)).mov(at('ts_link'), eax);
  a.mov(eax, at('tss_e', TSS.eip)).mov(at('ts_saved_eip'), eax);
  a.movzx(eax, at('tss_e', TSS.ss, 16)).mov(at('ts_saved_ss'), eax);
  a.mov(at('tss_e', TSS.ss, 16), SEL.DATA);
  a.iretd();
  a.jmp('task_ts', 'near');

  // --- The #DF task: records, resumes A at df_resume with ESP = df_resume_esp.
  a.label('task_df');
  a.pop(eax).mov(at('df_err'), eax);
  a.mov(eax, esp).mov(at('df_sp'), eax);
  a.mov(eax, at('tss_a', TSS.eip)).mov(at('df_eip'), eax);
  a.mov(eax, at('tss_a', TSS.esp)).mov(at('df_esp'), eax);
  a.mov(eax, reg.cr2).mov(at('df_cr2'), eax);
  a.movzx(eax, at('tss_df', TSS.link, 16)).mov(at('df_link'), eax);
  a.pushfd().pop(eax).and(eax, NT).mov(at('df_nt'), eax);
  a.inc(dword({ disp: 'df_count' }));
  a.mov(eax, at('df_resume')).mov(at('tss_a', TSS.eip), eax);
  a.mov(eax, at('df_resume_esp')).mov(at('tss_a', TSS.esp), eax);
  a.iretd();
  a.jmp('task_df', 'near');

  // --- The #PF task (check 7): records, gives A a good stack; A restarts its instruction.
  a.label('task_pf');
  a.pop(eax).mov(at('pf_err'), eax);
  a.mov(eax, reg.cr2).mov(at('pf_cr2'), eax);
  a.mov(eax, at('tss_a', TSS.eip)).mov(at('pf_eip'), eax);
  a.inc(dword({ disp: 'pf_count' }));
  a.mov(at('tss_a', TSS.esp), MEM.STACK_A);
  a.mov(dword({ disp: sym('idt', 14 * 8) }), sym('unexpected', SEL.CODE << 16));
  a.mov(dword({ disp: sym('idt', 14 * 8 + 4) }), INT_GATE);
  a.iretd();
  a.jmp('task_pf', 'near');

  // --- Interrupt handlers in task A.
  a.label('de_handler');
  a.push(eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('de_eip'), eax);
  a.inc(dword({ disp: 'de_count' }));
  a.add(dword({ base: esp, disp: 4 }), 2); // skip DIV ECX
  a.pop(eax).iretd();

  a.label('gp_handler');
  a.push(eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('gp_err'), eax);
  a.cmp(dword({ disp: 'gp_count' }), 0).jne('gp_not_first');
  a.mov(at('gp_first_err'), eax);
  a.label('gp_not_first');
  a.mov(eax, dword({ base: esp, disp: 8 })).mov(at('gp_eip'), eax);
  a.inc(dword({ disp: 'gp_count' }));
  a.mov(eax, at('skip')).add(dword({ base: esp, disp: 8 }), eax);
  a.pop(eax).add(esp, 4).iretd();

  a.label('np_handler');
  a.push(eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('np_err'), eax);
  a.mov(eax, dword({ base: esp, disp: 8 })).mov(at('np_eip'), eax);
  a.mov(eax, dword({ base: esp, disp: 16 })).mov(at('np_flags'), eax);
  a.inc(dword({ disp: 'np_count' }));
  a.pop(eax).add(esp, 4).iretd();

  a.label('unexpected');
  a.mov(ax, SEL.DATA).mov(reg.ds, ax);
  a.mov(dword({ disp: 'check' }), 0xee);
  a.jmp('fail', 'near');

  emitReporting(a, SEL.DATA, 'K');

  // --- Tables.
  a.align(8, 0);
  a.label('gdt');
  a.dd(0, 0);
  segDesc(a, 0, 0xfffff, CODE0); // 0x08
  segDesc(a, 0, 0xfffff, DATA0); // 0x10
  segDesc(a, MEM.STACK16_BASE, 0xffff, DATA0, 0); // 0x18: 16-bit stack
  sysDesc(a, 'tss_a', 0x67, TSS32); // 0x20
  sysDesc(a, 'tss_b', 0x67, TSS32); // 0x28
  sysDesc(a, 'tss_c', 0x67, TSS32); // 0x30
  gateDesc(a, SEL.TSS_C, 0, TASK_GATE); // 0x38
  sysDesc(a, 'ldt_b', 15, 0x82); // 0x40
  sysDesc(a, 'tss_d', 0x2b, TSS16); // 0x48
  sysDesc(a, 'tss_df', 0x67, TSS32); // 0x50
  sysDesc(a, 'tss_pf', 0x67, TSS32); // 0x58
  segDesc(a, 0, 0xfffff, CODE0 & ~0x80); // 0x60: not present
  sysDesc(a, 'tss_e', 0x67, TSS32); // 0x68
  sysDesc(a, 'tss_ts', 0x67, TSS32); // 0x70
  a.label('gdtr');
  a.dw(0x78 - 1).dd('gdt');
  a.label('idtr');
  a.dw(IDT_ENTRIES * 8 - 1).dd('idt');
  a.label('empty_idtr');
  a.dw(0).dd(0);
  a.align(8, 0);
  a.label('ldt_b');
  a.dd(0, 0);
  segDesc(a, MEM.LDT_DATA_BASE, 0xffff, DATA0, 0x4);

  const ring0 = { cs: SEL.CODE, ss: SEL.DATA, ds: SEL.DATA, es: SEL.DATA, cr3: MEM.PD_A };
  tss32(a, 'tss_a', { cr3: MEM.PD_A }); // CR3 is not saved on a switch: it must be right in the TSS
  tss32(a, 'tss_b', { eip: 'task_b', esp: MEM.STACK_B, cs: SEL.CODE, ss: SEL.DATA, ds: SEL.LDT_DATA, es: SEL.DATA, ldt: SEL.LDT_B, cr3: MEM.PD_B, eax: 0xb0b0b0b0, ebx: 0xb1b1b1b1 });
  tss32(a, 'tss_c', { ...ring0, eip: 'task_c', esp: MEM.STACK_C });
  tss16(a, 'tss_d', { ip: 'task_d', sp: MEM.STACK16_SP, ax: 0xd00d, es: SEL.DATA, cs: SEL.CODE, ss: SEL.STACK16, ds: SEL.DATA });
  tss32(a, 'tss_df', { ...ring0, eip: 'task_df', esp: MEM.STACK_DF });
  tss32(a, 'tss_pf', { ...ring0, eip: 'task_pf', esp: MEM.STACK_PF });
  tss32(a, 'tss_e', { ...ring0, ss: SEL.CODE, eip: 'task_e', esp: MEM.STACK_E });
  tss32(a, 'tss_ts', { ...ring0, eip: 'task_ts', esp: MEM.STACK_TS });

  a.align(4, 0);
  for (const v of VARS) a.label(v).dd(0);

  a.align(8, 0);
  a.label('idt');
  for (let v = 0; v < IDT_ENTRIES; v++) {
    if (v === 8) gateDesc(a, SEL.TSS_DF, 0, TASK_GATE);
    else if (v === 10) gateDesc(a, SEL.TSS_TS, 0, TASK_GATE);
    else if (v === 0) gateDesc(a, SEL.CODE, 'de_handler', INT_GATE);
    else if (v === 11) gateDesc(a, SEL.CODE, 'np_handler', INT_GATE);
    else if (v === 13) gateDesc(a, SEL.CODE, 'gp_handler', INT_GATE);
    else if (v === 0x30) gateDesc(a, SEL.NP_CODE, 'unexpected', INT_GATE);
    else gateDesc(a, SEL.CODE, 'unexpected', INT_GATE);
  }
  return build(a);
}

