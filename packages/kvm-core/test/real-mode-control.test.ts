/**
 * Real-mode control flow, stack and segment behaviour: INT/IRET and exceptions through the
 * IVT, PUSHA/POPA, ENTER/LEAVE, string instructions with DF=1, segment overrides, LOOP/JCXZ,
 * far CALL/RETF, segment-limit faults, shutdown, and unimplemented instructions.
 *
 * Layout (helpers.LAYOUT): code at 1000:0100, DS = ES = 0x2000, SS:SP = 3000:FFF0.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_SHUTDOWN, KVM_INTERNAL_ERROR_EMULATION,
  type KvmRegs,
} from '../src/index.js';
import {
  F, LAYOUT, closeGuests, createGuest, hex, le, lin, ramU16, runExpect, runToHlt, setIvt, type Guest, type GuestOptions,
} from './helpers.js';

afterEach(closeGuests);

const DS = lin(LAYOUT.ds, 0), SS = lin(LAYOUT.ss, 0);

/** Every IVT vector v points at 0050:v, where a HLT sits; so after HLT, vector = IP - 1. */
const TRAP_CS = 0x0050;
function installTraps(g: Guest): void {
  for (let v = 0; v < 256; v++) setIvt(g, v, TRAP_CS, v);
  g.ram.fill(0xf4, TRAP_CS << 4, (TRAP_CS << 4) + 256);
}
/** Runs to HLT and returns the vector whose trap handler halted, with the 3-word frame. */
function runToTrap(g: Guest): { vector: number; ip: number; cs: number; flags: number; regs: KvmRegs } {
  runExpect(g, KVM_EXIT_HLT);
  const regs = g.vcpu.getRegs();
  expect(g.vcpu.getSregs().cs.selector, 'expected to stop in a trap handler').toBe(TRAP_CS);
  const sp = lin(LAYOUT.ss, regs.rsp);
  return { vector: regs.rip - 1, ip: ramU16(g, sp), cs: ramU16(g, sp + 2), flags: ramU16(g, sp + 4), regs };
}
function trapGuest(code: string, opts: Omit<GuestOptions, 'code'> = {}): Guest {
  const g = createGuest({ ...opts, code });
  installTraps(g);
  return g;
}

describe('INT n / IRET', () => {
  it('round-trips through the IVT: the handler sees IF cleared, IRET restores every flag', () => {
    const FLAGS_IN = 0x2 | F.IF | F.CF | F.DF | F.OF | F.SF; // 0x0e83
    // main: int 0x21 ; pushf ; pop dx ; hlt
    const g = createGuest({ code: 'cd 21 9c 5a f4', regs: { rflags: FLAGS_IN } });
    // handler at 0060:0000: pushf ; pop bx ; mov ax,0x1234 ; iret
    setIvt(g, 0x21, 0x0060, 0x0000);
    g.ram.set(hex('9c 5b b8 34 12 cf'), 0x600);
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0x1234);
    expect(regs.rbx).toBe(FLAGS_IN & ~F.IF); // inside the handler
    expect(regs.rdx).toBe(FLAGS_IN); // after IRET
    expect(regs.rflags).toBe(FLAGS_IN);
    expect(regs.rsp).toBe(LAYOUT.sp);
    expect(regs.rip).toBe(0x105);
    expect(g.vcpu.getSregs().cs.selector).toBe(LAYOUT.cs);
    // The INT frame is still below SP: return IP (after the 2-byte INT), CS.
    expect(ramU16(g, SS + LAYOUT.sp - 6)).toBe(0x102);
    expect(ramU16(g, SS + LAYOUT.sp - 4)).toBe(LAYOUT.cs);
  });

  it('IRET loads the flags image from the stack (16-bit: bits 0-15 only)', () => {
    // push 0x0cd5 ; push cs ; push 0x010a ; iret ; nop ; nop ; hlt (at 0x10a)
    const g = createGuest({ code: '68 d5 0c 0e 68 0a 01 cf 90 90 f4', regs: { rflags: 0x2 } });
    const regs = runToHlt(g, 1);
    expect(regs.rip).toBe(0x10b);
    expect(regs.rflags).toBe(0x0cd7); // CF PF AF ZF SF DF OF, bit 1 forced on
    expect(regs.rsp).toBe(LAYOUT.sp);
  });

  it('uses the IDTR base in real mode, and #GP when the vector lies beyond the IDTR limit', () => {
    const g = createGuest({ code: 'cd 21 f4' });
    const s = g.vcpu.getSregs();
    s.idt = { base: 0x800, limit: 0x3ff };
    g.vcpu.setSregs(s);
    setIvt(g, 0x21, 0x0070, 0x0000); // ignored: IVT is at 0x800 now
    g.vm.memory.writeU16(0x800 + 0x21 * 4, 0x0005);
    g.vm.memory.writeU16(0x800 + 0x21 * 4 + 2, 0x0080);
    g.ram[0x805] = 0xf4;
    runExpect(g, KVM_EXIT_HLT);
    expect(g.vcpu.getSregs().cs.selector).toBe(0x0080);
    expect(g.vcpu.getRegs().rip).toBe(0x0006);

    // Limit 0x83 ends inside entry 0x20: INT 0x21 (bytes 0x84..0x87) faults with #GP,
    // delivered through entry 13 at 0x800 + 0x34.
    const h = createGuest({ code: 'cd 21 f4' });
    const t = h.vcpu.getSregs();
    t.idt = { base: 0x800, limit: 0x83 };
    h.vcpu.setSregs(t);
    h.vm.memory.writeU16(0x800 + 13 * 4, 0x0007);
    h.vm.memory.writeU16(0x800 + 13 * 4 + 2, 0x0090);
    h.ram[0x907] = 0xf4;
    runExpect(h, KVM_EXIT_HLT);
    expect(h.vcpu.getSregs().cs.selector).toBe(0x0090);
    expect(h.vcpu.getRegs().rip).toBe(0x0008);
    expect(ramU16(h, SS + LAYOUT.sp - 6)).toBe(0x100); // the INT instruction itself
  });

  it('INT3 and INTO (OF=1) are traps: the pushed IP follows the instruction', () => {
    let t = runToTrap(trapGuest('cc f4'));
    expect([t.vector, t.ip, t.cs]).toEqual([3, 0x101, LAYOUT.cs]);
    t = runToTrap(trapGuest('ce f4', { regs: { rflags: 0x2 | F.OF } }));
    expect([t.vector, t.ip, t.flags & F.OF]).toEqual([4, 0x101, F.OF]);
    // INTO with OF=0 does nothing.
    const g = trapGuest('ce f4');
    runExpect(g, KVM_EXIT_HLT);
    expect(g.vcpu.getSregs().cs.selector).toBe(LAYOUT.cs);
    expect(g.vcpu.getRegs().rip).toBe(0x102);
  });

  it('BOUND out of range and UD2 are faults: the pushed IP is the instruction’s', () => {
    // bound ax,[0x10] with bounds [10, 20], AX = 30
    const g = trapGuest('62 06 10 00 f4', { regs: { rax: 30 } });
    g.ram.set([10, 0, 20, 0], DS + 0x10);
    let t = runToTrap(g);
    expect([t.vector, t.ip]).toEqual([5, 0x100]);
    const inRange = trapGuest('62 06 10 00 f4', { regs: { rax: 20 } });
    inRange.ram.set([10, 0, 20, 0], DS + 0x10);
    runExpect(inRange, KVM_EXIT_HLT);
    expect(inRange.vcpu.getRegs().rip).toBe(0x105);
    t = runToTrap(trapGuest('90 0f 0b f4'));
    expect([t.vector, t.ip]).toEqual([6, 0x101]);
  });
});

describe('stack instructions', () => {
  it('PUSHA stores AX CX DX BX SP BP SI DI; POPA restores all but the saved SP', () => {
    const vals = { rax: 0x1111, rcx: 0x2222, rdx: 0x3333, rbx: 0x4444, rbp: 0x5555, rsi: 0x6666, rdi: 0x7777 };
    const g = createGuest({ code: '60 f4 61 f4', regs: vals });
    let regs = runToHlt(g, 1);
    expect(regs.rsp).toBe(LAYOUT.sp - 16);
    const words = Array.from({ length: 8 }, (_, i) => ramU16(g, SS + regs.rsp + 2 * i));
    expect(words).toEqual([0x7777, 0x6666, 0x5555, LAYOUT.sp, 0x4444, 0x3333, 0x2222, 0x1111]);
    // Scramble the registers and the saved SP; POPA must bring back the pushed values.
    g.vcpu.setRegs({ ...regs, rax: 0, rcx: 0, rdx: 0, rbx: 0, rbp: 0, rsi: 0, rdi: 0 });
    g.vm.memory.writeU16(SS + regs.rsp + 6, 0xdead);
    regs = runToHlt(g, 1);
    expect(regs).toMatchObject({ ...vals, rsp: LAYOUT.sp });
  });

  it('PUSHAD/POPAD (0x66) push and pop the 32-bit registers, ESP included', () => {
    const vals = { rax: 0x11111111, rcx: 0x22222222, rdx: 0x33333333, rbx: 0x44444444, rbp: 0x55555555, rsi: 0x66666666, rdi: 0x77777777 };
    const g = createGuest({ code: '66 60 f4 66 61 f4', regs: vals });
    let regs = runToHlt(g, 1);
    expect(regs.rsp).toBe(LAYOUT.sp - 32);
    const dwords = Array.from({ length: 8 }, (_, i) => g.vm.memory.readU32(SS + regs.rsp + 4 * i));
    expect(dwords).toEqual([0x77777777, 0x66666666, 0x55555555, LAYOUT.sp, 0x44444444, 0x33333333, 0x22222222, 0x11111111]);
    g.vcpu.setRegs({ ...regs, rax: 0, rcx: 0, rdx: 0, rbx: 0, rbp: 0, rsi: 0, rdi: 0 });
    regs = runToHlt(g, 1);
    expect(regs).toMatchObject({ ...vals, rsp: LAYOUT.sp });
  });

  it('ENTER 8,0 builds a frame and LEAVE tears it down', () => {
    const g = createGuest({ code: 'c8 08 00 00 f4 c9 f4', regs: { rbp: 0x1234 } });
    let regs = runToHlt(g, 1);
    expect(ramU16(g, SS + LAYOUT.sp - 2)).toBe(0x1234);
    expect(regs.rbp).toBe(LAYOUT.sp - 2);
    expect(regs.rsp).toBe(LAYOUT.sp - 2 - 8);
    regs = runToHlt(g, 1);
    expect(regs.rbp).toBe(0x1234);
    expect(regs.rsp).toBe(LAYOUT.sp);
  });

  it('ENTER 4,2 copies the outer frame pointer and pushes the new one', () => {
    // Old BP = 0xff00; the display entry at [BP-2] is 0xaaaa.
    const g = createGuest({ code: 'c8 04 00 02 f4 c9 f4', regs: { rbp: 0xff00 } });
    g.vm.memory.writeU16(SS + 0xfefe, 0xaaaa);
    let regs = runToHlt(g, 1);
    const frame = LAYOUT.sp - 2;
    expect(ramU16(g, SS + frame)).toBe(0xff00); // pushed BP
    expect(ramU16(g, SS + frame - 2)).toBe(0xaaaa); // copied display entry
    expect(ramU16(g, SS + frame - 4)).toBe(frame); // the new frame pointer
    expect(regs.rbp).toBe(frame);
    expect(regs.rsp).toBe(frame - 4 - 4);
    regs = runToHlt(g, 1);
    expect(regs.rbp).toBe(0xff00);
    expect(regs.rsp).toBe(LAYOUT.sp);
  });
});

describe('string instructions', () => {
  it('REP MOVSB with DF=1 copies backwards (an overlapping move up comes out right)', () => {
    const g = createGuest({ code: 'fd f3 a4 f4', regs: { rsi: 0x107, rdi: 0x109, rcx: 8 } });
    g.ram.set(hex('41 42 43 44 45 46 47 48'), DS + 0x100); // "ABCDEFGH"
    const regs = runToHlt(g, 1);
    expect(Buffer.from(g.ram.subarray(DS + 0x100, DS + 0x10a)).toString('latin1')).toBe('ABABCDEFGH');
    expect(regs).toMatchObject({ rsi: 0xff, rdi: 0x101, rcx: 0 });
  });

  it('REP STOSW with DF=1 stores downwards', () => {
    const g = createGuest({ code: 'fd f3 ab f4', regs: { rax: 0xbeef, rdi: 0x300, rcx: 3 } });
    const regs = runToHlt(g, 1);
    expect([0x2fa, 0x2fc, 0x2fe, 0x300, 0x302].map((o) => ramU16(g, DS + o))).toEqual([0, 0xbeef, 0xbeef, 0xbeef, 0]);
    expect(regs.rdi).toBe(0x2fa);
  });

  it('LODSB with DF=1 walks down', () => {
    const g = createGuest({ code: 'fd ac 88 c3 ac f4', regs: { rsi: 0x105 } });
    g.ram.set([0x11, 0x22], DS + 0x104);
    const regs = runToHlt(g, 1);
    expect(regs.rbx & 0xff).toBe(0x22);
    expect(regs.rax & 0xff).toBe(0x11);
    expect(regs.rsi).toBe(0x103);
  });

  it('REPNE SCASB with DF=1 stops on the match', () => {
    const g = createGuest({ code: 'fd f2 ae f4', regs: { rax: 0x5a, rdi: 0x204, rcx: 5 } });
    g.ram.set(hex('78 78 5a 78 78'), DS + 0x200);
    const regs = runToHlt(g, 1);
    expect(regs).toMatchObject({ rdi: 0x201, rcx: 2 });
    expect(regs.rflags & F.ZF).toBe(F.ZF);
  });

  it('REPE CMPSB stops after the first difference, with the flags of that compare', () => {
    const g = createGuest({ code: 'fc f3 a6 f4', regs: { rsi: 0x100, rdi: 0x200, rcx: 5 } });
    g.ram.set(Buffer.from('HELLO'), DS + 0x100);
    g.ram.set(Buffer.from('HELPO'), DS + 0x200);
    const regs = runToHlt(g, 1);
    expect(regs).toMatchObject({ rsi: 0x104, rdi: 0x204, rcx: 1 });
    expect(regs.rflags & (F.CF | F.ZF | F.SF | F.OF | F.PF)).toBe(F.CF | F.SF | F.PF); // 'L' - 'P' = 0xfc
  });

  it('a segment override applies to the source of MOVSW; the destination stays ES', () => {
    // fs = 0x4000 ; std ; fs movsw
    const g = createGuest({ code: 'fd 64 a5 f4', seg: { fs: 0x4000, es: 0x5000 }, regs: { rsi: 0x10, rdi: 0x20 } });
    g.ram.set([0xcd, 0xab], 0x40010);
    g.ram.set([0x99, 0x99], DS + 0x10); // what DS:SI would have given
    const regs = runToHlt(g, 1);
    expect(ramU16(g, 0x50020)).toBe(0xabcd);
    expect(regs).toMatchObject({ rsi: 0x0e, rdi: 0x1e });
  });
});

describe('segment overrides', () => {
  it('each prefix selects its segment; BP-based addresses default to SS', () => {
    const seg = { ds: 0x2000, es: 0x2100, fs: 0x2200, gs: 0x2300, ss: 0x3000 };
    const g = createGuest({
      seg,
      regs: { rbp: 0x10 },
      code: [
        '8a 1e 10 00', //    mov bl,[0x10]        DS
        '26 8a 3e 10 00', // mov bh,es:[0x10]
        '64 8a 0e 10 00', // mov cl,fs:[0x10]
        '65 8a 2e 10 00', // mov ch,gs:[0x10]
        '36 8a 16 10 00', // mov dl,ss:[0x10]
        '2e 8a 36 10 00', // mov dh,cs:[0x10]
        '8a 46 00', //       mov al,[bp+0]        SS by default
        '3e 8a 66 00', //    mov ah,ds:[bp+0]
        '26 c6 06 20 00 99', // mov byte es:[0x20],0x99
        'f4',
      ].join(' '),
    });
    const bytes: [number, number][] = [[seg.ds, 0x11], [seg.es, 0x22], [seg.fs, 0x33], [seg.gs, 0x44], [seg.ss, 0x55], [LAYOUT.cs, 0x66]];
    for (const [s, v] of bytes) g.ram[lin(s, 0x10)] = v;
    const regs = runToHlt(g, 1);
    expect(regs.rbx).toBe(0x2211);
    expect(regs.rcx).toBe(0x4433);
    expect(regs.rdx).toBe(0x6655);
    expect(regs.rax).toBe(0x1155);
    expect(g.ram[lin(seg.es, 0x20)]).toBe(0x99);
    expect(g.ram[lin(seg.ds, 0x20)]).toBe(0);
  });
});

describe('LOOP and JCXZ', () => {
  it('LOOP counts CX down to 0 and leaves the upper half of ECX alone', () => {
    const regs = runToHlt(createGuest({ code: '40 e2 fd f4', regs: { rax: 0, rcx: 0xabcd0005 } }), 1);
    expect(regs.rax).toBe(5);
    expect(regs.rcx).toBe(0xabcd0000);
  });

  it('LOOP with CX = 0 runs 65536 times', () => {
    const regs = runToHlt(createGuest({ code: '66 40 e2 fc f4', regs: { rax: 0, rcx: 0 } }), 5);
    expect(regs.rax).toBe(0x10000);
    expect(regs.rcx).toBe(0);
  });

  it('LOOP with the 0x67 prefix counts ECX', () => {
    const regs = runToHlt(createGuest({ code: '66 40 67 e2 fb f4', regs: { rax: 0, rcx: 0x10002 } }), 5);
    expect(regs.rax).toBe(0x10002);
    expect(regs.rcx).toBe(0);
  });

  it('JCXZ jumps only when CX is 0 (ECX upper half ignored)', () => {
    // jcxz +2 ; mov al,1 ; hlt
    let regs = runToHlt(createGuest({ code: 'e3 02 b0 01 f4', regs: { rax: 0, rcx: 0x10000 } }), 1);
    expect(regs.rax).toBe(0);
    regs = runToHlt(createGuest({ code: 'e3 02 b0 01 f4', regs: { rax: 0, rcx: 1 } }), 1);
    expect(regs.rax).toBe(1);
  });

  it('LOOPNE stops on ZF=1, LOOPE stops on ZF=0', () => {
    // lodsb ; test al,al ; loopne -5 ; hlt
    const g = createGuest({ code: 'ac 84 c0 e0 fb f4', regs: { rsi: 0x10, rcx: 10 } });
    g.ram.set([5, 6, 0, 7], DS + 0x10);
    expect(runToHlt(g, 1)).toMatchObject({ rsi: 0x13, rcx: 7 });
    // lodsb ; cmp al,'A' ; loope -5 ; hlt
    const h = createGuest({ code: 'ac 3c 41 e1 fb f4', regs: { rsi: 0x10, rcx: 10 } });
    h.ram.set(Buffer.from('AAAB'), DS + 0x10);
    expect(runToHlt(h, 1)).toMatchObject({ rsi: 0x14, rcx: 6 });
  });
});

describe('far transfers', () => {
  it('CALL ptr16:16 pushes CS:IP; RETF 4 returns and drops the arguments', () => {
    // push 7 ; push 8 ; call 4000:0010 ; hlt        callee: mov ax,cs ; retf 4
    const g = createGuest({ code: '6a 07 6a 08 9a 10 00 00 40 f4', regs: { rax: 0 } });
    g.ram.set(hex('8c c8 ca 04 00'), 0x40010);
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0x4000);
    expect(regs.rip).toBe(0x10a);
    expect(regs.rsp).toBe(LAYOUT.sp);
    expect(g.vcpu.getSregs().cs).toMatchObject({ selector: LAYOUT.cs, base: LAYOUT.cs << 4 });
    const words = [2, 4, 6, 8].map((d) => ramU16(g, SS + LAYOUT.sp - d));
    expect(words).toEqual([7, 8, LAYOUT.cs, 0x109]);
  });

  it('CALL FAR [mem] and JMP ptr16:16', () => {
    // call far [0x20] ; hlt          [0x20] = 4000:0030 -> mov ax,0x99 ; retf
    const g = createGuest({ code: 'ff 1e 20 00 f4' });
    g.ram.set([0x30, 0x00, 0x00, 0x40], DS + 0x20);
    g.ram.set(hex('b8 99 00 cb'), 0x40030);
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0x99);
    expect(regs.rip).toBe(0x105);
    // jmp 4000:0000 -> hlt
    const h = createGuest({ code: 'ea 00 00 00 40' });
    h.ram[0x40000] = 0xf4;
    expect(runToHlt(h, 1).rip).toBe(1);
    expect(h.vcpu.getSregs().cs).toMatchObject({ selector: 0x4000, base: 0x40000, limit: 0xffff });
  });
});

describe('segment limits (i686 real mode)', () => {
  it('a word read at offset 0xFFFF raises #GP (vector 13) before anything changes', () => {
    const g = trapGuest('8b 07 f4', { regs: { rbx: 0xffff, rax: 0x1234 } }); // mov ax,[bx]
    const t = runToTrap(g);
    expect([t.vector, t.ip, t.cs]).toEqual([13, 0x100, LAYOUT.cs]);
    expect(t.regs.rax).toBe(0x1234);
  });

  it('a word access through SS at offset 0xFFFF raises #SS (vector 12)', () => {
    const t = runToTrap(trapGuest('8b 46 00 f4', { regs: { rbp: 0xffff } })); // mov ax,[bp+0]
    expect([t.vector, t.ip]).toEqual([12, 0x100]);
  });

  it('a byte at 0xFFFF is fine, a dword at 0xFFFD is not, a dword at 0xFFFC is', () => {
    const g = trapGuest('8a 07 66 8b 4f fd f4', { regs: { rbx: 0xffff } }); // mov al,[bx] ; mov ecx,[bx-3]
    g.ram.set([1, 2, 3, 4], DS + 0xfffc);
    let regs = runToHlt(g, 1);
    expect(regs.rax & 0xff).toBe(0x04);
    expect(regs.rcx).toBe(0x04030201);
    expect(g.vcpu.getSregs().cs.selector).toBe(LAYOUT.cs);
    const t = runToTrap(trapGuest('66 8b 07 f4', { regs: { rbx: 0xfffd } }));
    expect([t.vector, t.ip]).toEqual([13, 0x100]);
    regs = t.regs;
    expect(regs.rax).toBe(0);
  });

  it('a faulting word write at 0xFFFF writes neither byte', () => {
    const g = trapGuest('c7 07 34 12 f4', { regs: { rbx: 0xffff } }); // mov word [bx],0x1234
    const t = runToTrap(g);
    expect(t.vector).toBe(13);
    expect(g.ram[DS + 0xffff]).toBe(0);
    expect(g.ram[DS]).toBe(0);
  });

  it('fetching past the CS limit raises #GP with the instruction’s IP', () => {
    // mov ax,0x1234 at 1000:FFFE: its last byte would be at offset 0x10000.
    const g = trapGuest('b8 34 12', { ip: 0xfffe, regs: { rax: 0 } });
    const t = runToTrap(g);
    expect([t.vector, t.ip, t.cs]).toEqual([13, 0xfffe, LAYOUT.cs]);
    expect(t.regs.rax).toBe(0);
  });

  it('a push that cannot be delivered escalates to a triple fault: KVM_EXIT_SHUTDOWN', () => {
    // SP = 1: the pushed word would sit at SS:FFFF (#SS); delivering #SS pushes there again.
    const g = trapGuest('50 f4', { sp: 1 });
    expect(g.vcpu.run()).toBe(KVM_EXIT_SHUTDOWN);
    expect(g.run.exitReason).toBe(KVM_EXIT_SHUTDOWN);
  });
});

describe('emulation gaps', () => {
  it('gives KVM_EXIT_INTERNAL_ERROR naming the bytes and the address when the CPU meets a gap, never throws, and can be recovered', () => {
    // Every i686 opcode is implemented or #UD, so the gap used here is a page walk into
    // guest-physical memory that no slot backs (page tables in MMIO are not emulated).
    const code = [
      '66 b8 00 00 20 00', // mov eax, 0x200000 (beyond the 1 MiB slot)
      '0f 22 d8', //          mov cr3, eax
      '66 b8 01 00 00 80', // mov eax, 0x80000001 (PE | PG)
      '0f 22 c0', //          mov cr0, eax
      'f4', //                hlt: its fetch walks the page tables
    ].join(' ');
    const g = createGuest({ code });
    let reason = -1;
    expect(() => { reason = g.vcpu.run(); }).not.toThrow();
    expect(reason).toBe(KVM_EXIT_INTERNAL_ERROR);
    expect(g.run.internal.suberror).toBe(KVM_INTERNAL_ERROR_EMULATION);
    const msg = g.run.internal.message;
    expect(msg).toContain('page table at unbacked physical address 0x200000');
    expect(msg).toContain('1000:0112');
    expect(msg).toContain('linear 0x10112');
    // The vCPU stays at the instruction, and trying again gives the same answer.
    expect(g.vcpu.getRegs().rip).toBe(0x112);
    expect(g.vcpu.run()).toBe(KVM_EXIT_INTERNAL_ERROR);
    expect(g.run.internal.message).toBe(msg);
    // The VMM can recover: paging off again, and the HLT runs.
    const sregs = g.vcpu.getSregs();
    sregs.cr0 = 0x10;
    g.vcpu.setSregs(sregs);
    expect(g.vcpu.run()).toBe(KVM_EXIT_HLT);
    expect(g.vcpu.getRegs().rip).toBe(0x113);
  });

  it('undefined opcodes raise #UD in the guest, as on hardware', () => {
    for (const code of ['0f 0f c1 9e', '0f 58 c1', '0f 77', '0f 05', 'ff ff']) {
      const g = trapGuest(code);
      const t = runToTrap(g);
      expect([code, t.vector, t.ip]).toEqual([code, 6, LAYOUT.ip]);
    }
  });
});

describe('MOV CR0 cache-control bits', () => {
  // CR0 comes out of reset with CD and NW set.
  // mov eax,cr0 ; and eax,~(CD|NW) ; or eax,bits ; mov cr0,eax ; mov ebx,cr0 ; hlt
  const imm32 = (v: number) => le(v, 4).map((b) => b.toString(16).padStart(2, '0')).join(' ');
  const setCr0Bits = (bits: number) => `0f 20 c0 66 25 ${imm32(0x9fff_ffff)} 66 0d ${imm32(bits)} 0f 22 c0 0f 20 c3 f4`;

  it('CD alone and CD with NW are accepted and read back (memtest86+ sets CD around its cache tests)', () => {
    for (const bits of [0x4000_0000, 0x6000_0000]) {
      const g = trapGuest(setCr0Bits(bits));
      const regs = runToHlt(g, 1);
      expect(g.vcpu.getSregs().cs.selector).toBe(LAYOUT.cs);
      expect((regs.rbx & 0x6000_0000) >>> 0).toBe(bits);
      expect((g.vcpu.getSregs().cr0 & 0x6000_0000) >>> 0).toBe(bits);
    }
  });

  it('NW without CD is #GP and leaves CR0 as it was', () => {
    const g = trapGuest(setCr0Bits(0x2000_0000));
    const before = g.vcpu.getSregs().cr0;
    const t = runToTrap(g);
    expect([t.vector, t.ip]).toEqual([13, 0x100 + 15]); // the MOV CR0 itself
    expect(g.vcpu.getSregs().cr0).toBe(before);
  });
});
