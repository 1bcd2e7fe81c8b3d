/**
 * Real-mode arithmetic with flags: hand-checked edge cases for ADD/ADC/SUB/SBB/CMP at 8, 16
 * and 32 bits (0x66), INC/DEC/NEG, shifts and rotates by 1, by CL and by imm8, MUL/IMUL,
 * DIV/IDIV, and #DE delivered through the IVT.
 *
 * Each case runs `code` followed by HLT in a fresh real-mode guest and compares the listed
 * registers and the flags under `mask` (flags the SDM leaves undefined are masked out).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KVM_EXIT_HLT, type KvmRegs } from '../src/index.js';
import { ARITH, F, LAYOUT, closeGuests, createGuest, hex, lin, ramU16, runExpect } from './helpers.js';

afterEach(closeGuests);

const { CF, PF, AF, ZF, SF, OF } = F;
const NO_AF = ARITH & ~AF;
const NO_AF_OF = ARITH & ~(AF | OF);

interface Case {
  name: string;
  code: string;
  regs: Partial<KvmRegs>;
  /** Flags set before the code runs (besides the fixed bit 1). */
  flagsIn?: number;
  want: Partial<KvmRegs>;
  /** Expected arithmetic flags under `mask`. */
  flags: number;
  mask?: number;
  /** Guest memory set before (DS-relative offset -> bytes) and checked after. */
  memIn?: [number, number[]][];
  memOut?: [number, number[]][];
}

function runCase(c: Case): void {
  const g = createGuest({ code: `${c.code} f4`, regs: { ...c.regs, rflags: 0x2 | (c.flagsIn ?? 0) } });
  for (const [off, bytes] of c.memIn ?? []) g.ram.set(bytes, lin(LAYOUT.ds, off));
  runExpect(g, KVM_EXIT_HLT);
  const regs = g.vcpu.getRegs();
  expect(regs.rip, 'HLT must follow the instruction under test').toBe(LAYOUT.ip + hex(c.code).length + 1);
  const picked = Object.fromEntries(Object.keys(c.want).map((k) => [k, regs[k as keyof KvmRegs]]));
  expect(picked).toEqual(c.want);
  const mask = c.mask ?? ARITH;
  expect(flagNames(regs.rflags & mask)).toBe(flagNames(c.flags & mask));
  for (const [off, bytes] of c.memOut ?? []) {
    const a = lin(LAYOUT.ds, off);
    expect([...g.ram.subarray(a, a + bytes.length)]).toEqual(bytes);
  }
}

function flagNames(f: number): string {
  const names = (['CF', 'PF', 'AF', 'ZF', 'SF', 'OF'] as const).filter((n) => f & F[n]);
  return names.length ? names.join('|') : '0';
}

const ADD_SUB: Case[] = [
  // 8-bit, AL
  { name: 'add al,1: ff -> 00', code: '04 01', regs: { rax: 0xff }, want: { rax: 0x00 }, flags: CF | ZF | AF | PF },
  { name: 'add al,1: 7f -> 80', code: '04 01', regs: { rax: 0x7f }, want: { rax: 0x80 }, flags: OF | SF | AF },
  { name: 'add al,80: 80 -> 00', code: '04 80', regs: { rax: 0x80 }, want: { rax: 0x00 }, flags: CF | OF | ZF | PF },
  { name: 'adc al,0 +CF: ff -> 00', code: '14 00', regs: { rax: 0xff }, flagsIn: CF, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'adc al,0 +CF: 7f -> 80', code: '14 00', regs: { rax: 0x7f }, flagsIn: CF, want: { rax: 0x80 }, flags: OF | SF | AF },
  { name: 'adc al,ff +CF: 00 -> 00 (b + CF wraps)', code: '14 ff', regs: { rax: 0 }, flagsIn: CF, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'adc al,7f +CF: 00 -> 80 (overflow only through CF)', code: '14 7f', regs: { rax: 0 }, flagsIn: CF, want: { rax: 0x80 }, flags: OF | SF | AF },
  { name: 'adc al,1 without CF: 0e -> 0f', code: '14 01', regs: { rax: 0x0e }, want: { rax: 0x0f }, flags: PF },
  { name: 'sub al,1: 00 -> ff', code: '2c 01', regs: { rax: 0 }, want: { rax: 0xff }, flags: CF | SF | AF | PF },
  { name: 'sub al,1: 80 -> 7f', code: '2c 01', regs: { rax: 0x80 }, want: { rax: 0x7f }, flags: OF | AF },
  { name: 'sbb al,ff +CF: 00 -> 00 (borrow through b + CF)', code: '1c ff', regs: { rax: 0 }, flagsIn: CF, want: { rax: 0 }, flags: CF | ZF | PF | AF },
  { name: 'sbb al,0 +CF: 80 -> 7f', code: '1c 00', regs: { rax: 0x80 }, flagsIn: CF, want: { rax: 0x7f }, flags: OF | AF },
  { name: 'sbb al,7f +CF: 7f -> ff', code: '1c 7f', regs: { rax: 0x7f }, flagsIn: CF, want: { rax: 0xff }, flags: CF | SF | AF | PF },
  { name: 'cmp al,20: 10 (AL kept)', code: '3c 20', regs: { rax: 0x10 }, want: { rax: 0x10 }, flags: CF | SF | PF },
  { name: 'cmp al,7f: 80 overflows', code: '3c 7f', regs: { rax: 0x80 }, want: { rax: 0x80 }, flags: OF | AF },
  { name: 'cmp al,42: equal', code: '3c 42', regs: { rax: 0x42 }, want: { rax: 0x42 }, flags: ZF | PF },
  { name: 'add bl,cl (reg form 00 cb): 0x90 + 0x90', code: '00 cb', regs: { rbx: 0x90, rcx: 0x90 }, want: { rbx: 0x20 }, flags: CF | OF },
  { name: 'add ah,1 uses AH, not AL: 0f -> 10', code: '80 c4 01', regs: { rax: 0x0fff }, want: { rax: 0x10ff }, flags: AF },
  // 16-bit, AX
  { name: 'add ax,1: ffff -> 0', code: '05 01 00', regs: { rax: 0xffff }, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'add ax,1: 7fff -> 8000 (PF from the low byte)', code: '05 01 00', regs: { rax: 0x7fff }, want: { rax: 0x8000 }, flags: OF | SF | AF | PF },
  { name: 'add ax,-1 (83 /0 ib sign-extends): 1 -> 0', code: '83 c0 ff', regs: { rax: 1 }, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'add ax,1234 keeps the upper half of EAX', code: '05 34 12', regs: { rax: 0xabcd0000 }, want: { rax: 0xabcd1234 }, flags: 0 },
  { name: 'sub ax,1: 8000 -> 7fff', code: '2d 01 00', regs: { rax: 0x8000 }, want: { rax: 0x7fff }, flags: OF | AF | PF },
  { name: 'adc ax,0 +CF: ffff -> 0', code: '15 00 00', regs: { rax: 0xffff }, flagsIn: CF, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'sbb ax,0 +CF: 0 -> ffff', code: '1d 00 00', regs: { rax: 0 }, flagsIn: CF, want: { rax: 0xffff }, flags: CF | SF | AF | PF },
  { name: 'cmp ax,8000: 7fff', code: '3d 00 80', regs: { rax: 0x7fff }, want: { rax: 0x7fff }, flags: CF | OF | SF | PF },
  // 32-bit with the 0x66 prefix
  { name: 'add eax,1: ffffffff -> 0', code: '66 05 01 00 00 00', regs: { rax: 0xffffffff }, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'add eax,1: 7fffffff -> 80000000', code: '66 05 01 00 00 00', regs: { rax: 0x7fffffff }, want: { rax: 0x80000000 }, flags: OF | SF | AF | PF },
  { name: 'add eax,-1 (66 83 /0 ib): 1 -> 0', code: '66 83 c0 ff', regs: { rax: 1 }, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'sub eax,1: 0 -> ffffffff', code: '66 2d 01 00 00 00', regs: { rax: 0 }, want: { rax: 0xffffffff }, flags: CF | SF | AF | PF },
  { name: 'adc eax,0 +CF: 7fffffff -> 80000000', code: '66 15 00 00 00 00', regs: { rax: 0x7fffffff }, flagsIn: CF, want: { rax: 0x80000000 }, flags: OF | SF | AF | PF },
  { name: 'adc eax,-1 +CF: 0 -> 0', code: '66 15 ff ff ff ff', regs: { rax: 0 }, flagsIn: CF, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'sbb eax,0 +CF: 80000000 -> 7fffffff', code: '66 1d 00 00 00 00', regs: { rax: 0x80000000 }, flagsIn: CF, want: { rax: 0x7fffffff }, flags: OF | AF | PF },
  { name: 'sbb eax,-1 +CF: 7fffffff -> 7fffffff (borrow)', code: '66 1d ff ff ff ff', regs: { rax: 0x7fffffff }, flagsIn: CF, want: { rax: 0x7fffffff }, flags: CF | AF | PF },
  { name: 'cmp eax,1: 80000000 overflows, EAX kept', code: '66 3d 01 00 00 00', regs: { rax: 0x80000000 }, want: { rax: 0x80000000 }, flags: OF | AF | PF },
  { name: 'add ebx,ecx: 80000000 + 80000000', code: '66 01 cb', regs: { rbx: 0x80000000, rcx: 0x80000000 }, want: { rbx: 0 }, flags: CF | OF | ZF | PF },
  // Memory operands (read-modify-write)
  { name: 'add byte [0x10],1: ff -> 00', code: '80 06 10 00 01', regs: {}, memIn: [[0x10, [0xff]]], want: {}, memOut: [[0x10, [0x00]]], flags: CF | ZF | AF | PF },
  { name: 'sub [bx],ax: 0000 - 1', code: '29 07', regs: { rbx: 0x20, rax: 1 }, memIn: [[0x20, [0, 0]]], want: {}, memOut: [[0x20, [0xff, 0xff]]], flags: CF | SF | AF | PF },
  { name: 'cmp [bx],al does not write', code: '38 07', regs: { rbx: 0x20, rax: 0x01 }, memIn: [[0x20, [0x00]]], want: {}, memOut: [[0x20, [0x00]]], flags: CF | SF | AF | PF },
];

const INC_NEG: Case[] = [
  { name: 'inc al keeps CF=1: ff -> 00', code: 'fe c0', regs: { rax: 0xff }, flagsIn: CF, want: { rax: 0 }, flags: CF | ZF | AF | PF },
  { name: 'inc ax keeps CF=0: 7fff -> 8000', code: '40', regs: { rax: 0x7fff }, want: { rax: 0x8000 }, flags: OF | SF | AF | PF },
  { name: 'dec ax keeps CF=1: 8000 -> 7fff', code: '48', regs: { rax: 0x8000 }, flagsIn: CF, want: { rax: 0x7fff }, flags: CF | OF | AF | PF },
  { name: 'inc eax: ffffffff -> 0, CF stays 0', code: '66 40', regs: { rax: 0xffffffff }, want: { rax: 0 }, flags: ZF | AF | PF },
  { name: 'inc bx after add al,1 carried: CF survives', code: '04 01 43', regs: { rax: 0xff, rbx: 0 }, want: { rax: 0, rbx: 1 }, flags: CF },
  { name: 'dec bx after sub borrowed: CF survives, ZF from dec', code: '2c 01 4b', regs: { rax: 0, rbx: 1 }, want: { rax: 0xff, rbx: 0 }, flags: CF | ZF | PF },
  { name: 'inc byte [0x10]: 7f -> 80', code: 'fe 06 10 00', regs: {}, memIn: [[0x10, [0x7f]]], want: {}, memOut: [[0x10, [0x80]]], flags: OF | SF | AF },
  { name: 'neg al: 0 -> 0 clears CF', code: 'f6 d8', regs: { rax: 0 }, flagsIn: CF | OF | SF, want: { rax: 0 }, flags: ZF | PF },
  { name: 'neg al: 80 -> 80 sets CF and OF', code: 'f6 d8', regs: { rax: 0x80 }, want: { rax: 0x80 }, flags: CF | OF | SF },
  { name: 'neg ax: 1 -> ffff', code: 'f7 d8', regs: { rax: 1 }, want: { rax: 0xffff }, flags: CF | SF | AF | PF },
  { name: 'neg eax: 80000000', code: '66 f7 d8', regs: { rax: 0x80000000 }, want: { rax: 0x80000000 }, flags: CF | OF | SF | PF },
];

const SHIFTS: Case[] = [
  // by 1 (D0/D1): OF is defined
  { name: 'shl al,1: 81 -> 02 (CF=1, OF=1)', code: 'd0 e0', regs: { rax: 0x81 }, want: { rax: 0x02 }, flags: CF | OF, mask: NO_AF },
  { name: 'shl al,1: c0 -> 80 (CF=1, OF=0)', code: 'd0 e0', regs: { rax: 0xc0 }, want: { rax: 0x80 }, flags: CF | SF, mask: NO_AF },
  { name: 'shr al,1: 81 -> 40 (OF = old MSB)', code: 'd0 e8', regs: { rax: 0x81 }, want: { rax: 0x40 }, flags: CF | OF, mask: NO_AF },
  { name: 'sar al,1: 81 -> c0 (OF=0)', code: 'd0 f8', regs: { rax: 0x81 }, flagsIn: OF, want: { rax: 0xc0 }, flags: CF | SF | PF, mask: NO_AF },
  { name: 'shl word [0x10],1: 4001 -> 8002', code: 'd1 26 10 00', regs: {}, memIn: [[0x10, [0x01, 0x40]]], want: {}, memOut: [[0x10, [0x02, 0x80]]], flags: OF | SF, mask: NO_AF },
  // Rotates change only CF and OF; the other four stay as they were.
  { name: 'rol al,1: 80 -> 01, ZF SF AF PF untouched', code: 'd0 c0', regs: { rax: 0x80 }, flagsIn: ZF | SF | AF | PF, want: { rax: 0x01 }, flags: CF | OF | ZF | SF | AF | PF },
  { name: 'ror al,1: 01 -> 80', code: 'd0 c8', regs: { rax: 0x01 }, want: { rax: 0x80 }, flags: CF | OF },
  { name: 'rcl al,1 CF=0: 80 -> 00 (ZF not set by rotates)', code: 'd0 d0', regs: { rax: 0x80 }, want: { rax: 0x00 }, flags: CF | OF },
  { name: 'rcr al,1 CF=1: 01 -> 80', code: 'd0 d8', regs: { rax: 0x01 }, flagsIn: CF, want: { rax: 0x80 }, flags: CF | OF },
  { name: 'rcr al,1 CF=0: 80 -> 40 (OF = old MSB ^ old CF)', code: 'd0 d8', regs: { rax: 0x80 }, want: { rax: 0x40 }, flags: OF },
  { name: 'rcl ax,1 CF=1: 7fff -> ffff', code: 'd1 d0', regs: { rax: 0x7fff }, flagsIn: CF, want: { rax: 0xffff }, flags: OF },
  // by CL (D2/D3) and imm8 (C0/C1): OF undefined for counts > 1
  { name: 'shl ax,cl=4: 1001 -> 0010 (CF = bit 12)', code: 'd3 e0', regs: { rax: 0x1001, rcx: 4 }, want: { rax: 0x0010 }, flags: CF, mask: NO_AF_OF },
  { name: 'shr ax,cl=5: 8010 -> 0400 (CF = bit 4)', code: 'd3 e8', regs: { rax: 0x8010, rcx: 5 }, want: { rax: 0x0400 }, flags: CF | PF, mask: NO_AF_OF },
  { name: 'sar ax,cl=15: 8000 -> ffff', code: 'd3 f8', regs: { rax: 0x8000, rcx: 15 }, want: { rax: 0xffff }, flags: SF | PF, mask: NO_AF_OF },
  { name: 'shl al,cl=0x20 (count masked to 0): nothing changes', code: 'd2 e0', regs: { rax: 0x81, rcx: 0x20 }, flagsIn: CF | ZF | OF | AF, want: { rax: 0x81 }, flags: CF | ZF | OF | AF },
  { name: 'shl al,cl=0x21 (count masked to 1)', code: 'd2 e0', regs: { rax: 0x81, rcx: 0x21 }, want: { rax: 0x02 }, flags: CF | OF, mask: NO_AF },
  { name: 'shl ax,imm8 4: 0fff -> fff0', code: 'c1 e0 04', regs: { rax: 0x0fff }, want: { rax: 0xfff0 }, flags: SF | PF, mask: NO_AF_OF },
  { name: 'shr eax,cl=31: 80000000 -> 1', code: '66 d3 e8', regs: { rax: 0x80000000, rcx: 31 }, want: { rax: 1 }, flags: 0, mask: NO_AF_OF },
  { name: 'shl eax,cl=1: 80000001 -> 2', code: '66 d3 e0', regs: { rax: 0x80000001, rcx: 1 }, want: { rax: 2 }, flags: CF | OF, mask: NO_AF },
  { name: 'rol ax,cl=4: 1234 -> 2341', code: 'd3 c0', regs: { rax: 0x1234, rcx: 4 }, want: { rax: 0x2341 }, flags: CF, mask: CF | ZF | SF | PF },
  { name: 'rol al,cl=8: AL kept, CF = bit 0', code: 'd2 c0', regs: { rax: 0x81, rcx: 8 }, want: { rax: 0x81 }, flags: CF, mask: CF },
  { name: 'ror eax,imm8 8: 12345678 -> 78123456', code: '66 c1 c8 08', regs: { rax: 0x12345678 }, want: { rax: 0x78123456 }, flags: 0, mask: CF },
  { name: 'rcr ax,cl=2 CF=0: 0001 -> 8000, CF=0', code: 'd3 d8', regs: { rax: 0x0001, rcx: 2 }, want: { rax: 0x8000 }, flags: 0, mask: CF },
  { name: 'rcl al,cl=9: a full 9-bit cycle', code: 'd2 d0', regs: { rax: 0x5a, rcx: 9 }, flagsIn: CF, want: { rax: 0x5a }, flags: CF, mask: CF },
  { name: 'rcl ax,cl=17: a full 17-bit cycle', code: 'd3 d0', regs: { rax: 0x8001, rcx: 17 }, want: { rax: 0x8001 }, flags: 0, mask: CF },
];

const MULDIV: Case[] = [
  { name: 'mul bl: 80 * 2 = 0100', code: 'f6 e3', regs: { rax: 0x80, rbx: 2 }, want: { rax: 0x0100 }, flags: CF | OF, mask: CF | OF },
  { name: 'mul bl: 10 * 0f = 00f0', code: 'f6 e3', regs: { rax: 0x10, rbx: 0x0f }, flagsIn: CF | OF, want: { rax: 0xf0 }, flags: 0, mask: CF | OF },
  { name: 'mul bx: ffff * ffff', code: 'f7 e3', regs: { rax: 0xffff, rbx: 0xffff }, want: { rax: 0x0001, rdx: 0xfffe }, flags: CF | OF, mask: CF | OF },
  { name: 'mul ebx: ffffffff * ffffffff', code: '66 f7 e3', regs: { rax: 0xffffffff, rbx: 0xffffffff }, want: { rax: 1, rdx: 0xfffffffe }, flags: CF | OF, mask: CF | OF },
  { name: 'mul ebx: 10000 * 10000', code: '66 f7 e3', regs: { rax: 0x10000, rbx: 0x10000 }, want: { rax: 0, rdx: 1 }, flags: CF | OF, mask: CF | OF },
  { name: 'mul ebx: 3 * 5 zeroes EDX', code: '66 f7 e3', regs: { rax: 3, rbx: 5, rdx: 0x1234 }, want: { rax: 15, rdx: 0 }, flags: 0, mask: CF | OF },
  { name: 'imul bl: -1 * -128 = 128 (does not fit)', code: 'f6 eb', regs: { rax: 0xff, rbx: 0x80 }, want: { rax: 0x0080 }, flags: CF | OF, mask: CF | OF },
  { name: 'imul bl: -2 * 64 = -128 (fits)', code: 'f6 eb', regs: { rax: 0xfe, rbx: 0x40 }, want: { rax: 0xff80 }, flags: 0, mask: CF | OF },
  { name: 'imul bx: -32768 * -1 = 32768', code: 'f7 eb', regs: { rax: 0x8000, rbx: 0xffff }, want: { rax: 0x8000, rdx: 0 }, flags: CF | OF, mask: CF | OF },
  { name: 'imul bx: -3 * 5 sign-fills DX', code: 'f7 eb', regs: { rax: 0xfffd, rbx: 5 }, want: { rax: 0xfff1, rdx: 0xffff }, flags: 0, mask: CF | OF },
  { name: 'imul ebx: -1 * -1', code: '66 f7 eb', regs: { rax: 0xffffffff, rbx: 0xffffffff }, want: { rax: 1, rdx: 0 }, flags: 0, mask: CF | OF },
  { name: 'imul ebx: 80000000 * 2', code: '66 f7 eb', regs: { rax: 0x80000000, rbx: 2 }, want: { rax: 0, rdx: 0xffffffff }, flags: CF | OF, mask: CF | OF },
  { name: 'imul ax,bx,-3 (6b): 1000 * -3', code: '6b c3 fd', regs: { rbx: 1000 }, want: { rax: 0xf448 }, flags: 0, mask: CF | OF },
  { name: 'imul ax,bx (0f af): 100 * 100 overflows', code: '0f af c3', regs: { rax: 0x100, rbx: 0x100 }, want: { rax: 0 }, flags: CF | OF, mask: CF | OF },
  { name: 'imul eax,ebx,imm32 (66 69)', code: '66 69 c3 00 00 01 00', regs: { rbx: 0x12345 }, want: { rax: 0x23450000 }, flags: CF | OF, mask: CF | OF },
  // Division: flags are undefined.
  { name: 'div bl: 0123 / 10', code: 'f6 f3', regs: { rax: 0x0123, rbx: 0x10 }, want: { rax: 0x0312 }, flags: 0, mask: 0 },
  { name: 'div bx: 1_0000 / 3', code: 'f7 f3', regs: { rdx: 1, rax: 0, rbx: 3 }, want: { rax: 0x5555, rdx: 1 }, flags: 0, mask: 0 },
  { name: 'div ebx with EDX != 0: 1_00000000 / 2', code: '66 f7 f3', regs: { rdx: 1, rax: 0, rbx: 2 }, want: { rax: 0x80000000, rdx: 0 }, flags: 0, mask: 0 },
  { name: 'div ebx: 3_00000007 / 10', code: '66 f7 f3', regs: { rdx: 3, rax: 7, rbx: 0x10 }, want: { rax: 0x30000000, rdx: 7 }, flags: 0, mask: 0 },
  (() => {
    const n = (0x12345678n << 32n) | 0x9abcdef0n, d = 0x87654321n;
    return { name: 'div ebx: 12345678_9abcdef0 / 87654321', code: '66 f7 f3', regs: { rdx: 0x12345678, rax: 0x9abcdef0, rbx: 0x87654321 }, want: { rax: Number(n / d), rdx: Number(n % d) }, flags: 0, mask: 0 };
  })(),
  { name: 'idiv bl: -7 / 2 = -3 rem -1', code: 'f6 fb', regs: { rax: 0xfff9, rbx: 2 }, want: { rax: 0xfffd }, flags: 0, mask: 0 },
  { name: 'idiv bl: -256 / 2 = -128 fits', code: 'f6 fb', regs: { rax: 0xff00, rbx: 2 }, want: { rax: 0x0080 }, flags: 0, mask: 0 },
  { name: 'idiv bx: -65536 / 7', code: 'f7 fb', regs: { rdx: 0xffff, rax: 0, rbx: 7 }, want: { rax: 0xdb6e, rdx: 0xfffe }, flags: 0, mask: 0 },
  { name: 'idiv ebx: -2^32 / 2 = -2^31 fits', code: '66 f7 fb', regs: { rdx: 0xffffffff, rax: 0, rbx: 2 }, want: { rax: 0x80000000, rdx: 0 }, flags: 0, mask: 0 },
  { name: 'idiv ebx: 7 / -2', code: '66 f7 fb', regs: { rdx: 0, rax: 7, rbx: 0xfffffffe }, want: { rax: 0xfffffffd, rdx: 1 }, flags: 0, mask: 0 },
  { name: 'idiv ebx: -7 / 2', code: '66 f7 fb', regs: { rdx: 0xffffffff, rax: 0xfffffff9, rbx: 2 }, want: { rax: 0xfffffffd, rdx: 0xffffffff }, flags: 0, mask: 0 },
  { name: 'div byte [0x10]: memory divisor', code: 'f6 36 10 00', regs: { rax: 100 }, memIn: [[0x10, [7]]], want: { rax: 0x020e }, flags: 0, mask: 0 },
];

describe('ADD/ADC/SUB/SBB/CMP', () => {
  it.each(ADD_SUB.map((c) => [c.name, c] as const))('%s', (_n, c) => runCase(c));
});
describe('INC/DEC/NEG', () => {
  it.each(INC_NEG.map((c) => [c.name, c] as const))('%s', (_n, c) => runCase(c));
});
describe('shifts and rotates', () => {
  it.each(SHIFTS.map((c) => [c.name, c] as const))('%s', (_n, c) => runCase(c));
});
describe('MUL/IMUL/DIV/IDIV', () => {
  it.each(MULDIV.map((c) => [c.name, c] as const))('%s', (_n, c) => runCase(c));
});

describe('#DE through the IVT', () => {
  const HANDLER_CS = 0x0050, HANDLER_IP = 0x0010; // linear 0x510
  const FLAGS_IN = 0x2 | F.IF | F.CF | F.ZF;

  const DE_CASES: [string, string, Partial<KvmRegs>][] = [
    ['div bl by 0', 'f6 f3', { rax: 0x1234, rbx: 0 }],
    ['div bl with a quotient above ff', 'f6 f3', { rax: 0x1000, rbx: 0x10 }],
    ['idiv bl with a quotient of +128', 'f6 fb', { rax: 0x0100, rbx: 2 }],
    ['div bx by 0', 'f7 f3', { rdx: 5, rax: 5, rbx: 0 }],
    ['idiv bx with a quotient of +32768', 'f7 fb', { rdx: 0, rax: 0x8000, rbx: 1 }],
    ['div ebx with EDX >= EBX', '66 f7 f3', { rdx: 2, rax: 0, rbx: 2 }],
    ['div ebx by 0', '66 f7 f3', { rdx: 0, rax: 1, rbx: 0 }],
    ['idiv ebx: 2^31 / 1', '66 f7 fb', { rdx: 0, rax: 0x80000000, rbx: 1 }],
    ['idiv ebx: -2^31 / -1', '66 f7 fb', { rdx: 0xffffffff, rax: 0x80000000, rbx: 0xffffffff }],
    ['aam 0', 'd4 00', { rax: 0x1234 }],
  ];

  it.each(DE_CASES)('%s runs the vector 0 handler with the faulting IP on the stack', (_n, code, regs) => {
    const g = createGuest({ code: `${code} f4`, regs: { ...regs, rflags: FLAGS_IN } });
    g.vm.memory.writeU16(0, HANDLER_IP);
    g.vm.memory.writeU16(2, HANDLER_CS);
    g.ram[(HANDLER_CS << 4) + HANDLER_IP] = 0xf4; // the handler: hlt
    runExpect(g, KVM_EXIT_HLT);
    const after = g.vcpu.getRegs(), sregs = g.vcpu.getSregs();
    // The handler ran: CS:IP is just past its HLT.
    expect(sregs.cs.selector).toBe(HANDLER_CS);
    expect(sregs.cs.base).toBe(HANDLER_CS << 4);
    expect(after.rip).toBe(HANDLER_IP + 1);
    // The frame: IP of the DIV itself (a fault), CS, FLAGS; IF is cleared in the handler.
    expect(after.rsp).toBe(LAYOUT.sp - 6);
    const sp = lin(LAYOUT.ss, after.rsp);
    expect([ramU16(g, sp), ramU16(g, sp + 2), ramU16(g, sp + 4)]).toEqual([LAYOUT.ip, LAYOUT.cs, FLAGS_IN]);
    expect(after.rflags & F.IF).toBe(0);
    // Nothing was written back.
    expect(after.rax).toBe(regs.rax ?? 0);
    expect(after.rdx).toBe(regs.rdx ?? 0);
  });
});
