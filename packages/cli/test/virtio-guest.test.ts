// End-to-end: the reference Debian i386 guest's own virtio drivers against kvmts's devices,
// through the built CLI (set-up shared with the other e2e tests in e2e.ts). Each boot takes
// about two minutes of CPU, so the boots run one after another. Without the guest or the build
// the tests are skipped locally (with the reason) but FAIL under CI.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bin, guestDisk, guestInitrd as initrd, guestKernel as kernel, guestMissing, inCi } from './e2e.js';

/** Why the tests cannot run here ('' when they can): e2e.ts's reasons, and the reference disk. */
const missing = guestMissing() || (existsSync(guestDisk) ? '' : `no ${guestDisk}: run 'kvmts guest fetch'`);
const skip = missing !== '' && !inCi;
if (skip) console.log(`skipping the virtio e2e tests: ${missing}`);

const TIMEOUT = 15 * 60_000;
const SIGNATURE = 'VIRTIO-BLK-DISK-SIGNATURE-0001';

const work = mkdtempSync(join(tmpdir(), 'kvmts-virtio-e2e-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A private copy of the reference disk, `size` bytes long (zero-extended). */
function diskCopy(name: string, size?: number): string {
  const path = join(work, name);
  copyFileSync(guestDisk, path);
  if (size !== undefined) truncateSync(path, size);
  return path;
}

interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/**
 * Runs the CLI; `onOutput` sees the console output so far after each chunk and may type into
 * the guest's console with `type`. stdin is closed when the child exits, or by `onOutput`.
 */
function runCli(args: string[], timeoutMs: number, onOutput?: (stdout: string, type: (text: string) => void) => void): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      onOutput?.(stdout, (text) => child.stdin.write(text));
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdin.on('error', () => {}); // the guest may be gone before we finish typing
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr, seconds: (performance.now() - t0) / 1000 });
    });
    if (onOutput === undefined) child.stdin.end();
  });
}

const guestArgs = (append: string): string[] => ['run', '--kernel', kernel, '--initrd', initrd, '--append', append, '--mem', '256M', '--no-reboot'];

function context(r: RunResult): string {
  const lines = r.stdout.split(/\r?\n/);
  return `status ${String(r.status)} after ${r.seconds.toFixed(0)} s\n--- stderr\n${r.stderr}\n--- last console lines\n${lines.slice(-40).join('\n')}`;
}

/** Boots with a disk, a NIC, an RNG, a console and a balloon on `transport` and checks Linux drives all five. */
async function bootWithAllDevices(transport: 'pci' | 'mmio'): Promise<void> {
  expect(missing).toBe('');
  const disk = diskCopy(`all-${transport}.img`);
  const r = await runCli(
    [
      ...guestArgs('console=ttyS0 guest.debug=1'),
      '--virtio-transport', transport,
      '--disk', `${disk},if=virtio`,
      '--net', 'none',
      '--device', 'virtio-rng',
      '--device', 'virtio-console',
      '--device', 'virtio-balloon',
    ],
    TIMEOUT - 10_000,
  );
  const ctx = context(r);
  const lines = r.stdout.split(/\r?\n/);
  const virtio = lines.filter((l) => l.startsWith('GUEST-VIRTIO '));
  const driverOf = (kind: string): string | undefined => virtio.find((l) => l.includes(`(${kind})`))?.match(/driver=(\S+)/)?.[1];
  expect(virtio, ctx).toHaveLength(5);
  for (const l of virtio) expect(l, ctx).toMatch(/vendor=0x1af4 driver=(?!none)\S+$/);
  expect(driverOf('block'), ctx).toBe('virtio_blk');
  expect(driverOf('net'), ctx).toBe('virtio_net');
  expect(driverOf('rng'), ctx).toBe('virtio_rng');
  expect(driverOf('console'), ctx).toBe('virtio_console');
  expect(driverOf('balloon'), ctx).toBe('virtio_balloon');
  expect(lines, ctx).toContain('GUEST-VIRTIO-COUNT 5');
  expect(lines, ctx).toContain(`GUEST-BLK vda sectors=16384 sig=${SIGNATURE}`);
  expect(lines.some((l) => /^GUEST-NET eth0 mac=52:54:00:12:34:56 driver=virtio_net$/.test(l)), ctx).toBe(true);
  expect(lines, ctx).toContain('GUEST-HVC hvc0 present');
  if (transport === 'pci') {
    // INTx through the PIIX3: Linux took the IRQ from the _PRT (PIRQB/PIRQC → 10/11).
    const pci = lines.filter((l) => /^GUEST-DEBUG pci \S+ 0x1af4:/.test(l));
    expect(pci, ctx).toHaveLength(5);
    for (const l of pci) expect(l, ctx).toMatch(/irq=1[01] driver=virtio-pci$/);
  } else {
    expect(r.stdout, ctx).toContain('ACPI: SSDT');
  }
  expect(lines.some((l) => l.startsWith('GUEST-DONE ')), ctx).toBe(true);
  expect(r.status, ctx).toBe(0);
  // The disk was only read.
  expect(readFileSync(disk).subarray(0, SIGNATURE.length).toString('latin1'), ctx).toBe(SIGNATURE);
  console.log(`virtio over ${transport}: guest done, exit ${String(r.status)} after ${r.seconds.toFixed(1)} s`);
}

// ---- the data-integrity pattern: 16 MiB in which every 512-byte sector is different ----
const PATTERN_MIB = 16;
const BLOCKS_PER_MIB = 16;
const LINES_PER_BLOCK = 4096; // 16-byte lines: 64 KiB blocks
const UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const upTo = (n: number): string => Array.from({ length: n }, (_, i) => i).join(' ');

/**
 * The shell command that writes the pattern to /dev/vda. awk numbers 4096 lines ("%015d\n",
 * the only floating-point work, which is slow on the emulated x87); tr then maps digits 5-9
 * onto a different run of lowercase letters for each 64 KiB block of a MiB, and digits 0-4
 * onto a different run of capitals for each MiB. Every line carries its MiB (leading zeros)
 * and every sector its block (a last digit of 5-9), so every sector is unique. Uptimes after
 * each step go to the console for the log.
 */
const WRITE_COMMAND =
  `echo T-START $(cat /proc/uptime) && awk 'BEGIN{for(i=0;i<${LINES_PER_BLOCK};i++)printf "%015d\\n",i}' >/base && ` +
  `for j in ${upTo(BLOCKS_PER_MIB)}; do tr 5-9 "$(echo ${LOWER} | cut -c$((j+1))-$((j+5)))" </base; done >/mib && echo T-BASE $(cat /proc/uptime) && ` +
  `for b in ${upTo(PATTERN_MIB)}; do tr 0-4 "$(echo ${UPPER} | cut -c$((b+1))-$((b+5)))" </mib; done >/dev/vda && echo T-WRITE $(cat /proc/uptime) && ` +
  `sync && echo T-SYNC $(cat /proc/uptime) && echo WRITE-DONE-$((6*7))`;

function expectedPattern(): Buffer {
  const out = Buffer.alloc(PATTERN_MIB * BLOCKS_PER_MIB * LINES_PER_BLOCK * 16);
  let at = 0;
  for (let b = 0; b < PATTERN_MIB; b++) {
    for (let j = 0; j < BLOCKS_PER_MIB; j++) {
      for (let i = 0; i < LINES_PER_BLOCK; i++) {
        const digits = String(i).padStart(15, '0');
        for (let k = 0; k < 15; k++) {
          const d = digits.charCodeAt(k) - 48;
          out[at++] = d < 5 ? UPPER.charCodeAt(b + d) : LOWER.charCodeAt(j + d - 5);
        }
        out[at++] = 0x0a;
      }
    }
  }
  return out;
}

describe.skipIf(skip)("the reference guest's virtio drivers", () => {
  it('binds virtio_blk, virtio_net, virtio_rng, virtio_console and virtio_balloon over virtio-pci', () => bootWithAllDevices('pci'), TIMEOUT);

  it('binds virtio_blk, virtio_net, virtio_rng, virtio_console and virtio_balloon over virtio-mmio', () => bootWithAllDevices('mmio'), TIMEOUT);

  it(
    `writes ${PATTERN_MIB} MiB through virtio-blk that land in the image file byte for byte`,
    async () => {
      expect(missing).toBe('');
      const size = 24 * 1024 * 1024;
      const disk = diskCopy('integrity.img', size);
      let typedCommand = false;
      let typedExit = false;
      let writeSeconds = 0;
      const t0 = performance.now();
      const r = await runCli([...guestArgs('console=ttyS0 guest.shell=1'), '--disk', disk], TIMEOUT - 10_000, (stdout, type) => {
        if (!typedCommand && stdout.includes('GUEST-SHELL ready')) {
          typedCommand = true;
          writeSeconds = performance.now();
          type(`${WRITE_COMMAND}\n`);
        }
        // The echo of the typed line shows $((6*7)); only the command's output says 42.
        if (typedCommand && !typedExit && stdout.includes('WRITE-DONE-42')) {
          typedExit = true;
          writeSeconds = (performance.now() - writeSeconds) / 1000;
          type('exit\n');
        }
      });
      const ctx = context(r);
      // Guest uptimes after each step, for the log.
      const steps = [...r.stdout.matchAll(/^(T-\w+) ([\d.]+)/gm)].map((m) => `${m[1]!.slice(2).toLowerCase()} at ${m[2]!} s`).join(', ');
      expect(typedCommand, ctx).toBe(true);
      expect(typedExit, ctx).toBe(true);
      expect(r.status, ctx).toBe(0);
      const data = readFileSync(disk);
      expect(data.length).toBe(size);
      const want = expectedPattern();
      const got = data.subarray(0, want.length);
      if (!got.equals(want)) {
        let i = 0;
        while (got[i] === want[i]) i++;
        expect.fail(`the image differs from the pattern first at byte ${i} (0x${i.toString(16)}): ` + `got ${JSON.stringify(got.subarray(i, i + 16).toString('latin1'))}, want ${JSON.stringify(want.subarray(i, i + 16).toString('latin1'))}`);
      }
      // Nothing was written past the pattern.
      expect(data.subarray(want.length).every((b) => b === 0)).toBe(true);
      console.log(`virtio-blk integrity: ${PATTERN_MIB} MiB written and synced in ${writeSeconds.toFixed(1)} s (guest uptime: ${steps}); run ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    },
    TIMEOUT,
  );
});
