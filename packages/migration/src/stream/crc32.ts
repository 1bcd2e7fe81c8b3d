/**
 * CRC-32 (IEEE 802.3, as zlib and PNG use). Node has `zlib.crc32` since 20.15 / 22.2; older
 * Node 20 releases get a table-driven fallback with the same results.
 * @module
 */
import * as zlib from 'node:zlib';

type Crc32Fn = (data: Uint8Array, value?: number) => number;

let table: Uint32Array | undefined;

/** The portable implementation (also used by the tests to cross-check zlib's). */
export function crc32Portable(data: Uint8Array, value = 0): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = (value ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const native = (zlib as unknown as { crc32?: Crc32Fn }).crc32;

/** CRC-32 of `data`, continuing from `value` (the CRC of what came before). */
export const crc32: Crc32Fn = typeof native === 'function' ? (data, value = 0) => native(data, value) >>> 0 : crc32Portable;
