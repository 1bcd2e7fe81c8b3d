/**
 * Parsing and printing of the sizes and addresses given on the command line.
 * @module
 */

import { CliError } from './errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Smallest guest RAM `kvmts run` accepts: the real-mode IVT, a stack and a boot sector fit. */
export const MIN_MEM_SIZE = 64 * KiB;
/** Largest guest RAM: below the 4 GiB line, leaving room for MMIO and firmware. */
export const MAX_MEM_SIZE = 3 * GiB;
/** Guest RAM is mapped in whole pages. */
export const MEM_ALIGN = 4 * KiB;

const UNITS: Record<string, number> = { '': 1, k: KiB, m: MiB, g: GiB };

/**
 * A byte count: decimal digits with an optional binary suffix K, M or G (any case, optional
 * "B"/"iB"), or a 0x hex number of bytes. `what` names the option in error messages.
 */
export function parseSize(text: string, what = '--mem'): number {
  const t = text.trim();
  let n: number;
  const hex = /^0x([0-9a-f]+)$/i.exec(t);
  const dec = /^(\d+)\s*([kmg]?)(i?b)?$/i.exec(t);
  if (hex) n = parseInt(hex[1]!, 16);
  else if (dec) n = parseInt(dec[1]!, 10) * UNITS[dec[2]!.toLowerCase()]!;
  else throw new CliError(`invalid ${what} '${text}': expected a size such as 16M, 512K, 1G or 65536`);
  if (!Number.isSafeInteger(n)) throw new CliError(`invalid ${what} '${text}': too large`);
  return n;
}

/** Check a guest RAM size against the limits above. */
export function checkMemSize(bytes: number, text: string): void {
  if (bytes < MIN_MEM_SIZE) {
    throw new CliError(`--mem ${text} is too small: at least ${formatSize(MIN_MEM_SIZE)} is needed`);
  }
  if (bytes > MAX_MEM_SIZE) {
    throw new CliError(`--mem ${text} is too large: at most ${formatSize(MAX_MEM_SIZE)} is supported`);
  }
  if (bytes % MEM_ALIGN !== 0) {
    throw new CliError(`--mem ${text} is not a multiple of ${formatSize(MEM_ALIGN)} (the page size)`);
  }
}

/** An address: 0x hex or decimal. `what` names the option in error messages. */
export function parseAddress(text: string, what = '--load-addr'): number {
  const t = text.trim();
  let n: number;
  if (/^0x[0-9a-f]+$/i.test(t)) n = parseInt(t.slice(2), 16);
  else if (/^\d+$/.test(t)) n = parseInt(t, 10);
  else throw new CliError(`invalid ${what} '${text}': expected an address such as 0x7c00 or 31744`);
  if (!Number.isSafeInteger(n)) throw new CliError(`invalid ${what} '${text}': too large`);
  return n;
}

/** `16M`, `512K`, `3G`, or a plain byte count when no unit divides it. */
export function formatSize(bytes: number): string {
  if (bytes !== 0 && bytes % GiB === 0) return `${bytes / GiB}G`;
  if (bytes !== 0 && bytes % MiB === 0) return `${bytes / MiB}M`;
  if (bytes !== 0 && bytes % KiB === 0) return `${bytes / KiB}K`;
  return `${bytes} bytes`;
}

/** `0x7c00`. */
export function hex(v: number): string {
  return `0x${v.toString(16)}`;
}
