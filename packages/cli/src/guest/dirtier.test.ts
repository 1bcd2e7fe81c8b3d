import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildDirtier } from './dirtier.js';
import { GUEST_TOOLS, INITRAMFS_RECIPE, initramfsEntries } from './initramfs.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-dirtier-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const exe = join(dir, 'kvmts-dirty');
writeFileSync(exe, buildDirtier(), { mode: 0o755 });
// The program is i386 Linux code: it runs natively on an x86 Linux host with 32-bit support.
const probe = spawnSync(exe, [], { encoding: 'utf8' });
const runsHere = probe.error === undefined;

describe('kvmts-dirty (the guest memory dirtier)', () => {
  it('is an ELF32 i386 executable in the initramfs, and part of its recipe', () => {
    const elf = buildDirtier();
    expect([...elf.subarray(0, 7)]).toEqual([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
    expect(new DataView(elf.buffer).getUint16(18, true)).toBe(3); // EM_386
    const entry = initramfsEntries({ busybox: new Uint8Array(4), modules: [] }).find((e) => e.path === 'bin/kvmts-dirty');
    expect(entry).toMatchObject({ type: 'file', mode: 0o755 });
    expect(GUEST_TOOLS.map((t) => t.path)).toEqual(['bin/kvmts-dirty']);
    expect(INITRAMFS_RECIPE).toMatch(/# tools: bin\/kvmts-dirty [0-9a-f]{64}\n$/);
  });

  it.skipIf(!runsHere)('says how to use it and fails without its arguments', () => {
    expect(probe.status).toBe(1);
    expect(probe.stderr).toBe('usage: kvmts-dirty MIB MBPS\n');
  });

  it.skipIf(!runsHere)('dirties at the rate asked: 8 MiB round-robin at 100 MB/s prints DIRTIED 16 about 6 times a second', () => {
    const r = spawnSync(exe, ['8', '100'], { encoding: 'utf8', timeout: 2000, killSignal: 'SIGKILL' });
    const lines = r.stdout.split('\n').filter((l) => l === 'DIRTIED 16').length;
    // 2 s × 100 MB/s / 16 MiB = 11.9; a loaded host may run it late but it then catches up.
    expect(lines).toBeGreaterThanOrEqual(9);
    expect(lines).toBeLessThanOrEqual(12);
  });

  it.skipIf(!runsHere)('drops work it fell behind on instead of catching up faster than asked', async () => {
    // Stopped for 1.5 s of a 3 s run at 100 MB/s: about 1.5 s of dirtying (9 lines), not 3 s (17).
    const child = spawn(exe, ['8', '100'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await sleep(500);
    child.kill('SIGSTOP');
    await sleep(1500);
    child.kill('SIGCONT');
    await sleep(1000);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    const lines = out.split('\n').filter((l) => l === 'DIRTIED 16').length;
    expect(lines).toBeGreaterThanOrEqual(6);
    expect(lines).toBeLessThanOrEqual(11);
  });
});
