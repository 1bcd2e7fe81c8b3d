// End-to-end tests: run the real `kvmts` command as a child process.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, it, expect } from 'vitest';
import { Assembler, mem, reg } from '@kvmts/kvm-core/asm';
import { DEMO_GUEST_OUTPUT } from './guests/demo.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../..');
const bin = join(here, 'bin.ts');
const dir = mkdtempSync(join(tmpdir(), 'kvmts-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `kvmts ARGS...` from TypeScript sources, as `node --import tsx` runs it. */
function kvmts(...args: string[]): Result {
  const r = spawnSync(process.execPath, ['--conditions=@kvmts/source', '--import', 'tsx', bin, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function guestFile(name: string, build: (a: Assembler) => void): string {
  const a = new Assembler({ bits: 16, origin: 0x7c00 });
  build(a);
  const f = join(dir, name);
  writeFileSync(f, a.bytes());
  return f;
}

/** Expect a one-line `kvmts: ...` error, no stack trace, and the usage exit status. */
function expectUsageError(r: Result, message: string | RegExp): void {
  expect(r.status).toBe(64);
  expect(r.stdout).toBe('');
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^kvmts: /);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  if (typeof message === 'string') expect(r.stderr).toContain(message);
  else expect(r.stderr).toMatch(message);
}

describe('kvmts run (needs the real-mode CPU)', () => {
  it('runs the built-in demo', () => {
    const r = kvmts('run', '--demo');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(DEMO_GUEST_OUTPUT);
    expect(r.status).toBe(0);
  });

  it('builds the demo to a file and runs it with --raw', () => {
    const f = join(dir, 'demo.bin');
    const b = kvmts('demo', 'build', '-o', f);
    expect(b.status).toBe(0);
    expect(b.stdout).toContain(`wrote the demo guest to '${f}'`);
    const r = kvmts('run', '--raw', f, '--mem', '1M');
    expect(r.stdout).toBe(DEMO_GUEST_OUTPUT);
    expect(r.status).toBe(0);
  });

  it('honours --load-addr for the demo and for raw images', () => {
    expect(kvmts('run', '--demo', '--load-addr', '0x12345').stdout).toBe(DEMO_GUEST_OUTPUT);
    const f = join(dir, 'demo-1000.bin');
    expect(kvmts('demo', 'build', '-o', f, '--load-addr', '0x1000').status).toBe(0);
    const r = kvmts('run', '--raw', f, '--load-addr', '4096', '--mem', '64K');
    expect(r.stdout).toBe(DEMO_GUEST_OUTPUT);
    expect(r.status).toBe(0);
  });

  it('exits 0 on HLT with interrupts disabled', () => {
    const f = guestFile('hlt.bin', (a) => a.mov(reg.dx, 0x3f8).mov(reg.al, 0x78).out_dx_al().cli().hlt());
    const r = kvmts('run', '--raw', f);
    expect(r).toEqual({ status: 0, stdout: 'x', stderr: '' });
  });

  it('exits with the raw debug-exit value', () => {
    const f = guestFile('exit42.bin', (a) => a.mov(reg.al, 42).out(0xf4, reg.al).hlt());
    expect(kvmts('run', '--raw', f)).toEqual({ status: 42, stdout: '', stderr: '' });
  });

  it('exits 1 on HLT with interrupts enabled, saying why', () => {
    const f = guestFile('sti-hlt.bin', (a) => a.sti().hlt());
    const r = kvmts('run', '--raw', f);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('kvmts: guest halted with interrupts enabled and no interrupt source; stopping\n');
  });

  it('exits 2 on a triple fault', () => {
    // An empty IDT turns INT 3 into #GP, then #DF, then shutdown.
    const f = guestFile('triple.bin', (a) => a.lidt(mem('idtr')).int3().hlt().label('idtr').dw(0).dd(0));
    const r = kvmts('run', '--raw', f);
    expect(r.stderr).toBe('kvmts: guest triple-faulted (shutdown)\n');
    expect(r.status).toBe(2);
  });
});

describe('kvmts bad input', () => {
  it('names a missing file', () => {
    expectUsageError(kvmts('run', '--raw', join(dir, 'nope.bin')), `kvmts: cannot read '${join(dir, 'nope.bin')}': no such file or directory`);
  });

  it('rejects a directory and an empty file', () => {
    expectUsageError(kvmts('run', '--raw', dir), 'is a directory');
    const empty = join(dir, 'empty.bin');
    writeFileSync(empty, new Uint8Array(0));
    expectUsageError(kvmts('run', '--raw', empty), `'${empty}' is empty`);
  });

  it('rejects bad sizes and addresses', () => {
    expectUsageError(kvmts('run', '--demo', '--mem', 'lots'), "invalid --mem 'lots'");
    expectUsageError(kvmts('run', '--demo', '--mem', '16Q'), "invalid --mem '16Q'");
    expectUsageError(kvmts('run', '--demo', '--mem', '4K'), '--mem 4K is too small');
    expectUsageError(kvmts('run', '--demo', '--mem', '4G'), '--mem 4G is too large: at most 3G');
    expectUsageError(kvmts('run', '--demo', '--load-addr', '0xZZ'), "invalid --load-addr '0xZZ'");
    expectUsageError(kvmts('run', '--demo', '--load-addr', '0x100000'), 'a real-mode guest must start in the first 1M');
  });

  it('says by how much an image does not fit', () => {
    const big = join(dir, 'big.bin');
    writeFileSync(big, new Uint8Array(20 * 1024).fill(0xf4));
    expectUsageError(
      kvmts('run', '--raw', big, '--mem', '64K', '--load-addr', '0xc000'),
      `image '${big}' (20480 bytes) does not fit in guest memory: loaded at 0xc000 it ends at 0x11000, but --mem is 64K (0x10000)`,
    );
  });

  it('requires exactly one of --raw and --demo', () => {
    expectUsageError(kvmts('run'), 'nothing to run');
    expectUsageError(kvmts('run', '--demo', '--raw', 'x.bin'), 'either --raw FILE or --demo');
  });

  it('reports unusable --kernel input in one line', () => {
    const notKernel = join(dir, 'not-a-kernel.bin');
    writeFileSync(notKernel, new Uint8Array(4096));
    expectUsageError(kvmts('run', '--kernel', join(dir, 'missing-bzImage')), `cannot read kernel '${join(dir, 'missing-bzImage')}': no such file or directory`);
    expectUsageError(kvmts('run', '--kernel', notKernel), `'${notKernel}' is not a Linux bzImage`);
    expectUsageError(kvmts('run', '--kernel', notKernel, '--mem', '8M'), '--mem 8M is too small to boot Linux');
    expectUsageError(kvmts('run', '--kernel', notKernel, '--demo'), 'either --kernel FILE or --raw FILE/--demo');
    expectUsageError(kvmts('run', '--demo', '--initrd', notKernel), '--initrd needs --kernel');
    expectUsageError(kvmts('run', '--kernel', notKernel, '--clock', 'sundial'), "invalid --clock 'sundial'");
  });

  it('reports unknown options and commands briefly', () => {
    expectUsageError(kvmts('run', '--turbo'), "unknown option '--turbo'");
    expectUsageError(kvmts('launch'), "unknown command 'launch'");
    expectUsageError(kvmts('demo', 'build'), "required option '-o, --output <file>' not specified");
    expectUsageError(kvmts('demo', 'build', '-o', join(dir, 'no', 'such', 'dir.bin')), 'no such file or directory');
  });

  it('prints help with the exit statuses', () => {
    const r = kvmts('run', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('--load-addr <addr>');
    expect(r.stdout).toContain('Exit status');
  });
});

describe('kvmts run with self-checking protected-mode guests', () => {
  it('boots a guest that enters protected mode, enables paging, handles faults and goes to ring 3', async () => {
    // The guest lives with kvm-core's CPU tests; here it runs as a user would run it: a file and the CLI.
    const { buildProtectedModeGuest } = await import('../../kvm-core/test/guests/protected-mode.js');
    const f = join(dir, 'pm.bin');
    writeFileSync(f, buildProtectedModeGuest());
    const r = kvmts('run', '--raw', f, '--mem', '8M');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('PK');
    expect(r.status).toBe(0);
  });
});
