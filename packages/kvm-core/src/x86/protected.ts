/**
 * Protected-mode segmentation: descriptor loads with their checks, interrupt and exception
 * delivery through the IDT (with the stack switch through the TSS), IRET and far transfers.
 * Every check names its fault and error code as in the Intel SDM (vol. 3, ch. 5–7).
 */
import type { X86Cpu } from './cpu.js';
import { AR_DB, AR_P, AR_S, AR_UNUSABLE, CS, DS, ES, EmulationGap, FS, GS, SS, TR } from './constants.js';
import { Vector } from './exceptions.js';
import { IF, NT, RF, TF, VM } from './flags.js';

/** The two dwords of a descriptor, read by `readDescriptor`. */
let descLo = 0;
let descHi = 0;

/** Segment attributes (VMX access-rights layout) of the descriptor last read. */
function descAr(): number {
  return ((descHi >>> 8) & 0xff) | ((descHi >>> 8) & 0xf000);
}
function descBase(): number {
  return ((descLo >>> 16) | ((descHi & 0xff) << 16) | (descHi & 0xff000000)) | 0;
}
function descLimit(): number {
  const raw = (descLo & 0xffff) | (descHi & 0xf0000);
  return descHi & (1 << 23) ? ((raw << 12) | 0xfff) >>> 0 : raw;
}
function descDpl(): number {
  return (descHi >>> 13) & 3;
}
function descPresent(): boolean {
  return (descHi & (1 << 15)) !== 0;
}
/** type[3:0] | S << 4 */
function descKind(): number {
  return (descHi >>> 8) & 0x1f;
}

/** Reads the GDT/LDT descriptor of `sel` into descLo/descHi; #GP(sel) if outside the table. */
function readDescriptor(c: X86Cpu, sel: number, vector: number = Vector.GP): void {
  const index = sel & 0xfff8;
  let base: number, limit: number;
  if (sel & 4) {
    if (c.segAr[6]! & AR_UNUSABLE || c.segSel[6] === 0) c.fault(vector, sel & 0xfffc);
    base = c.segBase[6]!; limit = c.segLimit[6]!;
  } else {
    base = c.gdtBase; limit = c.gdtLimit;
  }
  if (index + 7 > limit) c.fault(vector, sel & 0xfffc);
  c.beginSupervisorAccess();
  descLo = c.readLin32((base + index) | 0);
  descHi = c.readLin32((base + index + 4) | 0);
  c.endSupervisorAccess();
}

/** Sets the accessed bit of the descriptor last read (at `sel`), as the CPU does on a load. */
function markAccessed(c: X86Cpu, sel: number): void {
  if (descHi & 0x100) return;
  const base = sel & 4 ? c.segBase[6]! : c.gdtBase;
  descHi |= 0x100;
  c.beginSupervisorAccess();
  c.writeLin32((base + (sel & 0xfff8) + 4) | 0, descHi);
  c.endSupervisorAccess();
}

function loadFromDescriptor(c: X86Cpu, seg: number, sel: number): void {
  c.loadSegRaw(seg, sel, descBase(), descLimit(), descAr());
}

/** MOV/POP/LxS to a data or stack segment register in protected mode. */
export function loadDataSegment(c: X86Cpu, seg: number, sel: number): void {
  const rpl = sel & 3;
  if ((sel & 0xfffc) === 0) {
    if (seg === SS) c.fault(Vector.GP, 0);
    c.loadSegRaw(seg, sel, 0, 0, AR_UNUSABLE);
    return;
  }
  readDescriptor(c, sel);
  const kind = descKind(), dpl = descDpl();
  if (seg === SS) {
    // A writable data segment at exactly the current privilege.
    if (rpl !== c.cpl || dpl !== c.cpl || (kind & 0x1a) !== 0x12) c.fault(Vector.GP, sel & 0xfffc);
    if (!descPresent()) c.fault(Vector.SS, sel & 0xfffc);
  } else {
    // Data, or readable code; privilege applies unless the code is conforming.
    if ((kind & 0x10) === 0 || (kind & 0x1a) === 0x18) c.fault(Vector.GP, sel & 0xfffc);
    const conformingCode = (kind & 0x1c) === 0x1c;
    if (!conformingCode && dpl < Math.max(c.cpl, rpl)) c.fault(Vector.GP, sel & 0xfffc);
    if (!descPresent()) c.fault(Vector.NP, sel & 0xfffc);
  }
  markAccessed(c, sel);
  loadFromDescriptor(c, seg, sel);
  if (seg === SS) c.updateMode();
}

/** Checks and loads a code segment for a far JMP/CALL/RET/IRET or a gate; the CPL becomes `newCpl`. */
function loadCodeSegment(c: X86Cpu, sel: number, newCpl: number): void {
  markAccessed(c, sel);
  loadFromDescriptor(c, CS, (sel & 0xfffc) | newCpl);
  c.updateMode();
  // CS carries the CPL now; SS follows in the same transfer where the level changes.
  c.setCpl(newCpl);
}

/** Checks that the descriptor last read is a present code segment usable from `cpl` with `rpl`. */
function checkCodeTarget(c: X86Cpu, sel: number, cpl: number, rpl: number, forReturn: boolean): void {
  const kind = descKind(), dpl = descDpl();
  if ((kind & 0x18) !== 0x18) c.fault(Vector.GP, sel & 0xfffc);
  const conforming = (kind & 0x4) !== 0;
  if (forReturn) {
    if (rpl < cpl) c.fault(Vector.GP, sel & 0xfffc);
    if (conforming ? dpl > rpl : dpl !== rpl) c.fault(Vector.GP, sel & 0xfffc);
  } else if (conforming ? dpl > cpl : rpl > cpl || dpl !== cpl) {
    c.fault(Vector.GP, sel & 0xfffc);
  }
  if (!descPresent()) c.fault(Vector.NP, sel & 0xfffc);
}

/** Far JMP or CALL to `sel:off` in protected mode (direct code-segment targets). */
export function farTransfer(c: X86Cpu, sel: number, off: number, call: boolean, opsize32: boolean): void {
  if ((sel & 0xfffc) === 0) c.fault(Vector.GP, 0);
  readDescriptor(c, sel);
  if ((descKind() & 0x10) === 0) throw new EmulationGap(`far ${call ? 'CALL' : 'JMP'} through a system descriptor (type ${descKind() & 0xf}): call/task gates`);
  checkCodeTarget(c, sel, c.cpl, sel & 3, false);
  const limit = descLimit();
  if (!opsize32) off &= 0xffff;
  if ((off >>> 0) > limit) c.fault(Vector.GP, 0);
  if (call) {
    const cs = c.segSel[CS]!, ret = c.eip;
    if (opsize32) { c.push32(cs); c.push32(ret); } else { c.push16(cs); c.push16(ret); }
  }
  loadCodeSegment(c, sel, c.cpl);
  c.eip = off | 0;
}

/** RETF in protected mode: same privilege, or a return to an outer level with its stack. */
export function farReturn(c: X86Cpu, extra: number, opsize32: boolean): void {
  const w = opsize32 ? 4 : 2;
  const off = w === 4 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
  const sel = c.read16(SS, c.spOffset(w));
  if ((sel & 0xfffc) === 0) c.fault(Vector.GP, 0);
  readDescriptor(c, sel);
  const rpl = sel & 3;
  checkCodeTarget(c, sel, c.cpl, rpl, true);
  if (rpl === c.cpl) {
    if (((opsize32 ? off : off & 0xffff) >>> 0) > descLimit()) c.fault(Vector.GP, 0);
    loadCodeSegment(c, sel, rpl);
    c.eip = opsize32 ? off : off & 0xffff;
    c.adjustSp(2 * w + extra);
    return;
  }
  const newSp = w === 4 ? c.read32(SS, c.spOffset(2 * w + extra)) : c.read16(SS, c.spOffset(2 * w + extra));
  const newSs = c.read16(SS, c.spOffset(3 * w + extra));
  returnToOuter(c, sel, opsize32 ? off : off & 0xffff, rpl, newSs, newSp, extra, opsize32);
}

function returnToOuter(c: X86Cpu, csSel: number, eip: number, rpl: number, ssSel: number, esp: number, extra: number, opsize32: boolean): void {
  const csLo = descLo, csHi = descHi;
  // The outer stack segment: a writable data segment at the return privilege.
  if ((ssSel & 0xfffc) === 0) c.fault(Vector.GP, 0);
  readDescriptor(c, ssSel);
  if ((ssSel & 3) !== rpl || descDpl() !== rpl || (descKind() & 0x1a) !== 0x12) c.fault(Vector.GP, ssSel & 0xfffc);
  if (!descPresent()) c.fault(Vector.SS, ssSel & 0xfffc);
  const ssLo = descLo, ssHi = descHi;
  descLo = csLo; descHi = csHi;
  if ((eip >>> 0) > descLimit()) c.fault(Vector.GP, 0);
  loadCodeSegment(c, csSel, rpl);
  c.eip = eip | 0;
  descLo = ssLo; descHi = ssHi;
  markAccessed(c, ssSel);
  loadFromDescriptor(c, SS, ssSel);
  c.updateMode();
  if (c.stack32) c.r32[4] = (esp + extra) | 0;
  else c.r16[8] = esp + extra;
  if (!opsize32 && c.stack32) c.r32[4] = c.r32[4]! & 0xffff;
  nullInaccessibleDataSegments(c);
}

/** After a return to an outer level, data segments the new CPL may not use become null. */
function nullInaccessibleDataSegments(c: X86Cpu): void {
  for (const seg of [ES, DS, FS, GS]) {
    const ar = c.segAr[seg]!;
    if (ar & AR_UNUSABLE) continue;
    const dpl = (ar >> 5) & 3;
    const conformingCode = (ar & 0x1c) === 0x1c;
    if (!conformingCode && dpl < c.cpl) c.loadSegRaw(seg, 0, 0, 0, AR_UNUSABLE);
  }
}

/**
 * Delivers interrupt/exception `vector` through the IDT. `software` is INT n/INT3/INTO (gate
 * DPL is checked against CPL). `errorCode` < 0 means no error code is pushed.
 */
export function deliverProtected(c: X86Cpu, vector: number, returnEip: number, errorCode: number, software: boolean): void {
  const ext = software ? 0 : 1;
  const gateSel = vector * 8 + 2 + ext;
  if (vector * 8 + 7 > c.idtLimit) c.fault(Vector.GP, gateSel);
  c.beginSupervisorAccess();
  const lo = c.readLin32((c.idtBase + vector * 8) | 0);
  const hi = c.readLin32((c.idtBase + vector * 8 + 4) | 0);
  c.endSupervisorAccess();
  const type = (hi >>> 8) & 0x1f;
  if (type === 0x05) throw new EmulationGap(`task gate for vector ${vector}`);
  if (type !== 0x06 && type !== 0x07 && type !== 0x0e && type !== 0x0f) c.fault(Vector.GP, gateSel);
  if (software && ((hi >>> 13) & 3) < c.cpl) c.fault(Vector.GP, gateSel);
  if ((hi & 0x8000) === 0) c.fault(Vector.NP, gateSel);
  const gate32 = (type & 0x8) !== 0;
  const trap = (type & 1) !== 0;
  const sel = lo >>> 16;
  const off = gate32 ? (lo & 0xffff) | (hi & 0xffff0000) : lo & 0xffff;

  if ((sel & 0xfffc) === 0) c.fault(Vector.GP, ext);
  readDescriptor(c, sel);
  const kind = descKind(), dpl = descDpl();
  if ((kind & 0x18) !== 0x18 || dpl > c.cpl) c.fault(Vector.GP, (sel & 0xfffc) | ext);
  if (!descPresent()) c.fault(Vector.NP, (sel & 0xfffc) | ext);
  const conforming = (kind & 0x4) !== 0;
  const fromV86 = (c.flags & VM) !== 0;
  const oldFlags = c.getEflags();
  const oldCs = c.segSel[CS]!;
  const w = gate32 ? 4 : 2;

  if (!conforming && dpl < c.cpl) {
    // Inner privilege: switch to the stack the TSS holds for the new level.
    if (fromV86 && dpl !== 0) c.fault(Vector.GP, (sel & 0xfffc) | ext);
    const csLo = descLo, csHi = descHi;
    const tss32 = (c.segAr[TR]! & 0x8) !== 0;
    const slot = tss32 ? 4 + dpl * 8 : 2 + dpl * 4;
    if (slot + (tss32 ? 7 : 3) > c.segLimit[TR]!) c.fault(Vector.TS, c.segSel[TR]! & 0xfffc);
    const tssBase = c.segBase[TR]!;
    c.beginSupervisorAccess();
    const newEsp = tss32 ? c.readLin32((tssBase + slot) | 0) : c.readLin16((tssBase + slot) | 0);
    const newSs = c.readLin16((tssBase + slot + (tss32 ? 4 : 2)) | 0);
    c.endSupervisorAccess();
    if ((newSs & 0xfffc) === 0) c.fault(Vector.TS, ext);
    readDescriptor(c, newSs, Vector.TS);
    if ((newSs & 3) !== dpl || descDpl() !== dpl || (descKind() & 0x1a) !== 0x12) c.fault(Vector.TS, (newSs & 0xfffc) | ext);
    if (!descPresent()) c.fault(Vector.SS, (newSs & 0xfffc) | ext);
    const ssBase = descBase(), ssLimit = descLimit(), ssAr = descAr();
    const oldSs = c.segSel[SS]!, oldEsp = c.r32[4]!;
    // Write the whole frame on the new stack before any register changes.
    const frame: number[] = fromV86
      ? [c.segSel[GS]!, c.segSel[FS]!, c.segSel[DS]!, c.segSel[ES]!, oldSs, oldEsp, oldFlags, oldCs, returnEip]
      : [oldSs, oldEsp, oldFlags, oldCs, returnEip];
    if (errorCode >= 0) frame.push(errorCode);
    const stack32 = (ssAr & AR_DB) !== 0;
    let sp = newEsp;
    c.beginSupervisorAccess();
    for (const v of frame) {
      sp = stack32 ? (sp - w) | 0 : (sp - w) & 0xffff;
      const o = sp >>> 0;
      if (o + w - 1 > ssLimit) c.fault(Vector.SS, (newSs & 0xfffc) | ext);
      if (w === 4) c.writeLin32((ssBase + sp) | 0, v); else c.writeLin16((ssBase + sp) | 0, v);
    }
    c.endSupervisorAccess();
    descLo = csLo; descHi = csHi;
    loadCodeSegment(c, sel, dpl);
    c.loadSegRaw(SS, (newSs & 0xfffc) | dpl, ssBase, ssLimit, ssAr);
    c.updateMode();
    if (c.stack32) c.r32[4] = sp; else c.r16[8] = sp;
    if (fromV86) for (const s of [ES, DS, FS, GS]) c.loadSegRaw(s, 0, 0, 0, AR_UNUSABLE);
  } else {
    if (fromV86) c.fault(Vector.GP, (sel & 0xfffc) | ext);
    if (errorCode >= 0) { /* pushed below */ }
    if (w === 4) { c.push32(oldFlags); c.push32(oldCs); c.push32(returnEip); if (errorCode >= 0) c.push32(errorCode); }
    else { c.push16(oldFlags); c.push16(oldCs); c.push16(returnEip); if (errorCode >= 0) c.push16(errorCode); }
    loadCodeSegment(c, sel, c.cpl);
  }
  if ((off >>> 0) > c.segLimit[CS]!) c.fault(Vector.GP, 0);
  c.eip = off | 0;
  c.flags &= ~(TF | NT | RF | VM | (trap ? 0 : IF));
  c.updateMode();
}

/** IRET in protected mode (not to V86 or through NT yet). */
export function iretProtected(c: X86Cpu, opsize32: boolean): { flags: number } {
  if (c.flags & NT) throw new EmulationGap('IRET with NT set (task return)');
  const w = opsize32 ? 4 : 2;
  const eip = w === 4 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
  const sel = c.read16(SS, c.spOffset(w));
  const flags = w === 4 ? c.read32(SS, c.spOffset(2 * w)) : c.read16(SS, c.spOffset(2 * w));
  if (opsize32 && (flags & VM) && c.cpl === 0) throw new EmulationGap('IRET to virtual-8086 mode');
  if ((sel & 0xfffc) === 0) c.fault(Vector.GP, 0);
  readDescriptor(c, sel);
  const rpl = sel & 3;
  checkCodeTarget(c, sel, c.cpl, rpl, true);
  if (rpl === c.cpl) {
    if ((eip >>> 0) > descLimit()) c.fault(Vector.GP, 0);
    loadCodeSegment(c, sel, rpl);
    c.eip = eip;
    c.adjustSp(3 * w);
    return { flags };
  }
  const esp = w === 4 ? c.read32(SS, c.spOffset(3 * w)) : c.read16(SS, c.spOffset(3 * w));
  const ss = c.read16(SS, c.spOffset(4 * w));
  returnToOuter(c, sel, eip, rpl, ss, esp, 0, opsize32);
  return { flags };
}

/** LLDT / LTR. */
export function loadSystemSegment(c: X86Cpu, ldt: boolean, sel: number): void {
  if ((sel & 0xfffc) === 0) {
    if (!ldt) c.fault(Vector.GP, 0);
    c.loadSegRaw(6, 0, 0, 0, AR_UNUSABLE);
    return;
  }
  if (sel & 4) c.fault(Vector.GP, sel & 0xfffc);
  readDescriptor(c, sel);
  const kind = descKind();
  if (ldt ? kind !== 0x02 : kind !== 0x01 && kind !== 0x09) c.fault(Vector.GP, sel & 0xfffc);
  if (!descPresent()) c.fault(Vector.NP, sel & 0xfffc);
  if (!ldt) {
    // Mark the TSS busy.
    descHi |= 0x200;
    c.beginSupervisorAccess();
    c.writeLin32((c.gdtBase + (sel & 0xfff8) + 4) | 0, descHi);
    c.endSupervisorAccess();
  }
  loadFromDescriptor(c, ldt ? 6 : TR, sel);
}

/** LAR/LSL/VERR/VERW helpers: reads the descriptor of `sel` if visible at CPL/RPL, else returns false. */
export function probeDescriptor(c: X86Cpu, sel: number): { lo: number; hi: number } | null {
  if ((sel & 0xfffc) === 0) return null;
  const tableLimit = sel & 4 ? c.segLimit[6]! : c.gdtLimit;
  if ((sel & 0xfff8) + 7 > tableLimit) return null;
  readDescriptor(c, sel);
  return { lo: descLo, hi: descHi };
}

export { AR_P, AR_S, DS };
