/**
 * {@link PcMachine} as a {@link MigratableMachine} for `@kvmts/migration`: snapshots
 * (`kvmts run --restore FILE`, monitor `snapshot-save`) and live migration (`migrate`,
 * `--incoming tcp:HOST:PORT`). It only reads the machine's public fields.
 *
 * The machine's shape goes into the stream's configuration: RAM size (from the memory slots),
 * irqchip mode, clock mode, debug-exit and COM2 presence; {@link pcOptionsFromConfig} turns a
 * stream's configuration back into {@link PcMachineOptions}, so `--restore` needs no other
 * options. Virtio devices cannot be rebuilt from the stream (they have host-side backends):
 * the destination must be given the same virtio options, and the device lists are compared.
 * @module
 */

import { MigrationError, type DeviceEntry, type MachineConfig, type MigratableMachine, type Persist } from '@kvmts/migration';
import type { Kvm, VcpuFd, VmFd } from '@kvmts/kvm-core';
import { PcMachine, type PcMachineOptions } from './pc.js';

/**
 * Version of the PC's device list and of each wrapped device's state shape. Bump it when a
 * device's `save()` changes shape (or give that device its own version in {@link pcDevices}).
 */
export const PC_STATE_VERSION = 1;

/** Anything with the devices package's `save()`/`restore()` pair. */
interface Saveable<S> {
  save(): S;
  restore(state: S): void;
}

function persist<S>(d: Saveable<S>, version = PC_STATE_VERSION): Persist<unknown> {
  return { version, save: () => d.save(), restore: (s) => d.restore(s as S) };
}

/** Host-side hooks of a migratable PC. */
export interface PcMigratableHooks {
  /** Auto-converge: slow the vCPU down to `fraction` (the run loop sleeps part of each slice). */
  throttle?: (fraction: number) => void;
  /** Pages released by a balloon (bit per page of `slot`), skipped by migration. */
  releasedPages?: (slot: number) => Uint8Array | undefined;
  /** More devices to save (appended after the PC's own), e.g. from other subsystems. */
  extraDevices?: () => DeviceEntry[];
}

/**
 * The PC's userspace devices in restore order. With a userspace irqchip the PIC, PIT and port
 * 0x61 come first (the PIT's ticks are relative to the guest clock, restored before any
 * device); with the in-kernel one, they are VM state that the migration package saves itself.
 */
export function pcDevices(m: PcMachine): DeviceEntry[] {
  const out: DeviceEntry[] = [];
  const add = (name: string, d: Saveable<unknown> | undefined): void => {
    if (d) out.push({ name, device: persist(d) });
  };
  add('pic', m.pic);
  add('pit', m.pit);
  add('port61', m.port61);
  add('rtc', m.rtc);
  add('acpi-pm', m.pm);
  add('i8042', m.i8042);
  add('serial0', m.serial);
  add('serial1', m.serial2);
  add('port80', m.port80);
  add('port92', m.port92);
  add('pci-host', m.pci);
  add('piix3', m.piix);
  add('debug-exit', m.debugExit);
  const v = m.virtio;
  if (v) {
    for (const f of v.pciFunctions) add(`virtio-pci@${f.slot}`, f.transport as unknown as Saveable<unknown>);
    for (const w of v.mmioWindows) add(`virtio-mmio@0x${w.base.toString(16)}`, w.transport as unknown as Saveable<unknown>);
  }
  return out;
}

/** A {@link PcMachine} seen through the migration package's interface. */
export class PcMigratable implements MigratableMachine {
  readonly kind = 'pc';
  private isPaused = false;

  constructor(
    readonly machine: PcMachine,
    private readonly hooks: PcMigratableHooks = {},
  ) {}

  /** The options that shape the machine (RAM size is in the configuration's slots). */
  get options(): Record<string, unknown> {
    const m = this.machine;
    return {
      irqchip: m.irqchip,
      clockMode: m.vm.clock.mode,
      debugExit: m.debugExit !== undefined,
      serial2: m.serial2 !== undefined,
      virtio: m.virtio !== undefined,
    };
  }

  get kvm(): Kvm {
    return this.machine.kvm;
  }

  get vm(): VmFd {
    return this.machine.vm;
  }

  get vcpus(): readonly VcpuFd[] {
    return [this.machine.vcpu];
  }

  devices(): readonly DeviceEntry[] {
    return [...pcDevices(this.machine), ...(this.hooks.extraDevices?.() ?? [])];
  }

  get paused(): boolean {
    return this.isPaused;
  }

  /** Stops guest time; the caller must not run the vCPU until {@link resume}. */
  pause(): void {
    this.machine.vm.clock.pause();
    // Fire the timers that are due at the paused instant: a timer whose deadline has passed but
    // that the run loop has not fired yet (it was sleeping until that deadline) would be saved as
    // expired-with-nothing-pending (a LAPIC current count of 0) and never fire on the
    // destination, leaving a halted guest asleep for good. Fired now, its interrupt is in the
    // saved interrupt-controller state instead.
    this.machine.vm.timers.runDue();
    this.isPaused = true;
  }

  resume(): void {
    this.machine.vm.clock.resume();
    this.isPaused = false;
  }

  throttle(fraction: number): void {
    this.hooks.throttle?.(fraction);
  }

  /** No virtio request is in flight (a disk read still to land in guest memory). */
  quiescent(): boolean {
    return !(this.machine.virtio?.busy() ?? false);
  }

  releasedPages(slot: number): Uint8Array | undefined {
    return this.hooks.releasedPages?.(slot);
  }

  close(): void {
    this.machine.close();
  }
}

/**
 * The {@link PcMachineOptions} of the machine a stream was taken from (without host-side
 * parts: console callbacks, virtio backends). Throws a MigrationError if the stream is not of
 * a PC.
 */
export function pcOptionsFromConfig(config: MachineConfig): Pick<PcMachineOptions, 'memSize' | 'irqchip' | 'clockMode' | 'debugExit'> & { serial2: boolean; virtio: boolean } {
  if (config.kind !== 'pc') throw new MigrationError('config-mismatch', `configuration mismatch: the stream is of a '${config.kind}' machine, not a PC`);
  const o = config.options;
  const slot0 = config.slots.find((s) => s.slot === 0);
  if (!slot0 || config.slots.length !== 1 || slot0.guestPhysAddr !== 0) {
    throw new MigrationError('config-mismatch', 'configuration mismatch: a PC has exactly one RAM slot (0) at guest-physical 0');
  }
  const irqchip = o.irqchip === 'userspace' ? 'userspace' : 'kernel';
  const clockMode = o.clockMode === 'instructions' ? 'instructions' : 'host';
  return { memSize: slot0.size, irqchip, clockMode, debugExit: o.debugExit === true, serial2: o.serial2 === true, virtio: o.virtio === true };
}
