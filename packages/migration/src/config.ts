/**
 * The machine configuration section: what a machine must look like for a stream to load into
 * it, and the comparison that names the first difference.
 * @module
 */
import { KVM_MEM_READONLY, PAGE_SIZE } from '@kvmts/kvm-core';
import { MigrationError } from './errors.js';
import type { Snapshottable } from './persist.js';

/** One memory slot. */
export interface SlotConfig {
  slot: number;
  guestPhysAddr: number;
  size: number;
  readonly: boolean;
}

/** The CONFIG section. */
export interface MachineConfig {
  kind: string;
  /** Total bytes of all slots. */
  memorySize: number;
  slots: SlotConfig[];
  vcpus: number;
  /** Userspace devices, in restore order. */
  devices: { name: string; version: number }[];
  /** Machine-specific options (see {@link Snapshottable.options}). */
  options: Record<string, unknown>;
}

/** The configuration of `m`. */
export function describeMachine(m: Snapshottable): MachineConfig {
  const slots = m.vm.memory.listSlots().map((s) => ({ slot: s.id, guestPhysAddr: s.guestPhysAddr, size: s.size, readonly: (s.flags & KVM_MEM_READONLY) !== 0 }));
  slots.sort((a, b) => a.slot - b.slot);
  const names = new Set<string>();
  const devices = m.devices().map((d) => {
    if (names.has(d.name)) throw new MigrationError('config-mismatch', `the machine lists device '${d.name}' twice`);
    names.add(d.name);
    return { name: d.name, version: d.device.version };
  });
  return {
    kind: m.kind,
    memorySize: slots.reduce((n, s) => n + s.size, 0),
    slots,
    vcpus: m.vcpus.length,
    devices,
    options: JSON.parse(JSON.stringify(m.options)) as Record<string, unknown>,
  };
}

function mib(n: number): string {
  return n % (1 << 20) === 0 ? `${n / (1 << 20)} MiB` : `${n} bytes`;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks that a parsed CONFIG section has the right shape; throws 'corrupt' naming the field. */
export function validateConfig(v: unknown): MachineConfig {
  const bad = (what: string): MigrationError => new MigrationError('corrupt', `corrupt stream: the CONFIG section's ${what}`);
  if (!isObj(v)) throw bad('value is not an object');
  if (typeof v.kind !== 'string') throw bad('kind is missing');
  if (!Number.isSafeInteger(v.memorySize)) throw bad('memorySize is not an integer');
  if (!Number.isInteger(v.vcpus) || (v.vcpus as number) < 1) throw bad('vcpus is not a positive integer');
  if (!Array.isArray(v.slots)) throw bad('slots is not a list');
  for (const s of v.slots as unknown[]) {
    if (!isObj(s) || !Number.isInteger(s.slot) || !Number.isSafeInteger(s.guestPhysAddr) || !Number.isSafeInteger(s.size) || (s.size as number) % PAGE_SIZE !== 0) {
      throw bad(`slot entry ${JSON.stringify(s)} is malformed`);
    }
  }
  if (!Array.isArray(v.devices)) throw bad('devices is not a list');
  for (const d of v.devices as unknown[]) {
    if (!isObj(d) || typeof d.name !== 'string' || !Number.isInteger(d.version)) throw bad(`device entry ${JSON.stringify(d)} is malformed`);
  }
  if (!isObj(v.options)) throw bad('options is not an object');
  return v as unknown as MachineConfig;
}

/**
 * Throws a 'config-mismatch' MigrationError naming the first difference between the stream's
 * configuration and the destination's (`here`).
 */
export function checkConfig(stream: MachineConfig, here: MachineConfig): void {
  const fail = (msg: string): never => {
    throw new MigrationError('config-mismatch', `configuration mismatch: ${msg}`);
  };
  if (stream.kind !== here.kind) fail(`the stream is of a '${stream.kind}' machine, this is a '${here.kind}' machine`);
  if (stream.memorySize !== here.memorySize) fail(`memory size is ${mib(stream.memorySize)} in the stream but ${mib(here.memorySize)} here`);
  if (stream.vcpus !== here.vcpus) fail(`the stream has ${stream.vcpus} vCPUs, this machine has ${here.vcpus}`);
  const hs = new Map(here.slots.map((s) => [s.slot, s]));
  for (const s of stream.slots) {
    const h = hs.get(s.slot);
    if (!h) fail(`memory slot ${s.slot} (${mib(s.size)} at 0x${s.guestPhysAddr.toString(16)}) is in the stream but not here`);
    else if (h.size !== s.size || h.guestPhysAddr !== s.guestPhysAddr) {
      fail(`memory slot ${s.slot} is ${mib(s.size)} at 0x${s.guestPhysAddr.toString(16)} in the stream but ${mib(h.size)} at 0x${h.guestPhysAddr.toString(16)} here`);
    } else if (h.readonly !== s.readonly) fail(`memory slot ${s.slot} is ${s.readonly ? '' : 'not '}read-only in the stream but ${h.readonly ? '' : 'not '}here`);
  }
  for (const h of here.slots) if (!stream.slots.some((s) => s.slot === h.slot)) fail(`memory slot ${h.slot} exists here but not in the stream`);
  const hd = new Map(here.devices.map((d) => [d.name, d.version]));
  for (const d of stream.devices) {
    const v = hd.get(d.name);
    if (v === undefined) fail(`device '${d.name}' is in the stream but not in this machine`);
    else if (v !== d.version) fail(`device '${d.name}' has state version ${d.version} in the stream but version ${v} here`);
  }
  for (const d of here.devices) if (!stream.devices.some((s) => s.name === d.name)) fail(`device '${d.name}' is in this machine but not in the stream`);
  const keys = new Set([...Object.keys(stream.options), ...Object.keys(here.options)]);
  for (const k of [...keys].sort()) {
    const a = JSON.stringify(stream.options[k]);
    const b = JSON.stringify(here.options[k]);
    if (a !== b) fail(`option '${k}' is ${a ?? 'unset'} in the stream but ${b ?? 'unset'} here`);
  }
}
