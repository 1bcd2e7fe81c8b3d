/**
 * Snapshots and live migration for a running {@link PcMachine}, driven from its run loop.
 *
 * The run loop calls {@link MigrationControl.between} between slices (in its host's `yield`
 * and `sleep`); that is where queued snapshot saves run and where a live migration does its
 * next bounded step, so the vCPU is never run while either touches the machine. Monitor
 * commands (`snapshot-save`, `migrate`, `migrate-cancel`, `query-migrate`) call the methods
 * here and get their answer when the work is done.
 *
 * {@link restorePcSnapshot} and {@link receivePcMigration} load a fresh machine before its run
 * loop starts (`kvmts run --restore FILE`, `--incoming tcp:HOST:PORT`).
 * @module
 */

import {
  MigrationError, connectMigration, listenForMigration, readSnapshotConfig, restoreSnapshot, saveSnapshot,
  type MachineConfig, type MigrationProgress, type MigrationReport, type PrecopyOptions, type PrecopySource, type SnapshotReport,
} from '@kvmts/migration';
import { PcMigratable, pcOptionsFromConfig, type PcMigratableHooks } from './migratable.js';
import type { PcMachine } from './pc.js';

/** What {@link MigrationControl} reports to its owner. */
export interface MigrationControlIo {
  /** A line for the user (stderr in the CLI). */
  log(text: string): void;
  /** The migration completed: the guest now runs on the destination; stop this run loop. */
  migrated(report: MigrationReport): void;
}

/** A migration event. */
export type MigrationEvent =
  | { readonly kind: 'progress'; readonly progress: MigrationProgress }
  | { readonly kind: 'completed'; readonly report: MigrationReport }
  | { readonly kind: 'failed'; readonly error: string };
export type MigrationListener = (event: MigrationEvent) => void;

/** The state of the live migration, for `query-migrate`. */
export type MigrationStatus =
  | { readonly state: 'none' }
  | { readonly state: 'active'; readonly progress: MigrationProgress | null }
  | { readonly state: 'completed'; readonly report: MigrationReport }
  | { readonly state: 'failed'; readonly error: string };

/** See the module comment. */
export class MigrationControl {
  readonly target: PcMigratable;
  private readonly tasks: { run: () => Promise<void>; reject: (e: Error) => void }[] = [];
  private source: PrecopySource | null = null;
  private lastProgress: MigrationProgress | null = null;
  private last: MigrationStatus = { state: 'none' };
  private throttleFraction = 0;

  constructor(
    readonly machine: PcMachine,
    private readonly io: MigrationControlIo,
    hooks: Omit<PcMigratableHooks, 'throttle'> = {},
    /** The run loop's slice length, to size auto-converge's pauses. */
    private readonly sliceMs = 20,
  ) {
    this.target = new PcMigratable(machine, { ...hooks, throttle: (f) => (this.throttleFraction = f) });
  }

  /** Whether a migration is in progress (the run loop should not sleep long: cap sleeps at a few ms). */
  get active(): boolean {
    return this.source !== null;
  }

  /** Whether there is anything for {@link between} to do. */
  get pending(): boolean {
    return this.source !== null || this.tasks.length > 0;
  }

  /** Monitor `snapshot-save FILE`: resolves once the snapshot is on disk (written between two slices). */
  snapshotSave(file: string): Promise<SnapshotReport> {
    if (this.source) return Promise.reject(new MigrationError('aborted', 'a live migration is in progress'));
    return new Promise((resolve, reject) => {
      this.tasks.push({ run: () => saveSnapshot(this.target, file).then(resolve, reject), reject });
    });
  }

  /** Receives progress and the outcome of the current migration (monitor events). */
  private listener: MigrationListener | undefined;

  /**
   * Monitor `migrate tcp:HOST:PORT`: connects, then migrates from the run loop; progress goes
   * to `log` and to `listener`.
   */
  async migrate(address: string, options: Omit<PrecopyOptions, 'onProgress'> = {}, listener?: MigrationListener): Promise<void> {
    if (this.source) throw new MigrationError('aborted', 'a live migration is already in progress');
    this.source = await connectMigration(this.target, address, {
      ...options,
      onProgress: (p) => {
        this.lastProgress = p;
        this.listener?.({ kind: 'progress', progress: p });
        this.io.log(
          `kvmts: migration ${p.phase} round ${p.round}: ${p.remainingMiB.toFixed(1)} MiB left, ` +
            `${p.rateMiBps.toFixed(1)} MiB/s, expected downtime ${p.expectedDowntimeMs.toFixed(0)} ms` +
            (p.throttle > 0 ? `, guest throttled to ${Math.round((1 - p.throttle) * 100)}%` : '') +
            '\n',
        );
      },
    });
    this.last = { state: 'active', progress: null };
    this.listener = listener;
  }

  /** Monitor `migrate-cancel`: the source keeps running. */
  cancel(): void {
    this.source?.abort('cancelled by the user');
  }

  /** The run loop ended: pending snapshot requests fail, a migration is abandoned. */
  close(reason = 'the guest stopped'): void {
    for (const t of this.tasks.splice(0)) t.reject(new MigrationError('aborted', reason));
    if (this.source) {
      this.source.abort(`stopped: ${reason}`);
      void this.source.step();
      this.source = null;
    }
  }

  /** Monitor `query-migrate`. */
  status(): MigrationStatus {
    return this.source ? { state: 'active', progress: this.lastProgress } : this.last;
  }

  /**
   * The run-loop hook: runs queued snapshot saves and a migration step. Under auto-converge
   * the guest is held back for a share of the time, and that time goes to more steps: the
   * throttle slows the guest's dirtying, never the migration. Never throws (failures are
   * reported through `log` and the promises).
   */
  async between(): Promise<void> {
    while (this.tasks.length > 0) await this.tasks.shift()!.run();
    const source = this.source;
    if (!source) return;
    const f = this.throttleFraction;
    const until = performance.now() + (f > 0 ? (this.sliceMs * f) / (1 - f) : 0);
    let r = await source.step();
    while (r.state === 'running' && performance.now() < until) {
      const t = performance.now();
      r = await source.step();
      // A step with nothing to do (bandwidth cap, a stalled connection): do not spin.
      if (performance.now() - t < 1) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    if (r.state === 'running') return;
    this.source = null;
    this.throttleFraction = 0;
    if (r.state === 'completed') {
      const rep = r.report;
      this.last = { state: 'completed', report: rep };
      this.io.log(
        `kvmts: migration completed in ${(rep.totalMs / 1000).toFixed(2)} s: downtime ${rep.downtimeMs.toFixed(0)} ms, ` +
          `${(rep.bytes / 2 ** 20).toFixed(1)} MiB in ${rep.rounds} rounds${rep.forcedSwitchover ? ' (switchover forced)' : ''}\n` +
          `kvmts: downtime: ${rep.downtime.finalPages} last dirty pages (${(rep.downtime.finalBytes / 1024).toFixed(0)} KiB sent) in ${rep.downtime.finalPagesMs.toFixed(0)} ms, ` +
          `state in ${rep.downtime.stateMs.toFixed(0)} ms, destination loaded and acknowledged in ${rep.downtime.ackMs.toFixed(0)} ms\n`,
      );
      this.listener?.({ kind: 'completed', report: rep });
      this.io.migrated(rep);
    } else {
      this.last = { state: 'failed', error: r.error.message };
      this.io.log(`kvmts: migration failed, the guest keeps running here: ${r.error.message}\n`);
      this.listener?.({ kind: 'failed', error: r.error.message });
    }
  }
}

/**
 * `kvmts run --restore FILE` into a fresh machine (before its run loop starts). The machine
 * must have been built with {@link pcOptionsFromSnapshot}'s options (plus the same virtio
 * devices); throws a MigrationError naming any difference.
 */
export async function restorePcSnapshot(machine: PcMachine, file: string, hooks: PcMigratableHooks = {}): Promise<void> {
  await restoreSnapshot(file, new PcMigratable(machine, hooks));
}

/** The machine options a snapshot needs (read from its configuration section). */
export async function pcOptionsFromSnapshot(file: string): Promise<ReturnType<typeof pcOptionsFromConfig> & { config: MachineConfig }> {
  const config = await readSnapshotConfig(file);
  return { ...pcOptionsFromConfig(config), config };
}

/**
 * `kvmts run --incoming tcp:HOST:PORT`: waits for one migration into the fresh `machine`
 * (built from the same options as the source's) and returns once the source has committed;
 * throws a MigrationError if the migration fails (the source then keeps running).
 */
export async function receivePcMigration(machine: PcMachine, address: string, log: (text: string) => void, hooks: PcMigratableHooks = {}): Promise<void> {
  const server = await listenForMigration(address, new PcMigratable(machine, hooks), {
    onRound: (round) => log(`kvmts: incoming migration: round ${round} received\n`),
  });
  log(`kvmts: waiting for an incoming migration on ${server.address.host}:${server.address.port}\n`);
  try {
    await server.result;
  } finally {
    server.close();
  }
}
