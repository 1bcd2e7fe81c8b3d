import { describe, it, expect } from 'vitest';
import { Assembler, AsmError, byte, dword, mem, reg, sizeBetween, sym, word } from './index.js';

// Expected bytes below are worked out from the SDM opcode maps and ModRM/SIB tables.

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

function enc(bits: 16 | 32, build: (a: Assembler) => void): string {
  const a = new Assembler({ bits });
  build(a);
  return hex(a.bytes());
}
const e16 = (build: (a: Assembler) => void): string => enc(16, build);
const e32 = (build: (a: Assembler) => void): string => enc(32, build);

const { al, cl, dl, bl, ah, bh, ax, cx, dx, bx, sp, bp, si, di } = reg;
const { eax, ecx, edx, ebx, esp, ebp, esi, edi } = reg;

describe('mov', () => {
  it('reg, imm', () => {
    expect(e16((a) => a.mov(ax, 0x1234))).toBe('b8 34 12');
    expect(e16((a) => a.mov(eax, 1))).toBe('66 b8 01 00 00 00');
    expect(e16((a) => a.mov(al, 0x41))).toBe('b0 41');
    expect(e16((a) => a.mov(bh, 0xff))).toBe('b7 ff');
    expect(e16((a) => a.mov(di, -1))).toBe('bf ff ff');
    expect(e32((a) => a.mov(eax, 1))).toBe('b8 01 00 00 00');
    expect(e32((a) => a.mov(ax, 0x1234))).toBe('66 b8 34 12');
    expect(e32((a) => a.mov(edi, 0xdeadbeef))).toBe('bf ef be ad de');
  });

  it('rejects immediates that do not fit', () => {
    expect(() => e16((a) => a.mov(al, 256))).toThrow(AsmError);
    expect(() => e16((a) => a.mov(ax, 0x10000))).toThrow(/does not fit in 16 bits/);
    expect(() => e16((a) => a.mov(ax, 1.5))).toThrow(AsmError);
  });

  it('reg, reg uses the 88/89 r/m <- reg form', () => {
    expect(e16((a) => a.mov(ax, bx))).toBe('89 d8');
    expect(e16((a) => a.mov(al, ah))).toBe('88 e0');
    expect(e16((a) => a.mov(esi, edi))).toBe('66 89 fe');
    expect(e32((a) => a.mov(esi, edi))).toBe('89 fe');
    expect(() => e16((a) => a.mov(ax, bl))).toThrow(/operand sizes differ/);
  });

  it('16-bit addressing forms (Table 2-1)', () => {
    expect(e16((a) => a.mov(ax, mem({ base: bx, index: si })))).toBe('8b 00');
    expect(e16((a) => a.mov(ax, mem({ base: bx, index: di })))).toBe('8b 01');
    expect(e16((a) => a.mov(ax, mem({ base: bp, index: si })))).toBe('8b 02');
    expect(e16((a) => a.mov(ax, mem({ base: bp, index: di })))).toBe('8b 03');
    expect(e16((a) => a.mov(ax, mem({ base: si })))).toBe('8b 04');
    expect(e16((a) => a.mov(ax, mem({ base: di })))).toBe('8b 05');
    expect(e16((a) => a.mov(ax, mem({ base: bx })))).toBe('8b 07');
    // [bp] has no mod=00 form: it becomes [bp+0] with a disp8.
    expect(e16((a) => a.mov(ax, mem({ base: bp })))).toBe('8b 46 00');
    // register order does not matter
    expect(e16((a) => a.mov(ax, mem({ base: si, index: bx })))).toBe('8b 00');
    expect(e16((a) => a.mov(cx, mem({ base: bx, disp: 4 })))).toBe('8b 4f 04');
    expect(e16((a) => a.mov(cx, mem({ base: bx, disp: -2 })))).toBe('8b 4f fe');
    expect(e16((a) => a.mov(cx, mem({ base: bx, disp: 0xfffe })))).toBe('8b 4f fe');
    expect(e16((a) => a.mov(dx, mem({ base: bp, index: si, disp: 0x1234 })))).toBe('8b 92 34 12');
    expect(e16((a) => a.mov(bx, mem(0x1234)))).toBe('8b 1e 34 12');
    expect(() => e16((a) => a.mov(ax, mem({ base: ax })))).toThrow(/16-bit addressing/);
    expect(() => e16((a) => a.mov(ax, mem({ base: bx, index: bp })))).toThrow(/16-bit addressing/);
    expect(() => mem({ base: bx, index: si, scale: 2 })).toThrow(/scaled index/);
  });

  it('32-bit addressing forms (Tables 2-2 and 2-3)', () => {
    expect(e32((a) => a.mov(eax, mem({ base: ebx })))).toBe('8b 03');
    expect(e32((a) => a.mov(eax, mem({ base: ebp })))).toBe('8b 45 00');
    expect(e32((a) => a.mov(eax, mem({ base: esp })))).toBe('8b 04 24');
    expect(e32((a) => a.mov(eax, mem({ base: esp, disp: 8 })))).toBe('8b 44 24 08');
    expect(e32((a) => a.mov(eax, mem({ base: esi, disp: 0x1000 })))).toBe('8b 86 00 10 00 00');
    expect(e32((a) => a.mov(ecx, mem(0x12345678)))).toBe('8b 0d 78 56 34 12');
    expect(e32((a) => a.mov(eax, mem({ base: ebx, index: esi, scale: 4 })))).toBe('8b 04 b3');
    expect(e32((a) => a.mov(eax, mem({ base: ebp, index: ecx, scale: 2 })))).toBe('8b 44 4d 00');
    expect(e32((a) => a.mov(eax, mem({ index: edi, scale: 8, disp: 0x100 })))).toBe('8b 04 fd 00 01 00 00');
    expect(e32((a) => a.mov(edx, mem({ base: eax, index: ebx, disp: -4 })))).toBe('8b 54 18 fc');
    // [eax+esp] is encoded as [esp+eax]: esp cannot be an index.
    expect(e32((a) => a.mov(eax, mem({ base: eax, index: esp })))).toBe('8b 04 04');
    expect(() => e32((a) => a.mov(eax, mem({ base: eax, index: esp, scale: 2 })))).toThrow(/esp cannot be an index/);
    expect(() => mem({ base: ebx, index: si })).toThrow(/mixed/);
  });

  it('picks 0x67 when the address size differs from bits', () => {
    expect(e16((a) => a.mov(ax, mem({ base: ebx })))).toBe('67 8b 03');
    expect(e16((a) => a.mov(eax, mem({ base: ebx, index: ecx, scale: 4, disp: 16 })))).toBe('66 67 8b 44 8b 10');
    expect(e32((a) => a.mov(eax, mem({ base: bx, index: si })))).toBe('67 8b 00');
    expect(e16((a) => a.mov(cx, mem({ disp: 0x100000, addr: 32 })))).toBe('67 8b 0d 00 00 10 00');
  });

  it('segment override prefixes', () => {
    expect(e16((a) => a.mov(ax, mem({ seg: reg.es, base: di })))).toBe('26 8b 05');
    expect(e16((a) => a.mov(mem({ seg: reg.cs, base: bx }), al))).toBe('2e 88 07');
    expect(e16((a) => a.mov(mem({ seg: reg.ss, base: si }), al))).toBe('36 88 04');
    expect(e16((a) => a.mov(mem({ seg: reg.ds, base: bp }), al))).toBe('3e 88 46 00');
    expect(e16((a) => a.mov(mem({ seg: reg.fs, base: bx }), eax))).toBe('64 66 89 07');
    expect(e16((a) => a.mov(mem({ seg: reg.gs, base: ebx }), eax))).toBe('65 66 67 89 03');
  });

  it('uses moffs forms for the accumulator with a bare displacement', () => {
    expect(e16((a) => a.mov(al, mem(0x0449)))).toBe('a0 49 04');
    expect(e16((a) => a.mov(ax, mem(0x1234)))).toBe('a1 34 12');
    expect(e16((a) => a.mov(mem(0x1234), al))).toBe('a2 34 12');
    expect(e16((a) => a.mov(mem({ seg: reg.es, disp: 0x10 }), ax))).toBe('26 a3 10 00');
    expect(e16((a) => a.mov(eax, mem(0x10)))).toBe('66 a1 10 00');
    expect(e32((a) => a.mov(eax, mem(0xb8000)))).toBe('a1 00 80 0b 00');
    expect(e16((a) => a.mov(al, mem({ disp: 0xb8000, addr: 32 })))).toBe('67 a0 00 80 0b 00');
  });

  it('mem, reg and mem, imm', () => {
    expect(e16((a) => a.mov(mem({ base: di, disp: 2 }), cx))).toBe('89 4d 02');
    expect(e16((a) => a.mov(byte({ base: bx }), 5))).toBe('c6 07 05');
    expect(e16((a) => a.mov(word({ base: bx }), 0x1234))).toBe('c7 07 34 12');
    expect(e16((a) => a.mov(dword({ base: bx }), 1))).toBe('66 c7 07 01 00 00 00');
    expect(e32((a) => a.mov(dword({ base: ebx }), 1))).toBe('c7 03 01 00 00 00');
    expect(() => e16((a) => a.mov(mem({ base: bx }), 5))).toThrow(/operand size not specified/);
    expect(() => e16((a) => a.mov(word({ base: bx }), al))).toThrow(/operand sizes differ/);
  });

  it('segment registers', () => {
    expect(e16((a) => a.mov(reg.ds, ax))).toBe('8e d8');
    expect(e16((a) => a.mov(reg.es, ax))).toBe('8e c0');
    expect(e16((a) => a.mov(reg.ss, dx))).toBe('8e d2');
    expect(e16((a) => a.mov(reg.fs, ax))).toBe('8e e0');
    expect(e16((a) => a.mov(reg.gs, ax))).toBe('8e e8');
    expect(e32((a) => a.mov(reg.ds, eax))).toBe('8e d8');
    expect(e16((a) => a.mov(ax, reg.cs))).toBe('8c c8');
    expect(e16((a) => a.mov(reg.ds, mem({ base: bx })))).toBe('8e 1f');
    expect(e16((a) => a.mov(mem(0x500), reg.ss))).toBe('8c 16 00 05');
    expect(e32((a) => a.mov(eax, reg.ds))).toBe('8c d8');
    expect(e32((a) => a.mov(ax, reg.ds))).toBe('66 8c d8');
    expect(() => e16((a) => a.mov(reg.cs, ax))).toThrow(/far jump/);
    expect(() => e16((a) => a.mov(reg.ds, al))).toThrow(AsmError);
  });

  it('control registers', () => {
    expect(e16((a) => a.mov(eax, reg.cr0))).toBe('0f 20 c0');
    expect(e16((a) => a.mov(reg.cr0, eax))).toBe('0f 22 c0');
    expect(e32((a) => a.mov(reg.cr3, ebx))).toBe('0f 22 db');
    expect(e32((a) => a.mov(reg.cr4, ecx))).toBe('0f 22 e1');
    expect(e32((a) => a.mov(edx, reg.cr2))).toBe('0f 20 d2');
    expect(() => e16((a) => a.mov(reg.cr0, ax))).toThrow(/32-bit register/);
  });

  it('labels as immediates and displacements', () => {
    const a = new Assembler({ bits: 16, origin: 0x7c00 });
    a.mov(si, 'msg').mov(al, mem('msg')).mov(cx, mem({ base: bx, disp: 'msg' })).label('msg').db('hi');
    // msg = 0x7c00 + 3 + 3 + 4 = 0x7c0a
    expect(hex(a.bytes())).toBe('be 0a 7c a0 0a 7c 8b 8f 0a 7c 68 69');
    expect(a.assemble().labels.get('msg')).toBe(0x7c0a);
  });
});

describe('movzx, movsx, lea, xchg', () => {
  it('encodes', () => {
    expect(e16((a) => a.movzx(ax, bl))).toBe('0f b6 c3');
    expect(e32((a) => a.movzx(eax, byte({ base: esi })))).toBe('0f b6 06');
    expect(e32((a) => a.movzx(eax, word({ base: esi })))).toBe('0f b7 06');
    expect(e32((a) => a.movsx(ecx, dl))).toBe('0f be ca');
    expect(e16((a) => a.movsx(eax, cx))).toBe('66 0f bf c1');
    expect(() => e32((a) => a.movzx(eax, mem({ base: esi })))).toThrow(/source size/);
    expect(e16((a) => a.lea(si, mem({ base: bx, index: di, disp: 3 })))).toBe('8d 71 03');
    expect(e32((a) => a.lea(eax, mem({ base: eax, index: eax, scale: 2 })))).toBe('8d 04 40');
    expect(e16((a) => a.xchg(ax, bx))).toBe('93');
    expect(e16((a) => a.xchg(cx, ax))).toBe('91');
    expect(e16((a) => a.xchg(bl, bh))).toBe('86 df');
    expect(e16((a) => a.xchg(mem({ base: si }), dx))).toBe('87 14');
  });
});

describe('ALU group', () => {
  it('reg, reg and the eight operations', () => {
    expect(e16((a) => a.add(ax, bx))).toBe('01 d8');
    expect(e16((a) => a.or(al, cl))).toBe('08 c8');
    expect(e16((a) => a.adc(dx, cx))).toBe('11 ca');
    expect(e16((a) => a.sbb(dx, cx))).toBe('19 ca');
    expect(e16((a) => a.and(si, di))).toBe('21 fe');
    expect(e16((a) => a.sub(ax, ax))).toBe('29 c0');
    expect(e16((a) => a.xor(ax, ax))).toBe('31 c0');
    expect(e16((a) => a.cmp(cx, dx))).toBe('39 d1');
    expect(e16((a) => a.xor(eax, eax))).toBe('66 31 c0');
  });

  it('reg, mem and mem, reg', () => {
    expect(e16((a) => a.add(ax, mem({ base: bx })))).toBe('03 07');
    expect(e16((a) => a.add(mem({ base: bx }), ax))).toBe('01 07');
    expect(e16((a) => a.cmp(al, mem({ base: si, disp: 1 })))).toBe('3a 44 01');
    expect(e32((a) => a.sub(mem({ base: esp, disp: 4 }), ecx))).toBe('29 4c 24 04');
  });

  it('immediates: accumulator short forms and sign-extended imm8', () => {
    expect(e16((a) => a.add(al, 1))).toBe('04 01');
    expect(e16((a) => a.cmp(al, 0x20))).toBe('3c 20');
    expect(e16((a) => a.add(ax, 1))).toBe('83 c0 01');
    expect(e16((a) => a.cmp(ax, 5050))).toBe('3d ba 13');
    expect(e16((a) => a.and(ax, 0xfff0))).toBe('83 e0 f0');
    expect(e16((a) => a.sub(bx, 0x100))).toBe('81 eb 00 01');
    expect(e16((a) => a.cmp(bl, 0x7f))).toBe('80 fb 7f');
    expect(e16((a) => a.add(eax, 0x12345678))).toBe('66 05 78 56 34 12');
    expect(e32((a) => a.or(ecx, -1))).toBe('83 c9 ff');
    expect(e32((a) => a.xor(edx, 0x80))).toBe('81 f2 80 00 00 00');
    expect(e16((a) => a.add(word({ base: bx }), 2))).toBe('83 07 02');
    expect(e16((a) => a.cmp(byte(0x500), 0))).toBe('80 3e 00 05 00');
    expect(e32((a) => a.adc(dword({ base: eax }), 0x1000))).toBe('81 10 00 10 00 00');
    expect(e16((a) => a.sbb(ax, 'x').label('x'))).toBe('1d 03 00');
    expect(() => e16((a) => a.add(mem({ base: bx }), 1))).toThrow(/operand size not specified/);
    expect(() => e16((a) => a.add(mem({ base: bx }), mem({ base: si })))).toThrow(/two memory operands/);
  });

  it('test', () => {
    expect(e16((a) => a.test(al, 0x20))).toBe('a8 20');
    expect(e16((a) => a.test(ax, 0x8000))).toBe('a9 00 80');
    expect(e16((a) => a.test(bl, 1))).toBe('f6 c3 01');
    expect(e16((a) => a.test(cx, 1))).toBe('f7 c1 01 00');
    expect(e16((a) => a.test(ax, ax))).toBe('85 c0');
    expect(e16((a) => a.test(al, bl))).toBe('84 d8');
    expect(e16((a) => a.test(cx, mem({ base: bx })))).toBe('85 0f');
    expect(e16((a) => a.test(byte({ base: bx }), 0x80))).toBe('f6 07 80');
  });
});

describe('unary, multiply, divide, shifts', () => {
  it('inc/dec', () => {
    expect(e16((a) => a.inc(ax))).toBe('40');
    expect(e16((a) => a.inc(di))).toBe('47');
    expect(e16((a) => a.dec(cx))).toBe('49');
    expect(e16((a) => a.inc(ecx))).toBe('66 41');
    expect(e16((a) => a.inc(al))).toBe('fe c0');
    expect(e16((a) => a.dec(bl))).toBe('fe cb');
    expect(e16((a) => a.inc(byte('count')).label('count'))).toBe('fe 06 04 00');
    expect(e32((a) => a.dec(dword({ base: eax })))).toBe('ff 08');
  });

  it('not/neg/mul/imul/div/idiv', () => {
    expect(e16((a) => a.not(ax))).toBe('f7 d0');
    expect(e16((a) => a.neg(al))).toBe('f6 d8');
    expect(e16((a) => a.mul(cx))).toBe('f7 e1');
    expect(e16((a) => a.mul(bl))).toBe('f6 e3');
    expect(e16((a) => a.imul(bx))).toBe('f7 eb');
    expect(e16((a) => a.div(bx))).toBe('f7 f3');
    expect(e16((a) => a.idiv(cl))).toBe('f6 f9');
    expect(e16((a) => a.div(word({ base: si })))).toBe('f7 34');
    expect(e32((a) => a.div(ecx))).toBe('f7 f1');
    expect(e16((a) => a.div(ecx))).toBe('66 f7 f1');
    expect(e32((a) => a.imul(eax, ebx))).toBe('0f af c3');
    expect(e32((a) => a.imul(eax, ebx, 10))).toBe('6b c3 0a');
    expect(e32((a) => a.imul(eax, mem({ base: esi }), 1000))).toBe('69 06 e8 03 00 00');
    expect(e16((a) => a.imul(ax, cx, 300))).toBe('69 c1 2c 01');
  });

  it('shifts and rotates', () => {
    expect(e16((a) => a.shl(ax, 1))).toBe('d1 e0');
    expect(e16((a) => a.shr(bx, cl))).toBe('d3 eb');
    expect(e16((a) => a.sar(dx, 4))).toBe('c1 fa 04');
    expect(e16((a) => a.rol(dx, cl))).toBe('d3 c2');
    expect(e16((a) => a.ror(al, 1))).toBe('d0 c8');
    expect(e16((a) => a.rcl(cx, 2))).toBe('c1 d1 02');
    expect(e16((a) => a.rcr(byte({ base: bx }), cl))).toBe('d2 1f');
    expect(e16((a) => a.sal(ax, 3))).toBe('c1 e0 03');
    expect(e32((a) => a.shl(eax, 12))).toBe('c1 e0 0c');
    expect(() => e16((a) => a.shl(ax, dl))).toThrow(/must be cl/);
    expect(() => e16((a) => a.shl(ax, 256))).toThrow(/0\.\.255/);
  });

  it('sign extension', () => {
    expect(e16((a) => a.cbw().cwd().cwde().cdq())).toBe('98 99 66 98 66 99');
    expect(e32((a) => a.cbw().cwd().cwde().cdq())).toBe('66 98 66 99 98 99');
  });
});

describe('stack', () => {
  it('push/pop registers, segments, memory and immediates', () => {
    expect(e16((a) => a.push(ax).push(bp).pop(si).pop(eax))).toBe('50 55 5e 66 58');
    expect(e16((a) => a.push(reg.es).push(reg.cs).push(reg.ss).push(reg.ds).push(reg.fs).push(reg.gs))).toBe(
      '06 0e 16 1e 0f a0 0f a8',
    );
    expect(e16((a) => a.pop(reg.es).pop(reg.ss).pop(reg.ds).pop(reg.fs).pop(reg.gs))).toBe('07 17 1f 0f a1 0f a9');
    expect(() => e16((a) => a.pop(reg.cs))).toThrow(/CS cannot be popped/);
    expect(e16((a) => a.push(5))).toBe('6a 05');
    expect(e16((a) => a.push(0x1234))).toBe('68 34 12');
    expect(e16((a) => a.push(0x1234, 32))).toBe('66 68 34 12 00 00');
    expect(e32((a) => a.push(-1))).toBe('6a ff');
    expect(e32((a) => a.push(0x12345678))).toBe('68 78 56 34 12');
    expect(e16((a) => a.push(word({ base: bx })))).toBe('ff 37');
    expect(e16((a) => a.pop(word({ base: bx })))).toBe('8f 07');
    expect(e16((a) => a.pusha().popa().pushad().popad().pushf().popf().pushfd().popfd())).toBe(
      '60 61 66 60 66 61 9c 9d 66 9c 66 9d',
    );
    expect(() => e16((a) => a.push(al))).toThrow(AsmError);
  });
});

describe('control transfer', () => {
  it('short jumps backward and forward', () => {
    const a = new Assembler({ bits: 16, origin: 0x7c00 });
    a.label('top').nop().jmp('top').jnz('end').nop().label('end');
    expect(hex(a.bytes())).toBe('90 eb fd 75 01 90');
  });

  it('all sixteen conditions', () => {
    const a = new Assembler({ bits: 16 });
    a.label('t');
    const names = ['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g'] as const;
    for (const c of names) a.jcc(c, 't');
    const b = a.bytes();
    for (let i = 0; i < 16; i++) {
      expect(b[2 * i]).toBe(0x70 + i);
      expect(b[2 * i + 1]).toBe((-2 * (i + 1)) & 0xff);
    }
    expect(
      e16((x) =>
        x.label('l').jo('l').jno('l').jb('l').jc('l').jnae('l').jae('l').jnb('l').jnc('l').je('l').jz('l').jne('l').jnz('l')
          .jbe('l').jna('l').ja('l').jnbe('l').js('l').jns('l').jp('l').jpe('l').jnp('l').jpo('l').jl('l').jnge('l')
          .jge('l').jnl('l').jle('l').jng('l').jg('l').jnle('l'),
      )
        .split(' ')
        .filter((_, i) => i % 2 === 0)
        .join(' '),
    ).toBe('70 71 72 72 72 73 73 73 74 74 75 75 76 76 77 77 78 79 7a 7a 7b 7b 7c 7c 7d 7d 7e 7e 7f 7f');
  });

  it('relaxes out-of-range jumps to near forms', () => {
    const a = new Assembler({ bits: 16 });
    a.jmp('far').jz('far').fill(200).label('far');
    // jmp near = e9 rel16 (3 bytes), jz near = 0f 84 rel16 (4 bytes)
    expect(hex(a.bytes().subarray(0, 7))).toBe('e9 cc 00 0f 84 c8 00');
    const b = new Assembler({ bits: 32 });
    b.label('back').fill(200).jne('back').jmp('back');
    // jne near at 200: 0f 85 rel32, ends at 206 -> -206; jmp at 206: e9 rel32, ends at 211 -> -211
    expect(hex(b.bytes().subarray(200))).toBe('0f 85 32 ff ff ff e9 2d ff ff ff');
  });

  it('keeps a jump short at exactly +127 and -128', () => {
    const a = new Assembler({ bits: 16 });
    a.jmp('fwd').fill(127).label('fwd');
    expect(a.bytes().length).toBe(129);
    const b = new Assembler({ bits: 16 });
    b.label('back').fill(126).jmp('back');
    expect(hex(b.bytes().subarray(126))).toBe('eb 80');
    const c = new Assembler({ bits: 16 });
    c.label('back').fill(127).jmp('back');
    expect(hex(c.bytes().subarray(127))).toBe('e9 7e ff');
  });

  it('growth of one jump can push another out of rel8 range', () => {
    const a = new Assembler({ bits: 16 });
    // The first jump reaches 'y' exactly (+127) until the second one, which it spans, grows.
    a.jmp('y').jmp('x').fill(125).label('y').fill(200).label('x');
    const out = a.bytes();
    expect(hex(out.subarray(0, 6))).toBe('e9 80 00 e9 45 01');
  });

  it('honours explicit sizes and reports rel8 overflow clearly', () => {
    expect(e16((a) => a.jmp('n', 'near').label('n'))).toBe('e9 00 00');
    expect(e32((a) => a.jz('n', 'near').label('n'))).toBe('0f 84 00 00 00 00');
    const a = new Assembler({ bits: 16 });
    a.label('top').fill(200).jnz('top', 'short');
    expect(() => a.bytes()).toThrow(/jnz top: target is -202 bytes away, out of rel8 range/);
    const b = new Assembler({ bits: 16 });
    b.label('top').fill(130).loop('top');
    expect(() => b.bytes()).toThrow(/loop top: .*rel8/);
  });

  it('reports undefined labels', () => {
    expect(() => e16((a) => a.jmp('nowhere'))).toThrow(/undefined label 'nowhere'/);
    expect(() => e16((a) => a.mov(ax, 'nothing'))).toThrow(/mov ax, nothing: undefined label 'nothing'/);
    expect(() => new Assembler().label('x').label('x')).toThrow(/defined twice/);
  });

  it('jumps to absolute addresses', () => {
    const a = new Assembler({ bits: 16, origin: 0x7c00 });
    a.jmp(0x7c00).call(0x7c00);
    expect(hex(a.bytes())).toBe('eb fe e8 fb ff');
  });

  it('call/ret and indirect forms', () => {
    expect(e16((a) => a.call('f').label('f').ret())).toBe('e8 00 00 c3');
    expect(e32((a) => a.call('f').label('f').ret(8))).toBe('e8 00 00 00 00 c2 08 00');
    expect(e16((a) => a.call(bx))).toBe('ff d3');
    expect(e16((a) => a.call(word({ base: bx, disp: 2 })))).toBe('ff 57 02');
    expect(e16((a) => a.jmp(ax))).toBe('ff e0');
    expect(e32((a) => a.jmp(mem({ index: eax, scale: 4, disp: 0x1000 })))).toBe('ff 24 85 00 10 00 00');
    expect(e16((a) => a.jmp(eax))).toBe('66 ff e0');
    expect(e16((a) => a.retf().retf(4).iret().iretd())).toBe('cb ca 04 00 cf 66 cf');
    expect(e32((a) => a.iret())).toBe('cf');
  });

  it('far jumps and calls', () => {
    expect(e16((a) => a.jmpFar(0xf000, 0xfff0))).toBe('ea f0 ff 00 f0');
    expect(e16((a) => a.jmpFar(0x08, 0x12345, 32))).toBe('66 ea 45 23 01 00 08 00');
    expect(e32((a) => a.jmpFar(0x10, 0x1000))).toBe('ea 00 10 00 00 10 00');
    expect(e32((a) => a.jmpFar(0x10, 0x1000, 16))).toBe('66 ea 00 10 10 00');
    expect(e16((a) => a.callFar(0x1234, 0x10))).toBe('9a 10 00 34 12');
    expect(e16((a) => a.jmpFar(mem({ base: bx })))).toBe('ff 2f');
    expect(e16((a) => a.callFar(dword({ base: bx })))).toBe('66 ff 1f');
    // A mode switch: far jump from 16-bit code to a 32-bit label.
    const a = new Assembler({ bits: 16, origin: 0x7c00 });
    a.jmpFar(0x08, 'pm', 32).use32().label('pm').mov(eax, 1);
    expect(hex(a.bytes())).toBe('66 ea 08 7c 00 00 08 00 b8 01 00 00 00');
    expect(() => e16((a) => a.jmpFar(0x10000, 0))).toThrow(AsmError);
  });

  it('loop family and jcxz', () => {
    expect(e16((a) => a.label('l').loop('l'))).toBe('e2 fe');
    expect(e16((a) => a.label('l').loope('l').loopz('l').loopne('l').loopnz('l'))).toBe('e1 fe e1 fc e0 fa e0 f8');
    expect(e16((a) => a.label('l').loop('l', { addr: 32 }))).toBe('67 e2 fd');
    expect(e16((a) => a.jcxz('l').label('l'))).toBe('e3 00');
    expect(e16((a) => a.jecxz('l').label('l'))).toBe('67 e3 00');
    expect(e32((a) => a.jcxz('l').jecxz('l').label('l'))).toBe('67 e3 02 e3 00');
  });

  it('interrupts', () => {
    expect(e16((a) => a.int(0x10).int3().into())).toBe('cd 10 cc ce');
    expect(() => e16((a) => a.int(256))).toThrow(AsmError);
  });
});

describe('flags, system and I/O', () => {
  it('one-byte instructions', () => {
    expect(e16((a) => a.cli().sti().hlt().cld().std().clc().stc().cmc().nop())).toBe('fa fb f4 fc fd f8 f9 f5 90');
    expect(e16((a) => a.cpuid().rdtsc().rdmsr().wrmsr())).toBe('0f a2 0f 31 0f 32 0f 30');
  });

  it('descriptor tables', () => {
    expect(e16((a) => a.lgdt(mem(0x7e00)))).toBe('0f 01 16 00 7e');
    expect(e16((a) => a.lgdt(mem(0x7e00), 32))).toBe('66 0f 01 16 00 7e');
    expect(e16((a) => a.lidt(mem({ base: bx })))).toBe('0f 01 1f');
    expect(e32((a) => a.lgdt(mem(0x1000)))).toBe('0f 01 15 00 10 00 00');
    expect(e32((a) => a.sgdt(mem({ base: eax })).sidt(mem({ base: eax })))).toBe('0f 01 00 0f 01 08');
    expect(e32((a) => a.lldt(ax).ltr(ax))).toBe('0f 00 d0 0f 00 d8');
    expect(e32((a) => a.invlpg(mem({ base: eax })))).toBe('0f 01 38');
  });

  it('in/out', () => {
    expect(e16((a) => a.in(al, 0x60))).toBe('e4 60');
    expect(e16((a) => a.in(ax, 0x60))).toBe('e5 60');
    expect(e16((a) => a.in(eax, dx))).toBe('66 ed');
    expect(e16((a) => a.in(al, dx))).toBe('ec');
    expect(e16((a) => a.out(0xf4, al))).toBe('e6 f4');
    expect(e16((a) => a.out(0x80, ax))).toBe('e7 80');
    expect(e16((a) => a.out(dx, al))).toBe('ee');
    expect(e32((a) => a.out(dx, ax))).toBe('66 ef');
    expect(e32((a) => a.out(dx, eax))).toBe('ef');
    expect(e16((a) => a.in_al_dx().in_ax_dx().in_eax_dx().out_dx_al().out_dx_ax().out_dx_eax())).toBe('ec ed 66 ed ee ef 66 ef');
    expect(() => e16((a) => a.out(cx, al))).toThrow(/must be dx/);
    expect(() => e16((a) => a.out(dx, bl))).toThrow(/al, ax or eax/);
    expect(() => e16((a) => a.in(al, 0x100))).toThrow(/0\.\.255/);
  });

  it('string instructions with prefixes', () => {
    expect(e16((a) => a.movsb().movsw().movsd())).toBe('a4 a5 66 a5');
    expect(e32((a) => a.movsb().movsw().movsd())).toBe('a4 66 a5 a5');
    expect(e16((a) => a.cmpsb().cmpsw().stosb().stosw().lodsb().lodsw().scasb().scasw())).toBe('a6 a7 aa ab ac ad ae af');
    expect(e16((a) => a.insb().insw().insd().outsb().outsw().outsd())).toBe('6c 6d 66 6d 6e 6f 66 6f');
    expect(e16((a) => a.cmpsd().stosd().lodsd().scasd())).toBe('66 a7 66 ab 66 ad 66 af');
    expect(e16((a) => a.rep().movsb())).toBe('f3 a4');
    expect(e16((a) => a.rep().stosd())).toBe('f3 66 ab');
    expect(e16((a) => a.repe().cmpsb().repz().cmpsb())).toBe('f3 a6 f3 a6');
    expect(e16((a) => a.repne().scasb().repnz().scasb())).toBe('f2 ae f2 ae');
    expect(e16((a) => a.rep().movsb({ seg: reg.es }))).toBe('f3 26 a4');
    expect(e16((a) => a.lodsb({ seg: reg.cs }))).toBe('2e ac');
    expect(e16((a) => a.rep().movsd({ addr: 32 }))).toBe('f3 66 67 a5');
    expect(e16((a) => a.lock().inc(word({ base: bx })))).toBe('f0 ff 07');
    expect(() => e16((a) => a.stosb({ seg: reg.ds }))).toThrow(/ES:DI/);
  });
});

describe('data, layout and labels', () => {
  it('db/dw/dd, strings and label values', () => {
    const a = new Assembler({ origin: 0x100 });
    a.label('start').db(1, 0xff, -1, 'AB').dw(0x1234, 'start').dd(0xdeadbeef, 'end', sym('start', 2)).asciz('ok').ascii('!').label('end');
    expect(hex(a.bytes())).toBe(
      '01 ff ff 41 42 34 12 00 01 ef be ad de 19 01 00 00 02 01 00 00 6f 6b 00 21',
    );
    expect(() => new Assembler().db(256)).toThrow(AsmError);
    expect(() => new Assembler().dw(0x10000)).toThrow(AsmError);
  });

  it('expressions: label differences and offsets', () => {
    const a = new Assembler({ bits: 16, origin: 0x7c00 });
    a.mov(cx, sizeBetween('s', 'e')).mov(si, sym('s').plus(1)).mov(di, sym('e').minus(1)).label('s').ascii('hello').label('e');
    // s = 0x7c09, e = 0x7c0e
    expect(hex(a.bytes().subarray(0, 9))).toBe('b9 05 00 be 0a 7c bf 0d 7c');
  });

  it('checks that a label value fits its field', () => {
    const a = new Assembler({ bits: 16, origin: 0xfffe });
    a.mov(ax, 'x').label('x');
    expect(() => a.bytes()).toThrow(/mov ax, x: value 65537 does not fit in 16 bits/);
  });

  it('org pads to an absolute address; align pads to a boundary', () => {
    const a = new Assembler({ bits: 16, origin: 0x7c00 });
    a.hlt().org(0x7dfe).dw(0xaa55);
    const b = a.bytes();
    expect(b.length).toBe(512);
    expect(b[0]).toBe(0xf4);
    expect(b[1]).toBe(0);
    expect(hex(b.subarray(510))).toBe('55 aa');
    expect(() => new Assembler({ origin: 0x10 }).fill(4).org(0x12).bytes()).toThrow(/org 0x12: code already reaches 0x14/);
    expect(e16((x) => x.db(1).align(4).db(2).align(2, 0xcc).db(3))).toBe('01 90 90 90 02 cc 03');
    expect(() => new Assembler().align(3)).toThrow(/power of two/);
  });

  it('a label after org and align sees the padded address', () => {
    const a = new Assembler({ origin: 0x1000 });
    a.jmp('x').align(16).label('x').org(0x1020).label('y').dw('x', 'y');
    const out = a.assemble();
    expect(out.labels.get('x')).toBe(0x1010);
    expect(out.labels.get('y')).toBe(0x1020);
    expect(hex(out.bytes.subarray(0, 2))).toBe('eb 0e');
    expect(hex(out.bytes.subarray(0x20))).toBe('10 10 20 10');
  });

  it('raw and fill', () => {
    expect(e16((a) => a.raw([0x0f, 0x0b]).fill(3, 0x90).raw(new Uint8Array([1])))).toBe('0f 0b 90 90 90 01');
    expect(() => new Assembler().raw([0x100])).toThrow(AsmError);
  });

  it('assemble() can run twice with the same result', () => {
    const a = new Assembler({ bits: 16 });
    a.jmp('x').fill(200).label('x');
    expect(hex(a.bytes())).toBe(hex(a.bytes()));
  });

  it('switches between 16 and 32-bit code', () => {
    const a = new Assembler({ bits: 16 });
    expect(a.bits).toBe(16);
    a.mov(eax, 1).use32().mov(eax, 1).use16().mov(ax, 1);
    expect(hex(a.bytes())).toBe('66 b8 01 00 00 00 b8 01 00 00 00 b8 01 00');
    expect(() => new Assembler({ bits: 64 as unknown as 16 })).toThrow(AsmError);
  });

  it('error messages name the instruction', () => {
    expect(() => e16((a) => a.mov(ax, mem({ base: cx })))).toThrow(/^mov ax, \[cx\]: 16-bit addressing/);
    expect(() => e16((a) => a.inc(mem({ base: bx })))).toThrow(/^inc \[bx\]: operand size not specified/);
    expect(() => mem({ base: al })).toThrow(/8-bit register/);
    // unused names keep the destructuring honest
    expect([dl, sp, ebp, edx, esi, edi, ebx, esp, ecx].every((r) => r.name.length > 0)).toBe(true);
  });
});
