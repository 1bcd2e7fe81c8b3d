/**
 * A self-checking guest for PAE paging (SDM vol. 3A 4.4), reporting as pm-kit.ts describes
 * (the failed check is check * 16 + step). It prints 'P' in protected mode, 'A' once PAE paging
 * is on, 'K' when everything passed. Checks:
 *   1. CPUID.01H:EDX.PAE is set
 *   2. (paging off) page tables and marker words in the test pages are written
 *   3. CR4.PAE, CR3 (bits 11:5 used: the PDPT is at 0x10020), CR0.PG: PAE paging is on
 *   4. a 4 KiB page
 *   5. 2 MiB pages (identity and an alias), without CR4.PSE
 *   6. linear addresses at 0xC0000000 through PDPTE 3: data, and a hot loop running there
 *   7. accessed/dirty bits in the 64-bit entries (D only in leaves; high dwords untouched)
 *   8. #PF: not-present PTE/PDE/PDPTE, reserved bits (bit 36, bit 63 = XD without NXE,
 *      bits 20:13 of a 2 MiB PDE) with RSVD in the error code, CR0.WP
 *   9. leaves whose frame is above 4 GiB: the accesses leave as MMIO exits (the runner records
 *      them and answers 0xFF bytes)
 *  10. CR4.PGE: a global page survives a CR3 reload, a non-global one does not; INVLPG drops
 *      a global page; clearing CR4.PGE drops all
 *  11. INVLPG of a non-global page, and of any address in a 2 MiB page (drops all of it)
 *  12. the PDPTEs are cached: a changed PDPTE in memory is not seen (even after INVLPG) until
 *      CR3 is loaded again
 *  13. #GP(0) and nothing changed for a present PDPTE with reserved bits (2:1, 8:5, 36, 63) on
 *      MOV CR3 and on MOV CR0 turning PG on; not-present PDPTEs may hold anything
 *  14. PAE off and on: PG off -> 32-bit paging (INVLPG drops a whole 4 MiB PSE page) -> MOV
 *      CR4 sets PAE with PG on (a bad PDPT makes it #GP) -> clears it -> sets it again
 *  15. ring 3: U/S and R/W combined across PDE and PTE, user RSVD fault (error 0xD)
 */
import { Assembler, dword, mem, reg, sym } from '../../src/x86/asm/index.js';
import {
  CODE0, CODE3, DATA0, DATA3, GUEST_LOAD, INT_GATE,
  at, build, emitFlatTwoRingGdt, emitReporting, enterProtectedMode, expect, gateDesc, tss32,
} from './pm-kit.js';

const { eax, ebx, ecx, edx, edi, esp, ax, al } = reg;

export const SEL = { CODE0: 0x08, DATA0: 0x10, CODE3: 0x1b, DATA3: 0x23, TSS: 0x28 } as const;

/** Physical layout (8 MiB of RAM). The 32-bit page directory shares its page with the PDPTs. */
export const MEM = {
  PD32: 0x10000,
  PDPT: 0x10020,
  /** PDPTs with one present entry that has reserved bits set: bit 1, bit 8, bit 63, bit 36. */
  PDPT_BAD_RW: 0x10060, PDPT_BAD_LOW: 0x10080, PDPT_BAD_XD: 0x100a0, PDPT_BAD_36: 0x100c0,
  /** A PDPT whose not-present entry 1 has every other bit set (allowed). */
  PDPT_NP: 0x100e0,
  PD0: 0x11000, PT0: 0x12000, PT_TEST: 0x13000, PD3: 0x14000, PD3B: 0x15000, PT32: 0x16000, PT32B: 0x17000,
  RING0_STACK: 0x80000, USER_STACK: 0x70000,
} as const;

/** Linear addresses of the test pages (PD0 entry 4 -> PT_TEST, entry i -> TEST + i * 4 KiB). */
const TEST = 0x800000;
const page = (i: number): number => TEST + i * 0x1000;
/** The marker word at offset 0 of physical page `p` (0x30000 -> 0x30303030). */
const marker = (p: number): number => ((p >>> 12) & 0xff) * 0x01010101;

const VARS = ['resume', 'pf_cr2', 'pf_err', 'pf_count', 'gp_err', 'gp_count', 'hi_eip'] as const;
const IDT_ENTRIES = 0x83;

export function buildPaeGuest() {
  const a = new Assembler({ bits: 16, origin: GUEST_LOAD });
  enterProtectedMode(a, SEL.CODE0, SEL.DATA0, MEM.RING0_STACK);
  a.mov(al, 'P'.charCodeAt(0)).call('putc');

  const d = (addr: number) => dword({ disp: addr });
  /** Writes a 64-bit paging entry (the high dword only when it is not 0: the tables start zeroed). */
  const entry = (addr: number, lo: number, hi = 0): void => {
    a.mov(d(addr), lo >>> 0);
    if (hi !== 0) a.mov(d(addr + 4), hi >>> 0);
  };
  const read = (lin: number) => a.mov(eax, d(lin));
  let n = 0;
  /** `emit` must fault with #PF (error `err`, CR2 `cr2`); the handler resumes after it. */
  const pf = (code: number, emit: () => void, cr2: number, err: number): void => {
    const resume = `pf_resume_${n++}`;
    a.mov(at('check'), code).mov(at('resume'), resume);
    emit();
    a.jmp('fail', 'near'); // it did not fault
    a.label(resume);
    expect(a, code, at('pf_err'), err);
    expect(a, code, at('pf_cr2'), cr2 >>> 0);
  };
  /** `emit` must fault with #GP(0). */
  const gp = (code: number, emit: () => void): void => {
    const resume = `gp_resume_${n++}`;
    a.mov(at('check'), code).mov(at('resume'), resume);
    emit();
    a.jmp('fail', 'near');
    a.label(resume);
    expect(a, code, at('gp_err'), 0);
  };
  const reloadCr3 = () => a.mov(eax, reg.cr3).mov(reg.cr3, eax);
  const setCr4 = (or: number) => a.mov(eax, reg.cr4).or(eax, or).mov(reg.cr4, eax);
  const clearCr4 = (bits: number) => a.mov(eax, reg.cr4).and(eax, ~bits >>> 0).mov(reg.cr4, eax);

  // --- 1. CPUID advertises PAE.
  a.mov(at('check'), 0x10);
  a.mov(eax, 1).cpuid().test(edx, 0x40).jz('fail', 'near');

  // --- 2. Tables, with paging off.
  a.mov(at('check'), 0x20);
  a.cld().mov(edi, MEM.PD32).mov(ecx, 0x8000 / 4).xor(eax, eax).rep().stosd();
  // PT0: identity 4 KiB pages for 0-2 MiB (user, writable). PT32: the same for 32-bit paging, 0-4 MiB.
  a.mov(ebx, MEM.PT0).xor(ecx, ecx);
  a.label('fill_pt0');
  a.mov(eax, ecx).shl(eax, 12).or(eax, 7).mov(mem({ base: ebx, index: ecx, scale: 8, size: 32 }), eax);
  a.inc(ecx).cmp(ecx, 512).jb('fill_pt0');
  a.mov(ebx, MEM.PT32).xor(ecx, ecx);
  a.label('fill_pt32');
  a.mov(eax, ecx).shl(eax, 12).or(eax, 7).mov(mem({ base: ebx, index: ecx, scale: 4, size: 32 }), eax);
  a.inc(ecx).cmp(ecx, 1024).jb('fill_pt32');
  // 32-bit paging: linear 0x800000 -> physical 0x3C000.
  a.mov(d(MEM.PD32), MEM.PT32 | 7).mov(d(MEM.PD32 + 8), MEM.PT32B | 3).mov(d(MEM.PT32B), 0x3c000 | 3);
  entry(MEM.PDPT, MEM.PD0 | 1);
  entry(MEM.PDPT + 24, MEM.PD3 | 1);
  entry(MEM.PDPT_BAD_RW, MEM.PD0 | 3);
  entry(MEM.PDPT_BAD_LOW, MEM.PD0 | 1); entry(MEM.PDPT_BAD_LOW + 24, MEM.PD3 | 0x101);
  entry(MEM.PDPT_BAD_XD, MEM.PD0 | 1); entry(MEM.PDPT_BAD_XD + 16, MEM.PD0 | 1, 0x80000000);
  entry(MEM.PDPT_BAD_36, MEM.PD0 | 1); entry(MEM.PDPT_BAD_36 + 8, MEM.PD0 | 1, 0x10);
  entry(MEM.PDPT_NP, MEM.PD0 | 1); entry(MEM.PDPT_NP + 8, 0xfffffffe, 0xffffffff);
  const pd0 = (i: number, lo: number, hi = 0) => entry(MEM.PD0 + i * 8, lo, hi);
  pd0(0, MEM.PT0 | 7);
  pd0(1, 0x200000 | 0x87); // 2 MiB, identity, user, writable
  pd0(2, 0x200000 | 0x83); // 2 MiB: 0x400000 aliases 0x200000 (supervisor)
  pd0(3, 0x600000 | 0x87); // 2 MiB, identity
  pd0(4, MEM.PT_TEST | 7);
  pd0(5, 0x200000 | 0x2083); // 2 MiB with bit 13 set: reserved
  pd0(6, MEM.PT_TEST | 7, 0x80000000); // bit 63 (XD) without EFER.NXE: reserved
  pd0(7, 0xffe00000 | 0x83, 0xf); // 2 MiB at physical 0xF_FFE00000, above RAM and above 4 GiB
  pd0(10, MEM.PT_TEST | 3); // supervisor PDE over the test PTEs
  pd0(11, MEM.PT_TEST | 5); // user, read-only PDE over the test PTEs
  const pt = (i: number, lo: number, hi = 0) => entry(MEM.PT_TEST + i * 8, lo, hi);
  pt(0, 0x30000 | 3);
  pt(1, 0x31000 | 0x103); // global
  pt(2, 0x32000 | 3);
  pt(3, 0x33000 | 3);
  pt(4, 0x00000000 | 3, 1); // physical 0x1_0000_0000
  pt(5, 0x35000 | 1); // read-only
  pt(6, 0x36000 | 5); // user, read-only
  pt(7, 0x37000 | 3); // supervisor
  pt(8, 0x38000 | 7, 0x10); // bit 36: reserved with MAXPHYADDR 36
  pt(10, 0x3a000 | 1);
  pt(11, 0x3b000 | 7);
  entry(MEM.PD3, 0x00000000 | 0x83); // 0xC0000000 -> physical 0 (2 MiB)
  entry(MEM.PD3B, 0x200000 | 0x83); // the same slot in another PD: -> physical 0x200000
  for (let p = 0x30000; p <= 0x3c000; p += 0x1000) a.mov(d(p), marker(p));
  a.mov(d(0x230000), 0x23232323);
  a.mov(d(0x601000), 0x61616161).mov(d(0x201000), 0x20202020);
  a.mov(d(0x1000), 0x01010101).mov(d(0x401000), 0x41414141);

  // --- 3. PAE paging on.
  a.mov(at('check'), 0x30);
  setCr4(0x20);
  a.mov(eax, MEM.PDPT).mov(reg.cr3, eax);
  a.mov(eax, reg.cr0).or(eax, 0x80000000).mov(reg.cr0, eax);
  a.mov(eax, reg.cr4);
  expect(a, 0x31, eax, 0x20);
  a.mov(eax, reg.cr3);
  expect(a, 0x32, eax, MEM.PDPT);
  a.mov(al, 'A'.charCodeAt(0)).call('putc');

  // --- 4. A 4 KiB page.
  read(page(0));
  expect(a, 0x40, eax, marker(0x30000));
  a.mov(d(page(0) + 4), 0x12345678);
  expect(a, 0x41, d(0x30004), 0x12345678);

  // --- 5. 2 MiB pages.
  a.mov(d(0x201234), 0xcafef00d);
  read(0x401234);
  expect(a, 0x50, eax, 0xcafef00d);
  a.mov(d(0x3ffffc), 0x600dcafe);
  read(0x5ffffc);
  expect(a, 0x51, eax, 0x600dcafe);
  read(0x6ffff0); // another 2 MiB page reads RAM there (zero)
  expect(a, 0x52, eax, 0);

  // --- 6. 0xC0000000 through PDPTE 3: data, then code (a hot loop, compiled by the JIT).
  read(0xc0030000);
  expect(a, 0x60, eax, marker(0x30000));
  a.mov(d(0xc0030008), 0x0badf00d);
  expect(a, 0x61, d(0x30008), 0x0badf00d);
  a.mov(eax, sym('hi_code', 0xc0000000)).call(eax);
  expect(a, 0x62, at('hi_eip'), sym('hi_next', 0xc0000000));
  expect(a, 0x63, edx, 5050);

  // --- 7. Accessed and dirty bits.
  read(page(10));
  expect(a, 0x70, d(MEM.PT_TEST), 0x30000 | 0x63); // written: A and D
  expect(a, 0x71, d(MEM.PT_TEST + 4), 0); // the high dword stays as it was
  expect(a, 0x72, d(MEM.PT_TEST + 80), 0x3a000 | 0x21); // read: A only
  expect(a, 0x73, d(MEM.PD0 + 32), MEM.PT_TEST | 0x27); // non-leaf PDE: A, never D
  expect(a, 0x74, d(MEM.PD0 + 8), 0x200000 | 0xe7); // 2 MiB leaf written: A and D
  expect(a, 0x75, d(MEM.PD0 + 16), 0x200000 | 0xa3); // 2 MiB leaf read: A only
  expect(a, 0x76, d(MEM.PD3), 0x000000e3); // 0xC0000000 was written through it

  // --- 8. Page faults (supervisor).
  pf(0x80, () => read(page(9)), page(9), 0); // PTE not present
  pf(0x81, () => a.mov(d(page(9) + 4), 1), page(9) + 4, 2); // ... on a write
  pf(0x82, () => read(0x1200010), 0x1200010, 0); // PDE not present
  pf(0x83, () => read(0x40000000), 0x40000000, 0); // PDPTE 1 not present
  pf(0x84, () => read(page(8)), page(8), 9); // bit 36 in the PTE: P | RSVD
  pf(0x85, () => a.mov(d(page(8)), 1), page(8), 0xb); // ... on a write
  pf(0x86, () => read(0xa00004), 0xa00004, 9); // bits 20:13 of a 2 MiB PDE
  pf(0x87, () => read(0xc00000), 0xc00000, 9); // bit 63 of the PDE without NXE
  // CR0.WP = 0: the supervisor writes to a read-only page; with WP it faults.
  a.mov(d(page(5)), 0x55aa55aa);
  expect(a, 0x88, d(0x35000), 0x55aa55aa);
  a.mov(eax, reg.cr0).or(eax, 0x10000).mov(reg.cr0, eax);
  pf(0x89, () => a.mov(d(page(5) + 4), 1), page(5) + 4, 3);
  pf(0x8a, () => a.mov(d(0x1600000), 1), 0x1600000, 3); // the PDE is read-only, the PTE writable
  expect(a, 0x8b, at('pf_count'), 10);

  // --- 9. Frames above 4 GiB: MMIO exits, nothing in RAM changes.
  read(page(4));
  expect(a, 0x90, eax, 0xffffffff);
  a.mov(d(page(4) + 8), 0xabcd1234);
  read(0xe00010);
  expect(a, 0x91, eax, 0xffffffff);

  // --- 10. Global pages.
  a.mov(at('check'), 0xa0);
  setCr4(0x80);
  read(page(1));
  expect(a, 0xa1, eax, marker(0x31000));
  read(page(2));
  expect(a, 0xa2, eax, marker(0x32000));
  a.mov(d(MEM.PT_TEST + 8), 0x34000 | 0x103).mov(d(MEM.PT_TEST + 16), 0x34000 | 3);
  reloadCr3();
  read(page(1));
  expect(a, 0xa3, eax, marker(0x31000)); // global: still the old translation
  read(page(2));
  expect(a, 0xa4, eax, marker(0x34000));
  a.invlpg(mem({ disp: page(1), size: 8 }));
  read(page(1));
  expect(a, 0xa5, eax, marker(0x34000));
  a.mov(d(MEM.PT_TEST + 8), 0x31000 | 0x103);
  reloadCr3();
  read(page(1));
  expect(a, 0xa6, eax, marker(0x34000)); // cached as global again
  clearCr4(0x80);
  read(page(1));
  expect(a, 0xa7, eax, marker(0x31000));

  // --- 11. INVLPG.
  read(page(3));
  expect(a, 0xb0, eax, marker(0x33000));
  a.mov(d(MEM.PT_TEST + 24), 0x34000 | 3);
  read(page(3));
  expect(a, 0xb1, eax, marker(0x33000)); // the TLB still holds the old translation
  a.invlpg(mem({ disp: page(3), size: 8 }));
  read(page(3));
  expect(a, 0xb2, eax, marker(0x34000));
  // INVLPG anywhere in a 2 MiB page drops all of it (the TLB holds it as 4 KiB pieces).
  read(0x601000);
  expect(a, 0xb3, eax, 0x61616161);
  a.mov(d(MEM.PD0 + 3 * 8), 0x200000 | 0x87);
  a.invlpg(mem({ disp: 0x7ff000, size: 8 }));
  read(0x601000);
  expect(a, 0xb4, eax, 0x20202020);
  a.mov(d(MEM.PD0 + 3 * 8), 0x600000 | 0x87);
  a.invlpg(mem({ disp: 0x600000, size: 8 }));
  read(0x601000);
  expect(a, 0xb5, eax, 0x61616161);

  // --- 12. The PDPTE registers, not the PDPT in memory, are used.
  a.mov(d(MEM.PDPT + 24), MEM.PD3B | 1);
  a.invlpg(mem({ disp: 0xc0030000, size: 8 }));
  read(0xc0030000);
  expect(a, 0xc0, eax, marker(0x30000));
  reloadCr3();
  read(0xc0030000);
  expect(a, 0xc1, eax, 0x23232323);
  a.mov(d(MEM.PDPT + 24), MEM.PD3 | 1);
  reloadCr3();
  read(0xc0030000);
  expect(a, 0xc2, eax, marker(0x30000));

  // --- 13. #GP for a present PDPTE with reserved bits.
  const badCr3 = (code: number, pdpt: number) => {
    gp(code, () => a.mov(eax, pdpt).mov(reg.cr3, eax));
    a.mov(eax, reg.cr3);
    expect(a, code, eax, MEM.PDPT);
  };
  badCr3(0xd0, MEM.PDPT_BAD_RW);
  badCr3(0xd1, MEM.PDPT_BAD_LOW);
  badCr3(0xd2, MEM.PDPT_BAD_XD);
  badCr3(0xd3, MEM.PDPT_BAD_36);
  // The failed loads left PDPTE 3 alone: 0xC0000000 still maps (after a fresh walk).
  a.invlpg(mem({ disp: 0xc0030000, size: 8 }));
  read(0xc0030000);
  expect(a, 0xd4, eax, marker(0x30000));
  expect(a, 0xd5, at('gp_count'), 4);
  a.mov(eax, MEM.PDPT_NP).mov(reg.cr3, eax); // a not-present PDPTE may hold anything
  pf(0xd6, () => read(0x40000000), 0x40000000, 0);
  a.mov(eax, MEM.PDPT).mov(reg.cr3, eax);
  // MOV CR0 turning PG on loads the PDPTEs too.
  a.mov(eax, reg.cr0).and(eax, 0x7fffffff).mov(reg.cr0, eax);
  a.mov(eax, MEM.PDPT_BAD_RW).mov(reg.cr3, eax); // paging off: nothing is loaded
  gp(0xd7, () => a.mov(eax, reg.cr0).or(eax, 0x80000000).mov(reg.cr0, eax));
  a.mov(eax, reg.cr0).test(eax, 0x80000000).jnz('fail', 'near'); // PG stayed 0
  a.mov(eax, MEM.PDPT).mov(reg.cr3, eax);
  a.mov(eax, reg.cr0).or(eax, 0x80000000).mov(reg.cr0, eax);
  read(page(0));
  expect(a, 0xd8, eax, marker(0x30000));

  // --- 14. PAE off and on.
  a.mov(eax, reg.cr0).and(eax, 0x7fffffff).mov(reg.cr0, eax);
  clearCr4(0x20);
  a.mov(eax, reg.cr0).or(eax, 0x80000000).mov(reg.cr0, eax); // 32-bit paging, PD at CR3 & ~0xFFF
  read(TEST);
  expect(a, 0xe0, eax, marker(0x3c000));
  // The same for a 4 MiB PSE page: INVLPG in its other 2 MiB half drops it.
  setCr4(0x10);
  a.mov(d(MEM.PD32 + 3 * 4), 0x400000 | 0x83);
  read(0xc01000);
  expect(a, 0xe6, eax, 0x41414141);
  a.mov(d(MEM.PD32 + 3 * 4), 0x000000 | 0x83);
  a.invlpg(mem({ disp: 0xfff000, size: 8 }));
  read(0xc01000);
  expect(a, 0xe7, eax, 0x01010101);
  clearCr4(0x10);
  a.mov(eax, MEM.PDPT_BAD_RW).mov(reg.cr3, eax); // the same 32-bit PD
  gp(0xe1, () => setCr4(0x20));
  a.mov(eax, reg.cr4).test(eax, 0x20).jnz('fail', 'near');
  read(TEST);
  expect(a, 0xe2, eax, marker(0x3c000));
  a.mov(eax, MEM.PDPT).mov(reg.cr3, eax);
  setCr4(0x20); // PG stays on: 32-bit -> PAE
  read(TEST);
  expect(a, 0xe3, eax, marker(0x30000));
  clearCr4(0x20); // PAE -> 32-bit
  read(TEST);
  expect(a, 0xe4, eax, marker(0x3c000));
  setCr4(0x20);
  read(TEST);
  expect(a, 0xe5, eax, marker(0x30000));

  // --- 15. Ring 3.
  a.mov(at('check'), 0xf0);
  a.mov(ax, SEL.TSS).ltr(ax);
  a.push(SEL.DATA3).push(MEM.USER_STACK).push(0x2).push(SEL.CODE3).push('user').iretd();
  a.label('user');
  a.mov(ax, SEL.DATA3).mov(reg.ds, ax).mov(reg.es, ax);
  read(page(6));
  expect(a, 0xf1, eax, marker(0x36000));
  pf(0xf2, () => a.mov(d(page(6)), 1), page(6), 7); // user, read-only PTE
  pf(0xf3, () => read(page(7)), page(7), 5); // supervisor PTE
  pf(0xf4, () => read(0x1406000), 0x1406000, 5); // supervisor PDE, user PTE
  read(0x160b000);
  expect(a, 0xf5, eax, marker(0x3b000)); // user, read-only PDE over a writable user PTE
  pf(0xf6, () => a.mov(d(0x160b000), 1), 0x160b000, 7);
  pf(0xf7, () => read(page(8)), page(8), 0xd); // reserved bit: P | U | RSVD
  pf(0xf8, () => read(0xc0030000), 0xc0030000, 5); // supervisor 2 MiB page
  a.int(0x81);

  a.label('user_done'); // ring 0 again
  a.mov(ax, SEL.DATA0).mov(reg.ds, ax).mov(esp, MEM.RING0_STACK);
  expect(a, 0xf9, at('pf_count'), 17);
  a.jmp('pass', 'near');

  // Runs at 0xC0000000 + its address: records where it ran, and loops hot enough to compile.
  a.label('hi_code');
  a.call('hi_next');
  a.label('hi_next');
  a.pop(ebx).mov(at('hi_eip'), ebx);
  a.mov(ecx, 100).xor(edx, edx);
  a.label('hi_loop');
  a.add(edx, ecx).dec(ecx).jnz('hi_loop');
  a.ret();

  // Handlers: record, then resume at [resume] (the frame's EIP is just above the error code).
  a.label('pf_handler');
  a.push(eax);
  a.mov(eax, reg.cr2).mov(at('pf_cr2'), eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('pf_err'), eax);
  a.inc(at('pf_count'));
  a.mov(eax, at('resume')).mov(dword({ base: esp, disp: 8 }), eax);
  a.pop(eax).add(esp, 4).iretd();
  a.label('gp_handler');
  a.push(eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(at('gp_err'), eax);
  a.inc(at('gp_count'));
  a.mov(eax, at('resume')).mov(dword({ base: esp, disp: 8 }), eax);
  a.pop(eax).add(esp, 4).iretd();
  a.label('unexpected');
  a.jmp('fail', 'near');

  emitReporting(a, SEL.DATA0, 'K', 0x82);

  a.align(8, 0);
  emitFlatTwoRingGdt(a, 0x67);
  a.label('gdtr');
  a.dw(0x30 - 1).dd('gdt');
  a.label('idtr');
  a.dw(IDT_ENTRIES * 8 - 1).dd('idt');
  tss32(a, 'tss', { esp0: MEM.RING0_STACK, ss0: SEL.DATA0 });
  a.align(4, 0);
  for (const v of VARS) a.label(v).dd(0);
  a.align(8, 0);
  a.label('idt');
  for (let v = 0; v < IDT_ENTRIES; v++) {
    if (v === 14) gateDesc(a, SEL.CODE0, 'pf_handler', INT_GATE);
    else if (v === 13) gateDesc(a, SEL.CODE0, 'gp_handler', INT_GATE);
    else if (v === 0x81) gateDesc(a, SEL.CODE0, 'user_done', INT_GATE | (3 << 13));
    else if (v === 0x82) gateDesc(a, SEL.CODE0, 'fail', INT_GATE | (3 << 13));
    else gateDesc(a, SEL.CODE0, 'unexpected', INT_GATE);
  }
  return build(a);
}
