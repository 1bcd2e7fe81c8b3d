/**
 * Loading a flat binary image and choosing where a real-mode guest starts.
 * @module
 */

import { readFileSync } from 'node:fs';
import { formatSize, hex } from './args.js';
import { CliError } from './errors.js';

/** Highest load address a real-mode entry point can have (CS=0xFFFF, IP=0xF). */
export const REAL_MODE_LOAD_LIMIT = 0xfffff;

/** Read a flat binary. Failures become one-line {@link CliError}s that name the file. */
export function readImageFile(path: string): Uint8Array {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new CliError(`cannot read '${path}': ${describeFsError(err)}`);
  }
  if (data.length === 0) throw new CliError(`'${path}' is empty: nothing to run`);
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** A short reason for a failed file operation, e.g. "no such file or directory". */
export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    case 'ENOTDIR':
      return 'a parent of it is not a directory';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}

/**
 * Check that an image of `size` bytes loaded at `loadAddr` fits in `memSize` bytes of RAM
 * and that real mode can start there. `name` says what the image is, for messages.
 */
export function checkPlacement(name: string, size: number, loadAddr: number, memSize: number): void {
  if (loadAddr > REAL_MODE_LOAD_LIMIT) {
    throw new CliError(
      `--load-addr ${hex(loadAddr)} is above ${hex(REAL_MODE_LOAD_LIMIT)}: a real-mode guest must start in the first 1M`,
    );
  }
  const end = loadAddr + size;
  if (end > memSize) {
    throw new CliError(
      `${name} (${size} bytes) does not fit in guest memory: loaded at ${hex(loadAddr)} it ends at ${hex(end)}, ` +
        `but --mem is ${formatSize(memSize)} (${hex(memSize)}); use a larger --mem or a lower --load-addr`,
    );
  }
}

/** Real-mode registers for starting at a physical address. */
export interface RealModeEntry {
  cs: number;
  ip: number;
  ss: number;
  sp: number;
}

/**
 * CS:IP for `loadAddr` (0000:addr when it fits in 16 bits, else (addr>>4):(addr&0xF)), and a
 * stack at 0000:SP just below the image when the image is in the first 64K, else 0000:FFFE.
 */
export function realModeEntry(loadAddr: number): RealModeEntry {
  if (loadAddr <= 0xffff) return { cs: 0, ip: loadAddr, ss: 0, sp: loadAddr };
  return { cs: loadAddr >>> 4, ip: loadAddr & 0xf, ss: 0, sp: 0xfffe };
}
