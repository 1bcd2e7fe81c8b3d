import { beforeEach, describe, expect, it } from 'vitest';
import { GuestMemory } from '../../memory/guest-memory.js';
import { KvmRun } from '../../kvm-run.js';
import { X86Cpu } from '../cpu.js';
import { step } from '../interpreter.js';
import { FAULT } from '../exceptions.js';
import { AR_DB, AR_G, AR_P, AR_S, CS, DS, ES, SS } from '../constants.js';
import { CF, OF, PF, SF, ZF } from '../flags.js';
import { fromHex, toHex } from './float80.js';

// The unit is off by default (X86Cpu.FPU_AVAILABLE); these tests run with it on.
X86Cpu.FPU_AVAILABLE = true;

const MEM_SIZE = 1 << 20;
const CODE = 0x1000, DATA = 0x8000;

let ram: Uint8Array;
let c: X86Cpu;

function newCpu(): void {
  const buf = new ArrayBuffer(MEM_SIZE);
  ram = new Uint8Array(buf);
  const memory = new GuestMemory();
  memory.setRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: MEM_SIZE, userspaceAddr: buf });
  c = new X86Cpu(memory, new KvmRun());
  c.timeSlice = 0;
  c.runLoop(); // picks up the memory slot
}

/** Flat 32-bit protected mode at CPL 0, CR0 = PE MP ET NE, FPU initialized. */
function flat32(): void {
  c.loadSegRaw(CS, 0x08, 0, 0xffffffff, AR_P | AR_S | 0xb | AR_DB | AR_G);
  for (const s of [DS, ES, SS]) c.loadSegRaw(s, 0x10, 0, 0xffffffff, AR_P | AR_S | 0x3 | AR_DB | AR_G);
  c.cr0 = 0x33;
  c.updateMode();
  c.x87.init();
}

/** Real mode, CS = 0x100 (base 0x1000), DS = 0. */
function real16(): void {
  c.loadSegRaw(CS, 0x100, 0x1000, 0xffff, AR_P | AR_S | 0xb);
  for (const s of [DS, ES, SS]) c.loadSegRaw(s, 0, 0, 0xffff, AR_P | AR_S | 0x3);
  c.cr0 = 0x10;
  c.updateMode();
  c.x87.init();
}

/** Runs the bytes to their end (at CS offset `at`); returns the vector of a fault, or -1. */
function run(bytes: number[], at = CODE): number {
  const base = c.segBase[CS]!;
  ram.set(bytes, base + at);
  c.eip = at;
  const end = at + bytes.length;
  while (c.eip !== end) {
    c.startEip = c.eip;
    try {
      step(c);
    } catch (e) {
      if (e !== FAULT) throw e;
      c.eip = c.startEip;
      return c.faultVector;
    }
  }
  return -1;
}

const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
const rd16 = (a: number) => ram[a]! | (ram[a + 1]! << 8);
const rd32 = (a: number) => (rd16(a) | (rd16(a + 2) << 16)) >>> 0;
/** ModRM [disp32] form for reg field r, followed by the address. */
const m32 = (r: number, addr: number) => [(r << 3) | 5, ...le32(addr)];

const FLD1 = [0xd9, 0xe8], FLDZ = [0xd9, 0xee], FLDPI = [0xd9, 0xeb], FLDL2T = [0xd9, 0xe9];
const st = (i: number) => toHex(c.x87.st(i));

beforeEach(() => newCpu());

describe('x87 state', () => {
  it('resets to the SDM power-on values and FNINIT values', () => {
    expect(c.x87.fcw).toBe(0x40);
    expect(c.x87.fsw).toBe(0);
    expect(c.x87.ftw).toBe(0x5555);
    flat32();
    expect(c.x87.fcw).toBe(0x37f);
    expect(c.x87.ftw).toBe(0xffff);
  });
});

describe('x87 exceptions', () => {
  it('raises #NM for CR0.EM or CR0.TS, and for WAIT only with TS and MP', () => {
    flat32();
    c.cr0 = 0x33 | 8; // TS
    expect(run(FLD1)).toBe(7);
    expect(run([0x9b])).toBe(7); // MP set too
    c.cr0 = 0x31 | 8; // TS without MP
    expect(run([0x9b])).toBe(-1);
    c.cr0 = 0x33 | 4; // EM
    expect(run(FLD1)).toBe(7);
    expect(run([0x0f, 0xae, ...m32(0, DATA)])).toBe(7); // FXSAVE
  });

  it('defers an unmasked exception to the next waiting instruction (#MF with CR0.NE)', () => {
    flat32();
    ram.set([0x7b, 0x03], DATA); // FCW 0x037B: ZE unmasked
    expect(run([0xd9, ...m32(5, DATA), ...FLD1, ...FLDZ, 0xde, 0xf9])).toBe(-1); // fldcw; fld1; fldz; fdivp st1,st0 = 1/0
    expect(c.x87.fsw & 0x80ff).toBe(0x8084); // B, ES, ZE
    expect(c.x87.isEmpty(1)).toBe(false); // unmasked ZE: destination and stack unchanged
    // Non-waiting instructions go ahead; the next waiting one faults.
    expect(run([0xdf, 0xe0])).toBe(-1); // fnstsw ax
    expect(c.r16[0]! & 0x80ff).toBe(0x8084);
    expect(run([0xd9, 0xc9])).toBe(16); // fxch: #MF
    expect(run([0x9b])).toBe(16); // wait: #MF
    expect(run([0xdb, 0xe2, 0x9b, ...FLD1])).toBe(-1); // fnclex; wait; fld1
  });

  it('calls onFerr instead when CR0.NE = 0, and the instruction goes on', () => {
    flat32();
    c.cr0 = 0x13; // PE MP ET, NE clear
    const calls: number[] = [];
    c.x87.onFerr = () => calls.push(c.startEip);
    ram.set([0x7b, 0x03], DATA);
    run([0xd9, ...m32(5, DATA), ...FLD1, ...FLDZ, 0xde, 0xf9]);
    expect(calls).toEqual([]);
    expect(run(FLD1, 0x2000)).toBe(-1);
    expect(calls).toEqual([0x2000]);
    expect(st(0)).toBe('3fff8000000000000000');
  });

  it('raises #UD for FISTTP (SSE3) and reserved encodings', () => {
    flat32();
    expect(run([...FLD1, 0xdb, ...m32(1, DATA)])).toBe(6);
    expect(run([0xd9, 0xd1])).toBe(6);
    expect(run([0xdf, 0xe1])).toBe(6);
  });

  it('leaves the unit untouched when a memory operand faults (restartable)', () => {
    flat32();
    run([...FLD1, ...FLDPI]);
    c.loadSegRaw(DS, 0x10, 0, 0x7fff, AR_P | AR_S | 0x3 | AR_DB); // DS limit below DATA
    const before = [c.x87.fsw, c.x87.ftw, st(0), st(1), c.x87.fip];
    expect(run([0xdb, ...m32(7, DATA)])).toBe(13); // fstp m80: #GP
    expect(run([0xdd, ...m32(3, DATA)])).toBe(13); // fstp m64
    expect(run([0xdd, ...m32(6, DATA)])).toBe(13); // fnsave
    expect([c.x87.fsw, c.x87.ftw, st(0), st(1), c.x87.fip]).toEqual(before);
  });
});

/**
 * Flat 32-bit mode with FCW `fcw`, FSW `fsw` (TOP from bits 11-13) and ST(0), ST(1) loaded
 * from 80-bit hex encodings (null: empty), the way the cpu-oracle's `fpu` input sets them.
 */
function loadFpu(fcw: number, fsw: number, st0: string | null, st1: string | null): void {
  flat32();
  c.x87.fcw = fcw;
  c.x87.fsw = fsw;
  c.x87.empty = 0xff;
  if (st0 !== null) c.x87.setSt(0, fromHex(st0));
  if (st1 !== null) c.x87.setSt(1, fromHex(st1));
}

const ONE_X = '3fff8000000000000000', QNAN_X = '7fffc000000000000000', SNAN_X = '7fffa000000000000000';
const DENORMAL_X = '00000000000000000001';

describe('x87 instructions', () => {
  it('loads the constants with rounding-control-dependent last bits', () => {
    flat32();
    run([...FLDPI, ...FLDL2T]);
    expect(st(1)).toBe('4000c90fdaa22168c235');
    expect(st(0)).toBe('4000d49a784bcd1b8afe');
    ram.set([0x7f, 0x07], DATA); // RC = down
    run([0xd9, ...m32(5, DATA), ...FLDPI, ...FLDL2T]);
    expect(st(1)).toBe('4000c90fdaa22168c234');
    expect(st(0)).toBe('4000d49a784bcd1b8afe');
    ram.set([0x7f, 0x0b], DATA); // RC = up
    run([0xd9, ...m32(5, DATA), ...FLDPI, ...FLDL2T]);
    expect(st(1)).toBe('4000c90fdaa22168c235');
    expect(st(0)).toBe('4000d49a784bcd1b8aff');
  });

  it('FCOMI sets ZF PF CF and clears OF SF AF', () => {
    flat32();
    c.setEflags(0x2 | OF | SF);
    run([...FLD1, ...FLDZ, 0xdb, 0xf1]); // st0 = 0 < st1 = 1
    expect(c.getEflags() & (CF | PF | ZF | OF | SF)).toBe(CF);
    run([...FLDZ, 0xdf, 0xe9]); // fucomip st0, st1: 0 == 0, pop
    expect(c.getEflags() & (CF | PF | ZF)).toBe(ZF);
  });

  it('stores and loads packed BCD (FBSTP, FBLD)', () => {
    flat32();
    ram.set([0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0x80], DATA); // -123456789
    run([0xdf, ...m32(4, DATA), 0xdf, ...m32(6, DATA + 16)]);
    expect([...ram.subarray(DATA + 16, DATA + 26)]).toEqual([0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0x80]);
    expect(c.x87.isEmpty(0)).toBe(true);
  });

  it('FNSAVE/FRSTOR use the 32-bit protected-mode layout and reinitialize', () => {
    flat32();
    run([...FLD1, ...FLDPI], 0x1100);
    run([0xdd, ...m32(6, DATA)], 0x1200); // fnsave
    expect(rd32(DATA)).toBe(0xffff037f);
    expect(rd16(DATA + 4)).toBe(0x3000); // TOP = 6
    expect(rd16(DATA + 8)).toBe(0x0fff); // ST0 (phys 6), ST1 (phys 7) valid
    expect(rd32(DATA + 12)).toBe(0x1102); // FIP: the FLDPI
    expect(rd32(DATA + 16)).toBe(0x08 | (0x1eb << 16)); // FCS, FOP
    expect([...ram.subarray(DATA + 28, DATA + 38)]).toEqual([0x35, 0xc2, 0x68, 0x21, 0xa2, 0xda, 0x0f, 0xc9, 0x00, 0x40]);
    expect(c.x87.ftw).toBe(0xffff);
    expect(c.x87.fcw).toBe(0x37f);
    run([0xdd, ...m32(4, DATA)]); // frstor
    expect(c.x87.fsw).toBe(0x3000);
    expect(st(0)).toBe('4000c90fdaa22168c235');
    expect(st(1)).toBe('3fff8000000000000000');
    expect(c.x87.fip).toBe(0x1102);
  });

  it('FNSTENV in real mode (16-bit) stores linear pointers and masks all exceptions', () => {
    newCpu();
    real16();
    ram.set([0x7b, 0x03], 0x300);
    run([0xd9, 0x2e, 0x00, 0x03], 0x10); // fldcw [0x300]: FCW 0x037B
    run([0xdb, 0x2e, 0x00, 0x02], 0x20); // fld m80 [0x200]
    run([0xd9, 0x36, 0x00, 0x04], 0x30); // fnstenv [0x400]
    expect(rd16(0x400)).toBe(0x037b);
    expect(rd16(0x406)).toBe(0x1020); // FIP[15:0] (linear 0x1020)
    expect(rd16(0x408)).toBe(0x032e); // FIP[19:16] = 0, FOP = DB 2E
    expect(rd16(0x40a)).toBe(0x0200); // FDP
    expect(c.x87.fcw).toBe(0x037f);
    run([0xd9, 0x26, 0x00, 0x04], 0x40); // fldenv
    expect(c.x87.fcw).toBe(0x037b);
    expect(c.x87.fip).toBe(0x1020);
  });

  it('FXSAVE/FXRSTOR round-trip with the abridged tag word and check alignment', () => {
    flat32();
    run([...FLD1, ...FLDZ]);
    expect(run([0x0f, 0xae, ...m32(0, DATA + 8)])).toBe(13); // misaligned: #GP
    expect(run([0x0f, 0xae, ...m32(0, DATA)])).toBe(-1);
    expect(rd16(DATA)).toBe(0x37f);
    expect(rd16(DATA + 2)).toBe(0x3000);
    expect(ram[DATA + 4]).toBe(0xc0); // physical 6 and 7 valid
    expect(rd32(DATA + 24)).toBe(0x1f80);
    expect([...ram.subarray(DATA + 48, DATA + 58)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]); // ST1 = 1.0
    run([0xdb, 0xe3]); // fninit
    expect(c.x87.ftw).toBe(0xffff);
    expect(run([0x0f, 0xae, ...m32(1, DATA)])).toBe(-1); // fxrstor
    expect(c.x87.ftw).toBe(0x1fff); // ST0 (phys 6) zero, ST1 (phys 7) valid
    expect(st(1)).toBe('3fff8000000000000000');
    expect(run([0x0f, 0xae, 0xc0])).toBe(6); // register form: #UD
  });

  it('computes transcendentals in double precision', () => {
    flat32();
    run([...FLD1, 0xd9, 0xfe]); // fsin(1)
    const dv = new DataView(new ArrayBuffer(8));
    run([0xdd, ...m32(3, DATA)]); // fstp m64
    dv.setUint32(0, rd32(DATA + 4)); dv.setUint32(4, rd32(DATA));
    expect(dv.getFloat64(0)).toBeCloseTo(Math.sin(1), 15);
    run([...FLD1, 0xd9, 0xf2]); // fptan(1): tan(1), then 1.0 pushed
    expect(st(0)).toBe('3fff8000000000000000');
    ram.set([0, 0, 0, 0, 0, 0, 0, 0x80, 0x40, 0x40], DATA); // 2^65
    run([0xdb, ...m32(5, DATA), 0xd9, 0xff]); // fcos(2^65): out of range, C2 set
    expect(c.x87.fsw & 0x400).toBe(0x400);
  });
});

// Behaviours measured on an Intel family-6 CPU (cpu-oracle vectors kvmts-*) where the SDM
// pseudo-code says otherwise: an unmasked IE/DE still sets the comparison result, and FSCALE
// results out of range even after the 24576 exponent wrap become ±∞ or ±0.
describe('x87 Intel-measured behaviours', () => {
  it('FCOMI/FUCOMI(P) with unmasked IE still write ZF PF CF = 111, clear OF SF AF, and do not pop', () => {
    loadFpu(0x37e, 0x3000, ONE_X, QNAN_X); // TOP = 6, IE unmasked
    c.setEflags(0xad7); // OF SF AF ZF PF CF set, IF set (as in the oracle)
    expect(run([0xdb, 0xf1])).toBe(-1); // fcomi st0, st1
    expect(c.getEflags()).toBe(0x247);
    expect(c.x87.fsw).toBe(0xb081);
    for (const [op, v] of [[0xdf, QNAN_X], [0xdb, SNAN_X], [0xdf, SNAN_X], [0xdf, '40004000000000000000']] as const) {
      loadFpu(0x37e, 0x3000, ONE_X, v);
      c.setEflags(0x202);
      expect(run([op, op === 0xdf && v === QNAN_X ? 0xf1 : 0xe9])).toBe(-1); // fcomip / fucomi / fucomip
      expect(c.getEflags()).toBe(0x247);
      expect(c.x87.fsw).toBe(0xb081); // TOP still 6: no pop
      expect(st(0)).toBe(ONE_X);
      expect(st(1)).toBe(v);
    }
    // Stack underflow (ST1 empty) with IE unmasked: unordered too, SF set, C1 = 0.
    loadFpu(0x37e, 0x3000, ONE_X, null);
    c.setEflags(0xad7); // OF SF AF ZF PF CF set, IF set (as in the oracle)
    expect(run([0xdf, 0xf1])).toBe(-1); // fcomip
    expect(c.getEflags()).toBe(0x247);
    expect(c.x87.fsw).toBe(0xb0c1);
    expect(c.x87.isEmpty(0)).toBe(false);
  });

  it('FCOMI/FUCOMIP with unmasked DE write the real comparison result and do not pop', () => {
    loadFpu(0x37d, 0x3000, ONE_X, DENORMAL_X); // DE unmasked; 1.0 > denormal
    c.setEflags(0xad7); // OF SF AF ZF PF CF set, IF set (as in the oracle)
    expect(run([0xdb, 0xf1])).toBe(-1);
    expect(c.getEflags()).toBe(0x202);
    expect(c.x87.fsw).toBe(0xb082);
    loadFpu(0x37d, 0x3000, DENORMAL_X, ONE_X); // denormal < 1.0
    c.setEflags(0xad7); // OF SF AF ZF PF CF set, IF set (as in the oracle)
    expect(run([0xdf, 0xe9])).toBe(-1); // fucomip
    expect(c.getEflags()).toBe(0x203);
    expect(c.x87.fsw).toBe(0xb082);
    expect(st(0)).toBe(DENORMAL_X);
  });

  it('FCOM/FCOMPP/FUCOMPP/FCOM m32/FTST with unmasked IE set C3 C2 C0 = 111 and do not pop', () => {
    // kvmts-2/32/19834: fcom st1 with an unnormal ST1, FCW 0F7Eh.
    loadFpu(0xf7e, 0x3000, '3fd6ec7a6e8ccab8a41b', '226722975654b850ad28');
    expect(run([0xd8, 0xd1])).toBe(-1);
    expect(c.x87.fsw).toBe(0xf581);
    for (const [code, v] of [[[0xde, 0xd9], QNAN_X], [[0xda, 0xe9], SNAN_X], [[0xd8, 0xd9], '40004000000000000000']] as const) {
      loadFpu(0x37e, 0x3000, ONE_X, v); // fcompp / fucompp / fcomp st1
      expect(run([...code])).toBe(-1);
      expect(c.x87.fsw).toBe(0xf581); // TOP still 6
      expect(st(1)).toBe(v);
    }
    loadFpu(0x37e, 0x3000, ONE_X, null); // fcompp, ST1 empty: stack underflow
    expect(run([0xde, 0xd9])).toBe(-1);
    expect(c.x87.fsw).toBe(0xf5c1);
    expect(c.x87.isEmpty(0)).toBe(false);
    loadFpu(0x37e, 0x3800, ONE_X, null); // fcomp m32 QNaN, TOP = 7
    ram.set(le32(0x7fc00000), DATA);
    expect(run([0xd8, ...m32(3, DATA)])).toBe(-1);
    expect(c.x87.fsw).toBe(0xfd81);
    expect(c.x87.isEmpty(0)).toBe(false);
    loadFpu(0x37e, 0x3800, null, null); // ftst, ST0 empty
    expect(run([0xd9, 0xe4])).toBe(-1);
    expect(c.x87.fsw).toBe(0xfdc1);
  });

  it('FCOM/FCOMP/FTST with unmasked DE set the real comparison result and do not pop', () => {
    // kvmts-x87/16/28186: fcom st1, ST0 negative, ST1 a pseudo-denormal, FCW 0B7Dh: less.
    loadFpu(0xb7d, 0x3000, 'c00eb7f3800000000000', '00008000000000000000');
    expect(run([0xd8, 0xd1])).toBe(-1);
    expect(c.x87.fsw).toBe(0xb182);
    loadFpu(0x37d, 0x3000 | 0x4500, ONE_X, DENORMAL_X); // fcomp st1: greater (C3 C2 C0 cleared)
    expect(run([0xd8, 0xd9])).toBe(-1);
    expect(c.x87.fsw).toBe(0xb082);
    expect(c.x87.isEmpty(1)).toBe(false);
    loadFpu(0x37d, 0x3800 | 0x4500, DENORMAL_X, null); // ftst: denormal > 0
    expect(run([0xd9, 0xe4])).toBe(-1);
    expect(c.x87.fsw).toBe(0xb882);
  });

  it('FSCALE with unmasked OE/UE wraps the exponent by 24576, and returns ±inf or ±0 beyond that', () => {
    const fscaleOne = (n: number, fcw: number, neg = false): void => {
      loadFpu(fcw, 0, null, null);
      ram.set(le32(n), DATA);
      expect(run([0xdb, ...m32(0, DATA), ...FLD1, ...(neg ? [0xd9, 0xe0] : []), 0xd9, 0xfd])).toBe(-1); // fild; fld1; (fchs); fscale
    };
    fscaleOne(40959, 0x367); // OE and UE unmasked: still wraps into range
    expect(st(0)).toBe('7ffe8000000000000000');
    expect(c.x87.fsw).toBe(0xb088);
    fscaleOne(40960, 0x367);
    expect(st(0)).toBe('7fff8000000000000000');
    expect(c.x87.fsw).toBe(0xb2a8); // OE PE, C1 = 1
    fscaleOne(50000, 0xf67, true); // any rounding mode (here chop), sign kept
    expect(st(0)).toBe('ffff8000000000000000');
    expect(c.x87.fsw).toBe(0xb2a8);
    fscaleOne(-40958, 0x367);
    expect(st(0)).toBe('00018000000000000000');
    expect(c.x87.fsw).toBe(0xb090);
    fscaleOne(-40959, 0x367);
    expect(st(0)).toBe('00000000000000000000');
    expect(c.x87.fsw).toBe(0xb0b0); // UE PE, C1 = 0
    fscaleOne(-1000000, 0x367, true);
    expect(st(0)).toBe('80000000000000000000');
    expect(c.x87.fsw).toBe(0xb0b0);
  });

  it('FSCALE examples kvmts-x87/32/11336 (to +inf) and kvmts-4/32/23820 (to +0)', () => {
    const FSCALE = [0xd9, 0xfd];
    loadFpu(0xf77, 0x3000, '4000c90fdaa22168c234', '4018af88500000000000'); // pi × 2^46,004,xxx; OE unmasked, RC chop
    expect(run(FSCALE)).toBe(-1);
    expect(st(0)).toBe('7fff8000000000000000');
    expect(c.x87.fsw).toBe(0xb2a8);
    expect(c.x87.ftw).toBe(0x2fff);
    loadFpu(0xb6f, 0x3000, '4000c90fdaa22168c235', 'c03e8000000000000000'); // pi × 2^-2^63; UE unmasked, RC up
    expect(run(FSCALE)).toBe(-1);
    expect(st(0)).toBe('00000000000000000000');
    expect(c.x87.fsw).toBe(0xb0b0);
    expect(c.x87.ftw).toBe(0x1fff);
  });
});
