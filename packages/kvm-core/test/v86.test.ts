import { describe, expect, it } from 'vitest';
import { runGuest, u16, u32 } from './guests/pm-kit.js';
import { V86, buildV86Guest } from './guests/v86.js';

const VM = 0x20000, IOPL3 = 0x3000;

describe('virtual-8086 mode under a ring-0 monitor (self-checking guest)', () => {
  const g = buildV86Guest();
  const r = runGuest(g.bytes, { inputs: { 0x60: 0x5a } });
  const v = (label: string) => u32(r.ram, g.addr(label));

  it('passes every check in the guest', () => {
    expect(r.message).toBe('');
    expect(r.serial).toBe('PVK'); // 'V' from V86 code through the I/O bitmap
    expect(r.exitCode).toBe(0);
    expect(v('check')).toBe(0x91);
    expect(r.outs).toEqual([]);
  });

  it('V86 code addressed memory real-mode style', () => {
    expect(u16(r.ram, 0x10010)).toBe(0x1234);
    expect(v('far_ok')).toBe(1);
    expect(v('in_value')).toBe(0x5a);
  });

  it('IOPL-sensitive instructions and denied ports trapped to the monitor', () => {
    expect(v('gp_count')).toBe(11);
    expect(v('gp_err')).toBe(0); // the last one: HLT
    expect(v('gp_cs')).toBe(V86.CS);
    expect(v('gp_frame_es')).toBe(V86.ES);
    expect(v('gp_entry_ds')).toBe(0);
    expect(v('gp_flags') & (VM | IOPL3)).toBe(VM);
  });

  it('#DE and INT 0x21 (IOPL 3) reached ring 0 with a V86 frame', () => {
    expect(v('de_count')).toBe(1);
    expect(v('de_eip')).toBe(g.addr('v86_div'));
    expect(v('de_frame_ss')).toBe(V86.SS);
    expect(v('i21_count')).toBe(1);
    expect(v('i21_eip')).toBe(g.addr('after_int21'));
    expect(v('i21_flags') & (VM | IOPL3)).toBe(VM | IOPL3);
    expect(v('done_flags') & (VM | IOPL3)).toBe(VM | IOPL3);
  });

  it('ends in the monitor at ring 0 with CR4.VME clear', () => {
    expect(r.regs.rflags & VM).toBe(0);
    expect(r.sregs.cs.selector).toBe(0x08);
    expect(r.sregs.cr4 & 1).toBe(0);
  });
});
