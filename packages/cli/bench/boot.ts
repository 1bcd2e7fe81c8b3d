/**
 * `pnpm bench` (second part): boots the default Linux guest with the built CLI and records the
 * wall time from process start to the guest's `GUEST-BOOT-OK` line, and to its power-off, in
 * the JSON report that the CPU benchmark wrote. Skipped, with a notice, when no guest has been
 * fetched (`kvmts guest fetch`).
 *
 *   tsx packages/cli/bench/boot.ts [--out FILE]
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { appendResults, reportPath } from './report.js';

const bin = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/bin.js');
const out = reportPath();

const guestDir = process.env.KVMTS_GUEST_DIR ?? spawnSync(process.execPath, [bin, 'guest', 'path'], { encoding: 'utf8' }).stdout.trim();
const kernel = join(guestDir, 'bzImage');
const initrd = join(guestDir, 'initramfs.cpio.gz');
if (!existsSync(kernel) || !existsSync(initrd)) {
  console.log(`linux boot benchmark skipped: no guest in ${guestDir} (run 'kvmts guest fetch')`);
  process.exit(0);
}

const start = performance.now();
const child = spawn(process.execPath, [bin, 'run', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0', '--mem', '256M', '--no-reboot'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
let bootOkSeconds: number | null = null;
let pending = '';
child.stdout.setEncoding('utf8');
child.stdout.on('data', (chunk: string) => {
  pending += chunk;
  if (bootOkSeconds === null && /^GUEST-BOOT-OK /m.test(pending)) bootOkSeconds = (performance.now() - start) / 1000;
  pending = pending.slice(-200);
});
child.on('close', (status) => {
  const totalSeconds = (performance.now() - start) / 1000;
  const result = {
    name: 'linux-boot',
    description: "Debian's i386 guest, 256 MiB, console=ttyS0: wall time from process start",
    guestBootOkSeconds: bootOkSeconds === null ? null : Number(bootOkSeconds.toFixed(2)),
    powerOffSeconds: Number(totalSeconds.toFixed(2)),
    exitStatus: status,
  };
  console.log(`linux-boot  GUEST-BOOT-OK after ${result.guestBootOkSeconds ?? '(never)'} s, exit ${String(status)} after ${result.powerOffSeconds} s`);
  appendResults(out, [result]);
  if (bootOkSeconds === null || status !== 0) process.exitCode = 1;
});
