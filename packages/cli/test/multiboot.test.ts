// End-to-end: boot the firmware package's self-checking Multiboot test kernel through the
// built CLI (dist/bin.js; build with `pnpm turbo run build --filter=@kvmts/cli...`), with two
// --initrd files as modules, and check its serial report and the debug-exit status.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { MULTIBOOT_TEST_PASS, buildMultibootTestKernel, multibootModuleChecksum } from '@kvmts/firmware';
import { runCli, type CliRun } from './e2e.js';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(here, '../dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'kvmts-multiboot-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The built CLI, run to the end (killed after `timeoutMs`). */
const run = (args: string[], timeoutMs = 60_000): Promise<CliRun> => runCli(args, timeoutMs);

const modA = new TextEncoder().encode('module A: the first --initrd\n');
const modB = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31 + 7) & 0xff);
const modAPath = join(dir, 'a.mod');
const modBPath = join(dir, 'b.img');
writeFileSync(modAPath, modA);
writeFileSync(modBPath, modB);
const APPEND = 'console=ttyS0 mode=test';
const sum = (d: Uint8Array) => multibootModuleChecksum(d).toString(16).toUpperCase().padStart(8, '0');

/** Writes a test kernel expecting the CLI's command line (its own path, then APPEND). */
function writeKernel(file: string, format: 'elf' | 'aout-kludge'): string {
  const path = join(dir, file);
  writeFileSync(path, buildMultibootTestKernel({ format, expectedCmdline: `${path} ${APPEND}`, expectedModules: [modA, modB], expectRsdp: true }));
  return path;
}

describe('kvmts run --kernel with a Multiboot kernel', () => {
  it.each(['elf', 'aout-kludge'] as const)('%s: boots it with the modules and command line, and exits with its debug-exit code', async (format) => {
    expect(existsSync(bin), `${bin} is missing: run 'pnpm turbo run build --filter=@kvmts/cli...' first`).toBe(true);
    const kernel = writeKernel(`kernel-${format}.bin`, format);
    const r = await run(['run', '--kernel', kernel, '--initrd', modAPath, '--initrd', modBPath, '--append', APPEND, '--mem', '32M', '--debug-exit']);
    const context = `status ${String(r.status)}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}`;
    const lines = r.stdout.split(/\r?\n/);
    expect(lines, context).toContain('eax=0x2BADB002');
    expect(lines, context).toContain(`cmdline='${kernel} ${APPEND}'`);
    expect(lines, context).toContain('mods=2');
    expect(lines, context).toContain(`mod0 '${modAPath}' size=${modA.length} sum=0x${sum(modA)}`);
    expect(lines, context).toContain(`mod1 '${modBPath}' size=${modB.length} sum=0x${sum(modB)}`);
    expect(lines.some((l) => /^mem_lower=\d+ mem_upper=\d+$/.test(l)), context).toBe(true);
    expect(lines, context).toContain("loader='kvmts'");
    expect(r.stdout, context).not.toContain('FAIL');
    expect(lines, context).toContain(MULTIBOOT_TEST_PASS);
    // Only the exit summary: no warnings.
    expect(r.stderr, context).toMatch(/^kvmts: exit: debug-exit port written with 0; ran [\d.]+ s, \d+ instructions \([\d.]+ MIPS\)\n$/);
    expect(r.status, context).toBe(0);
  });

  it("exits with the kernel's failure count when a check fails", async () => {
    const kernel = writeKernel('kernel-fail.bin', 'elf');
    const r = await run(['run', '--kernel', kernel, '--initrd', modAPath, '--append', 'wrong', '--mem', '32M', '--debug-exit']);
    const context = `status ${String(r.status)}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}`;
    expect(r.stdout, context).toContain('FAIL: the command line differs from the expected one');
    expect(r.stdout, context).toContain('FAIL: module count is not 2');
    expect(r.stdout, context).toContain('multiboot-test: FAIL, failed checks: 2');
    expect(r.status, context).toBe(2);
  });

  it('finds no RSDP to scan for when the machine has no ACPI tables (--no-acpi)', async () => {
    const kernel = writeKernel('kernel-noacpi.bin', 'elf');
    const r = await run(['run', '--kernel', kernel, '--initrd', modAPath, '--initrd', modBPath, '--append', APPEND, '--mem', '32M', '--debug-exit', '--no-acpi']);
    const context = `status ${String(r.status)}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}`;
    expect(r.stdout, context).toContain('FAIL: no ACPI RSDP in 0xE0000-0xFFFFF');
    expect(r.status, context).toBe(1);
  });

  it('reports a broken Multiboot kernel, a module that does not fit, and several initrds for Linux in one line', async () => {
    const kernel = writeKernel('kernel-broken.bin', 'elf');
    const broken = join(dir, 'broken.bin');
    const bytes = buildMultibootTestKernel({ format: 'aout-kludge', expectedCmdline: '' });
    bytes[8] = bytes[8]! ^ 0xff; // header checksum (the header is the first thing in the a.out form)
    writeFileSync(broken, bytes);
    const r1 = await run(['run', '--kernel', broken]);
    expect(r1.stderr).toMatch(/^kvmts: '.*broken\.bin': the Multiboot header at offset 0x0 has a wrong checksum/);
    expect(r1.status).toBe(64);
    const big = join(dir, 'big.img');
    writeFileSync(big, new Uint8Array(6 << 20));
    const r2 = await run(['run', '--kernel', kernel, '--initrd', big, '--mem', '4M']);
    expect(r2.stderr).toMatch(/^kvmts: module 1 \('.*big\.img', 6291456 bytes\) does not fit in RAM/);
    expect(r2.status).toBe(64);
    const notKernel = join(dir, 'zeros.bin');
    writeFileSync(notKernel, new Uint8Array(4096));
    const r3 = await run(['run', '--kernel', notKernel, '--initrd', modAPath, '--initrd', modBPath]);
    expect(r3.stderr).toBe('kvmts: a Linux kernel takes one --initrd (several are for Multiboot kernels, as modules)\n');
    expect(r3.status).toBe(64);
  });
});
