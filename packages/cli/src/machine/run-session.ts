/**
 * What `kvmts run` adds around a PC guest's run loop: the monitor (`--monitor`), snapshots and
 * live migration ({@link MigrationControl}: `snapshot-save`, `migrate`, ...), loading the
 * first machine from a snapshot (`--restore FILE`) or an incoming migration (`--incoming
 * tcp:HOST:PORT`), and the balloon (`--device virtio-balloon`) as the monitor and migration see it.
 *
 * {@link runPcGuest} tells the session about each machine it builds (a reboot builds a new
 * one): {@link PcRunSession.load} before the first runs, {@link PcRunSession.attach} once its
 * loop exists, {@link PcRunSession.detach} when it stops; the loop's host calls
 * {@link PcRunSession.between} between slices. The monitor outlives reboots and is closed by
 * {@link PcRunSession.close} (it would keep the process alive otherwise).
 * @module
 */

import { MigrationError, type MigrationReport, type PrecopyOptions } from '@kvmts/migration';
import { VirtioBalloon } from '@kvmts/virtio';
import { CliError, ExitStatus } from '../errors.js';
import { builtinRegistry, MonitorServer, parseMonitorAddress, type MonitorCommand, type MonitorMachine, type MonitorRunState } from '../monitor/index.js';
import { migrationCommands } from './migration-commands.js';
import { MigrationControl, receivePcMigration, restorePcSnapshot, type MigrationListener } from './migration-control.js';
import type { PcMigratableHooks } from './migratable.js';
import type { PcMachine } from './pc.js';
import type { PcRunLoop } from './run-loop.js';

/** Options of {@link PcRunSession.open}. */
export interface PcRunSessionOptions {
  /** `--monitor unix:PATH|tcp:HOST:PORT`. */
  monitor?: string;
  /** `--restore FILE`: the first machine is loaded from this snapshot. */
  restore?: string;
  /** `--incoming tcp:HOST:PORT`: the first machine is loaded from a live migration. */
  incoming?: string;
  /** Guest RAM size, for the monitor's balloon numbers. */
  memSize: number;
  /** Diagnostics (stderr). */
  log(text: string): void;
}

/** A {@link MigrationControl} that wakes the run loop when work is queued (a halted guest may be asleep). */
class WakingMigrationControl extends MigrationControl {
  wake: () => void = () => {};

  override snapshotSave(file: string): ReturnType<MigrationControl['snapshotSave']> {
    const p = super.snapshotSave(file);
    this.wake();
    return p;
  }

  override async migrate(address: string, options?: Omit<PrecopyOptions, 'onProgress'>, listener?: MigrationListener): Promise<void> {
    await super.migrate(address, options, listener);
    this.wake();
  }
}

/** The running VM as the monitor sees it. */
class SessionMonitorMachine implements MonitorMachine {
  constructor(private readonly session: PcRunSession) {}

  get runState(): MonitorRunState {
    return this.session.runState;
  }

  get ramSize(): number {
    return this.session.memSize;
  }

  pause(): void {
    this.session.pause();
  }

  resume(): void {
    this.session.resume();
  }

  quit(): void {
    this.session.quit();
  }

  get balloon(): VirtioBalloon | undefined {
    return this.session.balloon;
  }
}

/** See the module comment. */
export class PcRunSession {
  readonly memSize: number;
  private server: MonitorServer<SessionMonitorMachine> | null = null;
  private machine: PcMachine | null = null;
  private loop: PcRunLoop | null = null;
  private control: WakingMigrationControl | null = null;
  private wakeHost: () => void = () => {};
  private userPaused = false;
  private quitRequested = false;
  private loaded = false;
  private ended = false;
  /** Set once a live migration to another kvmts completed: the guest runs there now. */
  migrated: MigrationReport | null = null;
  /** The balloon of the current machine, if it has one. */
  balloon: VirtioBalloon | undefined;

  private constructor(private readonly options: PcRunSessionOptions) {
    this.memSize = options.memSize;
  }

  /** Starts the monitor (when asked for); throws a CliError when its address cannot be used. */
  static async open(options: PcRunSessionOptions): Promise<PcRunSession> {
    const session = new PcRunSession(options);
    if (options.monitor !== undefined) {
      let address;
      try {
        address = parseMonitorAddress(options.monitor);
      } catch (err) {
        throw new CliError(`invalid --monitor '${options.monitor}': ${(err as Error).message}`);
      }
      const registry = builtinRegistry<SessionMonitorMachine>();
      for (const c of migrationCommands(() => session.control)) registry.register(c as unknown as MonitorCommand<never, SessionMonitorMachine>);
      try {
        session.server = await MonitorServer.listen(address, {
          machine: new SessionMonitorMachine(session),
          registry,
          onError: (err) => options.log(`kvmts: monitor: ${err instanceof Error ? err.message : String(err)}\n`),
        });
      } catch (err) {
        throw new CliError(`cannot start the monitor on ${options.monitor}: ${(err as Error).message}`, ExitStatus.Unavailable);
      }
    }
    return session;
  }

  /** Whether the first machine comes from a snapshot or a migration instead of a kernel. */
  get loadsState(): boolean {
    return this.options.restore !== undefined || this.options.incoming !== undefined;
  }

  get runState(): MonitorRunState {
    if (this.ended) return 'shutdown';
    if (this.loop === null || this.userPaused) return 'paused';
    return 'running';
  }

  /** A live migration is under way: the loop must not sleep long. */
  get busy(): boolean {
    return this.control?.active ?? false;
  }

  /**
   * For a fresh machine before it first runs: loads `--restore`'s snapshot or waits for
   * `--incoming`'s migration (only for the first machine). Returns whether state was loaded
   * (the caller then skips booting). Throws a CliError when loading fails.
   */
  async load(machine: PcMachine): Promise<boolean> {
    if (this.loaded) return false;
    this.loaded = true;
    const hooks = this.hooks(machine);
    if (this.options.restore !== undefined) {
      try {
        await restorePcSnapshot(machine, this.options.restore, hooks);
      } catch (err) {
        if (err instanceof MigrationError) throw new CliError(`cannot restore '${this.options.restore}': ${err.message}`);
        throw err;
      }
      this.options.log(`kvmts: restored the guest from '${this.options.restore}'\n`);
      return true;
    }
    if (this.options.incoming !== undefined) {
      const t0 = performance.now();
      try {
        await receivePcMigration(machine, this.options.incoming, this.options.log, hooks);
      } catch (err) {
        if (err instanceof MigrationError) throw new CliError(`incoming migration failed: ${err.message}`, ExitStatus.Unavailable);
        throw err;
      }
      this.options.log(`kvmts: incoming migration completed after ${((performance.now() - t0) / 1000).toFixed(2)} s; the guest runs here now\n`);
      return true;
    }
    return false;
  }

  /** The machine's loop exists: the monitor and migration can use it. `wake` ends the host's sleep. */
  attach(machine: PcMachine, loop: PcRunLoop, wake: () => void): void {
    this.machine = machine;
    this.loop = loop;
    this.wakeHost = wake;
    this.balloon = machine.virtio?.devices.find((d): d is VirtioBalloon => d instanceof VirtioBalloon);
    if (this.balloon) this.balloon.onActualChange = (bytes) => this.server?.emitEvent('BALLOON_CHANGE', { actual: this.memSize - bytes });
    const control = new WakingMigrationControl(machine, {
      log: (text) => this.options.log(text),
      migrated: (report) => {
        this.migrated = report;
        loop.quit('migrated');
      },
    }, { releasedPages: this.hooks(machine).releasedPages! });
    control.wake = () => this.wake();
    this.control = control;
    if (this.quitRequested) loop.quit('monitor');
    if (this.userPaused) {
      machine.vm.clock.pause();
      loop.pause();
    }
  }

  /** The machine stopped (it is closed next): pending snapshots fail, a migration is abandoned. */
  detach(): void {
    this.control?.close();
    this.control = null;
    this.loop = null;
    this.machine = null;
    if (this.balloon) this.balloon.onActualChange = undefined;
  }

  /** The run loop's between-slices hook. */
  async between(): Promise<void> {
    const control = this.control;
    if (control === null || !control.pending) return;
    await control.between();
    // A snapshot resumes guest time when it is done; a paused VM must stay paused.
    if (this.userPaused) {
      this.machine?.vm.clock.pause();
      // A paused loop only runs this hook when kicked: keep a migration going.
      if (control.pending) setImmediate(() => this.loop?.kick());
    }
  }

  pause(): void {
    this.userPaused = true;
    this.machine?.vm.clock.pause();
    this.loop?.pause();
  }

  resume(): void {
    this.userPaused = false;
    this.machine?.vm.clock.resume();
    this.loop?.resume();
  }

  quit(): void {
    this.quitRequested = true;
    this.loop?.quit('monitor');
  }

  /** The run ended: closes the monitor (its clients are told by the closed connection). */
  async close(): Promise<void> {
    this.ended = true;
    this.detach();
    await this.server?.close();
    this.server = null;
  }

  private wake(): void {
    this.wakeHost();
    this.loop?.kick();
  }

  private hooks(machine: PcMachine): PcMigratableHooks {
    return {
      releasedPages: (slot) => {
        const balloon = machine.virtio?.devices.find((d): d is VirtioBalloon => d instanceof VirtioBalloon);
        const s = machine.vm.memory.getSlot(slot);
        return balloon && s ? balloon.releasedBitmap(s) : undefined;
      },
    };
  }
}
