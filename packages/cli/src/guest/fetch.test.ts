import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { FAKE_RELEASE, fakeBusyboxDeb, fakeKernelDeb } from '../../test/guest-fixtures.js';
import { CliError, ExitStatus } from '../errors.js';
import { sourceDateEpoch } from './command.js';
import { readNewc } from './cpio.js';
import {
  type FetchHost,
  checkExistingGuest,
  debFileName,
  defaultGuestDir,
  describeWriteError,
  fetchGuest,
  parseSums,
} from './fetch.js';
import type { RunResult } from './host.js';
import { INIT_SCRIPT } from './init-script.js';

const root = mkdtempSync(join(tmpdir(), 'kvmts-fetch-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(root, `guest-${++n}`);
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const KERNEL_DEB = fakeKernelDeb();
const BUSYBOX_DEB = fakeBusyboxDeb();
const SIGNED = `linux-image-${FAKE_RELEASE}`;

interface FakeAptOptions {
  root?: boolean;
  /** i386 already enabled for apt. */
  i386?: boolean;
  /** apt's lists already know the i386 packages. */
  lists?: boolean;
  /** apt-get update reaches the archive. */
  network?: boolean;
  /** The tools on PATH. */
  tools?: string[];
  /** There is an -unsigned kernel package. */
  unsigned?: boolean;
  /** Downloads fail with ENOSPC. */
  diskFull?: boolean;
}

/** A host with a scripted dpkg/apt: downloads write the synthetic .debs; no dpkg-deb. */
function fakeHost(o: FakeAptOptions = {}): FetchHost & { calls: string[]; logs: string[] } {
  let i386 = o.i386 ?? true;
  let lists = o.lists ?? true;
  const network = o.network ?? true;
  const tools = o.tools ?? ['apt-get', 'apt-cache', 'dpkg'];
  const calls: string[] = [];
  const logs: string[] = [];
  const kernelName = o.unsigned === false ? SIGNED : `${SIGNED}-unsigned`;
  const pkgs: Record<string, { version: string; deb: Uint8Array }> = {
    [`${kernelName}:i386`]: { version: '6.1.999-1', deb: KERNEL_DEB },
    'busybox-static:i386': { version: '1:1.35.0-4', deb: BUSYBOX_DEB },
  };
  const ok = (stdout = ''): RunResult => ({ status: 0, stdout, stderr: '' });
  const run = async (cmd: string, args: readonly string[], opts: { cwd?: string } = {}): Promise<RunResult> => {
    calls.push([cmd, ...args].join(' '));
    const known = i386 && lists;
    if (cmd === 'dpkg' && args[0] === '--print-architecture') return ok('amd64\n');
    if (cmd === 'dpkg' && args[0] === '--print-foreign-architectures') return ok(i386 ? 'i386\n' : '');
    if (cmd === 'dpkg' && args[0] === '--add-architecture') {
      i386 = true;
      lists = false;
      return ok();
    }
    if (cmd === 'apt-get' && args[0] === 'update') {
      if (!network) {
        return {
          status: 100,
          stdout: 'Err:1 http://deb.debian.org/debian bookworm InRelease\n',
          stderr: "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'\nE: Some index files failed to download. They have been ignored, or old ones used instead.\n",
        };
      }
      lists = true;
      return ok();
    }
    if (cmd === 'apt-cache' && args[0] === 'depends') {
      return known ? ok(`linux-image-686:i386\n  Depends: ${SIGNED}:i386\n`) : { status: 100, stdout: '', stderr: 'E: No packages found\n' };
    }
    if (cmd === 'apt-cache' && args[0] === 'policy') {
      const p = pkgs[args[1]!];
      return ok(known && p ? `${args[1]}:\n  Installed: (none)\n  Candidate: ${p.version}\n  Version table:\n` : '');
    }
    if (cmd === 'apt-cache' && args[0] === 'show') {
      const [spec, version] = args[1]!.split('=') as [string, string];
      const p = pkgs[spec];
      return p && p.version === version ? ok(`Package: ${spec.split(':')[0]}\nVersion: ${version}\nSHA256: ${sha256(p.deb)}\n`) : { status: 100, stdout: '', stderr: 'E: No packages found\n' };
    }
    if (cmd === 'apt-get' && args[0] === 'download') {
      const spec = args.at(-1)!;
      const [pkg, version] = spec.split('=') as [string, string];
      const p = pkgs[pkg]!;
      const [name, arch] = pkg.split(':') as [string, string];
      if (!network) {
        return { status: 100, stdout: `Err:1 http://deb.debian.org/debian bookworm/main ${arch} ${name} ${arch} ${version}\n`, stderr: `E: Failed to fetch http://deb.debian.org/debian/pool/main/${name}.deb  Temporary failure resolving 'deb.debian.org'\n` };
      }
      if (o.diskFull) {
        writeFileSync(join(opts.cwd!, debFileName(name, version, arch)), p.deb.subarray(0, 100)); // partial
        return { status: 100, stdout: '', stderr: `E: Failed to fetch http://deb.debian.org/debian/pool/main/${name}.deb  Error writing to file - write (28: No space left on device) [IP: 203.0.113.80 80]\n` };
      }
      writeFileSync(join(opts.cwd!, debFileName(name, version, arch)), p.deb);
      return ok(`Get:1 http://deb.debian.org/debian bookworm/main ${arch} ${name} ${arch} ${version}\n`);
    }
    return { status: 127, stdout: '', stderr: `${cmd}: unexpected call\n` };
  };
  return {
    run,
    which: (c) => (tools.includes(c) ? `/usr/bin/${c}` : undefined),
    isRoot: () => o.root ?? true,
    log: (l) => logs.push(l),
    calls,
    logs,
  };
}

async function expectCliError(p: Promise<unknown>, exitCode: number, message: string | RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CliError);
  const e = err as CliError;
  if (typeof message === 'string') expect(e.message).toContain(message);
  else expect(e.message).toMatch(message);
  expect(e.message).not.toContain('\n');
  expect(e.exitCode).toBe(exitCode);
}

describe('guest directory', () => {
  it('is $KVMTS_GUEST_DIR, else ~/.cache/kvmts/guests/debian-i386', () => {
    expect(defaultGuestDir({}, '/home/u')).toBe('/home/u/.cache/kvmts/guests/debian-i386');
    expect(defaultGuestDir({ KVMTS_GUEST_DIR: '' }, '/home/u')).toBe('/home/u/.cache/kvmts/guests/debian-i386');
    expect(defaultGuestDir({ KVMTS_GUEST_DIR: '/srv/guest' }, '/home/u')).toBe('/srv/guest');
  });
});

describe('kvmts guest fetch (scripted apt)', () => {
  it('builds the guest from the packages apt-get downloads', async () => {
    const host = fakeHost({ i386: false, lists: false });
    const dir = freshDir();
    const r = await fetchGuest({ out: dir }, host);
    expect(r.built).toBe(true);
    expect(r.kernelRelease).toBe(FAKE_RELEASE);
    // i386 enabled, lists refreshed, exact versions downloaded as root without apt's sandbox user
    expect(host.calls).toContain('dpkg --add-architecture i386');
    expect(host.calls).toContain('apt-get update');
    expect(host.calls).toContain(`apt-get download -o APT::Sandbox::User=root ${SIGNED}-unsigned:i386=6.1.999-1`);
    expect(host.calls).toContain('apt-get download -o APT::Sandbox::User=root busybox-static:i386=1:1.35.0-4');

    const files = readdirSync(dir).sort();
    expect(files).toEqual(['.debs', 'VERSIONS.txt', 'bzImage', `config-${FAKE_RELEASE}`, 'disk.img', 'initramfs.cpio.gz']);
    expect(readFileSync(join(dir, 'bzImage'), 'utf8')).toBe(`fake bzImage for ${FAKE_RELEASE}\n`.repeat(100));
    expect(readFileSync(join(dir, 'disk.img')).length).toBe(8 << 20);

    const members = readNewc(gunzipSync(readFileSync(join(dir, 'initramfs.cpio.gz'))));
    const byName = new Map(members.map((m) => [m.name, m]));
    expect(Buffer.from(byName.get('init')!.data).toString()).toBe(INIT_SCRIPT);
    expect(Buffer.from(byName.get('bin/busybox')!.data).toString()).toBe('\x7fELF fake busybox\n');
    const order = Buffer.from(byName.get('lib/modules/load-order')!.data).toString().trim().split('\n');
    expect(order.join(' ')).toBe(
      'virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci virtio_mmio virtio_blk failover net_failover virtio_net virtio_balloon virtio_console virtio_rng',
    );
    for (const m of order) expect(byName.has(`lib/modules/${m}.ko`)).toBe(true);
    expect(byName.has('lib/modules/e1000.ko')).toBe(false);

    const versions = readFileSync(join(dir, 'VERSIONS.txt'), 'utf8');
    expect(versions).toContain(`kernel_pkg=${SIGNED}-unsigned:i386 version=6.1.999-1 deb_sha256=${sha256(KERNEL_DEB)}\n`);
    expect(versions).toContain(`busybox_pkg=busybox-static:i386 version=1:1.35.0-4 deb_sha256=${sha256(BUSYBOX_DEB)}\n`);
    expect(versions).toContain(`kernel_release=${FAKE_RELEASE}\n`);
    expect(versions).toContain(`modules=${order.join(' ')}\n`);
    expect(versions).toContain('SOURCE_DATE_EPOCH=0\n');
    const sums = parseSums(versions);
    for (const f of ['bzImage', 'initramfs.cpio.gz', 'disk.img']) {
      expect(sums.get(f)).toBe(sha256(readFileSync(join(dir, f))));
      expect(r.sha256[f]).toBe(sums.get(f));
    }
    expect(existsSync(join(dir, '.debs', debFileName('busybox-static', '1:1.35.0-4', 'i386')))).toBe(true);
    expect(readdirSync(dir).some((f) => f.startsWith('.work-') || f.endsWith('.part'))).toBe(false);
  });

  it('is reproducible: two directories get the same bytes, and --force rebuilds the same', async () => {
    const a = freshDir();
    const b = freshDir();
    const ra = await fetchGuest({ out: a }, fakeHost());
    const rb = await fetchGuest({ out: b }, fakeHost());
    expect(rb.sha256).toEqual(ra.sha256);
    expect(readFileSync(join(b, 'VERSIONS.txt'), 'utf8')).toBe(readFileSync(join(a, 'VERSIONS.txt'), 'utf8'));

    // Already there: nothing to do, apt not even asked.
    const again = fakeHost();
    const r2 = await fetchGuest({ out: a }, again);
    expect(r2).toEqual({ dir: a, built: false, sha256: ra.sha256 });
    expect(again.calls).toEqual([]);

    // --force rebuilds from the .debs downloaded before (apt's sha256 still matches them).
    const forced = fakeHost();
    const r3 = await fetchGuest({ out: a, force: true }, forced);
    expect(r3.built).toBe(true);
    expect(r3.sha256).toEqual(ra.sha256);
    expect(forced.calls.filter((c) => c.startsWith('apt-get download'))).toEqual([]);
    expect(forced.logs.some((l) => l.includes('downloaded before'))).toBe(true);

    // A different SOURCE_DATE_EPOCH changes only the initramfs.
    const r4 = await fetchGuest({ out: a, force: true, sourceDateEpoch: 1_700_000_000 }, fakeHost());
    expect(r4.sha256.bzImage).toBe(ra.sha256.bzImage);
    expect(r4.sha256['disk.img']).toBe(ra.sha256['disk.img']);
    expect(r4.sha256['initramfs.cpio.gz']).not.toBe(ra.sha256['initramfs.cpio.gz']);
  });

  it('downloads again when a kept .deb does not match apt\'s sha256', async () => {
    const dir = freshDir();
    await fetchGuest({ out: dir }, fakeHost());
    writeFileSync(join(dir, '.debs', debFileName('busybox-static', '1:1.35.0-4', 'i386')), 'corrupt');
    writeFileSync(join(dir, '.debs', 'busybox-static_1%3a1.0-1_i386.deb'), 'old version');
    const host = fakeHost();
    await fetchGuest({ out: dir, force: true }, host);
    expect(host.calls.filter((c) => c.startsWith('apt-get download'))).toEqual([
      'apt-get download -o APT::Sandbox::User=root busybox-static:i386=1:1.35.0-4',
    ]);
    expect(readdirSync(join(dir, '.debs')).filter((f) => f.startsWith('busybox'))).toEqual([
      debFileName('busybox-static', '1:1.35.0-4', 'i386'),
    ]);
  });

  it('uses the signed-name kernel package when there is no -unsigned one', async () => {
    const host = fakeHost({ unsigned: false });
    await fetchGuest({ out: freshDir() }, host);
    expect(host.calls).toContain(`apt-get download -o APT::Sandbox::User=root ${SIGNED}:i386=6.1.999-1`);
  });

  it('refreshes stale lists itself as root, with --update on request, and not otherwise', async () => {
    const stale = fakeHost({ lists: false });
    await fetchGuest({ out: freshDir() }, stale);
    expect(stale.calls.filter((c) => c === 'apt-get update')).toHaveLength(1);
    const fresh = fakeHost();
    await fetchGuest({ out: freshDir() }, fresh);
    expect(fresh.calls).not.toContain('apt-get update');
    const asked = fakeHost();
    await fetchGuest({ out: freshDir(), update: true }, asked);
    expect(asked.calls).toContain('apt-get update');
  });
});

describe('kvmts guest fetch errors', () => {
  it('needs apt-get, apt-cache and dpkg', async () => {
    await expectCliError(fetchGuest({ out: freshDir() }, fakeHost({ tools: [] })), ExitStatus.Unavailable, /^apt-get not found: .*Debian or Ubuntu host/);
    await expectCliError(fetchGuest({ out: freshDir() }, fakeHost({ tools: ['apt-get', 'apt-cache'] })), ExitStatus.Unavailable, 'dpkg not found');
  });

  it('says root is needed to enable i386 or to refresh apt, and what to run instead', async () => {
    await expectCliError(
      fetchGuest({ out: freshDir() }, fakeHost({ root: false, i386: false })),
      ExitStatus.NoPerm,
      "enabling it needs root for 'dpkg --add-architecture i386' and 'apt-get update'; run kvmts as root (e.g. with sudo), or run it yourself: sudo dpkg --add-architecture i386 && sudo apt-get update",
    );
    await expectCliError(fetchGuest({ out: freshDir() }, fakeHost({ root: false, lists: false })), ExitStatus.NoPerm, 'sudo apt-get update');
    await expectCliError(fetchGuest({ out: freshDir(), update: true }, fakeHost({ root: false })), ExitStatus.NoPerm, "'apt-get update' needs root");
  });

  it('works as another user once apt is set up, downloading without the sandbox option', async () => {
    const host = fakeHost({ root: false });
    await fetchGuest({ out: freshDir() }, host);
    expect(host.calls).toContain('apt-get download busybox-static:i386=1:1.35.0-4');
  });

  it("shows apt's last line when the network is down", async () => {
    await expectCliError(
      fetchGuest({ out: freshDir() }, fakeHost({ lists: false, network: false })),
      ExitStatus.Unavailable,
      'apt cannot find linux-image-686:i386 (no network, or no i386 lists?); apt-get update said: E: Some index files failed to download. They have been ignored, or old ones used instead.',
    );
    await expectCliError(
      fetchGuest({ out: freshDir() }, fakeHost({ network: false })),
      ExitStatus.Unavailable,
      `apt-get download ${SIGNED}-unsigned:i386=6.1.999-1 failed: E: Failed to fetch http://deb.debian.org/debian/pool/main/${SIGNED}-unsigned.deb  Temporary failure resolving 'deb.debian.org'`,
    );
  });

  it('says when the disk fills up during a download, and drops the partial file', async () => {
    const dir = freshDir();
    await expectCliError(
      fetchGuest({ out: dir }, fakeHost({ diskFull: true })),
      ExitStatus.CantCreate,
      `Error writing to file - write (28: No space left on device) [IP: 203.0.113.80 80] (the disk holding '${join(dir, '.debs')}' is full)`,
    );
    expect(readdirSync(join(dir, '.debs'))).toEqual([]);
  });

  it('says why the output directory cannot be written, before touching apt', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, '');
    const host = fakeHost();
    await expectCliError(fetchGuest({ out: join(file, 'guest') }, host), ExitStatus.CantCreate, `cannot write '${join(file, 'guest')}': a parent of it is not a directory`);
    expect(host.calls).toEqual([]);
  });

  it('reports a guest that does not match its VERSIONS.txt', async () => {
    const dir = freshDir();
    await fetchGuest({ out: dir }, fakeHost());
    writeFileSync(join(dir, 'disk.img'), 'changed');
    await expectCliError(fetchGuest({ out: dir }, fakeHost()), ExitStatus.Usage, "does not match its sha256 in VERSIONS.txt; rebuild with 'kvmts guest fetch --force'");
    await fetchGuest({ out: dir, force: true }, fakeHost());
    expect(checkExistingGuest(dir)).toBeDefined();
  });

  it('treats a directory without VERSIONS.txt as no guest', async () => {
    const dir = freshDir();
    mkdirSync(dir);
    writeFileSync(join(dir, 'bzImage'), 'half a build');
    expect(checkExistingGuest(dir)).toBeUndefined();
    expect((await fetchGuest({ out: dir }, fakeHost())).built).toBe(true);
  });

  it('names disk full, quota, read-only and permission problems', () => {
    const e = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: raw`), { code });
    expect(describeWriteError(e('ENOSPC'))).toBe('no space left on device');
    expect(describeWriteError(e('EDQUOT'))).toBe('disk quota exceeded');
    expect(describeWriteError(e('EROFS'))).toBe('read-only file system');
    expect(describeWriteError(e('EACCES'))).toBe('permission denied');
    expect(describeWriteError(e('EPERM'))).toBe('permission denied');
  });

  it('checks SOURCE_DATE_EPOCH', () => {
    expect(sourceDateEpoch(undefined)).toBe(0);
    expect(sourceDateEpoch('')).toBe(0);
    expect(sourceDateEpoch('1700000000')).toBe(1_700_000_000);
    expect(() => sourceDateEpoch('yesterday')).toThrow("invalid SOURCE_DATE_EPOCH 'yesterday'");
    expect(() => sourceDateEpoch('-1')).toThrow(CliError);
  });
});
