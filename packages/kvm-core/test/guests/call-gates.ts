/**
 * A self-checking guest for call gates, ARPL and the I/O permission bitmap at CPL 3 > IOPL
 * (reporting convention in pm-kit.ts). Checks:
 *   1. ARPL (register and memory forms; ZF; only the low word changes)
 *   2. ring 3 (IOPL 0): OUT to COM1 and IN from port 0x60 allowed by the bitmap; OUTSB too;
 *      OUT to port 0x80, OUT DX,AX at 0x3F8 (0x3F9 denied) and CLI raise #GP(0)
 *   3. CALL through a 32-bit call gate (DPL 3) to ring 0 with 2 dword parameters: stack from
 *      the TSS, the frame (SS, ESP, parameters, CS, EIP) checked in the handler; RETF 8 back
 *      releases the parameters on both stacks and nulls DS (it held a ring-0 selector)
 *   4. the same through a 16-bit call gate with 1 word parameter (16-bit frame, O16 RETF 2)
 *   5. a DPL-0 call gate from ring 3: #GP(gate selector)
 *   6. a call gate to ring-3 code from ring 3: no stack switch; JMP through a call gate
 *   7. JMP through a gate to ring-0 code from ring 3: #GP(code selector)
 */
import { Assembler, dword, reg, word } from '../../src/x86/asm/index.js';
import {
  CALL_GATE16, CALL_GATE32, CODE0, CODE3, COM1, DATA0, DATA3, GUEST_LOAD, INT_GATE,
  at, build, emitFlatTwoRingGdt, emitReporting, enterProtectedMode, expect, gateDesc, tss32,
} from './pm-kit.js';

const { eax, ebx, ecx, edx, esi, esp, ax, bx, cx, dx, al } = reg;

export const SEL = {
  CODE0: 0x08, DATA0: 0x10, CODE3: 0x1b, DATA3: 0x23, TSS: 0x28,
  GATE32: 0x33, GATE16: 0x3b, GATE_DPL0: 0x43, GATE_SAME: 0x4b, GATE_JMP: 0x53,
} as const;
export const MEM = { RING0_STACK: 0x80000, USER_STACK: 0xf000 } as const;
/** Ports the bitmap lets ring 3 use: COM1's data port and 0x60 (bit clear); everything else up to 0x3FF is set. */
export const ALLOWED_PORTS = [COM1, 0x60];
const BITMAP_BYTES = 0x80; // ports 0..0x3FF
const IDT_ENTRIES = 0x83;

const VARS = [
  'gp_count', 'gp_err', 'gp_eip', 'skip', 'arpl_mem', 'in_value',
  'g32_cs', 'g32_ss', 'g32_esp', 'g32_ret', 'g32_retcs', 'g32_p0', 'g32_p1', 'g32_oldesp', 'g32_oldss', 'user_esp',
  'g16_cs', 'g16_esp', 'g16_frame0', 'g16_frame1',
  'same_esp', 'same_retcs',
] as const;

export function buildCallGateGuest() {
  const a = new Assembler({ bits: 16, origin: GUEST_LOAD });
  enterProtectedMode(a, SEL.CODE0, SEL.DATA0, MEM.RING0_STACK);
  a.mov(al, 'P'.charCodeAt(0)).call('putc');

  // --- 1. ARPL.
  a.mov(dword({ disp: 'check' }), 1);
  a.mov(eax, 0x12340010).mov(bx, 0x0023);
  a.raw([0x63, 0xd8]); // arpl ax, bx
  a.jnz('fail', 'near');
  expect(a, 0x10, eax, 0x12340013);
  a.raw([0x63, 0xd8]); // RPL already 3: ZF = 0, unchanged
  a.jz('fail', 'near');
  expect(a, 0x11, eax, 0x12340013);
  a.mov(word({ disp: 'arpl_mem' }), 0x0018).mov(cx, 0x0002);
  a.raw([0x63, 0x0d]).dd('arpl_mem'); // arpl [arpl_mem], cx
  a.jnz('fail', 'near');
  expect(a, 0x12, at('arpl_mem'), 0x001a);

  // --- To ring 3 with IOPL 0.
  a.mov(ax, SEL.TSS).ltr(ax);
  a.push(SEL.DATA3).push(MEM.USER_STACK).push(0x2).push(SEL.CODE3).push('user').iretd();

  a.label('user');
  a.mov(ax, SEL.DATA3).mov(reg.ds, ax).mov(reg.es, ax);
  // --- 2. The I/O bitmap.
  a.mov(dword({ disp: 'check' }), 2);
  a.mov(al, 'u'.charCodeAt(0)).mov(dx, COM1).out(dx, al); // allowed
  a.in(al, 0x60); // allowed; the VMM answers 0x5A
  a.movzx(eax, al).mov(dword({ disp: 'in_value' }), eax);
  expect(a, 0x20, eax, 0x5a);
  a.mov(esi, 'outs_byte').mov(dx, COM1);
  a.outsb(); // allowed
  a.mov(dword({ disp: 'skip' }), 2);
  a.label('out80');
  a.out(0x80, al); // denied: #GP(0), skipped
  expect(a, 0x21, at('gp_count'), 1);
  expect(a, 0x22, at('gp_err'), 0);
  expect(a, 0x23, at('gp_eip'), 'out80');
  a.mov(dword({ disp: 'skip' }), 2);
  a.mov(dx, COM1);
  a.label('out_ax');
  a.raw([0x66, 0xef]); // out dx, ax: port 0x3F9 is denied
  expect(a, 0x24, at('gp_count'), 2);
  expect(a, 0x25, at('gp_eip'), 'out_ax');
  a.mov(dword({ disp: 'skip' }), 1);
  a.label('cli3');
  a.cli(); // CPL 3 > IOPL 0
  expect(a, 0x26, at('gp_count'), 3);
  expect(a, 0x27, at('gp_eip'), 'cli3');

  // --- 3. 32-bit call gate to ring 0 with 2 parameters.
  a.mov(dword({ disp: 'check' }), 3);
  a.mov(dword({ disp: 'user_esp' }), esp);
  a.push(0x11111111).push(0x22222222);
  a.callFar(SEL.GATE32, 0);
  a.label('g32_return');
  a.mov(cx, reg.ds); // nulled by the return to ring 3
  a.mov(edx, eax);
  a.mov(ax, SEL.DATA3).mov(reg.ds, ax);
  expect(a, 0x30, cx, 0);
  expect(a, 0x31, edx, 0x33333333);
  a.mov(eax, esp);
  expect(a, 0x32, eax, MEM.USER_STACK);
  a.mov(ax, reg.cs);
  expect(a, 0x33, ax, SEL.CODE3);
  a.mov(ax, reg.ss);
  expect(a, 0x34, ax, SEL.DATA3);
  a.mov(ax, reg.es);
  expect(a, 0x35, ax, SEL.DATA3);
  expect(a, 0x36, at('g32_cs'), SEL.CODE0);
  expect(a, 0x37, at('g32_ss'), SEL.DATA0);
  expect(a, 0x38, at('g32_esp'), MEM.RING0_STACK - 24);
  expect(a, 0x39, at('g32_ret'), 'g32_return');
  expect(a, 0x3a, at('g32_retcs'), SEL.CODE3);
  expect(a, 0x3b, at('g32_p0'), 0x22222222);
  expect(a, 0x3c, at('g32_p1'), 0x11111111);
  expect(a, 0x3d, at('g32_oldesp'), MEM.USER_STACK - 8);
  expect(a, 0x3e, at('g32_oldss'), SEL.DATA3);

  // --- 4. 16-bit call gate, 1 word parameter.
  a.mov(dword({ disp: 'check' }), 4);
  a.push(0x4455, 16);
  a.callFar(SEL.GATE16, 0);
  a.label('g16_return');
  a.mov(ax, SEL.DATA3).mov(reg.ds, ax);
  a.mov(eax, esp);
  expect(a, 0x40, eax, MEM.USER_STACK);
  expect(a, 0x41, at('g16_cs'), SEL.CODE0);
  expect(a, 0x42, at('g16_esp'), MEM.RING0_STACK - 10);
  // Frame words: IP, CS | param << 16; then SP | SS << 16.
  expect(a, 0x43, at('g16_frame0'), 0x4455001b);
  expect(a, 0x44, at('g16_frame1'), ((SEL.DATA3 << 16) | (MEM.USER_STACK - 2)) >>> 0);
  expect(a, 0x45, ebx, 'g16_return');

  // --- 5. A DPL-0 gate from ring 3.
  a.mov(dword({ disp: 'check' }), 5);
  a.mov(dword({ disp: 'skip' }), 7);
  a.label('call_dpl0');
  a.callFar(SEL.GATE_DPL0, 0);
  expect(a, 0x50, at('gp_count'), 4);
  expect(a, 0x51, at('gp_err'), SEL.GATE_DPL0 & 0xfffc);
  expect(a, 0x52, at('gp_eip'), 'call_dpl0');

  // --- 6. Gates to ring-3 code: CALL (no stack switch) and JMP.
  a.mov(dword({ disp: 'check' }), 6);
  a.callFar(SEL.GATE_SAME, 0);
  a.label('same_return');
  expect(a, 0x60, at('same_esp'), MEM.USER_STACK - 8);
  expect(a, 0x61, at('same_retcs'), SEL.CODE3);
  a.jmpFar(SEL.GATE_JMP, 0);
  a.jmp('fail', 'near');
  a.label('after_jmp_target');

  // --- 7. JMP through a gate to ring 0 is refused.
  a.mov(dword({ disp: 'check' }), 7);
  a.mov(dword({ disp: 'skip' }), 7);
  a.label('jmp_ring0');
  a.jmpFar(SEL.GATE32, 0);
  expect(a, 0x70, at('gp_count'), 5);
  expect(a, 0x71, at('gp_err'), SEL.CODE0);
  expect(a, 0x72, at('gp_eip'), 'jmp_ring0');
  a.int(0x81);

  // --- Ring 0 targets.
  a.label('gate32_target');
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax); // ring-0 DS: the return to ring 3 must null it
  a.mov(ax, reg.cs).movzx(eax, ax).mov(at('g32_cs'), eax);
  a.mov(ax, reg.ss).movzx(eax, ax).mov(at('g32_ss'), eax);
  a.mov(at('g32_esp'), esp);
  a.mov(eax, dword({ base: esp, disp: 0 })).mov(at('g32_ret'), eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('g32_retcs'), eax);
  a.mov(eax, dword({ base: esp, disp: 8 })).mov(at('g32_p0'), eax);
  a.mov(eax, dword({ base: esp, disp: 12 })).mov(at('g32_p1'), eax);
  a.mov(eax, dword({ base: esp, disp: 16 })).mov(at('g32_oldesp'), eax);
  a.mov(eax, dword({ base: esp, disp: 20 })).mov(at('g32_oldss'), eax);
  a.mov(eax, dword({ base: esp, disp: 8 })).add(eax, dword({ base: esp, disp: 12 }));
  a.retf(8);

  a.label('gate16_target'); // 32-bit code reached through a 16-bit gate
  a.mov(cx, reg.cs).movzx(ecx, cx).mov(at('g16_cs'), ecx);
  a.mov(at('g16_esp'), esp);
  a.mov(ecx, dword({ base: esp, disp: 2 })).mov(at('g16_frame0'), ecx);
  a.mov(ecx, dword({ base: esp, disp: 6 })).mov(at('g16_frame1'), ecx);
  a.movzx(ebx, word({ base: esp, disp: 0 }));
  a.raw([0x66, 0xca, 0x02, 0x00]); // o16 retf 2

  // Ring 3 targets.
  a.label('gate_same_target');
  a.mov(at('same_esp'), esp);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('same_retcs'), eax);
  a.retf();
  a.label('gate_jmp_target');
  a.mov(eax, esp);
  expect(a, 0x63, eax, MEM.USER_STACK);
  a.mov(ax, reg.cs);
  expect(a, 0x64, ax, SEL.CODE3);
  a.jmp('after_jmp_target', 'near');

  a.label('gp_handler'); // from ring 3: error code, EIP, CS, EFLAGS, ESP, SS
  a.push(eax).push(reg.ds);
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.mov(eax, dword({ base: esp, disp: 8 })).mov(at('gp_err'), eax);
  a.mov(eax, dword({ base: esp, disp: 12 })).mov(at('gp_eip'), eax);
  a.inc(dword({ disp: 'gp_count' }));
  a.mov(eax, at('skip')).add(dword({ base: esp, disp: 12 }), eax);
  a.pop(reg.ds).pop(eax).add(esp, 4).iretd();

  a.label('finish_handler');
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.jmp('pass', 'near');
  a.label('unexpected');
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax);
  a.mov(dword({ disp: 'check' }), 0xee);
  a.jmp('fail', 'near');

  emitReporting(a, SEL.DATA0, 'K', 0x82);
  a.label('outs_byte').db('s'.charCodeAt(0));

  a.align(8, 0);
  emitFlatTwoRingGdt(a, 0x68 + BITMAP_BYTES); // the TSS's limit covers the bitmap and its 0xFF end byte
  gateDesc(a, SEL.CODE0, 'gate32_target', CALL_GATE32 | (3 << 13) | 2); // 0x30
  gateDesc(a, SEL.CODE0, 'gate16_target', CALL_GATE16 | (3 << 13) | 1); // 0x38
  gateDesc(a, SEL.CODE0, 'gate32_target', CALL_GATE32); // 0x40: DPL 0
  gateDesc(a, SEL.CODE3, 'gate_same_target', CALL_GATE32 | (3 << 13)); // 0x48
  gateDesc(a, SEL.CODE3, 'gate_jmp_target', CALL_GATE32 | (3 << 13)); // 0x50
  a.label('gdtr');
  a.dw(0x58 - 1).dd('gdt');
  a.label('idtr');
  a.dw(IDT_ENTRIES * 8 - 1).dd('idt');

  tss32(a, 'tss', { esp0: MEM.RING0_STACK, ss0: SEL.DATA0, iomap: 0x68 });
  // The bitmap: 1 = denied.
  const bitmap = new Array<number>(BITMAP_BYTES).fill(0xff);
  for (const p of ALLOWED_PORTS) bitmap[p >>> 3] = bitmap[p >>> 3]! & ~(1 << (p & 7));
  a.db(...bitmap, 0xff); // the CPU reads two bytes: the map needs a trailing byte of ones

  a.align(4, 0);
  for (const v of VARS) a.label(v).dd(0);

  a.align(8, 0);
  a.label('idt');
  for (let v = 0; v < IDT_ENTRIES; v++) {
    if (v === 13) gateDesc(a, SEL.CODE0, 'gp_handler', INT_GATE);
    else if (v === 0x81) gateDesc(a, SEL.CODE0, 'finish_handler', INT_GATE | (3 << 13));
    else if (v === 0x82) gateDesc(a, SEL.CODE0, 'fail', INT_GATE | (3 << 13));
    else gateDesc(a, SEL.CODE0, 'unexpected', INT_GATE);
  }
  return build(a);
}
