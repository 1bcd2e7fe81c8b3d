// End-to-end: boot a disk image through kvmts's BIOS with the built CLI (dist/bin.js; build it
// with `pnpm turbo run build --filter=@kvmts/cli...`). The disk's MBR is assembled here: it
// prints through INT 10h, reads sector 1 with INT 13h AH=42h, walks the E820 map with INT 15h
// and reports through the debug-exit port. Without dist/bin.js the test is skipped locally but
// FAILS when CI is set.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Assembler, byte, dword, reg } from '@kvmts/kvm-core/asm';
import { runCli, type CliRun } from './e2e.js';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(here, '../dist/bin.js');
const haveBin = existsSync(bin);
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

/** Debug-exit values the MBR reports. */
const PASS = 0x42;
const FAIL_READ = 0x11;
const FAIL_SECTOR = 0x12;
const FAIL_E820 = 0x13;
const FAIL_DRIVE = 0x14;
const SECTOR1_TEXT = 'sector one says hello';

/** A 3-sector disk: the MBR, then sector 1 holding SECTOR1_TEXT. */
function buildDisk(): Uint8Array {
  const { al, ah, ax, bx, cx, si, di, es, ds, eax, ebx, ecx, edx, bp, dl } = reg;
  const a = new Assembler({ bits: 16, origin: 0x7c00 });
  a.cli().xor(ax, ax).mov(ds, ax).mov(es, ax).sti();
  a.mov(byte('drive'), dl);
  a.mov(si, 'hello').call('print');
  a.mov(al, FAIL_DRIVE).cmp(byte('drive'), 0x80).jne('exit', 'near');

  // INT 13h AH=42h: sector 1 → 0000:8000.
  a.mov(si, 'dap').mov(ah, 0x42).mov(dl, byte('drive')).int(0x13);
  a.mov(al, FAIL_READ).jc('exit', 'near');
  a.mov(si, 0x8000).mov(di, 'expected').mov(cx, SECTOR1_TEXT.length).cld().repe().cmpsb();
  a.mov(al, FAIL_SECTOR).jne('exit', 'near');
  a.mov(si, 0x8000).call('print').mov(si, 'crlf').call('print');

  // INT 15h E820h: count entries and check that the first is RAM from 0.
  a.xor(ebx, ebx).xor(bp, bp);
  a.label('e820');
  a.mov(eax, 0xe820).mov(edx, 0x534d4150).mov(ecx, 20).mov(di, 0x9000).int(0x15);
  a.jc('e820.fail', 'near');
  a.cmp(eax, 0x534d4150).jne('e820.fail', 'near');
  a.test(bp, bp).jnz('e820.next');
  a.cmp(dword(0x9000), 0).jne('e820.fail', 'near').cmp(dword(0x9010), 1).jne('e820.fail', 'near');
  a.label('e820.next').inc(bp).test(ebx, ebx).jnz('e820');
  a.cmp(bp, 3).jb('e820.fail', 'near');
  a.mov(si, 'e820msg').call('print');
  a.mov(ax, bp).add(al, 0x30).mov(ah, 0x0e).mov(bx, 0).int(0x10);
  a.mov(si, 'crlf').call('print');
  a.mov(al, PASS);
  a.label('exit').out(0xf4, al).cli().hlt();
  a.label('e820.fail').mov(al, FAIL_E820).jmp('exit');

  // print: the NUL-terminated string at DS:SI through INT 10h teletype.
  a.label('print').lodsb().test(al, al).jz('print.done').mov(ah, 0x0e).mov(bx, 0x0007).int(0x10).jmp('print');
  a.label('print.done').ret();

  a.label('drive').db(0);
  a.label('dap').db(0x10, 0).dw(1, 0x8000, 0x0000).dd(1, 0);
  a.label('hello').asciz('MBR: hello from the boot sector\r\n');
  a.label('expected').ascii(SECTOR1_TEXT);
  a.label('e820msg').asciz('E820 entries: ');
  a.label('crlf').asciz('\r\n');
  a.org(0x7dfe).db(0x55, 0xaa);
  const mbr = a.bytes();
  const disk = new Uint8Array(3 * 512);
  disk.set(mbr);
  disk.set(new TextEncoder().encode(SECTOR1_TEXT), 512);
  return disk;
}

/** The built CLI, run to the end (killed after `timeoutMs`). */
const run = (args: string[], timeoutMs = 60_000): Promise<CliRun> => runCli(args, timeoutMs);

const dir = mkdtempSync(join(tmpdir(), 'kvmts-bios-boot-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!inCi && !haveBin)('kvmts run --disk (BIOS boot)', () => {
  it('boots an MBR that uses INT 10h, 13h AH=42h and 15h E820h', async () => {
    expect(haveBin, `${bin} is missing: run 'pnpm turbo run build --filter=@kvmts/cli...' first`).toBe(true);
    const img = join(dir, 'disk.img');
    writeFileSync(img, buildDisk());
    const r = await run(['run', '--disk', img, '--debug-exit', '--mem', '32M']);
    const context = `status ${String(r.status)}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
    expect(r.stdout, context).toContain('Booting from Hard Disk 0x80...');
    expect(r.stdout, context).toContain('MBR: hello from the boot sector');
    expect(r.stdout, context).toContain(SECTOR1_TEXT);
    expect(r.stdout, context).toMatch(/E820 entries: [3-9]/);
    expect(r.status, context).toBe(PASS);
  });

  it('boots the disk chosen with --boot and skips a read-only second copy in the order', async () => {
    const blank = join(dir, 'blank.img');
    writeFileSync(blank, new Uint8Array(1024));
    const img = join(dir, 'disk2.img');
    writeFileSync(img, buildDisk());
    const r = await run(['run', '--disk', blank, '--disk', `${img},ro,if=ide`, '--boot', '1', '--debug-exit']);
    // The MBR checks that it was booted as drive 0x80; booted second, it reports that.
    expect(r.stdout).toContain('Booting from Hard Disk 0x81...');
    expect(r.status).toBe(FAIL_DRIVE);
  });

  it('reports a disk without a boot signature and exits non-zero', async () => {
    const blank = join(dir, 'blank2.img');
    writeFileSync(blank, new Uint8Array(1024));
    const r = await run(['run', '--disk', blank]);
    expect(r.stdout).toContain('No bootable device.');
    expect(r.stderr).toContain(`kvmts: no bootable disk (${blank}: no boot signature`);
    expect(r.status).toBe(69);
  });

  it('fails with one line for a missing disk image', async () => {
    const missing = join(dir, 'nope.img');
    const r = await run(['run', '--disk', missing]);
    expect(r.stderr).toBe(`kvmts: cannot open disk image '${missing}': no such file or directory\n`);
    expect(r.status).toBe(64);
    const bad = await run(['run', '--disk', `${missing},if=scsi`]);
    expect(bad.stderr).toContain("invalid --disk option 'if=scsi'");
    expect(bad.status).toBe(64);
  });
});
