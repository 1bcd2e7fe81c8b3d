/**
 * The machine state section (VM, vCPUs, devices) and the ordered save and restore of a
 * whole machine.
 * @module
 */
import { MigrationError } from './errors.js';
import type { MigratableMachine } from './persist.js';
import { quiesceVcpu, restoreClock, restoreVcpu, restoreVmChips, saveVcpu, saveVm, type VcpuState, type VmState } from './vcpu.js';

/** The STATE section. */
export interface MachineState {
  vm: VmState;
  vcpus: VcpuState[];
  /** Device states in restore order. */
  devices: { name: string; version: number; state: unknown }[];
}

/**
 * Captures the state of a paused machine: quiesces every vCPU first (which may complete a
 * string I/O that writes guest memory, so RAM must be read after this), then saves the VM,
 * the vCPUs and the devices.
 */
export function captureState(m: MigratableMachine): MachineState {
  if (!m.paused) throw new MigrationError('restore', 'the machine must be paused while its state is captured');
  for (const v of m.vcpus) quiesceVcpu(v);
  const msrs = m.kvm.getMsrIndexList();
  return {
    vm: saveVm(m.vm),
    vcpus: m.vcpus.map((v) => saveVcpu(v, msrs)),
    devices: m.devices().map((d) => ({ name: d.name, version: d.device.version, state: d.device.save() })),
  };
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks the shape of a parsed STATE section. */
export function validateState(v: unknown): MachineState {
  const bad = (what: string): MigrationError => new MigrationError('corrupt', `corrupt stream: the STATE section's ${what}`);
  if (!isObj(v)) throw bad('value is not an object');
  if (!isObj(v.vm) || typeof v.vm.clockNs !== 'number') throw bad('vm state is malformed');
  if (!Array.isArray(v.vcpus)) throw bad('vcpus is not a list');
  v.vcpus.forEach((c: unknown, i) => {
    if (!isObj(c) || !isObj(c.sregs) || !isObj(c.regs) || !isObj(c.fpu) || !Array.isArray(c.msrs) || !isObj(c.events) || !Array.isArray(c.cpuid) || typeof c.mpState !== 'number') {
      throw bad(`vCPU ${i} state is malformed`);
    }
    const fpu = c.fpu as Record<string, unknown>;
    if (!Array.isArray(fpu.fpr) || fpu.fpr.length !== 8 || !Array.isArray(fpu.xmm)) throw bad(`vCPU ${i} FPU state is malformed`);
  });
  if (!Array.isArray(v.devices)) throw bad('devices is not a list');
  for (const d of v.devices as unknown[]) {
    if (!isObj(d) || typeof d.name !== 'string' || !Number.isInteger(d.version) || !('state' in d)) throw bad(`device entry ${JSON.stringify(d)?.slice(0, 80)} is malformed`);
  }
  return v as unknown as MachineState;
}

/**
 * Loads a state into a fresh, paused machine whose RAM is already loaded, in this order:
 * clock, userspace devices, in-kernel irqchip and PIT, then each vCPU (see the README).
 */
export function applyState(m: MigratableMachine, s: MachineState): void {
  if (s.vcpus.length !== m.vcpus.length) throw new MigrationError('config-mismatch', `configuration mismatch: the state has ${s.vcpus.length} vCPUs, this machine has ${m.vcpus.length}`);
  restoreClock(m.vm, s.vm);
  const devices = new Map(m.devices().map((d) => [d.name, d.device]));
  const seen = new Set<string>();
  for (const d of s.devices) {
    const dev = devices.get(d.name);
    if (!dev) throw new MigrationError('config-mismatch', `configuration mismatch: device '${d.name}' is in the stream but not in this machine`);
    if (dev.version !== d.version) throw new MigrationError('version', `device '${d.name}' has state version ${d.version} in the stream but version ${dev.version} here`);
    if (seen.has(d.name)) throw new MigrationError('corrupt', `corrupt stream: device '${d.name}' appears twice in the STATE section`);
    seen.add(d.name);
    try {
      dev.restore(d.state);
    } catch (err) {
      throw new MigrationError('restore', `restoring device '${d.name}' failed: ${(err as Error).message}`, { cause: err });
    }
  }
  for (const name of devices.keys()) if (!seen.has(name)) throw new MigrationError('config-mismatch', `configuration mismatch: device '${name}' has no state in the stream`);
  restoreVmChips(m.vm, s.vm);
  s.vcpus.forEach((v, i) => restoreVcpu(m.vcpus[i]!, v, i));
}
