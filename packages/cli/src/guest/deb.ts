/**
 * Unpacking Debian packages: `dpkg-deb -x` when the host has it, otherwise our own reader of
 * the .deb's ar container and the tar inside it.
 * @module
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as zlib from 'node:zlib';
import { type Runner, findOnPath, lastLine } from './host.js';

/** One member of an ar archive. */
export interface ArMember {
  name: string;
  data: Uint8Array;
}

const AR_MAGIC = '!<arch>\n';

/** Parse a (System V / GNU) ar archive, the container of a .deb. Throws SyntaxError. */
export function parseAr(archive: Uint8Array): ArMember[] {
  const latin1 = (a: number, b: number): string => Buffer.from(archive.subarray(a, b)).toString('latin1');
  if (archive.length < 8 || latin1(0, 8) !== AR_MAGIC) throw new SyntaxError('not an ar archive (no !<arch> magic)');
  const members: ArMember[] = [];
  let at = 8;
  while (at < archive.length) {
    if (archive[at] === 0x0a && at + 1 === archive.length) break; // stray final newline
    if (at + 60 > archive.length) throw new SyntaxError(`ar: truncated member header at ${at}`);
    if (latin1(at + 58, at + 60) !== '`\n') throw new SyntaxError(`ar: bad member header at ${at}`);
    const name = latin1(at, at + 16).trimEnd().replace(/\/$/, '');
    const sizeText = latin1(at + 48, at + 58).trim();
    if (!/^\d+$/.test(sizeText)) throw new SyntaxError(`ar: bad size '${sizeText}' of member '${name}'`);
    const size = Number(sizeText);
    const start = at + 60;
    if (start + size > archive.length) throw new SyntaxError(`ar: member '${name}' runs past the end`);
    members.push({ name, data: archive.subarray(start, start + size) });
    at = start + size + (size % 2);
  }
  return members;
}

/** One member of a tar archive. Only the types we unpack are distinguished. */
export interface TarEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  mode: number;
  linkname: string;
  data: Uint8Array;
}

function tarNumber(field: Uint8Array): number {
  if (field[0] !== undefined && field[0] & 0x80) {
    // GNU base-256: big-endian, the top bit of the first byte is the marker
    let n = field[0] & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = Buffer.from(field).toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new SyntaxError(`tar: bad number '${text}'`);
  return parseInt(text, 8);
}

function tarString(field: Uint8Array): string {
  const nul = field.indexOf(0);
  return Buffer.from(nul < 0 ? field : field.subarray(0, nul)).toString('utf8');
}

function paxRecords(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  const text = Buffer.from(data).toString('utf8');
  let at = 0;
  while (at < text.length) {
    const space = text.indexOf(' ', at);
    if (space < 0) break;
    const len = Number(text.slice(at, space));
    if (!Number.isInteger(len) || len <= 0) throw new SyntaxError('tar: bad pax record');
    const record = text.slice(space + 1, at + len - 1); // without the trailing newline
    const eq = record.indexOf('=');
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    at += len;
  }
  return out;
}

/**
 * Parse a tar archive (ustar, GNU long names, pax path/linkpath/size). Entry paths lose a
 * leading `./`; the archive root itself is skipped. Throws SyntaxError.
 */
export function parseTar(archive: Uint8Array): TarEntry[] {
  const entries: TarEntry[] = [];
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax = new Map<string, string>();
  let at = 0;
  while (at + 512 <= archive.length) {
    const h = archive.subarray(at, at + 512);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (sum !== tarNumber(h.subarray(148, 156))) throw new SyntaxError(`tar: bad header checksum at ${at}`);
    const typeflag = String.fromCharCode(h[156]!);
    let size = tarNumber(h.subarray(124, 136));
    if (pax.has('size')) size = Number(pax.get('size'));
    const dataStart = at + 512;
    if (dataStart + size > archive.length) throw new SyntaxError(`tar: entry at ${at} runs past the end`);
    const data = archive.subarray(dataStart, dataStart + size);
    at = dataStart + Math.ceil(size / 512) * 512;

    if (typeflag === 'L') {
      longName = tarString(data);
      continue;
    }
    if (typeflag === 'K') {
      longLink = tarString(data);
      continue;
    }
    if (typeflag === 'x') {
      pax = paxRecords(data);
      continue;
    }
    if (typeflag === 'g') continue;

    const magic = Buffer.from(h.subarray(257, 263)).toString('latin1');
    let name = tarString(h.subarray(0, 100));
    const prefix = magic === 'ustar\0' ? tarString(h.subarray(345, 500)) : '';
    if (prefix !== '') name = `${prefix}/${name}`;
    name = pax.get('path') ?? longName ?? name;
    const linkname = pax.get('linkpath') ?? longLink ?? tarString(h.subarray(157, 257));
    longName = longLink = undefined;
    pax = new Map();

    const path = name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
    if (path === '' || path === '.') continue;
    const type =
      typeflag === '0' || typeflag === '\0' || typeflag === '7'
        ? 'file'
        : typeflag === '5'
          ? 'dir'
          : typeflag === '2'
            ? 'symlink'
            : typeflag === '1'
              ? 'hardlink'
              : 'other';
    entries.push({ path, type, mode: tarNumber(h.subarray(100, 108)) & 0o7777, linkname, data });
  }
  return entries;
}

/** Decompress a `data.tar.*` member by its name: gz and (on newer Node) zst in-process, xz and zst with the host's tools. */
export function decompressMember(name: string, data: Uint8Array): Uint8Array {
  if (name.endsWith('.tar')) return data;
  if (name.endsWith('.gz')) return zlib.gunzipSync(data);
  const z = zlib as unknown as { zstdDecompressSync?: (b: Uint8Array) => Buffer };
  if (name.endsWith('.zst') && typeof z.zstdDecompressSync === 'function') return z.zstdDecompressSync(data);
  const tool = name.endsWith('.xz') ? 'xz' : name.endsWith('.zst') ? 'zstd' : name.endsWith('.bz2') ? 'bzip2' : undefined;
  if (tool === undefined) throw new Error(`cannot unpack ${name}: unknown compression`);
  if (findOnPath(tool) === undefined) throw new Error(`cannot unpack ${name}: neither dpkg-deb nor ${tool} is installed`);
  const r = spawnSync(tool, ['-dc'], { input: data, maxBuffer: 4 * 1024 * 1024 * 1024 - 1 });
  if (r.error || r.status !== 0) {
    throw new Error(`${tool} -dc failed on ${name}: ${r.error?.message ?? Buffer.from(r.stderr).toString('utf8').trim()}`);
  }
  return r.stdout;
}

function safeRelativePath(path: string): string {
  const parts = path.split('/');
  if (path.startsWith('/') || parts.some((p) => p === '..' || p === '')) {
    throw new Error(`refusing to unpack '${path}': not a plain relative path`);
  }
  return path;
}

/**
 * Unpack the directories and regular files of a .deb's data archive into `dest`, without
 * dpkg-deb. Symlinks, hard links and device nodes are skipped: the guest needs none of them,
 * and skipping links means no write can follow one out of `dest`.
 */
export function extractDebData(deb: Uint8Array, dest: string): void {
  const members = parseAr(deb);
  if (members[0]?.name !== 'debian-binary') throw new SyntaxError('not a Debian package (no debian-binary member first)');
  const data = members.find((m) => m.name.startsWith('data.tar'));
  if (data === undefined) throw new SyntaxError('not a Debian package (no data.tar member)');
  mkdirSync(dest, { recursive: true });
  for (const e of parseTar(decompressMember(data.name, data.data))) {
    const rel = safeRelativePath(e.path);
    if (e.type === 'dir') mkdirSync(join(dest, rel), { recursive: true });
    else if (e.type === 'file') {
      mkdirSync(dirname(join(dest, rel)), { recursive: true });
      writeFileSync(join(dest, rel), e.data, { mode: e.mode & 0o777 });
    }
  }
}

/**
 * Unpack `debPath` into `dest` like `dpkg-deb -x`: with dpkg-deb if it is on PATH, else with
 * {@link extractDebData}. Throws Error with a one-line reason.
 */
export async function extractDeb(
  debPath: string,
  dest: string,
  run: Runner,
  which: (command: string) => string | undefined = (c) => findOnPath(c),
): Promise<'dpkg-deb' | 'builtin'> {
  if (which('dpkg-deb') !== undefined) {
    mkdirSync(dest, { recursive: true });
    const r = await run('dpkg-deb', ['-x', debPath, dest]);
    if (r.status !== 0) throw new Error(`dpkg-deb -x failed: ${lastLine(r)}`);
    return 'dpkg-deb';
  }
  extractDebData(readFileSync(debPath), dest);
  return 'builtin';
}
