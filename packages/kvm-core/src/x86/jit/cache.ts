/**
 * Compiled blocks, cached by where their code lives (memory slot and offset), with the
 * bookkeeping that keeps them honest when code is written:
 * - a page that holds compiled code is a "code page"; making one drops the CPU's write TLB
 *   entries, so the next guest write to it takes the slow path, which invalidates the page's
 *   blocks (and tells a running block to stop via `jitStale`);
 * - host-side writes (device DMA) go through GuestMemory, which reports them here;
 * - the VMM may also write a slot's buffer directly between two runs, as KVM allows: so a
 *   block checks its code bytes the first time it runs in each run().
 */
import type { X86Cpu } from '../cpu.js';
import { compileBlock, type BlockFn, type CodeReader } from './compiler.js';

/** Executions of a block start before it is compiled: cold code stays interpreted. */
export const COMPILE_THRESHOLD = 16;

interface Entry {
  fn: BlockFn | null;
  hits: number;
  /** The context the block was compiled for; a mismatch recompiles. */
  eip: number;
  csBase: number;
  code32: boolean;
  csLimit: number;
  /** No instruction at this address can be compiled. */
  uncompilable: boolean;
  /** The code bytes the block was compiled from. */
  source: Uint8Array | null;
  /** The `runSerial` of the vCPU when the bytes were last checked. */
  verified: number;
  /**
   * The two blocks that most recently ran right after this one (a block with a conditional
   * branch has two ways out), followed without a lookup.
   */
  succ: Entry | null;
  succ2: Entry | null;
  /** The vCPU's tlbGeneration when the successors were linked: a changed linear-to-physical map breaks the links. */
  succGen: number;
}

export class BlockCache {
  private readonly bySlot: (Map<number, Entry> | undefined)[] = [];
  private readonly codePages: (Uint8Array | undefined)[] = [];
  /** Block offsets per code page, keyed slotId * 2^20 + page. */
  private readonly pageBlocks = new Map<number, number[]>();
  compiled = 0;
  invalidations = 0;
  /** The compiled block that ran last, when nothing ran between it and the next lookup. */
  private last: Entry | null = null;

  /**
   * Runs the compiled block for code at `offset` of slot `slotId` (where EIP points), compiling
   * it once it is hot. Returns false when the interpreter should run the next instruction.
   */
  run(c: X86Cpu, slotId: number, offset: number, reader: CodeReader, mem: Uint8Array): boolean {
    let map = this.bySlot[slotId];
    if (map === undefined) { map = new Map(); this.bySlot[slotId] = map; }
    const eip = c.eip;
    const csBase = c.segBase[1]!, code32 = c.code32, csLimit = c.segLimit[1]!;
    let e = map.get(offset);
    if (e === undefined || e.eip !== eip || e.csBase !== csBase || e.code32 !== code32 || e.csLimit !== csLimit) {
      e = { fn: null, hits: 0, eip, csBase, code32, csLimit, uncompilable: false, source: null, verified: 0, succ: null, succ2: null, succGen: -1 };
      map.set(offset, e);
    }
    if (e.fn !== null) {
      if (e.verified !== c.runSerial) {
        if (!sameBytes(mem, offset, e.source!)) {
          e.fn = null; e.source = null; e.hits = 0;
          return false;
        }
        e.verified = c.runSerial;
      }
      const last = this.last;
      if (last !== null) link(last, e, c.tlbGeneration);
      c.jitStale = false;
      e.fn(c);
      this.last = this.chain(c, e);
      return true;
    }
    this.last = null;
    if (e.uncompilable || ++e.hits < COMPILE_THRESHOLD) return false;
    const block = compileBlock(reader, eip, code32, csLimit);
    if (block.fn === null) { e.uncompilable = true; return false; }
    e.fn = block.fn;
    e.source = mem.slice(offset, offset + block.length);
    e.verified = c.runSerial;
    this.compiled++;
    this.markCodePage(c, slotId, offset);
    c.jitStale = false;
    e.fn(c);
    return true;
  }

  /**
   * Runs successor blocks directly while the time slice lasts: the successor must start where
   * EIP is, be checked this run, and be linked under the current translations and CS.
   */
  private chain(c: X86Cpu, from: Entry): Entry {
    let cur = from;
    while (c.budget > 0 && !c.eventPending && !c.jitStale) {
      if (cur.succGen !== c.tlbGeneration) break;
      const eip = c.eip;
      let s = cur.succ;
      if (s === null || s.eip !== eip) {
        s = cur.succ2;
        if (s === null || s.eip !== eip) break;
      }
      if (s.fn === null || s.verified !== c.runSerial || s.csBase !== c.segBase[1] || s.code32 !== c.code32 || s.csLimit !== c.segLimit[1]) break;
      s.fn(c);
      cur = s;
    }
    return cur;
  }

  private markCodePage(c: X86Cpu, slotId: number, offset: number): void {
    const page = offset >>> 12;
    let pages = this.codePages[slotId];
    if (pages === undefined) {
      const size = c.memory.getSlot(slotId - 1)?.size ?? 0;
      pages = new Uint8Array(Math.ceil(size / 4096) + 1);
      this.codePages[slotId] = pages;
    }
    const key = slotId * 0x100000 + page;
    const list = this.pageBlocks.get(key);
    if (list) list.push(offset); else this.pageBlocks.set(key, [offset]);
    if (pages[page] === 0) {
      pages[page] = 1;
      // Writes to this page must now take the slow path, where they invalidate its blocks.
      c.flushTlb(true);
    }
  }

  /** Whether a page of a slot holds compiled code. */
  isCodePage(slotId: number, page: number): boolean {
    const pages = this.codePages[slotId];
    return pages !== undefined && pages[page] === 1;
  }

  /** Drops the blocks of one code page (a write is about to change it). */
  invalidatePage(c: X86Cpu, slotId: number, page: number): void {
    const pages = this.codePages[slotId];
    if (pages === undefined || pages[page] !== 1) return;
    pages[page] = 0;
    const key = slotId * 0x100000 + page;
    const map = this.bySlot[slotId];
    for (const off of this.pageBlocks.get(key) ?? []) {
      const e = map?.get(off);
      if (e) e.fn = null; // blocks linked to it must not run it
      map?.delete(off);
    }
    this.last = null;
    this.pageBlocks.delete(key);
    this.invalidations++;
    c.jitStale = true;
  }

  /** Host-side writes (devices): invalidates the code pages they touch. */
  hostWrite(c: X86Cpu, slotId: number, offset: number, len: number): void {
    const pages = this.codePages[slotId];
    if (pages === undefined) return;
    for (let p = offset >>> 12; p <= (offset + len - 1) >>> 12; p++) if (pages[p] === 1) this.invalidatePage(c, slotId, p);
  }

  /** Drops everything (memory map changes). */
  clear(): void {
    this.last = null;
    this.bySlot.length = 0;
    this.codePages.length = 0;
    this.pageBlocks.clear();
  }
}

/** Records that `to` ran right after `from`, keeping the two most recent distinct successors. */
function link(from: Entry, to: Entry, gen: number): void {
  if (from.succGen !== gen) {
    from.succ = to;
    from.succ2 = null;
    from.succGen = gen;
  } else if (from.succ !== to) {
    from.succ2 = from.succ;
    from.succ = to;
  }
}

function sameBytes(mem: Uint8Array, offset: number, source: Uint8Array): boolean {
  for (let i = 0; i < source.length; i++) if (mem[offset + i] !== source[i]) return false;
  return true;
}
