/**
 * Protected-mode segmentation: descriptor loads with their checks, interrupt and exception
 * delivery through the IDT (with the stack switch through the TSS), IRET and far transfers,
 * call gates, hardware task switches, returns to virtual-8086 mode and the I/O permission
 * bitmap. Every check names its fault and error code as in the Intel SDM (vol. 3, ch. 5–7, 20).
 *
 * Faults and state: everything a transfer can fault on is checked (and every frame written)
 * before the first register changes, so the rollback in the run loop undoes a faulting
 * transfer. The one deliberate exception is a task switch: once the new task's state is
 * committed, a fault (say, a bad segment selector in the new TSS) belongs to the new task,
 * so `switchTask` moves the instruction's restart point (startEip/startEsp) to it.
 */
import type { X86Cpu } from './cpu.js';
import { AR_DB, AR_P, AR_S, AR_UNUSABLE, CR0_PG, CR0_TS, CS, DS, ES, FS, GS, LDTR, SS, TR } from './constants.js';
import { FAULT, Vector } from './exceptions.js';
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

/**
 * Reads the GDT/LDT descriptor of `sel` into descLo/descHi; `vector`(sel | ext) if outside the
 * table. `ext` is the EXT bit of error codes raised while delivering an external event.
 */
function readDescriptor(c: X86Cpu, sel: number, vector: number = Vector.GP, ext = 0): void {
  const index = sel & 0xfff8;
  const err = (sel & 0xfffc) | ext;
  let base: number, limit: number;
  if (sel & 4) {
    if (c.segAr[LDTR]! & AR_UNUSABLE || c.segSel[LDTR] === 0) c.fault(vector, err);
    base = c.segBase[LDTR]!; limit = c.segLimit[LDTR]!;
  } else {
    base = c.gdtBase; limit = c.gdtLimit;
  }
  if (index + 7 > limit) c.fault(vector, err);
  c.beginSupervisorAccess();
  descLo = c.readLin32((base + index) | 0);
  descHi = c.readLin32((base + index + 4) | 0);
  c.endSupervisorAccess();
}

/** Sets the accessed bit of the descriptor last read (at `sel`), as the CPU does on a load. */
function markAccessed(c: X86Cpu, sel: number): void {
  if (descHi & 0x100) return;
  const base = sel & 4 ? c.segBase[LDTR]! : c.gdtBase;
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

// --- Inner stacks (interrupt/trap gates, call gates) ------------------------------------------

/** The inner-level stack read from the TSS by `readInnerStack`. */
let stkSel = 0, stkEsp = 0, stkBase = 0, stkLimit = 0, stkAr = 0;

/**
 * Reads SS:ESP for privilege level `dpl` from the current TSS and checks the stack segment
 * (#TS for the TSS or the selector, #SS when not present), into stk*. Clobbers descLo/descHi.
 */
function readInnerStack(c: X86Cpu, dpl: number, ext: number): void {
  const tss32 = (c.segAr[TR]! & 0x8) !== 0;
  const slot = tss32 ? 4 + dpl * 8 : 2 + dpl * 4;
  if (slot + (tss32 ? 5 : 3) > c.segLimit[TR]!) c.fault(Vector.TS, (c.segSel[TR]! & 0xfffc) | ext);
  const tssBase = c.segBase[TR]!;
  c.beginSupervisorAccess();
  stkEsp = tss32 ? c.readLin32((tssBase + slot) | 0) : c.readLin16((tssBase + slot) | 0);
  stkSel = c.readLin16((tssBase + slot + (tss32 ? 4 : 2)) | 0);
  c.endSupervisorAccess();
  if ((stkSel & 0xfffc) === 0) c.fault(Vector.TS, ext);
  readDescriptor(c, stkSel, Vector.TS, ext);
  const err = (stkSel & 0xfffc) | ext;
  if ((stkSel & 3) !== dpl || descDpl() !== dpl || (descKind() & 0x1a) !== 0x12) c.fault(Vector.TS, err);
  if (!descPresent()) c.fault(Vector.SS, err);
  markAccessed(c, stkSel);
  stkBase = descBase(); stkLimit = descLimit(); stkAr = descAr();
}

/**
 * Writes `frame` (first element at the highest address) below `sp` on the stack stk*, in
 * `w`-byte slots, checking each against the limit (#SS(err)); returns the new stack pointer.
 */
function writeFrame(c: X86Cpu, frame: readonly number[], w: number, sp: number, err: number): number {
  const stack32 = (stkAr & AR_DB) !== 0;
  c.beginSupervisorAccess();
  for (const v of frame) {
    sp = stack32 ? (sp - w) | 0 : (sp - w) & 0xffff;
    if ((sp >>> 0) + w - 1 > stkLimit) c.fault(Vector.SS, err);
    if (w === 4) c.writeLin32((stkBase + sp) | 0, v); else c.writeLin16((stkBase + sp) | 0, v);
  }
  c.endSupervisorAccess();
  return sp;
}

/** Makes the stack stk* current at privilege `dpl` with the stack pointer `sp`. */
function commitInnerStack(c: X86Cpu, dpl: number, sp: number): void {
  c.loadSegRaw(SS, (stkSel & 0xfffc) | dpl, stkBase, stkLimit, stkAr);
  c.updateMode();
  if (c.stack32) c.r32[4] = sp; else c.r16[8] = sp;
}

// --- Far JMP / CALL ---------------------------------------------------------------------------

/** Far JMP or CALL to `sel:off` in protected mode: a code segment, a call gate, a task gate or a TSS. */
export function farTransfer(c: X86Cpu, sel: number, off: number, call: boolean, opsize32: boolean): void {
  if ((sel & 0xfffc) === 0) c.fault(Vector.GP, 0);
  readDescriptor(c, sel);
  if ((descKind() & 0x10) === 0) {
    systemTransfer(c, sel, call);
    return;
  }
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

/** Far JMP/CALL through the system descriptor last read (at `sel`): call gate, task gate or TSS. */
function systemTransfer(c: X86Cpu, sel: number, call: boolean): void {
  const kind = descKind(), dpl = descDpl(), rpl = sel & 3;
  const how = call ? Switch.Call : Switch.Jmp;
  switch (kind) {
    case 0x04: case 0x0c:
      callGate(c, sel, call);
      return;
    case 0x05: { // Task gate: the TSS it names must be in the GDT.
      if (dpl < c.cpl || dpl < rpl) c.fault(Vector.GP, sel & 0xfffc);
      if (!descPresent()) c.fault(Vector.NP, sel & 0xfffc);
      const tss = descLo >>> 16;
      if (tss & 4) c.fault(Vector.GP, tss & 0xfffc);
      readDescriptor(c, tss);
      checkTssDescriptor(c, tss, how, 0);
      finishTaskSwitch(c, switchTask(c, tss, how, 0, c.eip), -1, 0);
      return;
    }
    case 0x01: case 0x03: case 0x09: case 0x0b: // TSS (the offset of the instruction is ignored)
      if (dpl < c.cpl || dpl < rpl) c.fault(Vector.GP, sel & 0xfffc);
      checkTssDescriptor(c, sel, how, 0);
      finishTaskSwitch(c, switchTask(c, sel, how, 0, c.eip), -1, 0);
      return;
    default:
      c.fault(Vector.GP, sel & 0xfffc);
  }
}

/**
 * Far CALL/JMP through the call gate last read (at `gateSel`). A CALL to a more privileged
 * non-conforming segment switches to the stack the TSS holds for that level and copies the
 * gate's parameter count of words (16-bit gate) or dwords (32-bit gate) onto it.
 */
function callGate(c: X86Cpu, gateSel: number, call: boolean): void {
  const gdpl = descDpl();
  if (gdpl < c.cpl || (gateSel & 3) > gdpl) c.fault(Vector.GP, gateSel & 0xfffc);
  if (!descPresent()) c.fault(Vector.NP, gateSel & 0xfffc);
  const gate32 = (descHi & 0x800) !== 0;
  const csSel = descLo >>> 16;
  const target = gate32 ? (descLo & 0xffff) | (descHi & 0xffff0000) : descLo & 0xffff;
  const count = descHi & 0x1f;
  if ((csSel & 0xfffc) === 0) c.fault(Vector.GP, 0);
  readDescriptor(c, csSel);
  const kind = descKind(), dpl = descDpl();
  const conforming = (kind & 0x4) !== 0;
  if ((kind & 0x18) !== 0x18) c.fault(Vector.GP, csSel & 0xfffc);
  // CALL may go inwards; JMP only to the same level (or to conforming code at or above it).
  if ((call || conforming) ? dpl > c.cpl : dpl !== c.cpl) c.fault(Vector.GP, csSel & 0xfffc);
  if (!descPresent()) c.fault(Vector.NP, csSel & 0xfffc);
  const limit = descLimit();
  const w = gate32 ? 4 : 2;

  if (!call || conforming || dpl === c.cpl) {
    if (call) {
      const cs = c.segSel[CS]!, ret = c.eip;
      if (w === 4) { c.push32(cs); c.push32(ret); } else { c.push16(cs); c.push16(ret); }
    }
    if ((target >>> 0) > limit) c.fault(Vector.GP, 0);
    loadCodeSegment(c, csSel, c.cpl);
    c.eip = target | 0;
    return;
  }

  // More privileged: new stack from the TSS, then old SS:ESP, the parameters, CS:EIP.
  const csLo = descLo, csHi = descHi;
  readInnerStack(c, dpl, 0);
  const frame: number[] = [c.segSel[SS]!, c.r32[4]!];
  for (let i = count - 1; i >= 0; i--) {
    frame.push(w === 4 ? c.read32(SS, c.spOffset(i * 4)) : c.read16(SS, c.spOffset(i * 2)));
  }
  frame.push(c.segSel[CS]!, c.eip);
  if ((target >>> 0) > limit) c.fault(Vector.GP, 0);
  const sp = writeFrame(c, frame, w, stkEsp, stkSel & 0xfffc);
  descLo = csLo; descHi = csHi;
  loadCodeSegment(c, csSel, dpl);
  commitInnerStack(c, dpl, sp);
  c.eip = target | 0;
}

// --- RETF ---------------------------------------------------------------------------------

/**
 * RETF in protected mode: same privilege, or a return to an outer level with its stack.
 * `extra` (RETF imm16) is released from both stacks: the parameters a call gate copied.
 */
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

// --- Interrupts and exceptions -------------------------------------------------------------------

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
  if (type !== 0x05 && type !== 0x06 && type !== 0x07 && type !== 0x0e && type !== 0x0f) c.fault(Vector.GP, gateSel);
  if (software && ((hi >>> 13) & 3) < c.cpl) c.fault(Vector.GP, gateSel);
  if ((hi & 0x8000) === 0) c.fault(Vector.NP, gateSel);
  if (type === 0x05) {
    taskGateInterrupt(c, lo >>> 16, returnEip, errorCode, ext);
    return;
  }
  const gate32 = (type & 0x8) !== 0;
  const trap = (type & 1) !== 0;
  const sel = lo >>> 16;
  const off = gate32 ? (lo & 0xffff) | (hi & 0xffff0000) : lo & 0xffff;

  if ((sel & 0xfffc) === 0) c.fault(Vector.GP, ext);
  readDescriptor(c, sel, Vector.GP, ext);
  const kind = descKind(), dpl = descDpl();
  if ((kind & 0x18) !== 0x18 || dpl > c.cpl) c.fault(Vector.GP, (sel & 0xfffc) | ext);
  if (!descPresent()) c.fault(Vector.NP, (sel & 0xfffc) | ext);
  const conforming = (kind & 0x4) !== 0;
  const fromV86 = (c.flags & VM) !== 0;
  const oldFlags = c.getEflags();
  const oldCs = c.segSel[CS]!;
  const w = gate32 ? 4 : 2;
  const limit = descLimit();

  if (!conforming && dpl < c.cpl) {
    // Inner privilege: switch to the stack the TSS holds for the new level.
    if (fromV86 && dpl !== 0) c.fault(Vector.GP, (sel & 0xfffc) | ext);
    const csLo = descLo, csHi = descHi;
    readInnerStack(c, dpl, ext);
    if ((off >>> 0) > limit) c.fault(Vector.GP, ext);
    // Write the whole frame on the new stack before any register changes.
    const frame: number[] = fromV86
      ? [c.segSel[GS]!, c.segSel[FS]!, c.segSel[DS]!, c.segSel[ES]!, c.segSel[SS]!, c.r32[4]!, oldFlags, oldCs, returnEip]
      : [c.segSel[SS]!, c.r32[4]!, oldFlags, oldCs, returnEip];
    if (errorCode >= 0) frame.push(errorCode);
    const sp = writeFrame(c, frame, w, stkEsp, (stkSel & 0xfffc) | ext);
    descLo = csLo; descHi = csHi;
    loadCodeSegment(c, sel, dpl);
    commitInnerStack(c, dpl, sp);
    if (fromV86) for (const s of [ES, DS, FS, GS]) c.loadSegRaw(s, 0, 0, 0, AR_UNUSABLE);
  } else {
    if (fromV86) c.fault(Vector.GP, (sel & 0xfffc) | ext);
    if (w === 4) { c.push32(oldFlags); c.push32(oldCs); c.push32(returnEip); if (errorCode >= 0) c.push32(errorCode); }
    else { c.push16(oldFlags); c.push16(oldCs); c.push16(returnEip); if (errorCode >= 0) c.push16(errorCode); }
    // Checked before CS changes, so that a failed delivery leaves nothing to undo but ESP.
    if ((off >>> 0) > limit) c.fault(Vector.GP, ext);
    loadCodeSegment(c, sel, c.cpl);
  }
  c.eip = off | 0;
  c.flags &= ~(TF | NT | RF | VM | (trap ? 0 : IF));
  c.updateMode();
}

/** An interrupt or exception through a task gate in the IDT naming TSS selector `tss`. */
function taskGateInterrupt(c: X86Cpu, tss: number, returnEip: number, errorCode: number, ext: number): void {
  if (tss & 4) c.fault(Vector.GP, (tss & 0xfffc) | ext);
  readDescriptor(c, tss, Vector.GP, ext);
  checkTssDescriptor(c, tss, Switch.Int, ext);
  finishTaskSwitch(c, switchTask(c, tss, Switch.Int, ext, returnEip), errorCode, ext);
}

// --- IRET -------------------------------------------------------------------------------------

/**
 * IRET in protected mode (not in V86 mode: the interpreter handles that). Returns the EFLAGS
 * image for the caller to write with its privilege rules, or null when the return has set
 * EFLAGS itself (a task return through NT, or a return to virtual-8086 mode).
 */
export function iretProtected(c: X86Cpu, opsize32: boolean): { flags: number } | null {
  if (c.flags & NT) {
    taskReturn(c);
    return null;
  }
  const w = opsize32 ? 4 : 2;
  const eip = w === 4 ? c.read32(SS, c.sp) : c.read16(SS, c.sp);
  const sel = c.read16(SS, c.spOffset(w));
  const flags = w === 4 ? c.read32(SS, c.spOffset(2 * w)) : c.read16(SS, c.spOffset(2 * w));
  if (opsize32 && (flags & VM) && c.cpl === 0) {
    returnToV86(c);
    return null;
  }
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

/** Segment attributes in virtual-8086 mode: present, DPL 3, read/write data, accessed (as VMX has them). */
const V86_AR = AR_P | AR_S | (3 << 5) | 0x3;

/**
 * IRETD at CPL 0 with VM set in the EFLAGS image: pops EIP, CS, EFLAGS, ESP, SS, ES, DS, FS,
 * GS (dwords; selectors in the low words) and resumes in virtual-8086 mode at CPL 3.
 */
function returnToV86(c: X86Cpu): void {
  const eip = c.read32(SS, c.sp);
  const cs = c.read16(SS, c.spOffset(4));
  const flags = c.read32(SS, c.spOffset(8));
  const esp = c.read32(SS, c.spOffset(12));
  const ss = c.read16(SS, c.spOffset(16));
  const es = c.read16(SS, c.spOffset(20));
  const ds = c.read16(SS, c.spOffset(24));
  const fs = c.read16(SS, c.spOffset(28));
  const gs = c.read16(SS, c.spOffset(32));
  // The V86 code segment's limit is 0xFFFF.
  if ((eip >>> 0) > 0xffff) c.fault(Vector.GP, 0);
  c.setEflags(flags);
  c.loadSegRaw(ES, es, es << 4, 0xffff, V86_AR);
  c.loadSegRaw(CS, cs, cs << 4, 0xffff, V86_AR);
  c.loadSegRaw(SS, ss, ss << 4, 0xffff, V86_AR);
  c.loadSegRaw(DS, ds, ds << 4, 0xffff, V86_AR);
  c.loadSegRaw(FS, fs, fs << 4, 0xffff, V86_AR);
  c.loadSegRaw(GS, gs, gs << 4, 0xffff, V86_AR);
  c.r32[4] = esp;
  c.eip = eip;
  c.updateMode();
}

// --- Task switching (SDM vol. 3, 7.3) ---------------------------------------------------------

/** What started a task switch. */
const enum Switch { Jmp = 0, Call = 1, Iret = 2, Int = 3 }

/** The new task's registers and selectors, read from its TSS before anything is committed. */
const tssRegs = new Int32Array(8);
const tssSegs = new Uint16Array(6);

/**
 * Checks the TSS descriptor last read (GDT selector `sel`) as the target of a task switch: a
 * TSS in the GDT, available (busy for IRET), present. IRET reports a bad target as #TS, the
 * others as #GP.
 */
function checkTssDescriptor(c: X86Cpu, sel: number, how: Switch, ext: number): void {
  const kind = descKind();
  const err = (sel & 0xfffc) | ext;
  const bad = how === Switch.Iret ? Vector.TS : Vector.GP;
  if ((kind !== 0x01 && kind !== 0x03 && kind !== 0x09 && kind !== 0x0b) || (sel & 4) !== 0) c.fault(bad, err);
  if (((kind & 0x2) !== 0) !== (how === Switch.Iret)) c.fault(bad, err);
  if (!descPresent()) c.fault(Vector.NP, err);
}

/** Sets or clears the busy bit of the TSS descriptor at GDT selector `sel` (inside a supervisor access). */
function writeBusy(c: X86Cpu, sel: number, busy: boolean): void {
  const addr = (c.gdtBase + (sel & 0xfff8) + 4) | 0;
  const hi = c.readLin32(addr);
  c.writeLin32(addr, busy ? hi | 0x200 : hi & ~0x200);
}

/**
 * Switches to the task whose TSS descriptor (already checked) was read last, at GDT selector
 * `sel`: saves the current task in its TSS (EIP = `returnEip`), updates the busy bits, the
 * back link and NT as `how` asks, sets CR0.TS, loads TR, CR3 (with paging), EFLAGS, EIP,
 * the general registers, LDTR and the segment registers. Returns whether the new TSS is
 * 32-bit. Faults before the commit point are taken in the old task, faults after it in the new.
 */
function switchTask(c: X86Cpu, sel: number, how: Switch, ext: number, returnEip: number): boolean {
  const newBase = descBase(), newLimit = descLimit(), newAr = descAr();
  const new32 = (descHi & 0x800) !== 0;
  if (newLimit < (new32 ? 0x67 : 0x2b)) c.fault(Vector.TS, (sel & 0xfffc) | ext);
  const oldSel = c.segSel[TR]!, oldBase = c.segBase[TR]!;
  const old32 = (c.segAr[TR]! & 0x8) !== 0;
  // The dynamic fields the old task's state is saved into must lie within its TSS.
  if (c.segAr[TR]! & AR_UNUSABLE || c.segLimit[TR]! < (old32 ? 0x5f : 0x29)) c.fault(Vector.TS, (oldSel & 0xfffc) | ext);

  c.beginSupervisorAccess();
  // 1. The new task's state (a page fault here is still the old task's).
  const nt = (o: number): number => (newBase + o) | 0;
  let eip: number, eflags: number, cr3 = 0, ldt: number;
  if (new32) {
    cr3 = c.readLin32(nt(0x1c));
    eip = c.readLin32(nt(0x20));
    eflags = c.readLin32(nt(0x24));
    for (let i = 0; i < 8; i++) tssRegs[i] = c.readLin32(nt(0x28 + i * 4));
    for (let i = 0; i < 6; i++) tssSegs[i] = c.readLin16(nt(0x48 + i * 4));
    ldt = c.readLin16(nt(0x60));
  } else {
    eip = c.readLin16(nt(0x0e));
    eflags = c.readLin16(nt(0x10));
    for (let i = 0; i < 8; i++) tssRegs[i] = c.readLin16(nt(0x12 + i * 2));
    for (let i = 0; i < 4; i++) tssSegs[i] = c.readLin16(nt(0x22 + i * 2)); // ES CS SS DS
    tssSegs[FS] = 0; tssSegs[GS] = 0; // A 16-bit TSS has no FS, GS: they are loaded null.
    ldt = c.readLin16(nt(0x2a));
  }

  // 2. Save the current task's dynamic fields (IRET saves its EFLAGS with NT clear).
  const ot = (o: number): number => (oldBase + o) | 0;
  let oldFlags = c.getEflags();
  if (how === Switch.Iret) oldFlags &= ~NT;
  if (old32) {
    c.writeLin32(ot(0x20), returnEip);
    c.writeLin32(ot(0x24), oldFlags);
    for (let i = 0; i < 8; i++) c.writeLin32(ot(0x28 + i * 4), c.r32[i]!);
    for (let i = 0; i < 6; i++) c.writeLin16(ot(0x48 + i * 4), c.segSel[i]!);
  } else {
    c.writeLin16(ot(0x0e), returnEip);
    c.writeLin16(ot(0x10), oldFlags);
    for (let i = 0; i < 8; i++) c.writeLin16(ot(0x12 + i * 2), c.r32[i]!);
    for (let i = 0; i < 4; i++) c.writeLin16(ot(0x22 + i * 2), c.segSel[i]!);
  }

  // 3. Busy bits; CALL and interrupts nest: the new TSS links back to the old one.
  if (how === Switch.Jmp || how === Switch.Iret) writeBusy(c, oldSel, false);
  if (how !== Switch.Iret) writeBusy(c, sel, true);
  if (how === Switch.Call || how === Switch.Int) c.writeLin16(nt(0), oldSel);
  c.endSupervisorAccess();

  // 4. Commit. From here on a fault is taken in the context of the new task.
  c.loadSegRaw(TR, sel, newBase, newLimit, newAr | 0x2);
  c.cr0 |= CR0_TS;
  if (new32 && (c.cr0 & CR0_PG) !== 0) {
    // Under PAE paging the new CR3's PDPTEs load too; a bad one is #GP(0) in the new task (as Bochs does).
    if (c.paePaging && !c.loadPdptes(cr3)) c.fault(Vector.GP, 0);
    c.cr3 = cr3;
    c.flushTlb(false);
  }
  if (how === Switch.Call || how === Switch.Int) eflags |= NT;
  if (new32) {
    c.setEflags(eflags);
    c.eip = eip;
    c.r32.set(tssRegs);
  } else {
    // A 16-bit TSS holds the low words; the upper halves of the registers are kept.
    c.setEflags(eflags & 0xffff);
    c.eip = eip & 0xffff;
    for (let i = 0; i < 8; i++) c.r16[i << 1] = tssRegs[i]!;
  }
  c.startEip = c.eip;
  c.startEsp = c.r32[4]!;
  c.flagsSaved = false;

  // 5. LDTR and the segment registers (SDM table 7-1). The selectors are all in place first,
  // with no usable descriptor behind them until each one has passed its checks.
  const v86 = (c.flags & VM) !== 0;
  const cpl = v86 ? 3 : tssSegs[CS]! & 3;
  for (let s = ES; s <= GS; s++) c.loadSegRaw(s, tssSegs[s]!, 0, 0, AR_UNUSABLE | (cpl << 5));
  c.loadSegRaw(LDTR, ldt, 0, 0, AR_UNUSABLE);
  c.updateMode();
  loadTaskLdt(c, ldt, ext);
  if (v86) {
    for (let s = ES; s <= GS; s++) c.loadSegRaw(s, tssSegs[s]!, tssSegs[s]! << 4, 0xffff, V86_AR);
  } else {
    loadTaskCode(c, tssSegs[CS]!, ext);
    loadTaskStack(c, tssSegs[SS]!, cpl, ext);
    loadTaskData(c, ES, tssSegs[ES]!, cpl, ext);
    loadTaskData(c, DS, tssSegs[DS]!, cpl, ext);
    loadTaskData(c, FS, tssSegs[FS]!, cpl, ext);
    loadTaskData(c, GS, tssSegs[GS]!, cpl, ext);
  }
  c.updateMode();
  return new32;
}

/** After a task switch: the error code of an exception goes on the new task's stack, then EIP is checked. */
function finishTaskSwitch(c: X86Cpu, new32: boolean, errorCode: number, ext: number): void {
  if (errorCode >= 0) {
    const w = new32 ? 4 : 2;
    try {
      c.checkLimit(SS, c.spOffset(-w), w);
    } catch (e) {
      if (e === FAULT) c.fault(Vector.SS, ext);
      throw e;
    }
    if (w === 4) c.push32(errorCode); else c.push16(errorCode);
  }
  if ((c.eip >>> 0) > c.segLimit[CS]!) c.fault(Vector.GP, ext);
}

function loadTaskLdt(c: X86Cpu, sel: number, ext: number): void {
  if ((sel & 0xfffc) === 0) return; // Left null (unusable).
  const err = (sel & 0xfffc) | ext;
  if (sel & 4) c.fault(Vector.TS, err);
  readDescriptor(c, sel, Vector.TS, ext);
  if (descKind() !== 0x02 || !descPresent()) c.fault(Vector.TS, err);
  loadFromDescriptor(c, LDTR, sel);
}

function loadTaskCode(c: X86Cpu, sel: number, ext: number): void {
  const err = (sel & 0xfffc) | ext;
  if ((sel & 0xfffc) === 0) c.fault(Vector.TS, ext);
  readDescriptor(c, sel, Vector.TS, ext);
  const kind = descKind(), dpl = descDpl(), rpl = sel & 3;
  if ((kind & 0x18) !== 0x18) c.fault(Vector.TS, err);
  // The new CPL is the selector's RPL: non-conforming code must have DPL = RPL, conforming DPL <= RPL.
  if (kind & 0x4 ? dpl > rpl : dpl !== rpl) c.fault(Vector.TS, err);
  if (!descPresent()) c.fault(Vector.NP, err);
  markAccessed(c, sel);
  loadFromDescriptor(c, CS, sel);
}

function loadTaskStack(c: X86Cpu, sel: number, cpl: number, ext: number): void {
  const err = (sel & 0xfffc) | ext;
  if ((sel & 0xfffc) === 0) c.fault(Vector.TS, ext);
  readDescriptor(c, sel, Vector.TS, ext);
  if ((descKind() & 0x1a) !== 0x12 || descDpl() !== cpl || (sel & 3) !== cpl) c.fault(Vector.TS, err);
  if (!descPresent()) c.fault(Vector.SS, err);
  markAccessed(c, sel);
  loadFromDescriptor(c, SS, sel);
}

function loadTaskData(c: X86Cpu, seg: number, sel: number, cpl: number, ext: number): void {
  if ((sel & 0xfffc) === 0) {
    c.loadSegRaw(seg, sel, 0, 0, AR_UNUSABLE);
    return;
  }
  const err = (sel & 0xfffc) | ext;
  readDescriptor(c, sel, Vector.TS, ext);
  const kind = descKind(), dpl = descDpl();
  if ((kind & 0x10) === 0 || (kind & 0x1a) === 0x18) c.fault(Vector.TS, err);
  const conformingCode = (kind & 0x1c) === 0x1c;
  if (!conformingCode && dpl < Math.max(cpl, sel & 3)) c.fault(Vector.TS, err);
  if (!descPresent()) c.fault(Vector.NP, err);
  markAccessed(c, sel);
  loadFromDescriptor(c, seg, sel);
}

/** IRET with NT set: back to the task named by the back link of the current TSS. */
function taskReturn(c: X86Cpu): void {
  c.beginSupervisorAccess();
  const link = c.readLin16(c.segBase[TR]!);
  c.endSupervisorAccess();
  if (link & 4) c.fault(Vector.TS, link & 0xfffc);
  readDescriptor(c, link, Vector.TS);
  checkTssDescriptor(c, link, Switch.Iret, 0);
  finishTaskSwitch(c, switchTask(c, link, Switch.Iret, 0, c.eip), -1, 0);
}

// --- System segments, I/O permissions, probes ------------------------------------------------

/** LLDT / LTR. */
export function loadSystemSegment(c: X86Cpu, ldt: boolean, sel: number): void {
  if ((sel & 0xfffc) === 0) {
    if (!ldt) c.fault(Vector.GP, 0);
    c.loadSegRaw(LDTR, 0, 0, 0, AR_UNUSABLE);
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
  loadFromDescriptor(c, ldt ? LDTR : TR, sel);
}

/**
 * The I/O permission bitmap check for an access of `size` bytes at `port` (when CPL > IOPL
 * or in V86 mode): every port's bit must be clear in the bitmap of the current 32-bit TSS,
 * whose offset is the word at TSS+0x66. Two bytes are read; if they reach beyond the TSS
 * limit, or the TSS is 16-bit, the access is refused. Refused accesses raise #GP(0).
 */
export function checkIoPermission(c: X86Cpu, port: number, size: number): void {
  const ar = c.segAr[TR]!;
  const limit = c.segLimit[TR]!, base = c.segBase[TR]!;
  if (ar & AR_UNUSABLE || (ar & 0x1d) !== 0x09 || limit < 0x67) c.fault(Vector.GP, 0);
  c.beginSupervisorAccess();
  const at = c.readLin16((base + 0x66) | 0) + (port >>> 3);
  if (at + 1 > limit) c.fault(Vector.GP, 0);
  const bits = c.readLin16((base + at) | 0);
  c.endSupervisorAccess();
  if (bits & (((1 << size) - 1) << (port & 7))) c.fault(Vector.GP, 0);
}

/** LAR/LSL/VERR/VERW helpers: reads the descriptor of `sel` if visible at CPL/RPL, else returns false. */
export function probeDescriptor(c: X86Cpu, sel: number): { lo: number; hi: number } | null {
  if ((sel & 0xfffc) === 0) return null;
  const tableLimit = sel & 4 ? c.segLimit[LDTR]! : c.gdtLimit;
  if ((sel & 0xfff8) + 7 > tableLimit) return null;
  readDescriptor(c, sel);
  return { lo: descLo, hi: descHi };
}

export { AR_P, AR_S, DS };
