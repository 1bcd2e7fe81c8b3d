/**
 * What the monitor needs from a running VM. These are interfaces, not `PcMachine`: the VMM
 * adapts its machine to them (see the package README's wiring notes), and tests use fakes.
 * @module
 */

/** A VM's run state, as QMP's `query-status` names them (the subset kvmts has). */
export type MonitorRunState = 'running' | 'paused' | 'shutdown' | 'internal-error';

/**
 * The balloon as the monitor uses it. `VirtioBalloon` from `@kvmts/virtio` has exactly these
 * members, so it can be passed as is.
 */
export interface MonitorBalloon {
  /** Balloon size the host asked for, in bytes. */
  readonly targetBytes: number;
  /** Balloon size the driver reports, in bytes. */
  readonly actualBytes: number;
  /** Ask the guest to hold `bytes` in the balloon (throws RangeError when impossible). */
  setTarget(bytes: number): void;
  /** The guest's latest memory statistics: `stats` maps names to numbers. */
  readonly latestStats: { timestamp: number; stats: object } | null;
  readonly statsPollingIntervalMs: number;
  setStatsPollingInterval(ms: number): void;
  /** Host-side numbers; `releasedBytes` is reported by `query-balloon`. */
  readonly stats: { releasedBytes: number };
}

/** The VM the monitor controls. */
export interface MonitorMachine {
  readonly runState: MonitorRunState;
  /** Guest RAM in bytes (QMP's balloon sizes are the guest's logical memory: RAM minus the balloon). */
  readonly ramSize: number;
  /** Stop the vCPUs (a no-op when paused). */
  pause(): void | Promise<void>;
  /** Resume the vCPUs (a no-op when running). */
  resume(): void | Promise<void>;
  /** End the VM; called after the reply to `quit` has been written. */
  quit(): void | Promise<void>;
  /** Absent when the VM has no balloon device. */
  readonly balloon?: MonitorBalloon | undefined;
}
