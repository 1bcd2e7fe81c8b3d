import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { ar, fakeBusyboxDeb, fakeDeb, tar } from '../../test/guest-fixtures.js';
import { decompressMember, extractDeb, extractDebData, parseAr, parseTar } from './deb.js';
import { findOnPath, lastLine, runHostCommand } from './host.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-deb-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

describe('ar', () => {
  it('reads members, padding odd sizes to 2 bytes and dropping GNU trailing slashes', () => {
    const a = ar([
      { name: 'debian-binary', data: new TextEncoder().encode('2.0\n') },
      { name: 'odd/', data: new TextEncoder().encode('abc') },
      { name: 'last', data: new TextEncoder().encode('z') },
    ]);
    expect(parseAr(a).map((m) => [m.name, text(m.data)])).toEqual([
      ['debian-binary', '2.0\n'],
      ['odd', 'abc'],
      ['last', 'z'],
    ]);
  });

  it('rejects what is not an ar archive, and truncation', () => {
    expect(() => parseAr(new TextEncoder().encode('PK\x03\x04'))).toThrow('not an ar archive');
    const a = ar([{ name: 'x', data: new Uint8Array(100) }]);
    expect(() => parseAr(a.subarray(0, a.length - 10))).toThrow('runs past the end');
  });
});

describe('tar', () => {
  it('reads files, directories, symlinks and GNU long names, dropping ./', () => {
    const long = `./usr/share/${'d'.repeat(120)}/file`;
    const entries = parseTar(
      tar([
        { path: './', type: 'dir' },
        { path: './bin', type: 'dir' },
        { path: './bin/busybox', data: 'BB', mode: 0o755 },
        { path: './bin/sh', type: 'symlink', linkname: 'busybox' },
        { path: long, data: 'long' },
      ]),
    );
    expect(entries.map((e) => [e.path, e.type, e.mode.toString(8), e.linkname, text(e.data)])).toEqual([
      ['bin', 'dir', '755', '', ''],
      ['bin/busybox', 'file', '755', '', 'BB'],
      ['bin/sh', 'symlink', '644', 'busybox', ''],
      [long.slice(2), 'file', '644', '', 'long'],
    ]);
  });

  it('checks header checksums', () => {
    const t = tar([{ path: 'a', data: 'x' }]);
    t[0] = 'b'.charCodeAt(0);
    expect(() => parseTar(t)).toThrow('bad header checksum');
  });
});

describe('unpacking a .deb without dpkg-deb', () => {
  it('writes directories and regular files with their modes, and skips symlinks', () => {
    const deb = fakeDeb('Package: t\n', [
      { path: 'bin/busybox', data: 'BB', mode: 0o755 },
      { path: 'bin/sh', type: 'symlink', linkname: '/etc/passwd' },
      { path: 'usr/share/doc/t/copyright', data: 'GPL' },
    ]);
    const dest = join(dir, 'builtin');
    extractDebData(deb, dest);
    expect(readFileSync(join(dest, 'bin/busybox'), 'utf8')).toBe('BB');
    expect(statSync(join(dest, 'bin/busybox')).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(dest, 'usr/share/doc/t/copyright'), 'utf8')).toBe('GPL');
    expect(existsSync(join(dest, 'bin/sh'))).toBe(false);
  });

  it('refuses paths that climb out of the destination', () => {
    const evil = ar([
      { name: 'debian-binary', data: new TextEncoder().encode('2.0\n') },
      { name: 'data.tar.gz', data: gzipSync(tar([{ path: '../escaped', data: 'x' }])) },
    ]);
    expect(() => extractDebData(evil, join(dir, 'evil'))).toThrow("refusing to unpack '../escaped'");
    expect(existsSync(join(dir, 'escaped'))).toBe(false);
  });

  it('rejects an ar archive that is not a .deb', () => {
    expect(() => extractDebData(ar([{ name: 'foo.o', data: new Uint8Array(4) }]), join(dir, 'x'))).toThrow('not a Debian package');
  });

  it('decompresses gz and plain tar itself; names an unknown compression', () => {
    expect(text(decompressMember('data.tar.gz', gzipSync(Buffer.from('t'))))).toBe('t');
    expect(text(decompressMember('data.tar', Buffer.from('t')))).toBe('t');
    expect(() => decompressMember('data.tar.lz4', Buffer.from('t'))).toThrow('unknown compression');
  });

  it('gives the same files as dpkg-deb -x (when the host has dpkg-deb)', async () => {
    const debPath = join(dir, 'busybox.deb');
    writeFileSync(debPath, fakeBusyboxDeb());
    const ours = join(dir, 'ours');
    expect(await extractDeb(debPath, ours, runHostCommand, () => undefined)).toBe('builtin');
    expect(readFileSync(join(ours, 'bin/busybox'), 'utf8')).toBe('\x7fELF fake busybox\n');
    if (findOnPath('dpkg-deb') === undefined) return;
    const theirs = join(dir, 'theirs');
    expect(await extractDeb(debPath, theirs, runHostCommand)).toBe('dpkg-deb');
    for (const f of ['bin/busybox', 'usr/share/doc/busybox-static/copyright']) {
      expect(readFileSync(join(ours, f))).toEqual(readFileSync(join(theirs, f)));
      expect(lstatSync(join(ours, f)).mode).toBe(lstatSync(join(theirs, f)).mode);
    }
  });

  it('reports dpkg-deb failing with its last line', async () => {
    const bad = join(dir, 'bad.deb');
    writeFileSync(bad, 'not a deb');
    const fail = async () => ({ status: 2, stdout: '', stderr: "dpkg-deb: error: 'bad.deb' is not a Debian format archive\n" });
    await expect(extractDeb(bad, join(dir, 'bad'), fail, () => '/usr/bin/dpkg-deb')).rejects.toThrow(
      "dpkg-deb -x failed: dpkg-deb: error: 'bad.deb' is not a Debian format archive",
    );
  });
});

describe('host commands', () => {
  it('picks apt\'s last E: line, else the last stderr line, else stdout, else how it ended', () => {
    expect(
      lastLine({
        status: 100,
        stdout: 'Err:1 http://deb.debian.org/debian bookworm/main i386 busybox-static\n',
        stderr: "E: Failed to fetch http://x/y.deb  Temporary failure resolving 'deb.debian.org'\nW: something after\n",
      }),
    ).toBe("E: Failed to fetch http://x/y.deb  Temporary failure resolving 'deb.debian.org'");
    expect(lastLine({ status: 1, stdout: 'out\n', stderr: 'first\nlast\n\n' })).toBe('last');
    expect(
      lastLine({
        status: 2,
        stdout: '',
        stderr:
          "tar: ./lib/modules/x.ko: Cannot write: No space left on device\ntar: Exiting with failure status due to previous errors\ndpkg-deb: error: tar subprocess returned error exit status 2\n",
      }),
    ).toBe('tar: ./lib/modules/x.ko: Cannot write: No space left on device');
    expect(lastLine({ status: 1, stdout: 'a\nb\n', stderr: '' })).toBe('b');
    expect(lastLine({ status: null, stdout: '', stderr: '', error: 'command not found' })).toBe('command not found');
    expect(lastLine({ status: 3, stdout: '', stderr: '' })).toBe('exit status 3');
  });

  it('runs a command and reports one that does not exist', async () => {
    const ok = await runHostCommand(process.execPath, ['-e', 'console.log("hi"); console.error("oops"); process.exit(3)']);
    expect(ok).toEqual({ status: 3, stdout: 'hi\n', stderr: 'oops\n' });
    const missing = await runHostCommand('kvmts-no-such-command', []);
    expect(missing.missing).toBe(true);
    expect(findOnPath('kvmts-no-such-command')).toBeUndefined();
    expect(findOnPath('node', join(process.execPath, '..'))).toBe(process.execPath);
  });
});
