// Shared set-up of the end-to-end tests: they run the built CLI (dist/bin.js: the bundle runs
// about 10x faster than the sources through tsx) on the reference guest that `kvmts guest fetch`
// builds. Without the guest or the build, a test is skipped locally with a printed reason, but
// FAILS under CI, which fetches the guest and builds first.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultGuestDir } from '../src/guest/fetch.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The built CLI. */
export const bin = resolve(here, '../dist/bin.js');
/** The reference guest's files. */
export const guestDir = defaultGuestDir();
export const guestKernel = join(guestDir, 'bzImage');
export const guestInitrd = join(guestDir, 'initramfs.cpio.gz');
export const guestDisk = join(guestDir, 'disk.img');
/** Whether CI is running us (CI set and not "false"). */
export const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

/** Why a test that boots the reference guest cannot run here, or '' when it can. */
export function guestMissing(): string {
  if (!existsSync(bin)) return `${bin} is missing: run 'pnpm run build' first`;
  if (!existsSync(guestKernel) || !existsSync(guestInitrd)) return `no reference guest in ${guestDir}: run 'kvmts guest fetch' (or set KVMTS_GUEST_DIR)`;
  return '';
}

/**
 * Whether to skip a guest-booting test: only outside CI, with the reason printed. Under CI the
 * test runs and its first assertion reports what is missing.
 */
export function skipWithoutGuest(what: string): boolean {
  const why = guestMissing();
  if (why === '' || inCi) return false;
  console.log(`skipping ${what}: ${why}`);
  return true;
}

/** The result of one CLI run. */
export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/bin.js ...args` to the end (killed after `timeoutMs`), with stdin closed. */
export function runCli(args: readonly string[], timeoutMs: number): Promise<CliRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
    child.stdin.end();
  });
}
