/**
 * `kvmts-dirty MIB MBPS`: a tiny static i386 Linux program for the reference guest's initramfs
 * that dirties memory at a steady rate, the workload of live-migration tests and benchmarks
 * (QEMU's migration tests use a guest that touches every page in a loop for the same reason).
 * It maps MIB MiB of anonymous memory and, paced by CLOCK_MONOTONIC, rewrites whole pages
 * (every dword, so a page never delta-encodes to nothing) round-robin at MBPS × 10⁶ bytes/s,
 * printing `DIRTIED 16` after every 16 MiB. Work it falls more than 50 ms behind on is dropped,
 * not caught up, so it never dirties faster than asked. A shell loop of dd cannot do this: each dd costs a
 * fork and exec, far slower than the rate.
 *
 * Built with kvm-core's assembler: an ELF header, one loadable RWX segment, code and data.
 * @module
 */
import { Assembler, byte, dword, reg, sizeBetween } from '@kvmts/kvm-core/asm';

const LOAD_ADDRESS = 0x0804_8000;
const ELF_HEADER_SIZE = 52;
const PROGRAM_HEADER_SIZE = 32;
const CODE_ADDRESS = LOAD_ADDRESS + ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE;

/** i386 Linux system call numbers. */
const Sys = { exit: 1, write: 4, nanosleep: 162, mmap2: 192, clockGettime: 265 } as const;
const CLOCK_MONOTONIC = 1;
const PAGES_PER_REPORT = 4096; // 16 MiB

function program(): Uint8Array {
  const { eax, ebx, ecx, edx, esi, edi, ebp, esp } = reg;
  const a = new Assembler({ bits: 32, origin: CODE_ADDRESS });
  // argc, argv[0], argv[1], argv[2] on the stack.
  a.cmp(dword({ base: esp }), 3).jb('usage');
  a.mov(esi, dword({ base: esp, disp: 8 })).call('atoi').shl(eax, 8).mov(dword('pages'), eax); // MiB → pages
  a.test(eax, eax).jz('usage');
  a.mov(esi, dword({ base: esp, disp: 12 })).call('atoi'); // MB/s → pages/s = MB/s × 10⁶ / 4096
  a.mov(ecx, 1_000_000).mul(ecx).mov(ecx, 4096).div(ecx).mov(dword('rate'), eax);
  a.xor(edx, edx).mov(ecx, 20).div(ecx).inc(eax).mov(dword('slack'), eax); // 50 ms of pages
  // mmap2(NULL, pages × 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)
  a.mov(eax, Sys.mmap2).xor(ebx, ebx).mov(ecx, dword('pages')).shl(ecx, 12).mov(edx, 3).mov(esi, 0x22).mov(edi, -1).xor(ebp, ebp).int(0x80);
  a.cmp(eax, 0xffff_f000).ja('fail');
  a.mov(dword('base'), eax);
  a.mov(eax, Sys.clockGettime).mov(ebx, CLOCK_MONOTONIC).mov(ecx, 'start').int(0x80);

  // Pages due = elapsed ms × rate / 1000.
  a.label('tick');
  a.mov(eax, Sys.clockGettime).mov(ebx, CLOCK_MONOTONIC).mov(ecx, 'now').int(0x80);
  a.mov(eax, dword('now')).sub(eax, dword('start')).mov(ecx, 1000).mul(ecx).mov(ebx, eax);
  a.mov(ecx, 1_000_000);
  a.mov(eax, dword('now_ns')).xor(edx, edx).div(ecx).add(ebx, eax);
  a.mov(eax, dword('start_ns')).xor(edx, edx).div(ecx).sub(ebx, eax);
  a.mov(eax, ebx).mul(dword('rate')).mov(ecx, 1000).div(ecx).sub(eax, dword('skipped'));
  // Behind by more than 50 ms of work (page faults, a starved vCPU): drop the backlog rather
  // than catch up at full speed, which would dirty faster than asked.
  a.mov(edx, dword('done')).add(edx, dword('slack')).cmp(eax, edx).jbe('due_ok');
  a.sub(eax, edx).add(dword('skipped'), eax).mov(eax, edx);
  a.label('due_ok').mov(dword('due'), eax);

  a.label('next');
  a.mov(eax, dword('done')).cmp(eax, dword('due')).jae('sleep');
  a.xor(edx, edx).div(dword('pages')).shl(edx, 12).add(edx, dword('base')).mov(edi, edx); // page (done mod pages)
  a.mov(eax, dword('done')).mov(ecx, 1024).cld().rep().stosd();
  a.mov(eax, dword('done')).inc(eax).mov(dword('done'), eax);
  a.test(eax, PAGES_PER_REPORT - 1).jnz('next');
  a.mov(eax, Sys.write).mov(ebx, 1).mov(ecx, 'msg').mov(edx, sizeBetween('msg', 'msg_end')).int(0x80);
  a.jmp('next');

  a.label('sleep');
  a.mov(eax, Sys.nanosleep).mov(ebx, 'one_ms').xor(ecx, ecx).int(0x80);
  a.jmp('tick');

  a.label('usage');
  a.mov(eax, Sys.write).mov(ebx, 2).mov(ecx, 'usage_msg').mov(edx, sizeBetween('usage_msg', 'usage_end')).int(0x80);
  a.label('fail');
  a.mov(eax, Sys.exit).mov(ebx, 1).int(0x80);

  // atoi: ESI → EAX, decimal digits up to the first other byte.
  a.label('atoi').xor(eax, eax);
  a.label('atoi_digit').movzx(ecx, byte({ base: esi })).sub(ecx, 0x30).cmp(ecx, 9).ja('atoi_done');
  a.lea(eax, dword({ base: eax, index: eax, scale: 4 })).add(eax, eax).add(eax, ecx).inc(esi).jmp('atoi_digit');
  a.label('atoi_done').ret();

  a.align(4);
  a.label('pages').dd(0).label('rate').dd(0).label('base').dd(0).label('due').dd(0).label('done').dd(0);
  a.label('skipped').dd(0).label('slack').dd(0);
  a.label('start').dd(0).label('start_ns').dd(0).label('now').dd(0).label('now_ns').dd(0);
  a.label('one_ms').dd(0, 1_000_000);
  a.label('msg').ascii('DIRTIED 16\n').label('msg_end');
  a.label('usage_msg').ascii('usage: kvmts-dirty MIB MBPS\n').label('usage_end');
  return a.bytes();
}

/** The program as an ELF32 i386 executable. */
export function buildDirtier(): Uint8Array {
  const code = program();
  const size = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE + code.length;
  const elf = new Uint8Array(size);
  const v = new DataView(elf.buffer);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]); // ELF, 32-bit, little-endian, version 1
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 3, true); // EM_386
  v.setUint32(20, 1, true);
  v.setUint32(24, CODE_ADDRESS, true); // entry
  v.setUint32(28, ELF_HEADER_SIZE, true); // program headers
  v.setUint16(40, ELF_HEADER_SIZE, true);
  v.setUint16(42, PROGRAM_HEADER_SIZE, true);
  v.setUint16(44, 1, true);
  v.setUint16(46, 40, true); // section header entry size (there are none)
  const ph = ELF_HEADER_SIZE;
  v.setUint32(ph, 1, true); // PT_LOAD
  v.setUint32(ph + 4, 0, true); // from file offset 0
  v.setUint32(ph + 8, LOAD_ADDRESS, true);
  v.setUint32(ph + 12, LOAD_ADDRESS, true);
  v.setUint32(ph + 16, size, true);
  v.setUint32(ph + 20, size, true);
  v.setUint32(ph + 24, 7, true); // RWX: the variables live beside the code
  v.setUint32(ph + 28, 0x1000, true);
  elf.set(code, ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE);
  return elf;
}
