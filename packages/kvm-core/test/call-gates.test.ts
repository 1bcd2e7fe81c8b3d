import { describe, expect, it } from 'vitest';
import { runGuest, u32 } from './guests/pm-kit.js';
import { MEM, SEL, buildCallGateGuest } from './guests/call-gates.js';

describe('call gates, ARPL and the I/O bitmap at CPL 3 (self-checking guest)', () => {
  const g = buildCallGateGuest();
  const r = runGuest(g.bytes, { inputs: { 0x60: 0x5a } });
  const v = (label: string) => u32(r.ram, g.addr(label));

  it('passes every check in the guest', () => {
    expect(r.message).toBe('');
    // 'u' by OUT and 's' by OUTSB from ring 3, through the bitmap.
    expect(r.serial).toBe('PusK');
    expect(r.exitCode).toBe(0);
    expect(v('check')).toBe(7 * 16 + 2);
    expect(r.outs).toEqual([]); // the denied OUTs never reached the VMM
  });

  it('ARPL raised the RPL in a register and in memory', () => {
    expect(v('arpl_mem')).toBe(0x001a);
  });

  it('the 32-bit gate switched to the TSS stack and copied 2 dwords', () => {
    expect(v('g32_cs')).toBe(SEL.CODE0);
    expect(v('g32_ss')).toBe(SEL.DATA0);
    expect(v('g32_esp')).toBe(MEM.RING0_STACK - 24);
    expect(v('g32_ret')).toBe(g.addr('g32_return'));
    expect(v('g32_retcs')).toBe(SEL.CODE3);
    expect([v('g32_p0'), v('g32_p1')]).toEqual([0x22222222, 0x11111111]);
    expect(v('g32_oldesp')).toBe(MEM.USER_STACK - 8);
    expect(v('g32_oldss')).toBe(SEL.DATA3);
  });

  it('the 16-bit gate pushed a 16-bit frame with 1 word', () => {
    expect(v('g16_esp')).toBe(MEM.RING0_STACK - 10);
    expect(v('g16_frame0')).toBe(0x4455_0000 | SEL.CODE3);
    expect(v('g16_frame1')).toBe(((SEL.DATA3 << 16) | (MEM.USER_STACK - 2)) >>> 0);
  });

  it('refusals raised #GP with the right error codes', () => {
    expect(v('gp_count')).toBe(5);
    expect(v('gp_err')).toBe(SEL.CODE0); // the last: JMP through a gate to ring 0
    expect(v('gp_eip')).toBe(g.addr('jmp_ring0'));
  });
});
