/**
 * XBZRLE-style page deltas: a re-sent page is encoded against the copy sent before it, as
 * runs of `varint unchanged-bytes | varint changed-bytes | changed bytes`. Runs of changed
 * bytes separated by fewer than {@link GAP_MERGE} equal bytes are merged (a new run costs at
 * least two header bytes). Trailing unchanged bytes are not encoded.
 * @module
 */
import { MigrationError } from '../errors.js';

/** Equal gaps shorter than this are folded into the surrounding changed run. */
export const GAP_MERGE = 3;

function putVarint(out: Uint8Array, o: number, v: number): number {
  while (v >= 0x80) {
    out[o++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  out[o++] = v;
  return o;
}

/**
 * The delta turning `prev` into `cur` (equal lengths), written to `out`; returns its length,
 * or -1 when it would exceed `limit` bytes (send the page raw then). A zero-length delta means
 * the page is unchanged.
 */
export function xbzrleEncode(prev: Uint8Array, cur: Uint8Array, out: Uint8Array, limit = out.length): number {
  const n = cur.length;
  if (prev.length !== n) throw new RangeError('xbzrle: pages differ in size');
  const max = Math.min(limit, out.length);
  // Whole 32-bit words are compared when both pages are aligned, to skip equal stretches fast.
  const aligned = prev.byteOffset % 4 === 0 && cur.byteOffset % 4 === 0 && n % 4 === 0;
  const pw = aligned ? new Uint32Array(prev.buffer, prev.byteOffset, n >>> 2) : null;
  const cw = aligned ? new Uint32Array(cur.buffer, cur.byteOffset, n >>> 2) : null;
  let i = 0;
  let o = 0;
  while (i < n) {
    let s = i;
    if (pw && cw) {
      let w = s >>> 2;
      if ((s & 3) === 0) {
        while (w < cw.length && pw[w] === cw[w]) w++;
        s = w << 2;
      }
    }
    while (s < n && prev[s] === cur[s]) s++;
    if (s >= n) break;
    let e = s + 1;
    while (e < n) {
      if (prev[e] !== cur[e]) {
        e++;
        continue;
      }
      let g = e;
      while (g < n && g - e < GAP_MERGE && prev[g] === cur[g]) g++;
      if (g < n && g - e < GAP_MERGE) {
        e = g; // a short equal gap, then another change: keep going
        continue;
      }
      break;
    }
    const len = e - s;
    // 5 bytes is the longest varint for a page-sized value.
    if (o + 10 + len > max) return -1;
    o = putVarint(out, o, s - i);
    o = putVarint(out, o, len);
    out.set(cur.subarray(s, e), o);
    o += len;
    i = e;
  }
  return o;
}

/** Applies a delta from {@link xbzrleEncode} to `page` in place; throws MigrationError if malformed. */
export function xbzrleDecode(delta: Uint8Array, page: Uint8Array, where = 'page'): void {
  let i = 0;
  let pos = 0;
  const bad = (why: string): MigrationError => new MigrationError('corrupt', `corrupt stream: XBZRLE delta for ${where} ${why}`);
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    for (;;) {
      if (i >= delta.length) throw bad(`ends inside a run length (byte ${i})`);
      const b = delta[i++]!;
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
      shift += 7;
      if (shift > 28) throw bad(`has an over-long run length (byte ${i})`);
    }
  };
  while (i < delta.length) {
    pos += varint();
    const len = varint();
    if (len === 0) throw bad(`has an empty changed run (byte ${i})`);
    if (pos + len > page.length) throw bad(`writes past the end of the page (offset ${pos}, ${len} bytes)`);
    if (i + len > delta.length) throw bad(`ends inside a changed run (${delta.length - i} of ${len} bytes)`);
    page.set(delta.subarray(i, i + len), pos);
    i += len;
    pos += len;
  }
}
