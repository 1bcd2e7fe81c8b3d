import type { GuestMemory } from '../memory/guest-memory.js';
import type { KvmRun } from '../kvm-run.js';
import type { KvmFpu, KvmRegs, KvmSegment, KvmSregs } from '../kvm-types.js';
import { emptySegment } from '../kvm-types.js';
import {
  KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
  KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_INTERNAL_ERROR_EMULATION, KVM_MEM_READONLY,
} from '../kvm-bindings.js';
import {
  AC, AF, ARITH_FLAGS, CF, DF, FLAGS_FIXED, ID, IF, IOPL, LazyOp, NT, OF, PARITY, PF, RF, SF, TF, VIF, VIP, VM, ZF,
} from './flags.js';
import { EXIT, FAULT, Vector } from './exceptions.js';
import { step } from './interpreter.js';
import { deliverProtected, loadDataSegment } from './protected.js';
import { supportedCpuid, type CpuidEntry } from './cpuid.js';
import { HostClock, type GuestClock } from '../time/clock.js';
import { BlockCache } from './jit/cache.js';
import type { CodeReader } from './jit/compiler.js';
import { AR_DB, AR_P, AR_S, AR_UNUSABLE, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE, CS, DS, ES, FS, GS, LDTR, SS, TR } from './constants.js';
import { EmulationGap } from './constants.js';
import type { Lapic } from '../irqchip/lapic.js';
import type { TimerQueue } from '../time/timers.js';
import { X87State } from './fpu/x87.js';

export { ES, CS, SS, DS, FS, GS, LDTR, TR, EmulationGap };

/** Guest instructions run per `run()` before it returns KVM_EXIT_INTR. */
export const DEFAULT_TIME_SLICE = 200_000;

const TLB_PAGES = 1 << 20;
/** Accesses run() completes itself (in-kernel devices, ioeventfds); false sends them to the VMM. */
export interface KernelAccessHandler {
  read(addr: number, data: Uint8Array): boolean;
  write(addr: number, data: Uint8Array): boolean;
}

/** IA32_APIC_BASE bit 11: the local APIC is enabled. */
const APIC_BASE_ENABLE = 1 << 11;
/** TLB entry bit: user mode may use this translation. */
const TLB_USER = 1 << 30;
/** TLB entry bits holding the slot id + 1. */
/** The slot part of a TLB entry (the rest are permission bits). */
export const TLB_SLOT = 0xffff;
/**
 * PAE paging with MAXPHYADDR 36 (what a PAE CPU without CPUID leaf 0x80000008 has). In the high
 * dword of every PDPTE/PDE/PTE, bits 62:36 are reserved, and so is bit 63 (XD) because there is
 * no EFER.NXE here.
 */
const PAE_RSVD_HI = 0xfffffff0 | 0;
/** PDPTE low-dword reserved bits: 2:1 (no R/W, U/S at this level) and 8:5. */
const PDPTE_RSVD_LO = 0x1e6;
/** 2 MiB PDE: bits 20:13 are reserved (bit 12 is PAT). */
const PDE_2M_RSVD_LO = 0x1fe000;
/** Page-fault error code bits. */
const PF_P = 1, PF_W = 2, PF_U = 4, PF_RSVD = 8;
/** Past this many filled TLB entries a flush clears the whole table instead of the list. */
const TLB_LIST_MAX = 4096;

// Kinds of entries in the replay log of port and MMIO accesses (see `X86Cpu.replay*`).
const ACCESS_NONE = 0, ACCESS_IO_IN = 1, ACCESS_IO_OUT = 2, ACCESS_MMIO_READ = 3, ACCESS_MMIO_WRITE = 4;
/** Port/MMIO accesses one instruction may make (ENTER with nesting 31 reads 31 words, each of which may straddle pages). */
const REPLAY_MAX = 80;

/**
 * A software i686-class CPU (one vCPU). It executes guest code out of the VM's memory slots and
 * stops with a KVM exit reason in the shared {@link KvmRun} record.
 *
 * Layout for speed: registers are typed-array views of one buffer; memory goes through a
 * software TLB (linear page -> slot + offset) with separate read and write entries, so the hot
 * path is one table lookup; arithmetic flags are evaluated lazily.
 *
 * Port and MMIO accesses follow KVM's model: the access exits to the VMM and the instruction is
 * completed on the next `run()`. Internally the instruction is rolled back to its start and
 * replayed, with the completed accesses fed from a small replay log; instructions are written
 * so that nothing is committed before their last possible exit or fault.
 */
export class X86Cpu {
  /** Whether new vCPUs compile hot blocks (the interpreter runs everything when false). */
  static JIT_ENABLED = true;
  /** Whether this build has the x87 unit (advertised through CPUID as FPU and FXSR). */
  static FPU_AVAILABLE = true;

  // --- Architectural state -------------------------------------------------------------
  readonly r32 = new Int32Array(8);
  /** r16[i << 1] is the low word of r32[i]. */
  readonly r16 = new Uint16Array(this.r32.buffer);
  /** AL CL DL BL at 0 4 8 12, AH CH DH BH at 1 5 9 13. */
  readonly r8 = new Uint8Array(this.r32.buffer);
  eip = 0;
  /** EFLAGS, except the arithmetic bits named in `lzMask`, which are computed from lz*. */
  flags = FLAGS_FIXED;
  lzMask = 0;
  lzOp: LazyOp = LazyOp.Logic;
  lzA = 0;
  lzB = 0;
  lzR = 0;
  /** Bit number of the sign bit of the deferred result (7, 15 or 31). */
  lzTop = 31;
  /** 31 - lzTop: shifting the result left by this puts its sign bit at bit 31. */
  lzShift = 0;

  readonly segSel = new Uint16Array(8);
  readonly segBase = new Int32Array(8);
  readonly segLimit = new Uint32Array(8);
  readonly segAr = new Uint32Array(8);
  gdtBase = 0; gdtLimit = 0xffff;
  idtBase = 0; idtLimit = 0xffff;
  cr0 = 0x60000010; cr2 = 0; cr3 = 0; cr4 = 0;
  /**
   * PAE paging: the four PDPTE registers as (low, high) dword pairs. Walks use these, not the
   * table in memory; `loadPdptes` refreshes them where the SDM says the CPU does (4.4.1).
   */
  readonly pdpte = new Int32Array(8);
  private readonly pdpteScratch = new Int32Array(8);
  /** DR0–DR7 (DR4/DR5 unused: they alias DR6/DR7). Values only; breakpoints do not fire. */
  readonly dr = new Int32Array(8);
  efer = 0;
  apicBase = 0xfee00900;
  cpl = 0;
  /** CS.D: default operand and address size of the code. */
  code32 = false;
  /** SS.B: the stack pointer is ESP rather than SP. */
  stack32 = false;
  /** Interrupts are inhibited for one instruction (after STI, MOV SS, POP SS). */
  interruptShadow = false;
  /** The shadow came from MOV SS/POP SS (which also holds off NMIs), not STI. */
  shadowFromMovSs = false;
  halted = false;

  // --- Event injection (KVM_INTERRUPT, KVM_NMI) -----------------------------------------------
  /** External interrupt vector queued by KVM_INTERRUPT, or -1. */
  pendingIrq = -1;
  pendingNmi = false;
  /** NMIs are blocked from NMI delivery until the next IRET. */
  nmiBlocked = false;
  /** Something may need attention between instructions (recomputed at run() entry and on changes). */
  eventPending = false;
  /** run() returns so far (statistics). */
  exitCount = 0;

  // --- In-kernel devices (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_IOEVENTFD) ------------------
  /** The local APIC, when the VM has an in-kernel irqchip: interrupts come from it, not KVM_INTERRUPT. */
  lapic: Lapic | null = null;
  /** Ports and MMIO ranges handled inside run(), without an exit to the VMM. */
  kernelIo: KernelAccessHandler | null = null;
  kernelMmio: KernelAccessHandler | null = null;
  /** The VM's timers, fired inside run() when in-kernel devices depend on them. */
  kernelTimers: TimerQueue | null = null;
  /** Scratch buffers for in-kernel accesses, one per size, so none is allocated per access. */
  private readonly kernelData = [new Uint8Array(0), new Uint8Array(1), new Uint8Array(2), new Uint8Array(0), new Uint8Array(4), new Uint8Array(0), new Uint8Array(0), new Uint8Array(0), new Uint8Array(8)];

  // --- CPUID, MSRs, TSC ----------------------------------------------------------------------
  /** The x87 FPU's state (fpu/x87.ts). */
  readonly x87 = new X87State();
  cpuidTable: CpuidEntry[] = [];
  /** KVM_SET_CPUID2 was called: the table is the VMM's, not the default. */
  cpuidSetByVmm = false;
  sysenterCs = 0;
  sysenterEsp = 0;
  sysenterEip = 0;
  /** The TSC runs at 1 GHz of the VM's guest clock, plus this offset (set by writes to the TSC MSR). */
  tscOffset = 0;
  /** The VM's clock (shared with its devices' timers). */
  clock: GuestClock = new HostClock();
  readonly msrScratch = new Int32Array(2);

  // --- Per-instruction decode state ----------------------------------------------------
  startEip = 0;
  /** ESP at the instruction start: restored when an instruction faults or exits midway. */
  startEsp = 0;
  /** The flags state before a read-modify-write instruction, restored if it faults or exits. */
  flagsSaved = false;
  private savedFlags = 0;
  private savedLzMask = 0;
  private savedLzOp: LazyOp = LazyOp.Logic;
  private savedLzA = 0;
  private savedLzB = 0;
  private savedLzR = 0;
  private savedLzTop = 31;
  readonly popaScratch = new Int32Array(8);
  prefixSeg = -1;
  opsize32 = false;
  addrsize32 = false;
  /** 0: none, 0xF3: REP/REPE, 0xF2: REPNE. */
  repPrefix = 0;
  lockPrefix = false;
  modrm = 0;
  eaSeg = DS;
  eaOff = 0;

  // --- Software TLB ------------------------------------------------------------------------
  /** Slot index + 1 (0 = miss) for reads and fetches, per linear page. */
  readonly tlbRead = new Int32Array(TLB_PAGES);
  /** Added to a linear address (mod 2^32) to index the slot's bytes. */
  readonly tlbReadOff = new Int32Array(TLB_PAGES);
  readonly tlbWrite = new Int32Array(TLB_PAGES);
  readonly tlbWriteOff = new Int32Array(TLB_PAGES);
  /** 1 where the cached page is global (kept across CR3 writes). */
  private readonly tlbGlobal = new Uint8Array(TLB_PAGES);
  private readonly tlbList = new Int32Array(TLB_LIST_MAX);
  /** Bumped whenever translations are dropped: links between compiled blocks older than it are not followed. */
  tlbGeneration = 0;
  /** The smallest TLB entry value that hits at the current privilege (see readLin8). */
  tlbNeed = 0;
  /** Memory accesses are checked as user-mode (CPL 3) accesses. */
  userAccess = false;
  private lastPhys = 0;
  private walkUserOk = true;
  private walkUserWriteOk = true;
  private walkGlobal = false;
  /** Size (log2: 21 or 22) of the large page the last walk ended in, or 0 for a 4 KiB page. */
  private walkLarge = 0;
  /**
   * Per 2 MiB of linear space: 0, or the size (log2) of a large page that TLB entries there
   * were cut from. The TLB holds large pages as 4 KiB pieces, and INVLPG anywhere in a large
   * page must drop all of them. Stale marks only cost INVLPG some extra clearing.
   */
  private readonly tlbLarge = new Uint8Array(1 << 11);
  private tlbLargeUsed = false;
  private tlbCount = 0;
  /** Slot bytes by slot id + 1, as the TLB refers to them. */
  mems: Uint8Array[] = [];
  private memEpoch = -1;

  // --- Exits -------------------------------------------------------------------------------
  budget = 0;
  /** Instructions retired since creation. */
  instructions = 0;
  faultVector = 0;
  faultError = 0;
  faultHasError = false;
  private replayKind = new Uint8Array(REPLAY_MAX);
  private replayAddr = new Float64Array(REPLAY_MAX);
  private replayData = new Uint8Array(REPLAY_MAX * 8);
  replayCount = 0;
  private replayCursor = 0;
  /** The access whose data the VMM supplies on the next run(). */
  private pendingKind = ACCESS_NONE;
  private pendingAddr = 0;
  private pendingLen = 0;
  timeSlice = DEFAULT_TIME_SLICE;

  constructor(
    readonly memory: GuestMemory,
    readonly run: KvmRun,
  ) {
    this.reset();
    // Device DMA into compiled code invalidates it too.
    memory.writeListeners.push((slot, offset, len) => this.jit?.hostWrite(this, slot.id + 1, offset, len));
  }

  /** The state of a vCPU after KVM_CREATE_VCPU: the x86 reset state, CS:IP = F000:FFF0. */
  reset(): void {
    this.r32.fill(0);
    this.r32[2] = 0x600; // EDX holds the CPU signature (family 6) after reset.
    this.eip = 0xfff0;
    this.setEflags(FLAGS_FIXED);
    for (let s = 0; s < 6; s++) this.loadSegRaw(s, 0, 0, 0xffff, AR_P | AR_S | 0x3);
    this.loadSegRaw(CS, 0xf000, 0xffff0000 | 0, 0xffff, AR_P | AR_S | 0xb);
    this.loadSegRaw(LDTR, 0, 0, 0xffff, AR_P | 0x2);
    this.loadSegRaw(TR, 0, 0, 0xffff, AR_P | 0xb);
    this.gdtBase = 0; this.gdtLimit = 0xffff; this.idtBase = 0; this.idtLimit = 0xffff;
    this.cr0 = 0x60000010; this.cr2 = 0; this.cr3 = 0; this.cr4 = 0; this.efer = 0;
    this.pdpte.fill(0);
    this.dr.fill(0);
    this.dr[6] = 0xffff0ff0 | 0;
    this.dr[7] = 0x400;
    this.halted = false;
    this.interruptShadow = false;
    this.pendingIrq = -1;
    this.pendingNmi = false;
    this.nmiBlocked = false;
    this.sysenterCs = this.sysenterEsp = this.sysenterEip = 0;
    this.tscOffset = 0;
    this.budget = this.timeSlice; // nothing of a slice used: retired() counts from zero
    this.x87.reset();
    if (!this.cpuidSetByVmm) this.cpuidTable = supportedCpuid({ fpu: X86Cpu.FPU_AVAILABLE, apic: this.lapic !== null });
    this.replayCount = 0;
    this.pendingKind = ACCESS_NONE;
    this.updateMode();
  }

  // --- Flags ---------------------------------------------------------------------------------

  getCF(): number {
    if ((this.lzMask & CF) === 0) return this.flags & CF;
    const a = this.lzA, b = this.lzB, r = this.lzR;
    switch (this.lzOp) {
      case LazyOp.Add: return (((a & b) | ((a | b) & ~r)) >>> this.lzTop) & 1;
      case LazyOp.Sub: return (((~a & b) | ((~a | b) & r)) >>> this.lzTop) & 1;
      default: return 0;
    }
  }
  getOF(): boolean {
    if ((this.lzMask & OF) === 0) return (this.flags & OF) !== 0;
    const a = this.lzA, b = this.lzB, r = this.lzR;
    switch (this.lzOp) {
      case LazyOp.Add: return ((((a ^ r) & (b ^ r)) >>> this.lzTop) & 1) !== 0;
      case LazyOp.Sub: return ((((a ^ b) & (a ^ r)) >>> this.lzTop) & 1) !== 0;
      default: return false;
    }
  }
  getZF(): boolean {
    return (this.lzMask & ZF) === 0 ? (this.flags & ZF) !== 0 : this.lzR << this.lzShift === 0;
  }
  getSF(): boolean {
    return (this.lzMask & SF) === 0 ? (this.flags & SF) !== 0 : this.lzR << this.lzShift < 0;
  }
  getPF(): boolean {
    return (this.lzMask & PF) === 0 ? (this.flags & PF) !== 0 : PARITY[this.lzR & 0xff] !== 0;
  }
  getAF(): boolean {
    if ((this.lzMask & AF) === 0) return (this.flags & AF) !== 0;
    return this.lzOp !== LazyOp.Logic && ((this.lzA ^ this.lzB ^ this.lzR) & 0x10) !== 0;
  }

  /** EFLAGS with every deferred bit computed. */
  getEflags(): number {
    let f = this.flags;
    const m = this.lzMask;
    if (m !== 0) {
      f &= ~m;
      if (m & CF && this.getCF()) f |= CF;
      if (m & PF && this.getPF()) f |= PF;
      if (m & AF && this.getAF()) f |= AF;
      if (m & ZF && this.getZF()) f |= ZF;
      if (m & SF && this.getSF()) f |= SF;
      if (m & OF && this.getOF()) f |= OF;
    }
    return f;
  }

  /** Sets all of EFLAGS, with no privilege checks. */
  setEflags(v: number): void {
    this.flags = (v & 0x3f7fd5) | FLAGS_FIXED;
    this.lzMask = 0;
  }

  /** Sets the given arithmetic flags eagerly; the other deferred ones stay deferred. */
  materialize(): void {
    if (this.lzMask !== 0) this.setEflags(this.getEflags());
  }

  /** Defers all six arithmetic flags to (op, a, b, r) at the given operand width. */
  lazy(op: LazyOp, a: number, b: number, r: number, bits: number): void {
    this.lzOp = op; this.lzA = a; this.lzB = b; this.lzR = r;
    this.lzTop = bits - 1; this.lzShift = 32 - bits;
    this.lzMask = ARITH_FLAGS;
  }

  /** As `lazy`, but keeps CF as it is (INC, DEC). */
  lazyKeepCF(op: LazyOp, a: number, b: number, r: number, bits: number): void {
    const cf = this.getCF();
    this.flags = (this.flags & ~CF) | cf;
    this.lazy(op, a, b, r, bits);
    this.lzMask = ARITH_FLAGS & ~CF;
  }

  /** Sets CF, OF and AF eagerly and defers ZF, SF, PF to the result (shifts, rotates do their own). */
  lazyResult(r: number, bits: number, cfOfAf: number): void {
    this.flags = (this.flags & ~(CF | OF | AF)) | cfOfAf;
    this.lzOp = LazyOp.Logic; this.lzR = r; this.lzA = 0; this.lzB = 0;
    this.lzTop = bits - 1; this.lzShift = 32 - bits;
    this.lzMask = ZF | SF | PF;
  }

  /** Snapshots the flags, so that an instruction that updates memory can be rolled back. */
  saveFlags(): void {
    this.flagsSaved = true;
    this.savedFlags = this.flags; this.savedLzMask = this.lzMask; this.savedLzOp = this.lzOp;
    this.savedLzA = this.lzA; this.savedLzB = this.lzB; this.savedLzR = this.lzR; this.savedLzTop = this.lzTop;
  }

  /** Undoes what a faulting or exiting instruction changed before it stopped. */
  private rollback(): void {
    this.endSupervisorAccess();
    this.eip = this.startEip;
    this.r32[4] = this.startEsp;
    if (this.flagsSaved) {
      this.flags = this.savedFlags; this.lzMask = this.savedLzMask; this.lzOp = this.savedLzOp;
      this.lzA = this.savedLzA; this.lzB = this.savedLzB; this.lzR = this.savedLzR;
      this.lzTop = this.savedLzTop; this.lzShift = 31 - this.savedLzTop;
      this.flagsSaved = false;
    }
  }

  /** Sets one or more flags to 0 or 1, resolving deferred state first. */
  setFlag(bit: number, on: boolean): void {
    if (this.lzMask & bit) this.materialize();
    this.flags = on ? this.flags | bit : this.flags & ~bit;
  }

  /** Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc). */
  cond(cc: number): boolean {
    let r: boolean;
    switch (cc >> 1) {
      case 0: r = this.getOF(); break;
      case 1: r = this.getCF() !== 0; break;
      case 2: r = this.getZF(); break;
      case 3: r = this.getCF() !== 0 || this.getZF(); break;
      case 4: r = this.getSF(); break;
      case 5: r = this.getPF(); break;
      case 6: r = this.getSF() !== this.getOF(); break;
      default: r = this.getZF() || this.getSF() !== this.getOF(); break;
    }
    return (cc & 1) !== 0 ? !r : r;
  }

  // --- Registers --------------------------------------------------------------------------

  getReg8(r: number): number { return this.r8[((r & 3) << 2) | (r >> 2)]!; }
  setReg8(r: number, v: number): void { this.r8[((r & 3) << 2) | (r >> 2)] = v; }
  getReg16(r: number): number { return this.r16[r << 1]!; }
  setReg16(r: number, v: number): void { this.r16[r << 1] = v; }

  // --- Modes and segments -----------------------------------------------------------------

  /** Recomputes the cached mode bits after a change of CR0, CS or SS. */
  updateMode(): void {
    this.code32 = (this.segAr[CS]! & AR_DB) !== 0;
    this.stack32 = (this.segAr[SS]! & AR_DB) !== 0;
    if ((this.cr0 & CR0_PE) === 0) this.setCpl(0);
    else if (this.flags & VM) this.setCpl(3);
    else this.setCpl((this.segAr[SS]! >> 5) & 3);
  }

  /** Changes the current privilege level and the TLB's user/supervisor view with it. */
  setCpl(cpl: number): void {
    this.fetchMax = -1;
    this.cpl = cpl;
    this.userAccess = cpl === 3;
    this.tlbNeed = this.userAccess ? TLB_USER - 1 : 0;
  }

  get protectedMode(): boolean {
    return (this.cr0 & CR0_PE) !== 0;
  }

  loadSegRaw(seg: number, sel: number, base: number, limit: number, ar: number): void {
    if (seg === CS) this.fetchMax = -1;
    this.segSel[seg] = sel;
    this.segBase[seg] = base | 0;
    this.segLimit[seg] = limit >>> 0;
    this.segAr[seg] = ar;
    this.updateFlat(seg);
  }

  /**
   * Bit s of `segFlat`: segment s has base 0, a 4 GiB limit and is usable and expand-up, so an
   * access needs no limit check unless it runs past 4 GiB (the common case in 32-bit code).
   */
  segFlat = 0;
  private updateFlat(seg: number): void {
    const ar = this.segAr[seg]!;
    const flat = this.segBase[seg] === 0 && this.segLimit[seg] === 0xffffffff && (ar & AR_UNUSABLE) === 0 &&
      (ar & (AR_S | 0xc)) !== (AR_S | 0x4);
    this.segFlat = flat ? this.segFlat | (1 << seg) : this.segFlat & ~(1 << seg);
  }

  /** MOV/POP to a segment register, LDS and friends, far transfers: the selector is loaded by mode. */
  loadSeg(seg: number, sel: number): void {
    sel &= 0xffff;
    if ((this.cr0 & CR0_PE) === 0 || (this.flags & VM) !== 0) {
      // Real and V86 mode: only the selector and base change; limit and attributes are kept.
      this.segSel[seg] = sel;
      this.segBase[seg] = sel << 4;
      this.updateFlat(seg);
      if (seg === CS) { this.fetchMax = -1; this.updateMode(); }
      return;
    }
    if (seg === CS) throw new EmulationGap('CS is loaded only by far transfers in protected mode');
    loadDataSegment(this, seg, sel);
  }

  /** Segment limit check for an access of `size` bytes at offset `off`. */
  checkLimit(seg: number, off: number, size: number): void {
    const ar = this.segAr[seg]!;
    if (ar & AR_UNUSABLE) this.fault(seg === SS ? Vector.SS : Vector.GP, 0);
    const o = off >>> 0;
    const end = o + size - 1;
    // Data segments with bit 2 of the type set are expand-down: valid offsets lie above the limit.
    if ((ar & (AR_S | 0xc)) === (AR_S | 0x4)) {
      const max = ar & AR_DB ? 0xffffffff : 0xffff;
      if (o > this.segLimit[seg]! && end <= max) return;
    } else if (end <= this.segLimit[seg]!) return;
    this.fault(seg === SS ? Vector.SS : Vector.GP, 0);
  }

  // --- Faults and exits --------------------------------------------------------------------

  /** Raises exception `vector`; the instruction is rolled back and the exception delivered. */
  fault(vector: number, error: number, hasError = true): never {
    this.faultVector = vector;
    this.faultError = error;
    this.faultHasError = hasError;
    throw FAULT;
  }

  /** Raises #UD. */
  undefinedOpcode(): never {
    this.fault(Vector.UD, 0, false);
  }

  /** Ends run() with `reason` after this instruction completes. */
  exitAfterInstruction(reason: number): never {
    this.budget--; // the instruction retires
    this.startEip = this.eip;
    this.startEsp = this.r32[4]!;
    this.flagsSaved = false;
    this.run.exitReason = reason;
    throw EXIT;
  }

  // --- Linear memory -----------------------------------------------------------------------
  //
  // TLB entries are (slot id + 1) | TLB_USER when user mode may use the translation too. An
  // access hits when entry > tlbNeed: tlbNeed is 0 at CPL 0–2 and TLB_USER - 1 at CPL 3, so the
  // fast path is one load and one compare at every privilege level.

  private syncMemory(): void {
    const mems: Uint8Array[] = [new Uint8Array(0)];
    for (const s of this.memory.listSlots()) mems[s.id + 1] = s.bytes;
    for (let i = 0; i < mems.length; i++) if (!mems[i]) mems[i] = new Uint8Array(0);
    this.mems = mems;
    this.flushTlb(true);
    this.jit?.clear();
    this.memEpoch = this.memory.epoch;
  }

  /** Drops cached translations; global pages (CR4.PGE) survive unless `all`. */
  flushTlb(all = true): void {
    this.fetchMax = -1;
    this.tlbGeneration++;
    const list = this.tlbList;
    if (this.tlbCount > TLB_LIST_MAX) {
      this.tlbRead.fill(0); this.tlbWrite.fill(0); this.tlbGlobal.fill(0);
      this.tlbCount = 0;
      if (this.tlbLargeUsed) { this.tlbLarge.fill(0); this.tlbLargeUsed = false; }
      return;
    }
    // Global large pages survive a CR3 write, so their marks stay then.
    if (all && this.tlbLargeUsed) { this.tlbLarge.fill(0); this.tlbLargeUsed = false; }
    let kept = 0;
    for (let i = 0; i < this.tlbCount; i++) {
      const p = list[i]!;
      if (!all && this.tlbGlobal[p] !== 0) { list[kept++] = p; continue; }
      this.tlbRead[p] = 0; this.tlbWrite[p] = 0; this.tlbGlobal[p] = 0;
    }
    this.tlbCount = kept;
  }

  /** INVLPG: forgets the translation of the page holding `lin` (all of a large page), global or not. */
  invalidatePage(lin: number): void {
    this.fetchMax = -1;
    this.tlbGeneration++;
    const p = lin >>> 12;
    this.tlbRead[p] = 0; this.tlbWrite[p] = 0; this.tlbGlobal[p] = 0;
    const shift = this.tlbLarge[lin >>> 21]!;
    if (shift === 0) return;
    const first = (lin >>> shift) << (shift - 12), end = first + (1 << (shift - 12));
    for (let q = first; q < end; q++) { this.tlbRead[q] = 0; this.tlbWrite[q] = 0; this.tlbGlobal[q] = 0; }
    this.tlbLarge.fill(0, first >>> 9, end >>> 9);
  }

  /** Accesses made by the CPU itself (descriptor tables, TSS, IDT) are supervisor accesses at any CPL. */
  beginSupervisorAccess(): void {
    this.tlbNeed = 0;
    this.userAccess = false;
  }
  endSupervisorAccess(): void {
    this.userAccess = this.cpl === 3;
    this.tlbNeed = this.userAccess ? TLB_USER - 1 : 0;
  }

  /** CR0.PG and CR4.PAE: linear addresses go through the PDPTE registers. */
  get paePaging(): boolean {
    return (this.cr0 & CR0_PG) !== 0 && (this.cr4 & CR4_PAE) !== 0;
  }

  /**
   * Loads the PDPTE registers from the 32-byte table at CR3 bits 31:5 (`cr3`). Returns false,
   * leaving the registers as they were, when a present entry has a reserved bit set: the MOV
   * to CRn that asked raises #GP(0) and changes nothing. A table outside RAM is an
   * EmulationGap, like any page table there.
   */
  loadPdptes(cr3: number): boolean {
    const base = (cr3 & ~0x1f) >>> 0, t = this.pdpteScratch;
    for (let i = 0; i < 8; i += 2) {
      const lo = this.readPhys32(base + i * 4), hi = this.readPhys32(base + i * 4 + 4);
      if ((lo & 1) !== 0 && ((lo & PDPTE_RSVD_LO) !== 0 || (hi & PAE_RSVD_HI) !== 0)) return false;
      t[i] = lo; t[i + 1] = hi;
    }
    this.pdpte.set(t);
    return true;
  }

  /**
   * Linear to physical through the page tables, setting accessed/dirty bits: 2-level 32-bit
   * paging (4 KiB pages, 4 MiB pages with CR4.PSE) or, with CR4.PAE, PAE paging; global pages
   * with CR4.PGE. Raises #PF with CR2 and the error code. Sets `walkUserOk`/`walkUserWriteOk`/
   * `walkGlobal` for the TLB. Only TLB misses come here.
   */
  translate(lin: number, write: boolean): number {
    if ((this.cr0 & CR0_PG) === 0) {
      this.walkUserOk = true; this.walkUserWriteOk = true; this.walkGlobal = false; this.walkLarge = 0;
      return lin >>> 0;
    }
    if ((this.cr4 & CR4_PAE) !== 0) return this.translatePae(lin, write);
    const user = this.userAccess;
    const pdeAddr = ((this.cr3 & ~0xfff) + ((lin >>> 22) << 2)) >>> 0;
    const pde = this.readPhys32(pdeAddr);
    if ((pde & 1) === 0) this.pageFault(lin, write, user, 0);
    let pte: number, pteAddr: number, phys: number, userOk: boolean, rw: boolean, global: boolean;
    let large = 0;
    if ((pde & 0x80) !== 0 && (this.cr4 & CR4_PSE) !== 0) {
      pte = pde; pteAddr = pdeAddr;
      phys = ((pde & 0xffc00000) | (lin & 0x3ff000)) >>> 0;
      userOk = (pde & 4) !== 0; rw = (pde & 2) !== 0;
      large = 22;
    } else {
      pteAddr = ((pde & ~0xfff) + (((lin >>> 12) & 0x3ff) << 2)) >>> 0;
      pte = this.readPhys32(pteAddr);
      if ((pte & 1) === 0) this.pageFault(lin, write, user, 0);
      phys = ((pte & ~0xfff) >>> 0);
      userOk = (pde & pte & 4) !== 0; rw = (pde & pte & 2) !== 0;
      if ((pde & 0x20) === 0) this.writePhys32(pdeAddr, pde | 0x20);
    }
    global = (pte & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0;
    const wp = (this.cr0 & CR0_WP) !== 0;
    if (user && !userOk) this.pageFault(lin, write, user, PF_P);
    if (write && !rw && (user || wp)) this.pageFault(lin, write, user, PF_P);
    const want = write ? 0x60 : 0x20;
    if ((pte & want) !== want) this.writePhys32(pteAddr, pte | want);
    this.walkUserOk = userOk;
    // A write entry is cached only once the dirty bit is set; user writes need R/W too.
    this.walkUserWriteOk = userOk && rw;
    this.walkGlobal = global;
    this.walkLarge = large;
    return (phys | (lin & 0xfff)) >>> 0;
  }

  /**
   * PAE paging (SDM vol. 3A 4.4): PDPTE register (bits 31:30) -> PDE (29:21) -> a 2 MiB page
   * (PS=1, no CR4.PSE needed) or PTE (20:12) -> 4 KiB page. Entries are 64-bit; A/D live in
   * the low dword, so only that is written back. The result may lie above 4 GiB (up to 2^36):
   * no slot backs it, so callers treat it as MMIO like any other unbacked address.
   */
  private translatePae(lin: number, write: boolean): number {
    const user = this.userAccess;
    const d = (lin >>> 29) & 6;
    const pdpLo = this.pdpte[d]!;
    // PDPTE reserved bits were checked when the registers were loaded.
    if ((pdpLo & 1) === 0) this.pageFault(lin, write, user, 0);
    const pdeAddr = (this.pdpte[d + 1]! & 0xf) * 0x1_0000_0000 + ((pdpLo & ~0xfff) >>> 0) + (((lin >>> 21) & 0x1ff) << 3);
    const pde = this.readPhys32(pdeAddr), pdeHi = this.readPhys32(pdeAddr + 4);
    if ((pde & 1) === 0) this.pageFault(lin, write, user, 0);
    if ((pdeHi & PAE_RSVD_HI) !== 0) this.pageFault(lin, write, user, PF_P | PF_RSVD);
    let leaf: number, leafAddr: number, physHi: number, physLo: number, userOk: boolean, rw: boolean, large = 0;
    if ((pde & 0x80) !== 0) {
      large = 21;
      if ((pde & PDE_2M_RSVD_LO) !== 0) this.pageFault(lin, write, user, PF_P | PF_RSVD);
      leaf = pde; leafAddr = pdeAddr;
      physHi = pdeHi & 0xf; physLo = (pde & 0xffe00000) | (lin & 0x1ff000);
      userOk = (pde & 4) !== 0; rw = (pde & 2) !== 0;
    } else {
      leafAddr = (pdeHi & 0xf) * 0x1_0000_0000 + ((pde & ~0xfff) >>> 0) + (((lin >>> 12) & 0x1ff) << 3);
      leaf = this.readPhys32(leafAddr);
      const pteHi = this.readPhys32(leafAddr + 4);
      if ((leaf & 1) === 0) this.pageFault(lin, write, user, 0);
      if ((pteHi & PAE_RSVD_HI) !== 0) this.pageFault(lin, write, user, PF_P | PF_RSVD);
      physHi = pteHi & 0xf; physLo = leaf & ~0xfff;
      userOk = (pde & leaf & 4) !== 0; rw = (pde & leaf & 2) !== 0;
      if ((pde & 0x20) === 0) this.writePhys32(pdeAddr, pde | 0x20);
    }
    if (user && !userOk) this.pageFault(lin, write, user, PF_P);
    if (write && !rw && (user || (this.cr0 & CR0_WP) !== 0)) this.pageFault(lin, write, user, PF_P);
    const want = write ? 0x60 : 0x20;
    if ((leaf & want) !== want) this.writePhys32(leafAddr, leaf | want);
    this.walkUserOk = userOk;
    this.walkUserWriteOk = userOk && rw;
    this.walkGlobal = (leaf & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0;
    this.walkLarge = large;
    return physHi * 0x1_0000_0000 + ((physLo | (lin & 0xfff)) >>> 0);
  }

  /** #PF: `bits` are P and RSVD as the walk found them; W/R and U/S come from the access. */
  private pageFault(lin: number, write: boolean, user: boolean, bits: number): never {
    this.cr2 = lin | 0;
    this.fault(Vector.PF, bits | (write ? PF_W : 0) | (user ? PF_U : 0));
  }

  /**
   * Page-table accesses: physical, through the slots (page tables in MMIO, or above 4 GiB
   * where no slot can be, are not supported). `addr` may exceed 32 bits under PAE.
   */
  private readPhys32(addr: number): number {
    const slot = this.memory.findSlot(addr);
    if (!slot) throw new EmulationGap(`page table at unbacked physical address 0x${addr.toString(16)}`);
    const b = slot.bytes, i = addr - slot.guestPhysAddr;
    return b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
  }
  private writePhys32(addr: number, v: number): void {
    const slot = this.memory.findSlot(addr);
    if (!slot) throw new EmulationGap(`page table at unbacked physical address 0x${addr.toString(16)}`);
    const b = slot.bytes, i = addr - slot.guestPhysAddr;
    b[i] = v; b[i + 1] = v >> 8; b[i + 2] = v >> 16; b[i + 3] = v >> 24;
    this.memory.markDirty(slot, i, 4);
  }

  /**
   * Translates the page of `lin` and caches it; returns false when it is not RAM (MMIO, or a
   * write to a read-only slot), leaving the physical address in `lastPhys`.
   */
  private fillTlb(lin: number, write: boolean): boolean {
    const phys = this.translate(lin, write);
    this.lastPhys = phys;
    const slot = this.memory.findSlot(phys);
    if (!slot) return false;
    if (write && (slot.flags & KVM_MEM_READONLY) !== 0) return false;
    const page = lin >>> 12;
    const off = ((phys & ~0xfff) - slot.guestPhysAddr - ((lin >>> 0) & ~0xfff)) | 0;
    if (this.tlbRead[page] === 0 && this.tlbWrite[page] === 0) {
      if (this.tlbCount < TLB_LIST_MAX) this.tlbList[this.tlbCount] = page;
      this.tlbCount++;
    }
    this.tlbGlobal[page] = this.walkGlobal ? 1 : 0;
    if (this.walkLarge !== 0) {
      // Mark every 2 MiB region the large page covers (both halves of a 4 MiB page).
      const r = (page >>> (this.walkLarge - 12)) << (this.walkLarge - 21);
      this.tlbLarge.fill(this.walkLarge, r, r + (1 << (this.walkLarge - 21)));
      this.tlbLargeUsed = true;
    }
    if (write) {
      // Dirty logging: the page is marked when its write entry is created; reading the log
      // flushes the TLB so the next write marks it again.
      this.memory.markDirty(slot, (phys - slot.guestPhysAddr) & ~0xfff, 1);
      // A write to a page with compiled code drops that code first (self-modifying code).
      if (this.jit !== null) this.jit.invalidatePage(this, slot.id + 1, (phys - slot.guestPhysAddr) >>> 12);
      this.tlbWrite[page] = (slot.id + 1) | (this.walkUserWriteOk ? TLB_USER : 0);
      this.tlbWriteOff[page] = off;
    } else {
      this.tlbRead[page] = (slot.id + 1) | (this.walkUserOk ? TLB_USER : 0);
      this.tlbReadOff[page] = off;
    }
    return true;
  }

  readLin8(lin: number): number {
    const p = lin >>> 12;
    const s = this.tlbRead[p]!;
    if (s > this.tlbNeed) return this.mems[s & TLB_SLOT]![(lin + this.tlbReadOff[p]!) | 0]!;
    if (this.fillTlb(lin, false)) return this.readLin8(lin);
    return this.mmioRead(this.lastPhys, 1);
  }

  readLin16(lin: number): number {
    const p = lin >>> 12;
    const s = this.tlbRead[p]!;
    if (s > this.tlbNeed && (lin & 0xfff) !== 0xfff) {
      const m = this.mems[s & TLB_SLOT]!, i = (lin + this.tlbReadOff[p]!) | 0;
      return m[i]! | (m[i + 1]! << 8);
    }
    if ((lin & 0xfff) === 0xfff) return this.readLin8(lin) | (this.readLin8((lin + 1) | 0) << 8);
    if (this.fillTlb(lin, false)) return this.readLin16(lin);
    return this.mmioRead(this.lastPhys, 2);
  }

  readLin32(lin: number): number {
    const p = lin >>> 12;
    const s = this.tlbRead[p]!;
    if (s > this.tlbNeed && (lin & 0xfff) <= 0xffc) {
      const m = this.mems[s & TLB_SLOT]!, i = (lin + this.tlbReadOff[p]!) | 0;
      return m[i]! | (m[i + 1]! << 8) | (m[i + 2]! << 16) | (m[i + 3]! << 24);
    }
    if ((lin & 0xfff) > 0xffc) {
      return this.readLin16(lin) | (this.readLin16((lin + 2) | 0) << 16);
    }
    if (this.fillTlb(lin, false)) return this.readLin32(lin);
    return this.mmioRead(this.lastPhys, 4);
  }

  writeLin8(lin: number, v: number): void {
    const p = lin >>> 12;
    const s = this.tlbWrite[p]!;
    if (s > this.tlbNeed) { this.mems[s & TLB_SLOT]![(lin + this.tlbWriteOff[p]!) | 0] = v; return; }
    if (this.fillTlb(lin, true)) { this.writeLin8(lin, v); return; }
    this.mmioWrite(this.lastPhys, 1, v);
  }

  writeLin16(lin: number, v: number): void {
    const p = lin >>> 12;
    const s = this.tlbWrite[p]!;
    if (s > this.tlbNeed && (lin & 0xfff) !== 0xfff) {
      const m = this.mems[s & TLB_SLOT]!, i = (lin + this.tlbWriteOff[p]!) | 0;
      m[i] = v; m[i + 1] = v >> 8;
      return;
    }
    if ((lin & 0xfff) === 0xfff) { this.writeSplit(lin, v, 2); return; }
    if (this.fillTlb(lin, true)) { this.writeLin16(lin, v); return; }
    this.mmioWrite(this.lastPhys, 2, v);
  }

  writeLin32(lin: number, v: number): void {
    const p = lin >>> 12;
    const s = this.tlbWrite[p]!;
    if (s > this.tlbNeed && (lin & 0xfff) <= 0xffc) {
      const m = this.mems[s & TLB_SLOT]!, i = (lin + this.tlbWriteOff[p]!) | 0;
      m[i] = v; m[i + 1] = v >> 8; m[i + 2] = v >> 16; m[i + 3] = v >> 24;
      return;
    }
    if ((lin & 0xfff) > 0xffc) { this.writeSplit(lin, v, 4); return; }
    if (this.fillTlb(lin, true)) { this.writeLin32(lin, v); return; }
    this.mmioWrite(this.lastPhys, 4, v);
  }

  /** A write that straddles two pages: both are translated (and may fault) before any byte is written. */
  private writeSplit(lin: number, v: number, size: number): void {
    const second = (lin + size - 1) | 0;
    if (!(this.tlbWrite[second >>> 12]! > this.tlbNeed)) this.fillTlb(second, true);
    if (!(this.tlbWrite[lin >>> 12]! > this.tlbNeed)) this.fillTlb(lin, true);
    // Bytes that are not RAM (MMIO exits) go first, so that an exit happens before any RAM
    // byte changes and the replayed instruction reads the memory it read the first time.
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < size; i++) {
        const a = (lin + i) | 0;
        const ram = this.tlbWrite[a >>> 12]! > this.tlbNeed;
        if (ram === (pass === 1)) this.writeLin8(a, (v >> (i * 8)) & 0xff);
      }
    }
  }

  // --- Segmented memory -----------------------------------------------------------------------

  read8(seg: number, off: number): number {
    if ((this.segFlat & (1 << seg)) !== 0 && (off >>> 0) <= 4294967295) return this.readLin8(off);
    this.checkLimit(seg, off, 1);
    return this.readLin8((this.segBase[seg]! + off) | 0);
  }
  read16(seg: number, off: number): number {
    if ((this.segFlat & (1 << seg)) !== 0 && (off >>> 0) <= 4294967294) return this.readLin16(off);
    this.checkLimit(seg, off, 2);
    return this.readLin16((this.segBase[seg]! + off) | 0);
  }
  read32(seg: number, off: number): number {
    if ((this.segFlat & (1 << seg)) !== 0 && (off >>> 0) <= 4294967292) return this.readLin32(off);
    this.checkLimit(seg, off, 4);
    return this.readLin32((this.segBase[seg]! + off) | 0);
  }
  write8(seg: number, off: number, v: number): void {
    if ((this.segFlat & (1 << seg)) !== 0 && (off >>> 0) <= 4294967295) { this.writeLin8(off, v); return; }
    this.checkLimit(seg, off, 1);
    this.writeLin8((this.segBase[seg]! + off) | 0, v);
  }
  write16(seg: number, off: number, v: number): void {
    if ((this.segFlat & (1 << seg)) !== 0 && (off >>> 0) <= 4294967294) { this.writeLin16(off, v); return; }
    this.checkLimit(seg, off, 2);
    this.writeLin16((this.segBase[seg]! + off) | 0, v);
  }
  write32(seg: number, off: number, v: number): void {
    if ((this.segFlat & (1 << seg)) !== 0 && (off >>> 0) <= 4294967292) { this.writeLin32(off, v); return; }
    this.checkLimit(seg, off, 4);
    this.writeLin32((this.segBase[seg]! + off) | 0, v);
  }

  // --- Stack ----------------------------------------------------------------------------------

  /** The stack pointer as the current stack size sees it. */
  get sp(): number {
    return this.stack32 ? this.r32[4]! : this.r16[8]!;
  }
  /** Offset `delta` bytes from the stack pointer, wrapped to the stack size. */
  spOffset(delta: number): number {
    return this.stack32 ? (this.r32[4]! + delta) | 0 : (this.r16[8]! + delta) & 0xffff;
  }
  /** Moves the stack pointer by `delta`, keeping the upper half of ESP on a 16-bit stack. */
  adjustSp(delta: number): void {
    if (this.stack32) this.r32[4] = (this.r32[4]! + delta) | 0;
    else this.r16[8] = (this.r16[8]! + delta) & 0xffff;
  }

  push16(v: number): void {
    const sp = this.spOffset(-2);
    this.write16(SS, sp, v);
    this.adjustSp(-2);
  }
  push32(v: number): void {
    const sp = this.spOffset(-4);
    this.write32(SS, sp, v);
    this.adjustSp(-4);
  }
  /** Pushes with the current operand size. */
  push(v: number): void {
    if (this.opsize32) this.push32(v);
    else this.push16(v);
  }
  pop16(): number {
    const v = this.read16(SS, this.sp);
    this.adjustSp(2);
    return v;
  }
  pop32(): number {
    const v = this.read32(SS, this.sp);
    this.adjustSp(4);
    return v;
  }

  // --- Instruction fetch ----------------------------------------------------------------------

  /**
   * The fetch window: EIPs in [fetchMin, fetchMax] lie in one cached code page inside the CS
   * limit, and their bytes are fetchMem[eip + fetchDelta]. Dropped (fetchMax = -1) whenever CS,
   * the CPL or any translation changes.
   */
  private fetchMem: Uint8Array = new Uint8Array(0);
  /** TLB slot index (slot id + 1) of the fetch window's memory. */
  private fetchSlot = 0;
  /** Compiled blocks; null when the JIT is off. */
  jit: BlockCache | null = X86Cpu.JIT_ENABLED ? new BlockCache() : null;
  /** Set when a write invalidated compiled code: the running block stops after that write. */
  jitStale = false;
  /** Counts run() calls: compiled blocks re-check their code bytes once per run. */
  runSerial = 0;
  /** Instruction bytes inside the fetch window, for the block compiler. */
  readonly codeReader: CodeReader = {
    byte: (eip: number): number => {
      const e = eip >>> 0;
      return e <= this.fetchMax && e >= this.fetchMin ? this.fetchMem[e + this.fetchDelta]! : -1;
    },
  };
  private fetchDelta = 0;
  private fetchMin = 0;
  private fetchMax = -1;

  dropFetchWindow(): void {
    this.fetchMax = -1;
  }

  fetch8(): number {
    const eip = this.eip >>> 0;
    if (eip <= this.fetchMax && eip >= this.fetchMin) {
      this.eip = (eip + 1) | 0;
      return this.fetchMem[eip + this.fetchDelta]!;
    }
    return this.fetch8Slow();
  }

  private fetch8Slow(): number {
    const eip = this.eip >>> 0;
    const limit = this.segLimit[CS]!;
    if (eip > limit) this.fault(Vector.GP, 0);
    const lin = (this.segBase[CS]! + eip) | 0;
    const v = this.readLin8(lin);
    this.eip = (eip + 1) | 0;
    // Open a window on this page if it is RAM visible at the current privilege.
    const p = lin >>> 12;
    const s = this.tlbRead[p]!;
    if (s > this.tlbNeed) {
      const pageStart = eip - (lin & 0xfff);
      this.fetchMem = this.mems[s & TLB_SLOT]!;
      this.fetchSlot = s & TLB_SLOT;
      // Index of the page's first byte in the slot, wrapped mod 2^32 like every TLB index,
      // so that eip + fetchDelta stays inside the slot for any linear address.
      this.fetchDelta = (((lin & ~0xfff) + this.tlbReadOff[p]!) | 0) - pageStart;
      this.fetchMin = Math.max(pageStart, 0);
      this.fetchMax = Math.min(pageStart + 0xfff, limit);
    }
    return v;
  }
  fetch16(): number {
    return this.fetch8() | (this.fetch8() << 8);
  }
  fetch32(): number {
    return this.fetch16() | (this.fetch16() << 16);
  }
  /** Fetches an immediate of the current operand size. */
  fetchImm(): number {
    return this.opsize32 ? this.fetch32() : this.fetch16();
  }

  // --- Port and MMIO accesses, with replay ----------------------------------------------------

  private replayNext(kind: number, addr: number): number {
    // Returns the index of the logged access to consume, or -1 if this access is new.
    if (this.replayCursor >= this.replayCount) return -1;
    const i = this.replayCursor++;
    if (this.replayKind[i] !== kind || this.replayAddr[i] !== addr) {
      throw new EmulationGap(`replayed access mismatch at 0x${addr.toString(16)}`);
    }
    return i;
  }

  private replayValue(i: number, len: number): number {
    const d = this.replayData, o = i * 8;
    let v = 0;
    for (let k = len - 1; k >= 0; k--) v = (v << 8) | d[o + k]!;
    return v;
  }

  private logAccess(kind: number, addr: number, src: Uint8Array, len: number): void {
    if (this.replayCount >= REPLAY_MAX) throw new EmulationGap('too many port/MMIO accesses in one instruction');
    const i = this.replayCount++;
    this.replayKind[i] = kind;
    this.replayAddr[i] = addr;
    for (let k = 0; k < len; k++) this.replayData[i * 8 + k] = src[k]!;
  }

  /** Forgets completed accesses: call at every instruction (or REP iteration) boundary. */
  endReplay(): void {
    this.replayCount = 0;
    this.replayCursor = 0;
  }

  /** The local APIC's page, if `phys` is in it and the APIC is enabled. */
  private apicPage(phys: number): boolean {
    return this.lapic !== null && (this.apicBase & APIC_BASE_ENABLE) !== 0 && Math.floor(phys / 4096) === this.apicBase >>> 12;
  }

  private kernelMmioRead(phys: number, len: number): number {
    const d = this.kernelData[len]!;
    if (this.apicPage(phys)) this.lapic!.read(phys & 0xfff, d);
    else if (this.kernelMmio === null || !this.kernelMmio.read(phys, d)) return -1;
    let v = 0;
    for (let k = len - 1; k >= 0; k--) v = (v << 8) | d[k]!;
    return len === 4 ? v >>> 0 : v;
  }

  private kernelMmioWrite(phys: number, len: number, v: number): boolean {
    const d = this.kernelData[len]!;
    for (let k = 0; k < len; k++) d[k] = (v >>> (k * 8)) & 0xff;
    if (this.apicPage(phys)) {
      this.lapic!.write(phys & 0xfff, d);
      return true;
    }
    return this.kernelMmio !== null && this.kernelMmio.write(phys, d);
  }

  mmioRead(phys: number, len: number): number {
    if (len <= 4 && (this.lapic !== null || this.kernelMmio !== null)) {
      const k = this.kernelMmioRead(phys, len);
      if (k >= 0) return k;
    }
    const i = this.replayNext(ACCESS_MMIO_READ, phys);
    if (i >= 0) return this.replayValue(i, len);
    const m = this.run.mmio;
    m.physAddr = phys; m.len = len; m.isWrite = false; m.data.fill(0);
    this.pendingKind = ACCESS_MMIO_READ; this.pendingAddr = phys; this.pendingLen = len;
    this.run.exitReason = KVM_EXIT_MMIO;
    throw EXIT;
  }

  mmioWrite(phys: number, len: number, v: number): void {
    if (len <= 4 && (this.lapic !== null || this.kernelMmio !== null) && this.kernelMmioWrite(phys, len, v)) return;
    if (this.replayNext(ACCESS_MMIO_WRITE, phys) >= 0) return;
    const m = this.run.mmio;
    m.physAddr = phys; m.len = len; m.isWrite = true; m.data.fill(0);
    for (let k = 0; k < len; k++) m.data[k] = (v >>> (k * 8)) & 0xff;
    this.logAccess(ACCESS_MMIO_WRITE, phys, m.data, len);
    this.run.exitReason = KVM_EXIT_MMIO;
    throw EXIT;
  }

  ioIn(port: number, size: number): number {
    const kio = this.kernelIo;
    if (kio !== null) {
      const d = this.kernelData[size]!;
      if (kio.read(port, d)) {
        let v = 0;
        for (let k = size - 1; k >= 0; k--) v = (v << 8) | d[k]!;
        return size === 4 ? v >>> 0 : v;
      }
    }
    const i = this.replayNext(ACCESS_IO_IN, port);
    if (i >= 0) return this.replayValue(i, size);
    const io = this.run.io;
    io.direction = KVM_EXIT_IO_IN; io.size = size; io.port = port; io.count = 1;
    io.data.fill(0, 0, 8);
    this.pendingKind = ACCESS_IO_IN; this.pendingAddr = port; this.pendingLen = size;
    this.run.exitReason = KVM_EXIT_IO;
    throw EXIT;
  }

  ioOut(port: number, size: number, v: number): void {
    const kio = this.kernelIo;
    if (kio !== null) {
      const d = this.kernelData[size]!;
      for (let k = 0; k < size; k++) d[k] = (v >>> (k * 8)) & 0xff;
      if (kio.write(port, d)) return;
    }
    if (this.replayNext(ACCESS_IO_OUT, port) >= 0) return;
    const io = this.run.io;
    io.direction = KVM_EXIT_IO_OUT; io.size = size; io.port = port; io.count = 1;
    for (let k = 0; k < size; k++) io.data[k] = (v >>> (k * 8)) & 0xff;
    this.logAccess(ACCESS_IO_OUT, port, io.data, size);
    this.run.exitReason = KVM_EXIT_IO;
    throw EXIT;
  }

  // --- Interrupts -----------------------------------------------------------------------------

  /**
   * Delivers interrupt or exception `vector` with `returnEip` as the saved IP.
   * Real mode: through the IVT. Protected mode comes with the IDT work.
   */
  interrupt(vector: number, returnEip: number, errorCode = -1, software = false): void {
    if ((this.cr0 & CR0_PE) !== 0) {
      deliverProtected(this, vector, returnEip, errorCode, software);
      return;
    }
    const entry = vector * 4;
    if (entry + 3 > this.idtLimit) this.fault(Vector.GP, entry + 2);
    const ip = this.readLin16((this.idtBase + entry) | 0);
    const cs = this.readLin16((this.idtBase + entry + 2) | 0);
    // Three pushes; write all before committing SP so a fault leaves nothing behind.
    const sp0 = this.sp;
    const f = this.getEflags();
    const off = (d: number) => (this.stack32 ? (sp0 + d) | 0 : (sp0 + d) & 0xffff);
    this.write16(SS, off(-2), f);
    this.write16(SS, off(-4), this.segSel[CS]!);
    this.write16(SS, off(-6), returnEip);
    this.adjustSp(-6);
    this.flags &= ~(IF | TF | AC | RF);
    this.loadSeg(CS, cs);
    this.eip = ip;
  }

  /**
   * Delivers the pending fault. A second fault while delivering it follows the SDM's classes
   * (vol. 3, 6.15, table 6-5): contributory (#DE #TS #NP #SS #GP) after contributory, and #PF
   * or contributory after #PF, become #DF (error code 0); any other pair is handled serially
   * (the second fault is delivered instead). A fault while delivering #DF is a triple fault:
   * returns false for shutdown.
   */
  private deliverFault(): boolean {
    let vector = this.faultVector;
    let error = this.faultHasError ? this.faultError : -1;
    // Each step either escalates or moves to a fault of a higher class, so this ends quickly.
    for (let attempt = 0; attempt < 8; attempt++) {
      try {
        const pm = (this.cr0 & CR0_PE) !== 0;
        this.interrupt(vector, this.startEip, pm ? error : -1);
        return true;
      } catch (e) {
        if (e !== FAULT) throw e;
        if (vector === Vector.DF) return false;
        // Delivery writes its frame before it changes any register: only ESP needs undoing.
        this.r32[4] = this.startEsp;
        const second = this.faultVector;
        const contributory = (v: number) => v === Vector.DE || (v >= Vector.TS && v <= Vector.GP);
        const double = contributory(second) ? contributory(vector) || vector === Vector.PF : second === Vector.PF && vector === Vector.PF;
        if (double) {
          vector = Vector.DF;
          error = 0;
        } else {
          vector = second;
          error = this.faultHasError ? this.faultError : -1;
        }
      }
    }
    return false;
  }

  /** Instructions retired so far, counting the current time slice. */
  retired(): number {
    return this.instructions + (this.timeSlice - this.budget);
  }
  readTsc(): number {
    return this.tscOffset + this.clock.nowNs();
  }
  writeTsc(v: number): void {
    this.tscOffset = v - this.clock.nowNs();
  }

  /** KVM_SET_CPUID2: the table CPUID answers from. */
  setCpuid(entries: CpuidEntry[]): void {
    this.cpuidTable = entries;
    this.cpuidSetByVmm = true;
  }

  /** KVM_INTERRUPT: queues external interrupt `vector`, taken when IF=1 and no shadow. */
  injectInterrupt(vector: number): void {
    this.pendingIrq = vector & 0xff;
    this.eventPending = true;
  }

  /** KVM_NMI. */
  injectNmi(): void {
    this.pendingNmi = true;
    this.eventPending = true;
  }

  /**
   * Between two instructions: delivers a pending NMI or interrupt when the guest can take it,
   * or ends run() with KVM_EXIT_IRQ_WINDOW_OPEN when the VMM asked for the window.
   */
  private serviceEvents(): boolean {
    const run = this.run;
    // A fault while delivering the event goes through deliverFault like an instruction's,
    // with nothing of the previous instruction left to roll back.
    this.flagsSaved = false;
    if (this.pendingNmi && !this.nmiBlocked && !(this.interruptShadow && this.shadowFromMovSs)) {
      this.pendingNmi = false;
      this.nmiBlocked = true;
      this.startEip = this.eip;
      this.startEsp = this.r32[4]!;
      this.interrupt(Vector.NMI, this.eip);
    } else if (this.pendingIrq >= 0 && (this.flags & IF) !== 0 && !this.interruptShadow) {
      const v = this.pendingIrq;
      this.pendingIrq = -1;
      this.startEip = this.eip;
      this.startEsp = this.r32[4]!;
      this.interrupt(v, this.eip);
    } else if (this.lapic !== null && (this.flags & IF) !== 0 && !this.interruptShadow && this.lapic.hasInterrupt()) {
      this.startEip = this.eip;
      this.startEsp = this.r32[4]!;
      this.interrupt(this.lapic.acknowledge(), this.eip);
    } else if (run.requestInterruptWindow && this.pendingIrq < 0 && (this.flags & IF) !== 0 && !this.interruptShadow) {
      this.exitWith(KVM_EXIT_IRQ_WINDOW_OPEN);
      return true;
    }
    this.eventPending = this.pendingNmi || this.pendingIrq >= 0 || run.requestInterruptWindow || (this.lapic !== null && this.lapic.hasInterrupt());
    return false;
  }

  /** The in-kernel irqchip has news for this vCPU: look at it before the next instruction. */
  kick(): void {
    this.eventPending = true;
  }

  /**
   * Whether a halted vCPU wakes up: an NMI, or (with IF=1) an interrupt from the local APIC.
   * As in KVM, a pending interrupt wakes HLT only when it could be taken.
   */
  private wakesFromHalt(): boolean {
    if (this.pendingNmi && !this.nmiBlocked) return true;
    if ((this.flags & IF) === 0) return false;
    return this.pendingIrq >= 0 || (this.lapic !== null && this.lapic.hasInterrupt());
  }

  // --- The run loop ---------------------------------------------------------------------------

  /** Runs until an exit. Returns the exit reason, also stored in `run.exitReason`. */
  runLoop(): number {
    const run = this.run;
    if (this.memEpoch !== this.memory.epoch) this.syncMemory();
    this.runSerial++;
    this.budget = this.timeSlice;
    if (this.pendingKind !== ACCESS_NONE) {
      const src = this.pendingKind === ACCESS_IO_IN ? run.io.data : run.mmio.data;
      try {
        this.logAccess(this.pendingKind, this.pendingAddr, src, this.pendingLen);
      } catch (e) {
        this.pendingKind = ACCESS_NONE;
        this.endReplay();
        return this.internalError(e);
      }
      this.pendingKind = ACCESS_NONE;
    }
    // As KVM_RUN does, a pending port/MMIO completion is finished even with immediate_exit.
    if (run.immediateExit && this.replayCount === 0) return this.exitWith(KVM_EXIT_INTR);
    if (this.kernelTimers !== null) this.kernelTimers.runDue();
    if (this.halted) {
      // Halted in the kernel (in-kernel irqchip): stay halted until something wakes the vCPU.
      if (!this.wakesFromHalt()) return this.exitWith(KVM_EXIT_HLT);
      this.halted = false;
    }
    this.eventPending = this.pendingNmi || this.pendingIrq >= 0 || run.requestInterruptWindow || this.lapic !== null;
    const jit = this.jit;
    for (;;) {
      try {
        if (this.replayCount !== 0) {
          // Complete the instruction that exited, feeding it the logged accesses.
          this.replayCursor = 0;
          this.startEip = this.eip;
          step(this);
          this.endReplay();
          this.budget--;
        }
        if (run.immediateExit) return this.exitWith(KVM_EXIT_INTR);
        while (this.budget > 0) {
          if (this.eventPending && this.serviceEvents()) return run.exitReason;
          if (jit !== null) {
            const eip = this.eip >>> 0;
            if (eip <= this.fetchMax && eip >= this.fetchMin && jit.run(this, this.fetchSlot, eip + this.fetchDelta, this.codeReader, this.fetchMem)) continue;
          }
          this.startEip = this.eip;
          step(this);
          this.budget--;
        }
        this.instructions += this.timeSlice;
        this.budget = this.timeSlice;
        return this.exitWith(KVM_EXIT_INTR);
      } catch (e) {
        if (e === EXIT) {
          this.rollback();
          this.replayCursor = 0;
          return this.exitWith(run.exitReason);
        }
        if (e === FAULT) {
          // The replay log is kept while the fault is delivered: delivery through MMIO
          // (an IDT or stack the VMM backs) consumes its logged accesses on later runs.
          this.rollback();
          try {
            if (!this.deliverFault()) {
              this.endReplay();
              return this.exitWith(KVM_EXIT_SHUTDOWN);
            }
          } catch (e2) {
            if (e2 === EXIT) {
              this.rollback();
              this.replayCursor = 0;
              return this.exitWith(run.exitReason);
            }
            this.endReplay();
            return this.internalError(e2);
          }
          this.endReplay();
          this.budget--;
          continue;
        }
        this.endReplay();
        return this.internalError(e);
      }
    }
  }

  private exitWith(reason: number): number {
    const run = this.run;
    this.exitCount++;
    if (reason !== KVM_EXIT_INTR) {
      this.instructions += this.timeSlice - this.budget;
      this.budget = this.timeSlice;
    }
    run.exitReason = reason;
    run.ifFlag = (this.flags & IF) !== 0;
    run.readyForInterruptInjection = run.ifFlag && !this.interruptShadow;
    return reason;
  }

  /** A byte of RAM at a linear address, without faults, exits or A/D updates; -1 if it cannot be seen. */
  private peekLinear(lin: number): number {
    const p = lin >>> 12;
    const s = this.tlbRead[p]!;
    if (s !== 0) return this.mems[s & TLB_SLOT]![(lin + this.tlbReadOff[p]!) | 0] ?? -1;
    if ((this.cr0 & CR0_PG) !== 0) return -1;
    const slot = this.memory.findSlot(lin >>> 0);
    return slot ? slot.bytes[(lin >>> 0) - slot.guestPhysAddr] ?? -1 : -1;
  }

  private internalError(e: unknown): number {
    const run = this.run;
    run.internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
    const bytes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const b = this.peekLinear((this.segBase[CS]! + this.startEip + i) | 0);
      if (b < 0) break;
      bytes.push(b.toString(16).padStart(2, '0'));
    }
    const where = `${this.segSel[CS]!.toString(16).padStart(4, '0')}:${(this.startEip >>> 0).toString(16).padStart(this.code32 ? 8 : 4, '0')}`;
    const what = e instanceof EmulationGap ? `not implemented: ${e.message}` : `emulator error: ${e instanceof Error ? e.message : String(e)}`;
    run.internal.message = `${what} at ${where} (linear 0x${((this.segBase[CS]! + this.startEip) >>> 0).toString(16)}), bytes ${bytes.join(' ')}`;
    this.rollback();
    return this.exitWith(KVM_EXIT_INTERNAL_ERROR);
  }

  /**
   * Called by HLT. Without an in-kernel irqchip the VMM decides when to run the vCPU again (it
   * injects the interrupt that ends the halt). With one, the vCPU stays halted inside run()
   * until its local APIC has an interrupt for it; run() reports KVM_EXIT_HLT so the VMM can
   * sleep until the next timer deadline instead of spinning.
   */
  hlt(): void {
    if (this.lapic === null) this.exitAfterInstruction(KVM_EXIT_HLT);
    if (this.wakesFromHalt()) return;
    this.halted = true;
    this.exitAfterInstruction(KVM_EXIT_HLT);
  }

  /** IA32_APIC_BASE: base address bits, BSP and enable; the local APIC follows the enable bit. */
  setApicBase(v: number): void {
    this.apicBase = (v & 0xfffff900) >>> 0;
    if (this.lapic !== null) {
      this.lapic.hwEnabled = (v & APIC_BASE_ENABLE) !== 0;
      this.eventPending = true;
    }
  }

  // --- KVM state access -----------------------------------------------------------------------

  getRegs(out: KvmRegs): void {
    const r = this.r32;
    out.rax = r[0]! >>> 0; out.rcx = r[1]! >>> 0; out.rdx = r[2]! >>> 0; out.rbx = r[3]! >>> 0;
    out.rsp = r[4]! >>> 0; out.rbp = r[5]! >>> 0; out.rsi = r[6]! >>> 0; out.rdi = r[7]! >>> 0;
    out.r8 = out.r9 = out.r10 = out.r11 = out.r12 = out.r13 = out.r14 = out.r15 = 0;
    out.rip = this.eip >>> 0;
    out.rflags = this.getEflags() >>> 0;
  }

  setRegs(v: KvmRegs): void {
    const r = this.r32;
    r[0] = v.rax; r[1] = v.rcx; r[2] = v.rdx; r[3] = v.rbx; r[4] = v.rsp; r[5] = v.rbp; r[6] = v.rsi; r[7] = v.rdi;
    // As KVM does, a pending port/MMIO completion survives unless the VMM moved RIP.
    if ((v.rip | 0) !== this.eip) this.dropCompletion();
    this.eip = v.rip | 0;
    this.setEflags(v.rflags);
    this.updateMode();
  }

  private segOut(seg: number): KvmSegment {
    const ar = this.segAr[seg]!;
    const s = emptySegment();
    s.base = this.segBase[seg]! >>> 0;
    s.limit = this.segLimit[seg]!;
    s.selector = this.segSel[seg]!;
    s.type = ar & 0xf;
    s.s = (ar >> 4) & 1;
    s.dpl = (ar >> 5) & 3;
    s.present = (ar >> 7) & 1;
    s.avl = (ar >> 12) & 1;
    s.l = (ar >> 13) & 1;
    s.db = (ar >> 14) & 1;
    s.g = (ar >> 15) & 1;
    s.unusable = (ar >> 16) & 1;
    return s;
  }

  private segIn(seg: number, s: KvmSegment): void {
    const ar = (s.type & 0xf) | ((s.s & 1) << 4) | ((s.dpl & 3) << 5) | ((s.present & 1) << 7) |
      ((s.avl & 1) << 12) | ((s.l & 1) << 13) | ((s.db & 1) << 14) | ((s.g & 1) << 15) | ((s.unusable & 1) << 16);
    this.loadSegRaw(seg, s.selector, s.base, s.limit, ar);
  }

  /** KVM_GET_FPU: the x87 state in FXSAVE form. */
  getFpu(out: KvmFpu): void {
    const x = this.x87;
    for (let i = 0; i < 8; i++) {
      const r = x.st(i), b = out.fpr[i] ?? (out.fpr[i] = new Uint8Array(16));
      b.fill(0);
      for (let k = 0; k < 4; k++) { b[k] = r.lo >>> (8 * k); b[4 + k] = r.hi >>> (8 * k); }
      b[8] = r.exp & 0xff; b[9] = ((r.exp >> 8) & 0x7f) | (r.sign << 7);
    }
    let abridged = 0;
    for (let i = 0; i < 8; i++) if ((x.empty & (1 << i)) === 0) abridged |= 1 << i;
    out.fcw = x.fcw; out.fsw = x.fsw; out.ftw = abridged;
    // As in Linux's kvm_fpu, the selectors ride in bits 32–47 of last_ip / last_dp.
    out.lastOpcode = x.fop; out.lastIp = (x.fip >>> 0) + x.fcs * 0x1_0000_0000; out.lastDp = (x.fdp >>> 0) + x.fds * 0x1_0000_0000;
    out.mxcsr = x.mxcsr;
  }

  /** KVM_SET_FPU. */
  setFpu(v: KvmFpu): void {
    const x = this.x87;
    x.fcw = v.fcw & 0x1f7f;
    x.fsw = v.fsw & 0xffff;
    const top = (v.fsw >> 11) & 7;
    x.empty = ~v.ftw & 0xff;
    for (let i = 0; i < 8; i++) {
      const b = v.fpr[i];
      if (!b) continue;
      const lo = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
      const hi = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
      x.regs[(top + i) & 7] = { sign: b[9]! >> 7, exp: b[8]! | ((b[9]! & 0x7f) << 8), hi, lo };
    }
    x.fop = v.lastOpcode & 0x7ff;
    x.fip = v.lastIp % 0x1_0000_0000 | 0; x.fcs = Math.floor(v.lastIp / 0x1_0000_0000) & 0xffff;
    x.fdp = v.lastDp % 0x1_0000_0000 | 0; x.fds = Math.floor(v.lastDp / 0x1_0000_0000) & 0xffff;
    x.mxcsr = v.mxcsr & 0xffbf;
    x.updateEs();
  }

  getSregs(out: KvmSregs): void {
    out.es = this.segOut(ES); out.cs = this.segOut(CS); out.ss = this.segOut(SS); out.ds = this.segOut(DS);
    out.fs = this.segOut(FS); out.gs = this.segOut(GS); out.ldt = this.segOut(LDTR); out.tr = this.segOut(TR);
    out.gdt = { base: this.gdtBase >>> 0, limit: this.gdtLimit };
    out.idt = { base: this.idtBase >>> 0, limit: this.idtLimit };
    out.cr0 = this.cr0 >>> 0; out.cr2 = this.cr2 >>> 0; out.cr3 = this.cr3 >>> 0; out.cr4 = this.cr4 >>> 0;
    out.cr8 = 0; out.efer = this.efer; out.apicBase = this.apicBase;
    out.interruptBitmap = [0, 0, 0, 0];
  }

  /** Forgets an unfinished port/MMIO access (the instruction will run afresh). */
  private dropCompletion(): void {
    this.endReplay();
    this.pendingKind = ACCESS_NONE;
  }

  setSregs(v: KvmSregs): void {
    if ((v.cs.base | 0) !== this.segBase[CS]) this.dropCompletion();
    this.segIn(ES, v.es); this.segIn(CS, v.cs); this.segIn(SS, v.ss); this.segIn(DS, v.ds);
    this.segIn(FS, v.fs); this.segIn(GS, v.gs); this.segIn(LDTR, v.ldt); this.segIn(TR, v.tr);
    this.gdtBase = v.gdt.base | 0; this.gdtLimit = v.gdt.limit & 0xffff;
    this.idtBase = v.idt.base | 0; this.idtLimit = v.idt.limit & 0xffff;
    this.cr0 = v.cr0 | 0; this.cr2 = v.cr2 | 0; this.cr3 = v.cr3 | 0; this.cr4 = v.cr4 | 0;
    this.efer = v.efer; this.setApicBase(v.apicBase);
    this.updateMode();
    this.flushTlb();
    // kvm_sregs has no PDPTEs (KVM_GET_SREGS2 would): as KVM does for KVM_SET_SREGS, reload
    // them from the table CR3 points at, so a restored PAE guest walks what it last loaded
    // (restores put RAM back first). A table that cannot be loaded leaves them not present.
    if (this.paePaging) {
      let ok = false;
      try {
        ok = this.loadPdptes(this.cr3);
      } catch (e) {
        if (!(e instanceof EmulationGap)) throw e;
      }
      if (!ok) this.pdpte.fill(0);
    }
  }
}

// Re-exported for the interpreter, which shares these flag names.
export { AF, CF, DF, ID, IF, IOPL, NT, OF, PF, RF, SF, TF, VIF, VIP, VM, ZF };
