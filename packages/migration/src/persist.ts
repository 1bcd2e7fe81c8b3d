/**
 * The capability ladder, after Firecracker's `Persist` and Cloud Hypervisor's
 * `Pausable → Snapshottable → Transportable → Migratable`:
 *
 * - {@link Persist}: a component (device, vCPU wrapper) whose state is a versioned JSON value.
 * - {@link Pausable}: a machine that can stop guest time and vCPU execution and start them again.
 * - {@link Snapshottable}: a pausable machine whose whole state can be captured — its memory
 *   slots, vCPUs and VM-level chips through the kvm-core interface, and its devices by name.
 * - {@link Migratable}: a snapshottable machine that can also be copied while it runs
 *   (dirty-page logging through its VM, optional balloon hints and vCPU throttling).
 *
 * (Cloud Hypervisor's Transportable — "can be written to a destination" — is the stream in
 * `src/stream/`, which works for every Snapshottable.)
 * @module
 */
import type { Kvm, VcpuFd, VmFd } from '@kvmts/kvm-core';

/**
 * A component with a JSON-able state: `save()` returns it, `restore()` loads it into a freshly
 * constructed component, and `version` is bumped whenever the shape of the state changes (a
 * stream's versions must match the destination's).
 */
export interface Persist<State> {
  readonly version: number;
  save(): State;
  restore(state: State): void;
}

/** A device as a machine lists it: its name in the stream, and its persistence. */
export interface DeviceEntry {
  /** Unique within the machine; the key in the stream (e.g. `serial`, `rtc`, `virtio-blk0`). */
  readonly name: string;
  readonly device: Persist<unknown>;
}

/** Stops and restarts guest execution and guest time. */
export interface Pausable {
  /**
   * Stops guest time. The caller guarantees that vCPUs are not run while paused (kvm-core's
   * vCPUs run only inside the VMM's own `run()` calls).
   */
  pause(): void;
  /** Lets guest time run again. */
  resume(): void;
  readonly paused: boolean;
}

/** Everything whose state a snapshot captures. */
export interface Snapshottable extends Pausable {
  /** A short name for the machine type (`pc`); the destination must have the same. */
  readonly kind: string;
  /**
   * Machine-specific options that decide its shape, as JSON (e.g. irqchip mode, clock mode):
   * compared key by key against the destination, and enough to build a fresh machine from.
   */
  readonly options: Readonly<Record<string, unknown>>;
  readonly kvm: Kvm;
  /** The VM: its memory slots are the RAM that is saved; its irqchip, PIT and clock are saved too. */
  readonly vm: VmFd;
  readonly vcpus: readonly VcpuFd[];
  /** The userspace devices in restore order. */
  devices(): readonly DeviceEntry[];
}

/** A machine that can be migrated live. */
export interface Migratable extends Snapshottable {
  /**
   * Pages a balloon driver gave back (bit i of byte j = page 8j+i of the slot): their content
   * is meaningless, so they are not sent. `undefined`: none.
   */
  releasedPages?(slot: number): Uint8Array | undefined;
  /**
   * Auto-converge: slow the guest down to `fraction` (0 = full speed, 0.99 = 1% of its time
   * slices) so that pre-copy rounds can catch up with it. Called with 0 when migration ends.
   */
  throttle?(fraction: number): void;
  /**
   * Whether no device has work in flight that would still write guest memory or raise an
   * interrupt (e.g. a virtio-blk request waiting for the host's disk). Snapshots wait for it
   * before pausing; live migration postpones the switchover until it holds. Default: always.
   */
  quiescent?(): boolean;
  /** Releases the machine (called on a destination that is discarded). */
  close?(): void;
}

/** What snapshots and migration work on. */
export type MigratableMachine = Migratable;
