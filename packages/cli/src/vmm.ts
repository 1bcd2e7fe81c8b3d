/**
 * The VMM: one VM with one RAM slot and one vCPU in real mode, the PC's first devices on an
 * I/O bus, and the run loop that services the vCPU's exits.
 * @module
 */

import { ExitDispatcher, type ExitRecord } from './exit-dispatch.js';
import {
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  Kvm,
  emptyRegs,
  type KvmSegment,
  type VcpuFd,
  type VmFd,
} from '@kvmts/kvm-core';
import {
  COM1_BASE,
  DEBUG_EXIT_PORT,
  DEBUG_EXIT_SIZE,
  DebugExit,
  IoBus,
  MmioBus,
  SERIAL_PORT_LEN,
  Serial,
} from '@kvmts/devices';
import { realModeEntry, type RealModeEntry } from './image.js';
import { ExitStatus } from './errors.js';

/** EFLAGS.IF */
const EFLAGS_IF = 0x200;
const CR0_PE = 0x1;
const CR0_PG = 0x8000_0000;

/** Why a run ended. */
export type RunOutcome =
  /** HLT with IF=0: nothing can wake the vCPU, the guest is done. */
  | { readonly kind: 'halted' }
  /** HLT with IF=1: the guest waits for an interrupt, but no device can raise one yet. */
  | { readonly kind: 'halted-with-interrupts' }
  /** The guest wrote `value` to the debug-exit port. */
  | { readonly kind: 'debug-exit'; readonly value: number }
  /** Triple fault. */
  | { readonly kind: 'shutdown' }
  | { readonly kind: 'internal-error'; readonly suberror: number; readonly message: string }
  | { readonly kind: 'unknown-exit'; readonly reason: number };

/** The process exit status for an outcome; see {@link ExitStatus}. */
export function outcomeExitStatus(o: RunOutcome): number {
  switch (o.kind) {
    case 'halted':
      return ExitStatus.Ok;
    case 'halted-with-interrupts':
      return ExitStatus.HaltedWithInterrupts;
    case 'debug-exit':
      // The raw value, unlike QEMU's (v << 1) | 1; a process status keeps 8 bits.
      return o.value & 0xff;
    case 'shutdown':
      return ExitStatus.Shutdown;
    case 'internal-error':
    case 'unknown-exit':
      return ExitStatus.InternalError;
  }
}

/** The line to print on stderr for an outcome, if it deserves one. */
export function outcomeMessage(o: RunOutcome): string | undefined {
  switch (o.kind) {
    case 'halted':
    case 'debug-exit':
      return undefined;
    case 'halted-with-interrupts':
      return 'guest halted with interrupts enabled and no interrupt source; stopping';
    case 'shutdown':
      return 'guest triple-faulted (shutdown)';
    case 'internal-error':
      return `internal error: ${o.message}`;
    case 'unknown-exit':
      return `internal error: unexpected exit reason ${o.reason}`;
  }
}

/** The `kvm_run` fields the run loop reads and writes (KvmRun has them). */
/** What the run loop needs of a vCPU (VcpuFd has it). */
export interface RunnableVcpu {
  run(): number;
  readonly runData: ExitRecord;
  getRegs(): { rflags: number };
}

/**
 * Runs a vCPU and services its exits: port I/O goes to an {@link IoBus}, MMIO to an
 * {@link MmioBus}. Unclaimed reads return all-ones and unclaimed writes are dropped, as on
 * a PC bus with nothing attached.
 */
export class RunLoop {
  private exitValue = -1;
  private readonly exits: ExitDispatcher;

  constructor(
    private readonly vcpu: RunnableVcpu,
    private readonly io: IoBus,
    private readonly mmio: MmioBus,
    /** Called when a time slice ends (KVM_EXIT_INTR), e.g. to flush output. */
    private readonly onTimeSlice?: () => void,
  ) {
    this.exits = new ExitDispatcher(vcpu.runData, io, mmio, () => this.exitValue >= 0);
  }

  /** Stop after the current exit and report `value` (the debug-exit device calls this). */
  requestExit(value: number): void {
    this.exitValue = value;
  }

  /** Run until the guest halts, exits, faults, or the vCPU cannot go on. */
  run(): RunOutcome {
    const vcpu = this.vcpu;
    const exit = vcpu.runData;
    this.exitValue = -1;
    for (;;) {
      const reason = vcpu.run();
      switch (reason) {
        case KVM_EXIT_IO:
          this.exits.io();
          break;
        case KVM_EXIT_MMIO:
          this.exits.mmio();
          break;
        case KVM_EXIT_HLT:
          return vcpu.getRegs().rflags & EFLAGS_IF ? { kind: 'halted-with-interrupts' } : { kind: 'halted' };
        case KVM_EXIT_SHUTDOWN:
          return { kind: 'shutdown' };
        case KVM_EXIT_INTR:
          this.onTimeSlice?.();
          break;
        case KVM_EXIT_INTERNAL_ERROR:
          return { kind: 'internal-error', suberror: exit.internal.suberror, message: exit.internal.message };
        default:
          return { kind: 'unknown-exit', reason };
      }
      if (this.exitValue >= 0) return { kind: 'debug-exit', value: this.exitValue };
    }
  }


}

/** Configuration of a {@link Vmm}. */
export interface VmmConfig {
  /** Guest RAM in bytes, mapped at guest-physical 0 (a multiple of 4K). */
  memSize: number;
  /** Flat binary to copy into RAM. */
  image: Uint8Array;
  /** Guest-physical address of the image; the vCPU starts there in real mode. */
  loadAddr: number;
  /** Receives the bytes the guest sends through COM1. */
  serialOutput?: (byte: number) => void;
  /** Called when a time slice ends. */
  onTimeSlice?: () => void;
}

/**
 * A one-vCPU PC-like VM: RAM at 0, COM1 (16550A) at 0x3F8, debug-exit at 0xF4, and the
 * vCPU in real mode at the image's first byte.
 */
export class Vmm {
  readonly kvm: Kvm;
  readonly vm: VmFd;
  readonly vcpu: VcpuFd;
  readonly ioBus = new IoBus();
  readonly mmioBus = new MmioBus();
  readonly serial: Serial;
  readonly debugExit: DebugExit;
  readonly entry: RealModeEntry;
  private readonly loop: RunLoop;

  constructor(config: VmmConfig) {
    this.kvm = new Kvm();
    this.vm = this.kvm.createVm();
    const ram = new ArrayBuffer(config.memSize);
    this.vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: config.memSize, userspaceAddr: ram });
    this.vm.memory.write(config.loadAddr, config.image);

    this.vcpu = this.vm.createVcpu(0);
    this.entry = realModeEntry(config.loadAddr);
    setRealModeEntry(this.vcpu, this.entry);

    this.loop = new RunLoop(this.vcpu, this.ioBus, this.mmioBus, config.onTimeSlice);
    this.serial = new Serial(config.serialOutput ? { output: config.serialOutput } : {});
    this.debugExit = new DebugExit((v) => this.loop.requestExit(v));
    this.ioBus.insert(this.serial, COM1_BASE, SERIAL_PORT_LEN);
    this.ioBus.insert(this.debugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE);
  }

  /** Run the guest to the end; see {@link RunOutcome}. */
  run(): RunOutcome {
    return this.loop.run();
  }

  /** Close the vCPU, VM and /dev/kvm descriptors. */
  close(): void {
    this.vcpu.close();
    this.vm.close();
    this.kvm.close();
  }
}

function realModeSegment(seg: KvmSegment, selector: number, code: boolean): void {
  seg.selector = selector;
  seg.base = selector * 16;
  seg.limit = 0xffff;
  // 0xb: execute/read, accessed; 0x3: read/write, accessed
  seg.type = code ? 0xb : 0x3;
  seg.present = 1;
  seg.dpl = 0;
  seg.db = 0;
  seg.s = 1;
  seg.l = 0;
  seg.g = 0;
  seg.avl = 0;
  seg.unusable = 0;
}

/** Put a vCPU in real mode at `entry.cs:entry.ip` with the stack at `entry.ss:entry.sp`, IF=0. */
export function setRealModeEntry(vcpu: VcpuFd, entry: RealModeEntry): void {
  const sregs = vcpu.getSregs();
  realModeSegment(sregs.cs, entry.cs, true);
  realModeSegment(sregs.ss, entry.ss, false);
  for (const seg of [sregs.ds, sregs.es, sregs.fs, sregs.gs]) realModeSegment(seg, 0, false);
  sregs.idt = { base: 0, limit: 0x3ff };
  sregs.cr0 = (sregs.cr0 & ~(CR0_PE | CR0_PG)) >>> 0;
  vcpu.setSregs(sregs);

  const regs = emptyRegs();
  regs.rip = entry.ip;
  regs.rsp = entry.sp;
  regs.rflags = 0x2;
  vcpu.setRegs(regs);
}
