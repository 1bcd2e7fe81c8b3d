// End-to-end tests of `kvmts guest ...`: the real command as a child process.
//
// The download test needs the network, apt-get and (to enable i386) root, so it only runs
// with KVMTS_E2E_FETCH=1. Optional with it:
//   KVMTS_E2E_REF_GUEST=DIR  a reference build (build-linux-guest.sh DIR): bzImage and
//                            disk.img must be byte-identical to it
//   qemu-system-i386 on PATH: boot the guest and check /init's report
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { readNewc } from './cpio.js';
import { parseSums } from './fetch.js';
import { findOnPath } from './host.js';
import { INIT_SCRIPT } from './init-script.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../../..');
const bin = resolve(here, '../bin.ts');
const dir = mkdtempSync(join(tmpdir(), 'kvmts-guest-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `kvmts ARGS...` from the TypeScript sources, with extra environment variables. */
function kvmts(env: Record<string, string>, args: string[], timeout = 60_000): Result {
  const r = spawnSync(process.execPath, ['--conditions=@kvmts/source', '--import', 'tsx', bin, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The error is one `kvmts: ...` line at the end of stderr, with no stack trace. */
function expectError(r: Result, status: number, message: string | RegExp): void {
  expect(r.status, r.stderr).toBe(status);
  expect(r.stdout).toBe('');
  const last = r.stderr.trimEnd().split('\n').at(-1) ?? '';
  expect(last).toMatch(/^kvmts: /);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  if (typeof message === 'string') expect(last).toContain(message);
  else expect(last).toMatch(message);
}

/** A PATH with stand-ins for dpkg and apt: i386 enabled, lists present, downloads fail like a dead network. */
function stubApt(): string {
  const stubs = join(dir, 'stub-bin');
  mkdirSync(stubs, { recursive: true });
  const script = (name: string, body: string): void => {
    writeFileSync(join(stubs, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(stubs, name), 0o755);
  };
  script('dpkg', 'case "$1" in --print-architecture) echo amd64;; --print-foreign-architectures) echo i386;; *) exit 2;; esac');
  script(
    'apt-cache',
    [
      'case "$1" in',
      '  depends) echo "linux-image-686:i386"; echo "  Depends: linux-image-6.1.0-99-686:i386";;',
      '  policy) echo "$2:"; echo "  Installed: (none)"; echo "  Candidate: 6.1.999-1";;',
      '  show) echo "Package: x";;',
      'esac',
    ].join('\n'),
  );
  script(
    'apt-get',
    [
      'echo "Err:1 http://deb.debian.org/debian bookworm/main i386 linux-image i386 6.1.999-1"',
      'echo "E: Failed to fetch http://deb.debian.org/debian/pool/main/l/linux.deb  Temporary failure resolving \'deb.debian.org\'" >&2',
      'exit 100',
    ].join('\n'),
  );
  return stubs;
}

describe('kvmts guest (offline)', () => {
  it('prints the default guest directory', () => {
    expect(kvmts({ KVMTS_GUEST_DIR: '', HOME: '/home/someone' }, ['guest', 'path'])).toEqual({
      status: 0,
      stdout: '/home/someone/.cache/kvmts/guests/debian-i386\n',
      stderr: '',
    });
    expect(kvmts({ KVMTS_GUEST_DIR: '/srv/guests/x' }, ['guest', 'path']).stdout).toBe('/srv/guests/x\n');
  });

  it('documents fetch, what it needs and its exit statuses', () => {
    const r = kvmts({}, ['guest', 'fetch', '--help']);
    expect(r.status).toBe(0);
    for (const s of ['--out <dir>', '--force', '--update', 'apt-get download', 'dpkg --add-architecture i386', '77   root']) {
      expect(r.stdout).toContain(s);
    }
  });

  it('fails in one line without apt-get', () => {
    expectError(kvmts({ PATH: join(dir, 'empty') }, ['guest', 'fetch', '--out', join(dir, 'g1')]), 69, /^kvmts: apt-get not found: /);
  });

  it("fails in one line with apt's last line when downloads fail", () => {
    const r = kvmts({ PATH: stubApt() }, ['guest', 'fetch', '--out', join(dir, 'g2')]);
    expectError(
      r,
      69,
      "failed: E: Failed to fetch http://deb.debian.org/debian/pool/main/l/linux.deb  Temporary failure resolving 'deb.debian.org' (check the network",
    );
  });

  it('fails in one line when the directory cannot be written', () => {
    const file = join(dir, 'plain-file');
    writeFileSync(file, '');
    expectError(kvmts({ PATH: stubApt() }, ['guest', 'fetch', '--out', join(file, 'g')]), 73, 'a parent of it is not a directory');
  });

  it('rejects a bad SOURCE_DATE_EPOCH', () => {
    expectError(kvmts({ SOURCE_DATE_EPOCH: 'soon' }, ['guest', 'fetch', '--out', join(dir, 'g3')]), 64, "invalid SOURCE_DATE_EPOCH 'soon'");
  });
});

describe.skipIf(process.env.KVMTS_E2E_FETCH !== '1')('kvmts guest fetch (downloads; KVMTS_E2E_FETCH=1)', () => {
  const a = join(dir, 'real-a');
  const b = join(dir, 'real-b');
  const TIMEOUT = 900_000;

  it(
    'builds the guest from Debian packages, reproducibly',
    () => {
      const ra = kvmts({}, ['guest', 'fetch', '--out', a], TIMEOUT);
      expect(ra.status, ra.stderr).toBe(0);
      expect(ra.stdout).toMatch(/^kvmts: wrote the Debian i386 guest \(kernel 6\.\d+\.\d+-\d+-686\) to '/);
      const sums = parseSums(readFileSync(join(a, 'VERSIONS.txt'), 'utf8'));
      for (const f of ['bzImage', 'initramfs.cpio.gz', 'disk.img']) {
        expect(sums.get(f)).toBe(sha256(readFileSync(join(a, f))));
        expect(ra.stdout).toContain(`${sums.get(f)}  ${f}\n`);
      }
      const versions = readFileSync(join(a, 'VERSIONS.txt'), 'utf8');
      expect(versions).toMatch(/^kernel_pkg=linux-image-[\d.]+-\d+-686-unsigned:i386 version=\S+ deb_sha256=[0-9a-f]{64}$/m);
      expect(versions).toMatch(/^busybox_pkg=busybox-static:i386 version=\S+ deb_sha256=[0-9a-f]{64}$/m);

      const bz = readFileSync(join(a, 'bzImage'));
      expect(bz.subarray(0x202, 0x206).toString('latin1')).toBe('HdrS'); // Linux boot protocol header
      const disk = readFileSync(join(a, 'disk.img'));
      expect(disk.length).toBe(8 << 20);
      expect(disk.subarray(0, 30).toString('latin1')).toBe('VIRTIO-BLK-DISK-SIGNATURE-0001');
      const members = new Map(readNewc(gunzipSync(readFileSync(join(a, 'initramfs.cpio.gz')))).map((m) => [m.name, m]));
      expect(Buffer.from(members.get('init')!.data).toString()).toBe(INIT_SCRIPT);
      const order = Buffer.from(members.get('lib/modules/load-order')!.data).toString().trim().split('\n');
      for (const m of ['virtio', 'virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk', 'virtio_net']) {
        expect(order).toContain(m);
        expect(members.get(`lib/modules/${m}.ko`)!.data.subarray(0, 4)).toEqual(new Uint8Array([0x7f, 0x45, 0x4c, 0x46]));
      }
      expect(order.indexOf('virtio')).toBeLessThan(order.indexOf('virtio_pci'));

      // A second, independent download and build gives the same bytes.
      const rb = kvmts({}, ['guest', 'fetch', '--out', b], TIMEOUT);
      expect(rb.status, rb.stderr).toBe(0);
      for (const f of ['bzImage', 'initramfs.cpio.gz', 'disk.img', 'VERSIONS.txt']) {
        expect(sha256(readFileSync(join(b, f))), f).toBe(sha256(readFileSync(join(a, f))));
      }
      // Present: nothing to do. --force: rebuilt, the same.
      expect(kvmts({}, ['guest', 'fetch', '--out', a]).stdout).toContain('already in');
      const rf = kvmts({}, ['guest', 'fetch', '--out', a, '--force'], TIMEOUT);
      expect(rf.status, rf.stderr).toBe(0);
      expect(rf.stdout).toBe(ra.stdout);

      // Without dpkg-deb (kvmts unpacks the .debs itself, with xz for data.tar.xz): the same.
      const tools = join(dir, 'no-dpkg-deb');
      mkdirSync(tools, { recursive: true });
      for (const t of ['apt-get', 'apt-cache', 'dpkg', 'xz']) {
        const p = findOnPath(t);
        if (p !== undefined) symlinkSync(p, join(tools, t));
      }
      const rn = kvmts({ PATH: tools }, ['guest', 'fetch', '--out', b, '--force'], TIMEOUT);
      expect(rn.status, rn.stderr).toBe(0);
      expect(rn.stderr).toContain("no dpkg-deb: kvmts's own .deb reader");
      expect(rn.stdout.replace(b, a)).toBe(ra.stdout);

      const ref = process.env.KVMTS_E2E_REF_GUEST;
      if (ref) {
        for (const f of ['bzImage', 'disk.img']) expect(sha256(readFileSync(join(a, f))), `${f} vs ${ref}`).toBe(sha256(readFileSync(join(ref, f))));
      }
    },
    TIMEOUT * 3,
  );

  it.skipIf(findOnPath('qemu-system-i386') === undefined)(
    'boots in QEMU and /init reports the virtio devices, the disk and the NIC',
    () => {
      const r = spawnSync(
        'qemu-system-i386',
        [
          ...['-nographic', '-no-reboot', '-m', '256', '-cpu', 'pentium3'],
          ...['-kernel', join(a, 'bzImage'), '-initrd', join(a, 'initramfs.cpio.gz'), '-append', 'console=ttyS0 quiet guest.debug=1'],
          ...['-drive', `file=${join(a, 'disk.img')},format=raw,if=virtio,snapshot=on`],
          ...['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56', '-device', 'virtio-rng-pci'],
        ],
        { encoding: 'latin1', timeout: 240_000 },
      );
      const lines = r.stdout.replace(/\r/g, '').split('\n').map((l) => l.replace(/^.*(GUEST-)/, '$1'));
      const guest = lines.filter((l) => l.startsWith('GUEST-'));
      expect(guest[0], r.stdout).toMatch(/^GUEST-BOOT-OK uptime=[\d.]+ kernel=6\.\S+-686$/);
      expect(lines).toContainEqual(expect.stringMatching(/^model name\s*: /));
      expect(guest).toContainEqual(expect.stringMatching(/^GUEST-INFO cpus=1 MemTotal: \d+ kB$/));
      expect(guest).toContainEqual(expect.stringMatching(/^GUEST-VIRTIO virtio\d device=0x0002 \(block\) vendor=0x1af4 driver=virtio_blk$/));
      expect(guest).toContainEqual(expect.stringMatching(/^GUEST-VIRTIO virtio\d device=0x0001 \(net\) vendor=0x1af4 driver=virtio_net$/));
      expect(guest).toContainEqual(expect.stringMatching(/^GUEST-VIRTIO virtio\d device=0x0004 \(rng\) vendor=0x1af4 driver=virtio_rng$/));
      expect(guest).toContain('GUEST-VIRTIO-COUNT 3');
      expect(guest).toContainEqual(expect.stringMatching(/^GUEST-DEBUG module virtio_pci refs=\d+$/));
      expect(guest).toContain('GUEST-BLK vda sectors=16384 sig=VIRTIO-BLK-DISK-SIGNATURE-0001');
      expect(guest).toContain('GUEST-NET eth0 mac=52:54:00:12:34:56 driver=virtio_net');
      expect(guest.at(-1)).toMatch(/^GUEST-DONE uptime=[\d.]+$/);
      expect(guest.some((l) => l.startsWith('GUEST-WARN'))).toBe(false);
    },
    300_000,
  );
});
