/**
 * A self-checking guest for protected mode and paging, started from real mode as a boot
 * sector is. It reports through COM1 (text) and the debug-exit port (0xF4: 0 = all passed,
 * else the number of the failed check). Checks:
 *   1. real mode -> 32-bit protected mode through a far jump; data segments from the GDT
 *   2. paging on (4 KiB identity map); a read of a not-present page raises #PF with
 *      CR2 = the address and error 0; the handler maps the page and the read is retried
 *   3. a 4 MiB PSE page maps 0x400000 onto 0x000000 (aliasing)
 *   4. IRET to ring 3 with the stack from the frame; DS is reloaded by the user code
 *   5. INT 0x80 from ring 3 through a DPL-3 trap gate switches to the TSS's ring-0 stack
 *   6. a user write to a supervisor page raises #PF with error 7 (present, write, user)
 *   7. the accessed and dirty bits are set in the page-table entries
 */
import { Assembler, byte, dword, mem, reg } from '../../src/x86/asm/index.js';

export const PM_GUEST_LOAD = 0x7c00;
const { eax, ebx, ecx, edx, esp, ax, al, dx } = reg;

const PD = 0x20000, PT = 0x21000;
const MISSING_PAGE = 0x50000, SUPER_PAGE = 0x60000;
const RING0_STACK = 0x80000, USER_STACK = 0x70000;
const COM1 = 0x3f8, DEBUG_EXIT = 0xf4;

export function buildProtectedModeGuest(): Uint8Array {
  const a = new Assembler({ bits: 16, origin: PM_GUEST_LOAD });
  a.cli();
  a.xor(ax, ax).mov(reg.ds, ax).mov(reg.ss, ax).mov(reg.sp, 0x7000);
  a.lgdt(mem({ disp: 'gdtr', size: 16 }));
  a.lidt(mem({ disp: 'idtr', size: 16 }));
  a.mov(eax, reg.cr0).or(eax, 1).mov(reg.cr0, eax);
  a.jmpFar(0x08, 'pm32');

  a.use32();
  a.label('pm32');
  a.mov(ax, 0x10).mov(reg.ds, ax).mov(reg.es, ax).mov(reg.ss, ax).mov(esp, RING0_STACK);
  a.mov(al, 'P'.charCodeAt(0)).call('putc');

  // Check 1 passed if we got here. Build the page tables: identity-map 4 MiB, user-accessible.
  a.mov(edx, 1).mov(dword({ disp: 'check' }), edx);
  a.mov(ebx, PT).xor(ecx, ecx);
  a.label('fill');
  a.mov(eax, ecx).shl(eax, 12).or(eax, 7).mov(mem({ base: ebx, index: ecx, scale: 4, size: 32 }), eax);
  a.inc(ecx).cmp(ecx, 1024).jb('fill');
  a.mov(dword({ disp: PT + (MISSING_PAGE >>> 12) * 4 }), 0); // not present
  a.mov(dword({ disp: PT + (SUPER_PAGE >>> 12) * 4 }), SUPER_PAGE | 3); // supervisor only
  a.mov(dword({ disp: PD }), PT | 7);
  a.mov(dword({ disp: PD + 4 }), 0x00000000 | 0x83); // 4 MiB page at 0x400000 -> physical 0
  a.mov(eax, reg.cr4).or(eax, 0x10).mov(reg.cr4, eax); // CR4.PSE
  a.mov(eax, PD).mov(reg.cr3, eax);
  a.mov(eax, reg.cr0).or(eax, 0x80000000).mov(reg.cr0, eax);

  // Check 2: #PF on a not-present page, fixed up by the handler, then the read succeeds.
  a.mov(dword({ disp: 'check' }), 2);
  a.mov(dword({ disp: MISSING_PAGE }), 0); // faults (write), handler maps, retried
  a.mov(eax, dword({ disp: 'pf_cr2' })).cmp(eax, MISSING_PAGE).jne('fail');
  a.mov(eax, dword({ disp: 'pf_err' })).cmp(eax, 2).jne('fail'); // not present, write, supervisor
  a.mov(eax, dword({ disp: MISSING_PAGE })).cmp(eax, 0).jne('fail');

  // Check 3: the 4 MiB page aliases physical 0.
  a.mov(dword({ disp: 'check' }), 3);
  a.mov(dword({ disp: 0x1000 }), 0x12345678);
  a.mov(eax, dword({ disp: 0x401000 })).cmp(eax, 0x12345678).jne('fail');

  // Check 4: to ring 3.
  a.mov(dword({ disp: 'check' }), 4);
  a.mov(ax, 0x28).ltr(ax);
  a.push(0x23).push(USER_STACK).pushfd().push(0x1b).push('user').iretd();

  a.label('user');
  a.mov(ax, 0x23).mov(reg.ds, ax).mov(reg.es, ax);
  a.mov(eax, reg.esp);
  a.cmp(eax, USER_STACK).jne('user_fail');
  // Check 5: INT 0x80 from ring 3 doubles EAX on the ring-0 stack.
  a.mov(dword({ disp: 'check' }), 5);
  a.mov(eax, 21).int(0x80);
  a.cmp(eax, 42).jne('user_fail');
  // Check 6: a user write to a supervisor page faults with error 7; the handler skips it.
  a.mov(dword({ disp: 'check' }), 6);
  a.mov(dword({ disp: SUPER_PAGE }), 1); // C7 05 disp32 imm32: 10 bytes
  a.mov(eax, dword({ disp: 'pf_err' })).cmp(eax, 7).jne('user_fail');
  a.mov(eax, dword({ disp: 'pf_cr2' })).cmp(eax, SUPER_PAGE).jne('user_fail');
  a.mov(dword({ disp: 'check' }), 7);
  a.int(0x81); // back to ring 0 to finish
  a.label('user_fail');
  a.int(0x82);

  // Ring 0 from here on.
  a.label('finish');
  // Check 7: PTE of MISSING_PAGE has A and D set; PDE 0 has A.
  a.mov(eax, dword({ disp: PT + (MISSING_PAGE >>> 12) * 4 })).and(eax, 0x60).cmp(eax, 0x60).jne('fail');
  a.mov(eax, dword({ disp: PD })).test(eax, 0x20).jz('fail');
  a.mov(al, 'K'.charCodeAt(0)).call('putc');
  a.mov(al, 0).out(DEBUG_EXIT, al);
  a.hlt();

  a.label('fail');
  a.mov(al, 'F'.charCodeAt(0)).call('putc');
  a.mov(eax, dword({ disp: 'check' })).out(DEBUG_EXIT, al);
  a.hlt();

  a.label('putc');
  a.mov(dx, COM1).out(dx, al).ret();

  // Interrupt handlers.
  a.label('pf_handler'); // error code on the stack
  a.push(eax);
  a.mov(eax, reg.cr2).mov(dword({ disp: 'pf_cr2' }), eax);
  a.mov(eax, dword({ base: esp, disp: 4 })).mov(dword({ disp: 'pf_err' }), eax);
  a.test(eax, 4).jnz('pf_user');
  // Supervisor not-present fault: map the page and retry.
  a.mov(dword({ disp: PT + (MISSING_PAGE >>> 12) * 4 }), MISSING_PAGE | 7);
  a.invlpg(mem({ disp: MISSING_PAGE, size: 8 }));
  a.pop(eax).add(esp, 4).iretd();
  a.label('pf_user'); // skip the 10-byte faulting store
  a.add(dword({ base: esp, disp: 8 }), 10);
  a.pop(eax).add(esp, 4).iretd();

  a.label('int80_handler');
  // Must run on the TSS ring-0 stack with the user SS:ESP in the frame.
  a.cmp(dword({ base: esp, disp: 16 }), 0x23).jne('fail');
  a.cmp(dword({ base: esp, disp: 4 }), 0x1b).jne('fail');
  a.add(eax, eax).iretd();

  a.label('int81_handler');
  a.jmp('finish');
  a.label('int82_handler');
  a.jmp('fail');
  a.label('unexpected');
  a.mov(dword({ disp: 'check' }), 0x40).jmp('fail');

  a.align(8, 0);
  a.label('gdt');
  a.dd(0, 0);
  a.dd(0x0000ffff, 0x00cf9a00); // 0x08 ring-0 code, flat 32-bit
  a.dd(0x0000ffff, 0x00cf9200); // 0x10 ring-0 data
  a.dd(0x0000ffff, 0x00cffa00); // 0x18 ring-3 code
  a.dd(0x0000ffff, 0x00cff200); // 0x20 ring-3 data
  a.label('tss_desc'); // 0x28 32-bit TSS, base patched below (< 64 KiB), limit 0x67
  a.dw(0x67, 'tss').db(0, 0x89, 0, 0);
  a.label('gdt_end');
  a.label('gdtr');
  a.dw(0x2f).dd('gdt');
  a.label('idtr');
  a.dw(256 * 8 - 1).dd('idt');
  a.align(4, 0);
  a.label('tss');
  a.dd(0, RING0_STACK, 0x10).fill(0x68 - 12, 0);
  a.label('check');
  a.dd(0);
  a.label('pf_cr2');
  a.dd(0);
  a.label('pf_err');
  a.dd(0);
  a.align(8, 0);
  a.label('idt');
  // Interrupt gates (DPL 0) to `unexpected` except #PF, INT 0x80–0x82 (trap gates, DPL 3).
  for (let v = 0; v < 256; v++) {
    const target = v === 14 ? 'pf_handler' : v === 0x80 ? 'int80_handler' : v === 0x81 ? 'int81_handler' : v === 0x82 ? 'int82_handler' : 'unexpected';
    const attrs = v >= 0x80 && v <= 0x82 ? 0xef00 : 0x8e00;
    a.dw(target, 0x08, attrs, 0);
  }
  void byte;
  return a.bytes();
}
