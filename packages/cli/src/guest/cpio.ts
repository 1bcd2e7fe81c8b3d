/**
 * A writer for cpio archives in the "newc" format (SVR4 without CRC, magic `070701`), the
 * format Linux unpacks as an initramfs.
 *
 * Every entry is a 110-byte ASCII header of thirteen 8-digit hex fields, the NUL-terminated
 * name, padding to a multiple of 4, then the data, padded to a multiple of 4. The archive ends
 * with an entry named `TRAILER!!!`. Nothing host-specific goes in: inode numbers count up from
 * 1 in archive order, and the timestamp, owner and group are given by the caller, so the same
 * entries always give the same bytes.
 * @module
 */

/** File type bits of `st_mode`. */
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/** One archive member. `path` is relative (`bin/busybox`), without a leading `/` or `./`. */
export type CpioEntry =
  | { type: 'file'; path: string; mode: number; data: Uint8Array }
  | { type: 'dir'; path: string; mode: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char' | 'block'; path: string; mode: number; major: number; minor: number };

export interface CpioOptions {
  /** Modification time of every entry, in seconds since the epoch. Default 0. */
  mtime?: number;
  /** Owner of every entry. Default 0. */
  uid?: number;
  /** Group of every entry. Default 0. */
  gid?: number;
}

/** The newc magic number. */
export const NEWC_MAGIC = '070701';
/** Size of a newc header. */
export const NEWC_HEADER_SIZE = 110;
/** Name of the entry that ends an archive. */
export const TRAILER_NAME = 'TRAILER!!!';

const encoder = new TextEncoder();

interface Header {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  filesize: number;
  rdevmajor: number;
  rdevminor: number;
  namesize: number;
}

function field(value: number, name: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`cpio: ${name} ${value} does not fit in a newc header field`);
  }
  return value.toString(16).padStart(8, '0');
}

function header(h: Header): string {
  return (
    NEWC_MAGIC +
    field(h.ino, 'inode') +
    field(h.mode, 'mode') +
    field(h.uid, 'uid') +
    field(h.gid, 'gid') +
    field(h.nlink, 'nlink') +
    field(h.mtime, 'mtime') +
    field(h.filesize, 'size') +
    field(0, 'devmajor') + // the archive's own "device": none
    field(0, 'devminor') +
    field(h.rdevmajor, 'rdevmajor') +
    field(h.rdevminor, 'rdevminor') +
    field(h.namesize, 'namesize') +
    field(0, 'check') // newc (070701) carries no checksum
  );
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function checkPath(path: string): void {
  if (path === '' || path.startsWith('/') || path.startsWith('./') || path.endsWith('/')) {
    throw new RangeError(`cpio: bad entry path '${path}': use a relative path like 'bin/sh'`);
  }
  if (path.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new RangeError(`cpio: bad entry path '${path}'`);
  }
  if (path.includes('\0')) throw new RangeError('cpio: entry path contains NUL');
}

function checkPerm(mode: number, path: string): void {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new RangeError(`cpio: mode of '${path}' must be permission bits (0..0o7777), got 0o${mode.toString(8)}`);
  }
}

/**
 * Write `entries`, in the order given, as a newc archive ending with the trailer. Parents
 * must come before their children for the kernel to create them (sort with
 * {@link sortEntries}). Throws RangeError for a bad path, a duplicate or an out-of-range field.
 */
export function writeNewc(entries: readonly CpioEntry[], options: CpioOptions = {}): Uint8Array {
  const mtime = options.mtime ?? 0;
  const uid = options.uid ?? 0;
  const gid = options.gid ?? 0;
  const chunks: Uint8Array[] = [];
  let total = 0;
  const push = (bytes: Uint8Array): void => {
    chunks.push(bytes);
    total += bytes.length;
  };
  const zeros = (n: number): void => {
    if (n > 0) push(new Uint8Array(n));
  };
  const member = (h: Omit<Header, 'namesize'>, name: string, data: Uint8Array): void => {
    const nameBytes = encoder.encode(name);
    const head = encoder.encode(header({ ...h, namesize: nameBytes.length + 1 }));
    push(head);
    push(nameBytes);
    zeros(1 + pad4(NEWC_HEADER_SIZE + nameBytes.length + 1));
    push(data);
    zeros(pad4(data.length));
  };

  const seen = new Set<string>();
  let ino = 1;
  for (const e of entries) {
    checkPath(e.path);
    if (e.path === TRAILER_NAME) throw new RangeError(`cpio: '${TRAILER_NAME}' is reserved`);
    if (seen.has(e.path)) throw new RangeError(`cpio: duplicate entry '${e.path}'`);
    seen.add(e.path);
    const common = { ino: ino++, uid, gid, mtime, rdevmajor: 0, rdevminor: 0 };
    switch (e.type) {
      case 'file':
        checkPerm(e.mode, e.path);
        member({ ...common, mode: S_IFREG | e.mode, nlink: 1, filesize: e.data.length }, e.path, e.data);
        break;
      case 'dir':
        checkPerm(e.mode, e.path);
        member({ ...common, mode: S_IFDIR | e.mode, nlink: 2, filesize: 0 }, e.path, new Uint8Array(0));
        break;
      case 'symlink': {
        if (e.target === '') throw new RangeError(`cpio: symlink '${e.path}' has an empty target`);
        const target = encoder.encode(e.target);
        member({ ...common, mode: S_IFLNK | 0o777, nlink: 1, filesize: target.length }, e.path, target);
        break;
      }
      case 'char':
      case 'block':
        checkPerm(e.mode, e.path);
        member(
          {
            ...common,
            mode: (e.type === 'char' ? S_IFCHR : S_IFBLK) | e.mode,
            nlink: 1,
            filesize: 0,
            rdevmajor: e.major,
            rdevminor: e.minor,
          },
          e.path,
          new Uint8Array(0),
        );
        break;
    }
  }
  member(
    { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, filesize: 0, rdevmajor: 0, rdevminor: 0 },
    TRAILER_NAME,
    new Uint8Array(0),
  );

  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * The entries in a fixed order, independent of how they were collected: by path, compared
 * as UTF-8 bytes. A directory sorts before everything inside it, since its path is a prefix.
 */
export function sortEntries<T extends { path: string }>(entries: readonly T[]): T[] {
  const key = (p: string): Buffer => Buffer.from(p, 'utf8');
  return [...entries].sort((a, b) => Buffer.compare(key(a.path), key(b.path)));
}

/** One member read back by {@link readNewc}. */
export interface NewcMember {
  name: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevmajor: number;
  rdevminor: number;
  data: Uint8Array;
}

/**
 * Parse a newc archive up to its trailer (which is not returned). For checking what
 * {@link writeNewc} wrote; throws on anything malformed.
 */
export function readNewc(archive: Uint8Array): NewcMember[] {
  const members: NewcMember[] = [];
  const text = new TextDecoder();
  let at = 0;
  for (;;) {
    if (at + NEWC_HEADER_SIZE > archive.length) throw new RangeError(`cpio: truncated header at ${at}`);
    const head = text.decode(archive.subarray(at, at + NEWC_HEADER_SIZE));
    if (!head.startsWith(NEWC_MAGIC)) throw new RangeError(`cpio: bad magic at ${at}`);
    const f = (i: number): number => {
      const s = head.slice(6 + 8 * i, 14 + 8 * i);
      if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new RangeError(`cpio: bad header field at ${at}`);
      return parseInt(s, 16);
    };
    const namesize = f(11);
    const filesize = f(6);
    const nameStart = at + NEWC_HEADER_SIZE;
    const name = text.decode(archive.subarray(nameStart, nameStart + namesize - 1));
    const dataStart = nameStart + namesize + pad4(NEWC_HEADER_SIZE + namesize);
    if (dataStart + filesize > archive.length) throw new RangeError(`cpio: truncated data of '${name}'`);
    if (name === TRAILER_NAME) return members;
    members.push({
      name,
      ino: f(0),
      mode: f(1),
      uid: f(2),
      gid: f(3),
      nlink: f(4),
      mtime: f(5),
      rdevmajor: f(9),
      rdevminor: f(10),
      data: Uint8Array.from(archive.subarray(dataStart, dataStart + filesize)),
    });
    at = dataStart + filesize + pad4(filesize);
  }
}
