/**
 * vCPU and VM-level state through the kvm-core interface only, in the order the README
 * documents (and explains).
 * @module
 */
import {
  KVM_EXIT_INTR, KVM_MP_STATE_RUNNABLE, KvmError,
  type IoApicState, type KvmCpuidEntry2, type KvmFpu, type KvmMsrEntry, type KvmRegs, type KvmSregs, type KvmVcpuEvents,
  type PicState, type PitState, type Port61State, type VcpuFd, type VmFd,
} from '@kvmts/kvm-core';
import { MigrationError } from './errors.js';

/** Version of {@link VcpuState} and {@link VmState}'s shape. */
export const VCPU_STATE_VERSION = 1;

/** `KvmFpu` with its byte arrays as base64, for JSON. */
export interface FpuJson extends Omit<KvmFpu, 'fpr' | 'xmm'> {
  fpr: string[];
  xmm: string[];
}

/** Everything KVM lets a VMM save about a vCPU, JSON-able. */
export interface VcpuState {
  cpuid: KvmCpuidEntry2[];
  sregs: KvmSregs;
  regs: KvmRegs;
  fpu: FpuJson;
  msrs: KvmMsrEntry[];
  /** The local APIC's 1 KiB register image as base64; absent without an in-kernel irqchip. */
  lapic?: string;
  events: KvmVcpuEvents;
  mpState: number;
}

/** The VM-level state: guest time and the in-kernel chips. */
export interface VmState {
  clockNs: number;
  /** The 8259A pair (chip 0) and the I/O APIC (chip 2), when the VM has an in-kernel irqchip. */
  irqchip?: { pic: PicState; ioapic: IoApicState };
  /** The in-kernel PIT and port 0x61, when the VM has one. */
  pit?: { pit: PitState; port61: Port61State };
}

const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
const unb64 = (s: string, len: number, what: string): Uint8Array => {
  if (typeof s !== 'string') throw new MigrationError('corrupt', `corrupt stream: ${what} is not a base64 string`);
  const b = Buffer.from(s, 'base64');
  if (b.length !== len) throw new MigrationError('corrupt', `corrupt stream: ${what} is ${b.length} bytes, expected ${len}`);
  return new Uint8Array(b.buffer, b.byteOffset, b.length).slice();
};

function absent(err: unknown): boolean {
  return err instanceof KvmError && err.errno === 'ENXIO';
}

/**
 * Step 1 of saving: completes a port or MMIO access the vCPU last exited for (its instruction
 * is not finished until the next run) without running guest code. Idempotent.
 */
export function quiesceVcpu(vcpu: VcpuFd): void {
  const run = vcpu.runData;
  run.immediateExit = true;
  try {
    const r = vcpu.run();
    if (r !== KVM_EXIT_INTR) throw new MigrationError('restore', `quiescing the vCPU: run() with immediateExit returned exit ${r}, expected KVM_EXIT_INTR`);
  } finally {
    run.immediateExit = false;
  }
}

/** Saves a quiesced vCPU (call {@link quiesceVcpu} first). */
export function saveVcpu(vcpu: VcpuFd, msrIndices: readonly number[]): VcpuState {
  const fpu = vcpu.getFpu();
  let lapic: string | undefined;
  try {
    lapic = b64(vcpu.getLapic());
  } catch (err) {
    if (!absent(err)) throw err;
  }
  return {
    cpuid: vcpu.getCpuid2(),
    sregs: vcpu.getSregs(),
    regs: vcpu.getRegs(),
    fpu: { ...fpu, fpr: fpu.fpr.map(b64), xmm: fpu.xmm.map(b64) },
    msrs: vcpu.getMsrs(msrIndices),
    ...(lapic !== undefined ? { lapic } : {}),
    events: vcpu.getVcpuEvents(),
    mpState: vcpu.getMpState(),
  };
}

/**
 * Restores a vCPU of a fresh VM whose clock is already set (see the README for why each step
 * is where it is): CPUID, sregs, regs, FPU, MSRs, LAPIC, events, MP state.
 */
export function restoreVcpu(vcpu: VcpuFd, s: VcpuState, index = 0): void {
  const step = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      throw new MigrationError('restore', `restoring vCPU ${index}: ${what} failed: ${(err as Error).message}`, { cause: err });
    }
  };
  step('KVM_SET_CPUID2', () => vcpu.setCpuid2(s.cpuid));
  step('KVM_SET_SREGS', () => vcpu.setSregs(s.sregs));
  step('KVM_SET_REGS', () => vcpu.setRegs(s.regs));
  step('KVM_SET_FPU', () => {
    const fpu: KvmFpu = { ...s.fpu, fpr: s.fpu.fpr.map((x, i) => unb64(x, 16, `fpr[${i}]`)), xmm: s.fpu.xmm.map((x, i) => unb64(x, 16, `xmm[${i}]`)) };
    vcpu.setFpu(fpu);
  });
  step('KVM_SET_MSRS', () => {
    const n = vcpu.setMsrs(s.msrs);
    if (n !== s.msrs.length) throw new Error(`only ${n} of ${s.msrs.length} MSRs were accepted (MSR 0x${s.msrs[n]?.index.toString(16)} is unknown here)`);
  });
  if (s.lapic !== undefined) step('KVM_SET_LAPIC', () => vcpu.setLapic(unb64(s.lapic!, 1024, 'the LAPIC image')));
  step('KVM_SET_VCPU_EVENTS', () => vcpu.setVcpuEvents(s.events));
  if (s.lapic !== undefined || s.mpState !== KVM_MP_STATE_RUNNABLE) step('KVM_SET_MP_STATE', () => vcpu.setMpState(s.mpState));
}

/** Saves the VM's clock and in-kernel chips. */
export function saveVm(vm: VmFd): VmState {
  const state: VmState = { clockNs: vm.getClock() };
  try {
    state.irqchip = { pic: vm.getIrqchip(0), ioapic: vm.getIrqchip(2) };
  } catch (err) {
    if (!absent(err)) throw err;
  }
  try {
    state.pit = vm.getPit2();
  } catch (err) {
    if (!absent(err)) throw err;
  }
  return state;
}

/** Sets the VM's clock: the first step of a restore. */
export function restoreClock(vm: VmFd, s: VmState): void {
  if (typeof s.clockNs !== 'number' || !Number.isFinite(s.clockNs) || s.clockNs < 0) throw new MigrationError('corrupt', `corrupt stream: clockNs = ${String(s.clockNs)}`);
  vm.setClock(s.clockNs);
}

/** Restores the in-kernel irqchip and PIT (after the clock and the userspace devices). */
export function restoreVmChips(vm: VmFd, s: VmState): void {
  const step = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      if (absent(err)) throw new MigrationError('config-mismatch', `configuration mismatch: the stream has ${what} state but this VM has no such in-kernel device`);
      throw new MigrationError('restore', `restoring the VM: ${what} failed: ${(err as Error).message}`, { cause: err });
    }
  };
  if (s.irqchip) {
    step('the 8259A pair (KVM_SET_IRQCHIP 0)', () => vm.setIrqchip(0, s.irqchip!.pic));
    step('the I/O APIC (KVM_SET_IRQCHIP 2)', () => vm.setIrqchip(2, s.irqchip!.ioapic));
  }
  if (s.pit) step('the PIT (KVM_SET_PIT2)', () => vm.setPit2(s.pit!));
}
