/**
 * A tiny self-checking Multiboot kernel, assembled with `@kvmts/kvm-core/asm`, for testing
 * Multiboot loaders (ours, QEMU's, GRUB's) end to end. It comes as an ELF32 executable or
 * as a flat image whose Multiboot header carries the load addresses (the "a.out kludge").
 *
 * At entry it checks EAX = 0x2BADB002, then reads the information structure at EBX: the
 * flags, mem_lower/mem_upper (plausible values), the memory map (a RAM entry at 1 MiB), the
 * command line (equal to the expected one), the modules (count, and each one's byte sum) and
 * that its bss was zeroed. It reports each step over COM1 (port 0x3F8, no LSR polling, so a
 * VMM can simply collect OUT exits) and ends by writing the number of failed checks to the
 * debug-exit port 0xF4 (0 = all passed), then halts with interrupts off.
 * @module
 */
import { Assembler, byte, dword, reg, sizeBetween, sym, type Condition } from '@kvmts/kvm-core/asm';
import { MULTIBOOT_HEADER_MAGIC, MultibootHeaderFlag } from './image.js';

export interface MultibootTestKernelOptions {
  format: 'elf' | 'aout-kludge';
  /** Physical load address. Default 0x100000 (1 MiB). */
  loadAddress?: number;
  /** ELF only: link the kernel this far above its load address (p_vaddr and e_entry), as higher-half kernels are. Default 0. */
  virtualOffset?: number;
  /** The command line the loader must pass. */
  expectedCmdline: string;
  /** The modules the loader must pass, in order (their byte sums are checked). */
  expectedModules?: readonly Uint8Array[];
  /** Also require an ACPI RSDP ("RSD PTR ", 16-byte aligned) in 0xE0000–0xFFFFF, where OSes scan for it. */
  expectRsdp?: boolean;
}

/** The last line of the serial report when every check passed. */
export const MULTIBOOT_TEST_PASS = 'multiboot-test: PASS';
const BSS_SIZE = 0x1000;
const COM1 = 0x3f8;
const DEBUG_EXIT = 0xf4;

/** The module checksum the kernel computes and prints: the sum of its bytes modulo 2^32. */
export function multibootModuleChecksum(data: Uint8Array): number {
  let sum = 0;
  for (const b of data) sum = (sum + b) >>> 0;
  return sum;
}

/** Assembles the test kernel. */
export function buildMultibootTestKernel(o: MultibootTestKernelOptions): Uint8Array {
  const origin = o.loadAddress ?? 0x100000;
  const virtualOffset = o.virtualOffset ?? 0;
  const modules = o.expectedModules ?? [];
  const { eax, ebx, ecx, edx, esi, edi, esp, al, dl, dx } = reg;
  const a = new Assembler({ bits: 32, origin });

  a.label('file_start');
  if (o.format === 'elf') {
    // ELF header: 32-bit, little-endian, ET_EXEC, EM_386, one program header right after it.
    a.db(0x7f, 'ELF', 1, 1, 1, 0).fill(8);
    a.dw(2, 3).dd(1, sym('start', virtualOffset), 52, 0, 0).dw(52, 32, 1, 40, 0, 0);
    // One PT_LOAD of the whole file plus the bss, read/write/execute.
    a.dd(1, 0, origin + virtualOffset, origin, sizeBetween('file_start', 'file_end'), sizeBetween('file_start', 'file_end').plus(BSS_SIZE), 7, 0x1000);
  }
  const flags = MultibootHeaderFlag.PAGE_ALIGN | MultibootHeaderFlag.MEMORY_INFO | (o.format === 'aout-kludge' ? MultibootHeaderFlag.ADDRESS_FIELDS : 0);
  a.align(4, 0).label('mb_header');
  a.dd(MULTIBOOT_HEADER_MAGIC, flags, (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0);
  if (o.format === 'aout-kludge') {
    // header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr.
    a.dd('mb_header', 'file_start', 'file_end', sym('file_end', BSS_SIZE), 'start');
  }

  let checks = 0;
  /**
   * After a compare: if `cond` does not hold, count a failure, print `what`, and go on at
   * `bail` when given (the failure path clobbers the flags, so no jcc may follow).
   */
  const expect = (cond: Condition, what: string, bail?: string): void => {
    const ok = `check${checks}.ok`;
    const msg = `check${checks}.msg`;
    checks++;
    a.jcc(cond, ok).inc(dword('fails')).push(esi).mov(esi, msg).call('puts').pop(esi);
    if (bail !== undefined) a.jmp(bail);
    a.label(ok);
    strings.push([msg, `FAIL: ${what}\n`]);
  };
  const strings: [string, string][] = [];
  const print = (text: string): void => {
    const label = `str${strings.length}`;
    strings.push([label, text]);
    a.push(esi).mov(esi, label).call('puts').pop(esi);
  };

  a.label('start');
  a.cli().cld();
  a.mov(esp, sym('file_end', BSS_SIZE));
  a.mov(dword('saved_magic'), eax).mov(dword('saved_info'), ebx);
  print('multiboot-test: started\n');
  a.cmp(dword('saved_magic'), 0x2badb002);
  expect('e', 'EAX is not 0x2BADB002');
  a.mov(eax, dword('saved_magic'));
  print('eax=0x');
  a.call('print_hex');
  print('\n');

  // Info flags: mem (0), cmdline (2), mods (3), mmap (6) must all be there; without them stop.
  const needed = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6);
  a.mov(ebx, dword('saved_info'));
  a.mov(eax, dword({ base: ebx })).and(eax, needed).cmp(eax, needed);
  expect('e', 'info flags lack mem/cmdline/mods/mmap', 'verdict');

  // mem_lower in 512..640 KiB, mem_upper at least 1 MiB.
  print('mem_lower=');
  a.mov(eax, dword({ base: ebx, disp: 4 })).call('print_dec');
  print(' mem_upper=');
  a.mov(eax, dword({ base: ebx, disp: 8 })).call('print_dec');
  print('\n');
  a.cmp(dword({ base: ebx, disp: 4 }), 512);
  expect('ae', 'mem_lower below 512 KiB');
  a.cmp(dword({ base: ebx, disp: 4 }), 640);
  expect('be', 'mem_lower above 640 KiB');
  a.cmp(dword({ base: ebx, disp: 8 }), 1024);
  expect('ae', 'mem_upper below 1 MiB');

  // Memory map: look for type 1 at base 0x100000 with a non-zero length.
  a.mov(esi, dword({ base: ebx, disp: 48 })).mov(ecx, esi).add(ecx, dword({ base: ebx, disp: 44 }));
  a.label('mmap_loop');
  a.cmp(esi, ecx).jae('mmap_done');
  a.cmp(dword({ base: esi, disp: 20 }), 1).jne('mmap_next');
  a.cmp(dword({ base: esi, disp: 4 }), 0x100000).jne('mmap_next');
  a.cmp(dword({ base: esi, disp: 8 }), 0).jne('mmap_next');
  a.mov(eax, dword({ base: esi, disp: 12 })).or(eax, dword({ base: esi, disp: 16 })).jz('mmap_next');
  print('mmap: RAM at 1 MiB, KiB=');
  a.mov(eax, dword({ base: esi, disp: 12 })).shr(eax, 10).call('print_dec');
  print('\n');
  a.jmp('mmap_done');
  a.label('mmap_next');
  a.add(esi, dword({ base: esi })).add(esi, 4).jmp('mmap_loop');
  a.label('mmap_done');
  // Found leaves ESI inside the map; running off its end leaves ESI >= ECX.
  a.cmp(esi, ecx);
  expect('b', 'the memory map has no RAM entry at 1 MiB');

  // Command line: print it, then compare with the expected one.
  print("cmdline='");
  a.mov(esi, dword({ base: ebx, disp: 16 })).call('puts');
  print("'\n");
  a.mov(esi, dword({ base: ebx, disp: 16 })).mov(edi, 'expected_cmdline');
  a.label('cmd_loop');
  a.mov(al, byte({ base: esi })).cmp(al, byte({ base: edi })).jne('cmd_done');
  a.inc(esi).inc(edi).test(al, al).jnz('cmd_loop');
  a.label('cmd_done');
  expect('e', 'the command line differs from the expected one');

  // Modules: count, then each one's string, size and byte sum against the expected sums.
  print('mods=');
  a.mov(eax, dword({ base: ebx, disp: 20 })).call('print_dec');
  print('\n');
  a.cmp(dword({ base: ebx, disp: 20 }), modules.length);
  expect('e', `module count is not ${modules.length}`, 'mods_done');
  a.xor(ecx, ecx);
  a.label('mod_loop');
  a.cmp(ecx, modules.length).jae('mods_done');
  a.mov(edi, ecx).shl(edi, 4).add(edi, dword({ base: ebx, disp: 24 })); // edi = &mods[ecx]
  print('mod');
  a.mov(eax, ecx).call('print_dec');
  print(" '");
  a.mov(esi, dword({ base: edi, disp: 8 })).call('puts');
  print("' size=");
  a.mov(eax, dword({ base: edi, disp: 4 })).sub(eax, dword({ base: edi })).call('print_dec');
  // Byte sum of [mod_start, mod_end).
  a.xor(edx, edx).mov(esi, dword({ base: edi }));
  a.label('sum_loop');
  a.cmp(esi, dword({ base: edi, disp: 4 })).jae('sum_done');
  a.movzx(eax, byte({ base: esi })).add(edx, eax).inc(esi).jmp('sum_loop');
  a.label('sum_done');
  print(' sum=0x');
  a.mov(eax, edx).call('print_hex');
  print('\n');
  a.cmp(edx, dword({ index: ecx, scale: 4, disp: 'expected_sums' }));
  expect('e', 'a module checksum differs');
  a.test(dword({ base: edi }), 0xfff);
  expect('e', 'a module is not page-aligned');
  a.inc(ecx).jmp('mod_loop');
  a.label('mods_done');

  // Boot loader name, when given.
  a.test(dword({ base: ebx }), 1 << 9).jz('name_done');
  print("loader='");
  a.mov(esi, dword({ base: ebx, disp: 64 })).call('puts');
  print("'\n");
  a.label('name_done');

  // The bss (below the stack's working area) must read as zero.
  a.mov(esi, 'file_end').xor(eax, eax);
  a.label('bss_loop');
  a.or(eax, dword({ base: esi })).add(esi, 4).cmp(esi, sym('file_end', 256)).jb('bss_loop');
  a.test(eax, eax);
  expect('e', 'the bss was not zeroed');

  if (o.expectRsdp) {
    a.mov(esi, 0xe0000);
    a.label('rsdp_loop');
    a.cmp(dword({ base: esi }), 0x20445352).jne('rsdp_next'); // "RSD "
    a.cmp(dword({ base: esi, disp: 4 }), 0x20525450).je('rsdp_found'); // "PTR "
    a.label('rsdp_next');
    a.add(esi, 16).cmp(esi, 0x100000).jb('rsdp_loop');
    a.label('rsdp_found');
    a.cmp(esi, 0x100000);
    expect('b', 'no ACPI RSDP in 0xE0000-0xFFFFF');
  }

  a.label('verdict');
  a.cmp(dword('fails'), 0).jne('failed');
  print(`${MULTIBOOT_TEST_PASS}\n`);
  a.mov(al, 0).out(DEBUG_EXIT, al);
  a.jmp('halt');
  a.label('failed');
  print('multiboot-test: FAIL, failed checks: ');
  a.mov(eax, dword('fails')).call('print_dec');
  print('\n');
  a.mov(eax, dword('fails')).out(DEBUG_EXIT, al);
  a.label('halt');
  a.cli().hlt().jmp('halt');

  // putc: AL to COM1.
  a.label('putc');
  a.push(edx).mov(dx, COM1).out(dx, al).pop(edx).ret();
  // puts: the NUL-terminated string at ESI.
  a.label('puts');
  a.push(eax).push(esi);
  a.label('puts_loop');
  a.mov(al, byte({ base: esi })).test(al, al).jz('puts_done').call('putc').inc(esi).jmp('puts_loop');
  a.label('puts_done');
  a.pop(esi).pop(eax).ret();
  // print_dec: EAX in decimal.
  a.label('print_dec');
  a.pushad().mov(edi, 'dec_end').mov(ecx, 10);
  a.label('dec_loop');
  a.xor(edx, edx).div(ecx).add(dl, 0x30).dec(edi).mov(byte({ base: edi }), dl).test(eax, eax).jnz('dec_loop');
  a.mov(esi, edi).call('puts').popad().ret();
  // print_hex: EAX as 8 hex digits.
  a.label('print_hex');
  a.pushad().mov(ecx, 8).mov(ebx, eax);
  a.label('hex_loop');
  a.rol(ebx, 4).mov(edx, ebx).and(edx, 0xf).mov(al, byte({ base: edx, disp: 'hex_digits' })).call('putc');
  a.dec(ecx).jnz('hex_loop');
  a.popad().ret();

  // Data.
  a.align(4, 0);
  a.label('fails').dd(0);
  a.label('saved_magic').dd(0);
  a.label('saved_info').dd(0);
  a.label('expected_sums');
  for (const m of modules) a.dd(multibootModuleChecksum(m));
  a.label('hex_digits').ascii('0123456789ABCDEF');
  a.label('dec_buf').fill(11).label('dec_end').db(0);
  a.label('expected_cmdline').asciz(o.expectedCmdline);
  for (const [label, text] of strings) a.label(label).asciz(text);
  a.align(16, 0).label('file_end');
  return a.bytes();
}
