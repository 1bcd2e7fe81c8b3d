import { describe, expect, it } from 'vitest';
import { type CpioEntry, readNewc, sortEntries, writeNewc } from './cpio.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const latin1 = (b: Uint8Array): string => Buffer.from(b).toString('latin1');
const z = (n: number): string => '\0'.repeat(n);

/** A newc header from its 13 fields, written out by hand. */
function hdr(f: {
  ino: string;
  mode: string;
  uid?: string;
  gid?: string;
  nlink: string;
  mtime: string;
  size: string;
  rdevmajor?: string;
  rdevminor?: string;
  namesize: string;
}): string {
  const zero = '00000000';
  return [
    '070701',
    f.ino,
    f.mode,
    f.uid ?? zero,
    f.gid ?? zero,
    f.nlink,
    f.mtime,
    f.size,
    zero, // devmajor
    zero, // devminor
    f.rdevmajor ?? zero,
    f.rdevminor ?? zero,
    f.namesize,
    zero, // check
  ].join('');
}

const TRAILER =
  hdr({ ino: '00000000', mode: '00000000', nlink: '00000001', mtime: '00000000', size: '00000000', namesize: '0000000b' }) +
  'TRAILER!!!' +
  z(1 + 3); // 110 + 11 = 121, padded to 124

describe('newc cpio writer', () => {
  it('writes an empty archive as just the trailer', () => {
    const a = writeNewc([]);
    expect(latin1(a)).toBe(TRAILER);
    expect(a.length).toBe(124);
  });

  it('writes a regular file: header, name, NUL, padding, data, padding', () => {
    const a = writeNewc([{ type: 'file', path: 'init', mode: 0o755, data: bytes('hi\n') }], { mtime: 100_000_000 });
    expect(latin1(a)).toBe(
      hdr({ ino: '00000001', mode: '000081ed', nlink: '00000001', mtime: '05f5e100', size: '00000003', namesize: '00000005' }) +
        'init' +
        z(1 + 1) + // 110 + 5 = 115 -> 116
        'hi\n' +
        z(1) + // 3 -> 4
        TRAILER,
    );
  });

  it('writes a directory, a symlink and a character device', () => {
    const entries: CpioEntry[] = [
      { type: 'dir', path: 'bin', mode: 0o755 },
      { type: 'symlink', path: 'bin/sh', target: 'busybox' },
      { type: 'char', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
      { type: 'block', path: 'dev/vda', mode: 0o660, major: 254, minor: 0 },
    ];
    expect(latin1(writeNewc(entries))).toBe(
      hdr({ ino: '00000001', mode: '000041ed', nlink: '00000002', mtime: '00000000', size: '00000000', namesize: '00000004' }) +
        'bin' +
        z(1 + 2) + // 114 -> 116, no data
        hdr({ ino: '00000002', mode: '0000a1ff', nlink: '00000001', mtime: '00000000', size: '00000007', namesize: '00000007' }) +
        'bin/sh' +
        z(1 + 3) + // 117 -> 120
        'busybox' + // the target, without NUL
        z(1) + // 7 -> 8
        hdr({
          ino: '00000003',
          mode: '00002180',
          nlink: '00000001',
          mtime: '00000000',
          size: '00000000',
          rdevmajor: '00000005',
          rdevminor: '00000001',
          namesize: '0000000c',
        }) +
        'dev/console' +
        z(1 + 2) + // 122 -> 124
        hdr({
          ino: '00000004',
          mode: '000061b0',
          nlink: '00000001',
          mtime: '00000000',
          size: '00000000',
          rdevmajor: '000000fe',
          namesize: '00000008',
        }) +
        'dev/vda' +
        z(1 + 2) + // 118 -> 120
        TRAILER,
    );
  });

  it('pads every header+name and every data block to 4 bytes', () => {
    for (let nameLen = 1; nameLen <= 8; nameLen++) {
      for (let dataLen = 0; dataLen <= 8; dataLen++) {
        const a = writeNewc([{ type: 'file', path: 'n'.repeat(nameLen), mode: 0o644, data: new Uint8Array(dataLen).fill(0x41) }]);
        const headAndName = 110 + nameLen + 1;
        const entry = Math.ceil(headAndName / 4) * 4 + Math.ceil(dataLen / 4) * 4;
        expect(a.length).toBe(entry + 124);
        expect(a.length % 4).toBe(0);
        expect(latin1(a.subarray(entry, entry + 6))).toBe('070701');
      }
    }
  });

  it('takes uid, gid and mtime from the options, for every entry but the trailer', () => {
    const a = writeNewc(
      [
        { type: 'dir', path: 'd', mode: 0o700 },
        { type: 'file', path: 'd/f', mode: 0o600, data: bytes('x') },
      ],
      { uid: 1000, gid: 100, mtime: 0xffffffff },
    );
    const m = readNewc(a);
    expect(m.map((e) => [e.name, e.ino, e.uid, e.gid, e.mtime, e.mode.toString(8)])).toEqual([
      ['d', 1, 1000, 100, 0xffffffff, '40700'],
      ['d/f', 2, 1000, 100, 0xffffffff, '100600'],
    ]);
    expect(latin1(a).endsWith(TRAILER)).toBe(true);
    expect(latin1(a)).toContain('000003e8' + '00000064');
  });

  it('reads back what it wrote', () => {
    const data = new Uint8Array(1000).map((_, i) => (i * 7) & 0xff);
    const m = readNewc(
      writeNewc([
        { type: 'dir', path: 'lib', mode: 0o755 },
        { type: 'file', path: 'lib/x.ko', mode: 0o644, data },
        { type: 'symlink', path: 'lib/y', target: 'x.ko' },
      ]),
    );
    expect(m.map((e) => e.name)).toEqual(['lib', 'lib/x.ko', 'lib/y']);
    expect(m[1]!.data).toEqual(data);
    expect(latin1(m[2]!.data)).toBe('x.ko');
  });

  it('rejects bad paths, duplicates, bad modes and out-of-range fields', () => {
    const f = (path: string): CpioEntry => ({ type: 'file', path, mode: 0o644, data: new Uint8Array(0) });
    for (const p of ['', '/init', './init', 'a/../b', 'a//b', 'a/', 'TRAILER!!!']) expect(() => writeNewc([f(p)])).toThrow(RangeError);
    expect(() => writeNewc([f('a'), f('a')])).toThrow(/duplicate/);
    expect(() => writeNewc([{ type: 'file', path: 'a', mode: 0o100644, data: new Uint8Array(0) }])).toThrow(/mode/);
    expect(() => writeNewc([], { mtime: -1 })).not.toThrow(); // no entry uses it
    expect(() => writeNewc([f('a')], { mtime: 2 ** 32 })).toThrow(/mtime/);
    expect(() => writeNewc([{ type: 'symlink', path: 'l', target: '' }])).toThrow(/empty target/);
  });

  it('sorts entries by path bytes, parents before children', () => {
    const sorted = sortEntries([{ path: 'lib/modules' }, { path: 'bin/sh' }, { path: 'lib' }, { path: 'bin' }, { path: 'bin-x' }, { path: 'init' }]);
    expect(sorted.map((e) => e.path)).toEqual(['bin', 'bin-x', 'bin/sh', 'init', 'lib', 'lib/modules']);
  });
});
