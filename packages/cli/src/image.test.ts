import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, it, expect } from 'vitest';
import { checkPlacement, readImageFile, realModeEntry } from './image.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-image-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('readImageFile', () => {
  it('reads a file', () => {
    const f = join(dir, 'ok.bin');
    writeFileSync(f, new Uint8Array([0xf4, 0x90]));
    expect(Array.from(readImageFile(f))).toEqual([0xf4, 0x90]);
  });

  it('names the file in every failure', () => {
    expect(() => readImageFile(join(dir, 'missing.bin'))).toThrow(`cannot read '${join(dir, 'missing.bin')}': no such file or directory`);
    expect(() => readImageFile(dir)).toThrow(`cannot read '${dir}': is a directory`);
    const empty = join(dir, 'empty.bin');
    writeFileSync(empty, new Uint8Array(0));
    expect(() => readImageFile(empty)).toThrow(`'${empty}' is empty: nothing to run`);
  });

  it.skipIf(process.getuid?.() === 0)('reports unreadable files', () => {
    const f = join(dir, 'secret.bin');
    writeFileSync(f, new Uint8Array([1]));
    chmodSync(f, 0);
    expect(() => readImageFile(f)).toThrow(/permission denied/);
  });
});

describe('checkPlacement', () => {
  it('accepts an image that ends exactly at the end of RAM', () => {
    expect(() => checkPlacement('x', 0x400, 0xfc00, 0x10000)).not.toThrow();
  });

  it('says by how much an image does not fit', () => {
    expect(() => checkPlacement("image 'a.bin'", 0x401, 0xfc00, 0x10000)).toThrow(
      "image 'a.bin' (1025 bytes) does not fit in guest memory: loaded at 0xfc00 it ends at 0x10001, but --mem is 64K (0x10000)",
    );
  });

  it('requires a real-mode reachable start', () => {
    expect(() => checkPlacement('x', 1, 0xfffff, 16 << 20)).not.toThrow();
    expect(() => checkPlacement('x', 1, 0x100000, 16 << 20)).toThrow(/above 0xfffff/);
  });
});

describe('realModeEntry', () => {
  it('uses CS=0 below 64K', () => {
    expect(realModeEntry(0x7c00)).toEqual({ cs: 0, ip: 0x7c00, ss: 0, sp: 0x7c00 });
    expect(realModeEntry(0xffff)).toEqual({ cs: 0, ip: 0xffff, ss: 0, sp: 0xffff });
  });

  it('splits higher addresses into segment and a small offset', () => {
    expect(realModeEntry(0x10000)).toEqual({ cs: 0x1000, ip: 0, ss: 0, sp: 0xfffe });
    expect(realModeEntry(0x12345)).toEqual({ cs: 0x1234, ip: 5, ss: 0, sp: 0xfffe });
    expect(realModeEntry(0xfffff)).toEqual({ cs: 0xffff, ip: 0xf, ss: 0, sp: 0xfffe });
  });
});
