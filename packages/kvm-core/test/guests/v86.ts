/**
 * A self-checking guest for virtual-8086 mode (reporting convention in pm-kit.ts): a 32-bit
 * ring-0 monitor enters V86 with IRETD and handles its faults. No VME: CR4.VME is reserved.
 * Checks (the V86 code checks what it can itself; `check` holds 0xNM):
 *   1. IRETD from CPL 0 with VM set loads CS, SS:ESP, ES, DS, FS, GS real-mode style
 *   2. real-mode-style code: segment arithmetic, a far CALL/RETF, PUSH/POP of segments
 *   3. the I/O bitmap (IOPL is not consulted for I/O in V86): OUT to COM1 and IN from 0x60
 *      allowed; OUT to 0x80, OUT DX,AX at 0x3F8 (0x3F9 denied) and OUT to 0xF000 (beyond
 *      the TSS limit) raise #GP(0)
 *   4. with IOPL 0: CLI, STI, PUSHF, POPF, INT 0x21, IRET and HLT raise #GP(0) to the
 *      monitor, whose frame holds the V86 segments while DS..GS are null in the handler;
 *      INT3 is not IOPL-sensitive: its DPL-0 gate gives #GP(3*8+2)
 *   5. #DE in V86 reaches the monitor with the V86 frame
 *   6. with IOPL 3 (set by the monitor in the frame): CLI/STI/PUSHF/POPF run, POPF cannot
 *      change IOPL, INT 0x21 goes through its DPL-3 gate to the ring-0 handler and back,
 *      and IRET is the real-mode IRET (IF from the image, IOPL kept)
 */
import { Assembler, dword, mem, reg, sym, word } from '../../src/x86/asm/index.js';
import type { Imm, Mem, Register } from '../../src/x86/asm/index.js';
import {
  CODE0, COM1, DATA0, GUEST_LOAD, INT_GATE, TSS32,
  at, build, emitReporting, enterProtectedMode, expect, gateDesc, segDesc, sysDesc, tss32,
} from './pm-kit.js';

const { eax, ecx, esp, ax, bx, cx, dx, al } = reg;

export const SEL = { CODE0: 0x08, DATA0: 0x10, TSS: 0x18 } as const;
export const MEM = { RING0_STACK: 0x80000 } as const;
/** The V86 task's initial segments and stack. */
export const V86 = { CS: 0, SS: 0x0500, SP: 0x1000, DS: 0, ES: 0x1000, FS: 0x2000, GS: 0x3000 } as const;
const VM = 0x20000, IOPL3 = 0x3000, IF = 0x200;
const BITMAP_BYTES = 0x80;
const IDT_ENTRIES = 0x22;

const VARS = [
  'gp_count', 'gp_err', 'gp_eip', 'gp_cs', 'gp_flags', 'gp_frame_ds', 'gp_frame_es', 'gp_entry_ds', 'gp_entry_gs',
  'skip', 'set_iopl', 'v86_failed',
  'de_count', 'de_eip', 'de_frame_ds', 'de_frame_ss', 'de_frame_sp',
  'i21_count', 'i21_eip', 'i21_flags', 'i21_frame_ds',
  'done_flags', 'done_eip', 'far_ok', 'in_value',
] as const;

/** In V86 code (DS = 0): `check = code; cmp x, v; jne v86_fail`. */
function vexpect(a: Assembler, code: number, x: Register | Mem, v: Imm): void {
  a.mov(dword({ disp: 'check' }), code);
  a.cmp(x, v).jne('v86_fail', 'near');
}

/** A V86 instruction the monitor sees as #GP(err): set `skip`, run it, check the count/error/IP. */
function vfault(a: Assembler, code: number, count: number, err: number, len: number, emit: () => void): void {
  const label = `vf_${code.toString(16)}`;
  a.mov(dword({ disp: 'skip' }), len);
  a.label(label);
  emit();
  vexpect(a, code, dword({ disp: 'gp_count' }), count);
  vexpect(a, code + 1, dword({ disp: 'gp_err' }), err);
  vexpect(a, code + 2, dword({ disp: 'gp_eip' }), label);
}

export function buildV86Guest() {
  const a = new Assembler({ bits: 16, origin: GUEST_LOAD });
  enterProtectedMode(a, SEL.CODE0, SEL.DATA0, MEM.RING0_STACK);
  a.mov(al, 'P'.charCodeAt(0)).call('putc');
  a.mov(ax, SEL.TSS).ltr(ax);
  a.mov(dword({ disp: 'check' }), 1);
  // IRETD to V86: EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS (IOPL 0, IF 0).
  a.push(V86.GS).push(V86.FS).push(V86.DS).push(V86.ES).push(V86.SS).push(V86.SP);
  a.push(VM | 2).push(V86.CS).push('v86_start');
  a.iretd();

  // --- V86 code (CS = DS = 0: offsets are linear addresses below 64 KiB).
  a.use16();
  a.label('v86_start');
  a.mov(ax, reg.es);
  vexpect(a, 0x10, ax, V86.ES);
  a.mov(ax, reg.fs);
  vexpect(a, 0x11, ax, V86.FS);
  a.mov(ax, reg.gs);
  vexpect(a, 0x12, ax, V86.GS);
  a.mov(ax, reg.ss);
  vexpect(a, 0x13, ax, V86.SS);
  a.mov(ax, reg.sp);
  vexpect(a, 0x14, ax, V86.SP);

  // 2. Real-mode style: linear = segment * 16 + offset.
  a.mov(dword({ disp: 'check' }), 2);
  a.mov(word({ seg: reg.es, disp: 0x10 }), 0x1234); // linear 0x10010
  a.mov(ax, 0x1001).mov(reg.ds, ax);
  a.mov(bx, word({ disp: 0 })); // 0x1001:0 is linear 0x10010 too
  a.push(reg.es).pop(reg.ds); // DS = 0x1000
  a.mov(cx, word({ disp: 0x10 }));
  a.xor(ax, ax).mov(reg.ds, ax);
  vexpect(a, 0x20, bx, 0x1234);
  vexpect(a, 0x21, cx, 0x1234);
  a.mov(ax, (GUEST_LOAD >>> 4)).mov(reg.ds, ax);
  a.mov(al, mem({ disp: sym('v86_byte', -GUEST_LOAD), size: 8 })); // 07C0:(v86_byte - 7C00)
  a.xor(bx, bx).mov(reg.ds, bx);
  a.movzx(ax, al);
  vexpect(a, 0x22, ax, 0x5e);
  a.callFar(0x0000, 'v86_far_proc');
  vexpect(a, 0x23, dword({ disp: 'far_ok' }), 1);
  a.mov(ax, reg.sp);
  vexpect(a, 0x24, ax, V86.SP);

  // 3. The I/O bitmap.
  a.mov(dword({ disp: 'check' }), 3);
  a.mov(al, 'V'.charCodeAt(0)).mov(dx, COM1).out(dx, al); // allowed
  a.in(al, 0x60); // allowed
  a.movzx(eax, al).mov(dword({ disp: 'in_value' }), eax);
  vexpect(a, 0x30, al, 0x5a);
  let n = 0; // #GPs so far
  vfault(a, 0x31, ++n, 0, 2, () => a.out(0x80, al));
  a.mov(dx, COM1);
  vfault(a, 0x34, ++n, 0, 1, () => a.raw([0xef])); // out dx, ax: 0x3F9 denied
  a.mov(dx, 0xf000);
  vfault(a, 0x37, ++n, 0, 1, () => a.raw([0xee])); // out dx, al: its bitmap byte lies beyond the TSS limit

  // 4. IOPL-sensitive instructions with IOPL 0.
  a.mov(dword({ disp: 'check' }), 4);
  vfault(a, 0x40, ++n, 0, 1, () => a.cli());
  vfault(a, 0x43, ++n, 0, 1, () => a.sti());
  vfault(a, 0x46, ++n, 0, 1, () => a.pushf());
  vfault(a, 0x49, ++n, 0, 1, () => a.popf());
  vfault(a, 0x4c, ++n, 0, 2, () => a.int(0x21));
  vfault(a, 0x4f, ++n, 0, 1, () => a.iret());
  vfault(a, 0x52, ++n, 3 * 8 + 2, 1, () => a.int3()); // not IOPL-sensitive: the gate's DPL 0 refuses it
  // The #GP frame held our segments; the handler ran with DS..GS null.
  vexpect(a, 0x55, dword({ disp: 'gp_cs' }), V86.CS);
  vexpect(a, 0x56, dword({ disp: 'gp_frame_ds' }), V86.DS);
  vexpect(a, 0x57, dword({ disp: 'gp_frame_es' }), V86.ES);
  vexpect(a, 0x58, dword({ disp: 'gp_entry_ds' }), 0);
  vexpect(a, 0x59, dword({ disp: 'gp_entry_gs' }), 0);
  a.mov(eax, dword({ disp: 'gp_flags' })).and(eax, VM | IOPL3);
  vexpect(a, 0x5a, eax, VM);

  // 5. #DE.
  a.mov(dword({ disp: 'check' }), 5);
  a.xor(cx, cx);
  a.label('v86_div');
  a.div(cx); // F7 F1, skipped by the monitor
  vexpect(a, 0x60, dword({ disp: 'de_count' }), 1);
  vexpect(a, 0x61, dword({ disp: 'de_eip' }), 'v86_div');
  vexpect(a, 0x62, dword({ disp: 'de_frame_ds' }), V86.DS);
  vexpect(a, 0x63, dword({ disp: 'de_frame_ss' }), V86.SS);
  vexpect(a, 0x64, dword({ disp: 'de_frame_sp' }), V86.SP);

  // 6. IOPL 3: the monitor raises it when HLT faults with set_iopl = 1.
  a.mov(dword({ disp: 'check' }), 6);
  a.mov(dword({ disp: 'set_iopl' }), 1);
  vfault(a, 0x70, ++n, 0, 1, () => a.hlt());
  a.cli().sti();
  a.pushf().pop(ax);
  a.and(ax, IOPL3 | IF);
  vexpect(a, 0x73, ax, IOPL3 | IF);
  a.push(0x0002, 16).popf(); // tries IOPL 0, IF 0: only IF changes
  a.pushf().pop(ax);
  a.and(ax, IOPL3 | IF);
  vexpect(a, 0x74, ax, IOPL3);
  a.mov(eax, 0x1234);
  a.int(0x21); // DPL-3 gate to the ring-0 handler, which doubles EAX
  a.label('after_int21');
  vexpect(a, 0x75, eax, 0x2468);
  vexpect(a, 0x76, dword({ disp: 'i21_count' }), 1);
  vexpect(a, 0x77, dword({ disp: 'i21_eip' }), 'after_int21');
  vexpect(a, 0x78, dword({ disp: 'i21_frame_ds' }), V86.DS);
  a.mov(eax, dword({ disp: 'i21_flags' })).and(eax, VM | IOPL3);
  vexpect(a, 0x79, eax, VM | IOPL3);
  a.push(IF | 2, 16).push(reg.cs).push('after_iret', 16);
  a.iret(); // the real-mode IRET: IF from the image, IOPL kept
  a.jmp('v86_fail', 'near');
  a.label('after_iret');
  a.mov(ax, reg.sp);
  vexpect(a, 0x7a, ax, V86.SP);
  vexpect(a, 0x7b, dword({ disp: 'gp_count' }), n);
  a.pushf().pop(ax);
  a.and(ax, IOPL3 | IF);
  vexpect(a, 0x7c, ax, IOPL3 | IF);
  a.int(0x20); // to the monitor: done

  a.label('v86_far_proc');
  a.mov(bx, reg.sp);
  a.mov(ax, word({ seg: reg.ss, base: bx, disp: 2 })); // the pushed CS
  vexpect(a, 0x25, ax, V86.CS);
  a.mov(dword({ disp: 'far_ok' }), 1);
  a.retf();

  a.label('v86_fail');
  a.mov(dword({ disp: 'v86_failed' }), 1);
  a.hlt(); // #GP to the monitor, which reports the failure
  a.label('v86_byte').db(0x5e);

  // --- The monitor (32-bit ring 0).
  a.use32();
  a.label('gp_handler'); // from V86: error, EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS
  a.push(eax);
  a.mov(eax, reg.ds).push(eax);
  a.mov(eax, reg.gs).push(eax);
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.pop(eax).mov(at('gp_entry_gs'), eax);
  a.pop(eax).mov(at('gp_entry_ds'), eax);
  a.cmp(dword({ disp: 'v86_failed' }), 0).jne('fail', 'near');
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('gp_err'), eax);
  a.mov(eax, dword({ base: esp, disp: 8 })).mov(at('gp_eip'), eax);
  a.mov(eax, dword({ base: esp, disp: 12 })).mov(at('gp_cs'), eax);
  a.mov(eax, dword({ base: esp, disp: 16 })).mov(at('gp_flags'), eax);
  a.mov(eax, dword({ base: esp, disp: 28 })).mov(at('gp_frame_es'), eax);
  a.mov(eax, dword({ base: esp, disp: 32 })).mov(at('gp_frame_ds'), eax);
  a.inc(dword({ disp: 'gp_count' }));
  a.cmp(dword({ disp: 'set_iopl' }), 0).je('no_iopl');
  a.or(dword({ base: esp, disp: 16 }), IOPL3);
  a.mov(dword({ disp: 'set_iopl' }), 0);
  a.label('no_iopl');
  a.mov(eax, at('skip')).add(dword({ base: esp, disp: 8 }), eax);
  a.pop(eax).add(esp, 4);
  a.iretd(); // back to V86

  a.label('de_handler'); // no error code: EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS
  a.push(eax);
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('de_eip'), eax);
  a.mov(eax, dword({ base: esp, disp: 16 })).mov(at('de_frame_sp'), eax);
  a.mov(eax, dword({ base: esp, disp: 20 })).mov(at('de_frame_ss'), eax);
  a.mov(eax, dword({ base: esp, disp: 28 })).mov(at('de_frame_ds'), eax);
  a.inc(dword({ disp: 'de_count' }));
  a.add(dword({ base: esp, disp: 4 }), 2);
  a.pop(eax).iretd();

  a.label('int21_handler');
  a.push(eax);
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('i21_eip'), eax);
  a.mov(eax, dword({ base: esp, disp: 12 })).mov(at('i21_flags'), eax);
  a.mov(eax, dword({ base: esp, disp: 28 })).mov(at('i21_frame_ds'), eax);
  a.inc(dword({ disp: 'i21_count' }));
  a.pop(eax).add(eax, eax);
  a.iretd();

  a.label('done_handler'); // INT 0x20 from V86 with IOPL 3
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.mov(eax, dword({ base: esp, disp: 0 })).mov(at('done_eip'), eax);
  a.mov(eax, dword({ base: esp, disp: 8 })).mov(at('done_flags'), eax);
  a.mov(eax, at('done_flags')).and(eax, VM | IOPL3);
  expect(a, 0x90, eax, VM | IOPL3);
  a.mov(ecx, reg.cr4).and(ecx, 1); // no VME
  expect(a, 0x91, ecx, 0);
  a.jmp('pass', 'near');

  a.label('unexpected');
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.mov(dword({ disp: 'check' }), 0xee);
  a.jmp('fail', 'near');

  emitReporting(a, SEL.DATA0, 'K');

  a.align(8, 0);
  a.label('gdt');
  a.dd(0, 0);
  segDesc(a, 0, 0xfffff, CODE0); // 0x08
  segDesc(a, 0, 0xfffff, DATA0); // 0x10
  sysDesc(a, 'tss', 0x68 + BITMAP_BYTES, TSS32); // 0x18
  a.label('gdtr');
  a.dw(0x20 - 1).dd('gdt');
  a.label('idtr');
  a.dw(IDT_ENTRIES * 8 - 1).dd('idt');
  tss32(a, 'tss', { esp0: MEM.RING0_STACK, ss0: SEL.DATA0, iomap: 0x68 });
  const bitmap = new Array<number>(BITMAP_BYTES).fill(0xff);
  for (const p of [COM1, 0x60]) bitmap[p >>> 3] = bitmap[p >>> 3]! & ~(1 << (p & 7));
  a.db(...bitmap, 0xff);

  a.align(4, 0);
  for (const v of VARS) a.label(v).dd(0);

  a.align(8, 0);
  a.label('idt');
  for (let v = 0; v < IDT_ENTRIES; v++) {
    if (v === 0) gateDesc(a, SEL.CODE0, 'de_handler', INT_GATE);
    else if (v === 13) gateDesc(a, SEL.CODE0, 'gp_handler', INT_GATE);
    else if (v === 0x20) gateDesc(a, SEL.CODE0, 'done_handler', INT_GATE | (3 << 13));
    else if (v === 0x21) gateDesc(a, SEL.CODE0, 'int21_handler', INT_GATE | (3 << 13));
    else gateDesc(a, SEL.CODE0, 'unexpected', INT_GATE);
  }
  return build(a);
}
