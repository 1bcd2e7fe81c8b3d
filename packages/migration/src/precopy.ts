/**
 * Pre-copy live migration, source side, and the destination's receiver.
 *
 * The source never blocks the guest for long while it iterates: the VMM calls
 * {@link PrecopySource.step} between run-loop slices; each call sends pages for about `stepMs`
 * (waiting for the connection to drain in between, stopping early under the bandwidth cap) and
 * returns. Only the final
 * switchover — pause, last dirty pages, device and vCPU state, waiting for the destination's
 * ACK — keeps the guest stopped, for the downtime.
 *
 * Protocol (after the stream header and CONFIG): RAM sections of the first full pass, a ROUND
 * marker after each pass, RAM sections of each dirty round, then STATE and END. The destination
 * answers ACK once everything is loaded (or ERROR, and discards everything), the source answers
 * COMMIT and stops; the destination resumes the guest on COMMIT. Any failure before COMMIT —
 * connection loss, an ERROR, a checksum error found by the destination, a timeout, a cancel —
 * makes the source resume with its state untouched and the destination discard its machine.
 * @module
 */
import type { Duplex } from 'node:stream';
import { KVM_MEM_LOG_DIRTY_PAGES, PAGE_SIZE } from '@kvmts/kvm-core';
import { describeMachine } from './config.js';
import { MigrationError, asMigrationError } from './errors.js';
import { loadStream, ramPagesOf, type LoadTarget, type Loaded } from './load.js';
import { PageQueue, allPages, vmSlots, type SlotRef } from './pages.js';
import type { MigratableMachine } from './persist.js';
import { captureState } from './state.js';
import { encodeFrame, FrameParser, jsonPayload, parseJson } from './stream/frame.js';
import { Section, sectionName } from './stream/format.js';
import { RamEncoder, type RamStats } from './stream/ram.js';
import { StreamReader } from './stream/reader.js';
import { StreamWriter } from './stream/writer.js';
import { quiesceVcpu } from './vcpu.js';

/** At most this many pages (16 MiB) are looked at by one send. */
const SEND_PAGES_MAX = 4096;

/** Options of a {@link PrecopySource}. */
export interface PrecopyOptions {
  /** Switch over when the remaining pages can be sent in this many ms at the measured rate (default 300). */
  downtimeLimitMs?: number;
  /** Bandwidth cap in bytes/s for the iterative phase (default: none). */
  maxBandwidth?: number;
  /** Encode at most this many payload bytes between two looks at the clock and the socket (default 1 MiB). */
  stepBytes?: number;
  /**
   * How long one {@link PrecopySource.step} may keep the guest waiting, in ms (default 20): it
   * sends, waits for the socket to drain and sends again until this is used up. With the run
   * loop's 20 ms guest slices, the migration gets about half of the source's thread (QEMU gives
   * it a thread of its own).
   */
  stepMs?: number;
  /** After this many rounds, switch over even if the downtime limit is not met (default 30). */
  maxRounds?: number;
  /** Throttle the guest when rounds stop shrinking (default true). */
  autoConverge?: boolean;
  /** Applies a throttle fraction; default the machine's `throttle`. */
  throttle?: (fraction: number) => void;
  /** XBZRLE deltas for re-sent pages (default true) and the size of their cache (default 64 MiB). */
  xbzrle?: boolean;
  xbzrleCacheBytes?: number;
  /** Deflate raw page runs (default false). */
  deflate?: boolean;
  /** How long to wait for the destination's ACK after END (default 30 s). */
  ackTimeoutMs?: number;
  /** Bytes/s assumed before the first round is measured (default 64 MiB/s). */
  initialBandwidth?: number;
  /** Called at the start of every round and at switchover. */
  onProgress?: (p: MigrationProgress) => void;
}

/** A progress event. */
export interface MigrationProgress {
  phase: 'first-pass' | 'iterating' | 'switchover';
  /** 1 = the first full pass. */
  round: number;
  remainingBytes: number;
  remainingMiB: number;
  transferredBytes: number;
  /** Measured transfer rate, bytes/s. */
  rate: number;
  rateMiBps: number;
  /** The downtime if the switchover happened now, ms. */
  expectedDowntimeMs: number;
  /** Current auto-converge throttle (0 = none). */
  throttle: number;
}

/** The final report of a completed migration. */
export interface MigrationReport {
  totalMs: number;
  /** From pausing the guest to sending COMMIT. */
  downtimeMs: number;
  bytes: number;
  rounds: number;
  ram: RamStats;
  /** The switchover was forced by `maxRounds`, not reached through the downtime limit. */
  forcedSwitchover: boolean;
  /** The highest auto-converge throttle used. */
  maxThrottle: number;
  /** Where the downtime went: sending the last dirty pages, capturing and sending the device and vCPU state, waiting for the destination to load it and ACK. */
  downtime: { finalPages: number; finalBytes: number; finalPagesMs: number; stateMs: number; ackMs: number };
}

/** What one {@link PrecopySource.step} leaves. */
export type StepResult =
  | { readonly state: 'running'; readonly progress: MigrationProgress }
  | { readonly state: 'completed'; readonly report: MigrationReport }
  | { readonly state: 'failed'; readonly error: MigrationError };

type Phase = 'setup' | 'first-pass' | 'iterating' | 'switchover' | 'done';

/** The source side of a pre-copy migration over one connection; see the module comment. */
export class PrecopySource {
  private readonly opts: Required<Omit<PrecopyOptions, 'maxBandwidth' | 'throttle' | 'onProgress'>> & Pick<PrecopyOptions, 'maxBandwidth' | 'throttle' | 'onProgress'>;
  private readonly writer: StreamWriter;
  private readonly replies = new FrameParser(false, 'reply stream');
  private readonly enc: RamEncoder;
  private readonly slots: SlotRef[];
  private readonly queue: PageQueue;
  private phase: Phase = 'setup';
  private result: StepResult | null = null;
  private asyncError: MigrationError | null = null;
  private wakeFailure: ((e: MigrationError) => void) | null = null;
  private ackWaiter: (() => void) | null = null;
  private acked = false;
  private busy = false;
  private savedFlags = new Map<number, number>();
  private round = 0;
  private roundStartMs = 0;
  private roundStartBytes = 0;
  private rate: number;
  private lastRemaining = Infinity;
  private strikes = 0;
  private throttleLevel = 0;
  private maxThrottle = 0;
  private forced = false;
  private pausedByUs = false;
  private readonly startMs = performance.now();
  private pauseMs = 0;

  constructor(readonly machine: MigratableMachine, readonly connection: Duplex, options: PrecopyOptions = {}) {
    this.opts = {
      downtimeLimitMs: options.downtimeLimitMs ?? 300,
      stepBytes: options.stepBytes ?? 1 << 20,
      stepMs: options.stepMs ?? 20,
      maxRounds: options.maxRounds ?? 30,
      autoConverge: options.autoConverge ?? true,
      xbzrle: options.xbzrle ?? true,
      xbzrleCacheBytes: options.xbzrleCacheBytes ?? 64 << 20,
      deflate: options.deflate ?? false,
      ackTimeoutMs: options.ackTimeoutMs ?? 30_000,
      initialBandwidth: options.initialBandwidth ?? 64 << 20,
      maxBandwidth: options.maxBandwidth,
      throttle: options.throttle,
      onProgress: options.onProgress,
    };
    this.rate = this.opts.initialBandwidth;
    this.writer = new StreamWriter(connection);
    this.enc = new RamEncoder({ xbzrle: this.opts.xbzrle, xbzrleCacheBytes: this.opts.xbzrleCacheBytes, deflate: this.opts.deflate, sectionBytes: Math.min(1 << 20, this.opts.stepBytes) });
    this.slots = vmSlots(machine.vm);
    this.queue = new PageQueue(this.slots);
    connection.on('data', this.onData);
    connection.on('error', this.onError);
    connection.on('close', this.onClose);
  }

  /** Whether the migration finished (completed or failed). */
  get finished(): boolean {
    return this.result !== null && this.result.state !== 'running';
  }

  /** Cancels the migration: the next (or current) step fails and the source resumes. */
  abort(reason = 'cancelled'): void {
    this.asyncFail(new MigrationError('aborted', `migration ${reason}`));
  }

  private readonly onData = (chunk: Uint8Array): void => {
    try {
      this.replies.push(chunk);
      for (let f = this.replies.next(); f; f = this.replies.next()) {
        if (f.type === Section.Ack && !this.acked) {
          this.acked = true;
          this.ackWaiter?.();
        } else if (f.type === Section.Error) {
          const msg = (parseJson(f) as { message?: unknown }).message;
          this.asyncFail(new MigrationError('remote', `the destination failed: ${String(msg)}`));
        } else {
          this.asyncFail(new MigrationError('protocol', `the destination sent an unexpected ${sectionName(f.type)} message`));
        }
      }
    } catch (err) {
      this.asyncFail(asMigrationError(err, 'protocol', 'the destination sent a malformed reply: '));
    }
  };

  private readonly onError = (err: Error): void => {
    this.asyncFail(new MigrationError('connection', `connection to the destination failed: ${err.message}`, { cause: err }));
  };

  private readonly onClose = (): void => {
    this.asyncFail(new MigrationError('connection', 'the destination closed the connection'));
  };

  private asyncFail(e: MigrationError): void {
    if (this.phase === 'done' || this.asyncError) return;
    this.asyncError = e;
    this.wakeFailure?.(e);
  }

  /** A promise that rejects when an asynchronous failure happens (or has happened). */
  private failure(): Promise<never> {
    return new Promise<never>((_, reject) => {
      if (this.asyncError) reject(this.asyncError);
      else this.wakeFailure = reject;
    });
  }

  private async guard<T>(p: Promise<T>): Promise<T> {
    const f = this.failure();
    f.catch(() => undefined);
    return Promise.race([p, f]);
  }

  private progress(phase: MigrationProgress['phase']): MigrationProgress {
    const remainingBytes = this.queue.remaining * PAGE_SIZE;
    return {
      phase,
      round: this.round,
      remainingBytes,
      remainingMiB: remainingBytes / (1 << 20),
      transferredBytes: this.writer.bytes,
      rate: this.rate,
      rateMiBps: this.rate / (1 << 20),
      expectedDowntimeMs: (remainingBytes / this.rate) * 1000,
      throttle: this.throttleLevel,
    };
  }

  /**
   * Does a bounded amount of work and returns: call it between run-loop slices until the
   * result is not 'running'. During the switchover it resolves only when the migration has
   * completed or failed (the guest is paused meanwhile). Never throws.
   */
  async step(): Promise<StepResult> {
    if (this.result && this.result.state !== 'running') return this.result;
    if (this.busy) return { state: 'running', progress: this.progress(this.phaseName()) };
    this.busy = true;
    try {
      if (this.asyncError) throw this.asyncError;
      if (this.phase === 'setup') this.setup();
      const deadline = performance.now() + this.opts.stepMs;
      while (this.phase === 'first-pass' || this.phase === 'iterating') {
        if (this.writer.needsDrain) {
          // Let the event loop hand the socket what is queued, for the rest of the step at most.
          const left = deadline - performance.now();
          if (left <= 0) break;
          await this.guard(Promise.race([this.writer.drain(), new Promise<void>((resolve) => setTimeout(resolve, left))]));
          continue;
        }
        const budget = Math.min(this.opts.stepBytes, this.allowance());
        if (budget <= 0) break;
        this.send(budget);
        if (this.queue.remaining === 0 && this.enc.size === 0) this.endRound();
        if (this.asyncError) throw this.asyncError;
        if (performance.now() >= deadline) break;
      }
      // Devices with I/O in flight must finish it first: the guest keeps running meanwhile.
      if (this.phase === 'switchover' && this.machine.quiescent?.() !== false) {
        const report = await this.switchover();
        this.result = { state: 'completed', report };
        return this.result;
      }
      this.result = { state: 'running', progress: this.progress(this.phaseName()) };
      return this.result;
    } catch (err) {
      return this.fail(asMigrationError(err, 'connection'));
    } finally {
      this.busy = false;
    }
  }

  private phaseName(): MigrationProgress['phase'] {
    return this.phase === 'iterating' ? 'iterating' : this.phase === 'switchover' || this.phase === 'done' ? 'switchover' : 'first-pass';
  }

  /** Bytes the bandwidth cap allows now. */
  private allowance(): number {
    const cap = this.opts.maxBandwidth;
    if (cap === undefined || !Number.isFinite(cap)) return Infinity;
    return cap * ((performance.now() - this.startMs) / 1000) - this.writer.bytes;
  }

  private setup(): void {
    const vm = this.machine.vm;
    // Dirty logging first: every write after this point is caught by a later round.
    for (const s of vm.memory.listSlots()) {
      this.savedFlags.set(s.id, s.flags);
      if (!(s.flags & KVM_MEM_LOG_DIRTY_PAGES)) {
        vm.setUserMemoryRegion({ slot: s.id, flags: s.flags | KVM_MEM_LOG_DIRTY_PAGES, guestPhysAddr: s.guestPhysAddr, memorySize: s.size, userspaceAddr: s.bytes });
      } else {
        vm.getDirtyLog(s.id, s.size);
      }
    }
    this.writer.header();
    this.writer.json(Section.Config, describeMachine(this.machine));
    for (const s of this.slots) this.enc.skip(this.queue.add(s.id, allPages(s.pages), this.machine.releasedPages?.(s.id)));
    this.phase = 'first-pass';
    this.round = 1;
    this.roundStartMs = performance.now();
    this.roundStartBytes = 0;
    this.opts.onProgress?.(this.progress('first-pass'));
  }

  /** Encodes queued pages until about `budget` payload bytes went out or the queue is empty. */
  private send(budget: number): number {
    let sent = 0;
    // Zero pages cost little to send but still cost a scan: bound the pages too, so a step
    // over mostly empty memory still looks at the clock every few milliseconds.
    for (let pages = 0; sent < budget && pages < SEND_PAGES_MAX; pages++) {
      const next = this.queue.next();
      if (!next) break;
      this.enc.page(next.slot.id, next.slot.bytes, next.page);
      if (this.enc.full) {
        const p = this.enc.take()!;
        sent += p.length;
        this.writer.section(Section.Ram, p);
      }
    }
    if (this.queue.remaining === 0) {
      const p = this.enc.take();
      if (p) {
        sent += p.length;
        this.writer.section(Section.Ram, p);
      }
    }
    return sent;
  }

  /** Collects the dirty log into the queue. */
  private collectDirty(): void {
    for (const s of this.slots) {
      const bm = this.machine.vm.getDirtyLog(s.id, s.pages * PAGE_SIZE);
      this.enc.skip(this.queue.add(s.id, bm, this.machine.releasedPages?.(s.id)));
    }
  }

  /** A pass is complete: measure, collect the dirty pages, decide whether to switch over. */
  private endRound(): void {
    const now = performance.now();
    const ms = now - this.roundStartMs;
    const bytes = this.writer.bytes - this.roundStartBytes;
    // The rate includes the guest's time between steps: a conservative estimate for the
    // switchover, which sends without interleaving.
    if (ms > 1 && bytes > 64 * 1024) this.rate = (bytes / ms) * 1000;
    this.writer.json(Section.Round, { round: this.round });
    this.collectDirty();
    this.round++;
    this.roundStartMs = now;
    this.roundStartBytes = this.writer.bytes;
    this.phase = 'iterating';
    const p = this.progress('iterating');
    this.opts.onProgress?.(p);
    if (p.expectedDowntimeMs <= this.opts.downtimeLimitMs) {
      this.phase = 'switchover';
      return;
    }
    if (this.round > this.opts.maxRounds) {
      this.forced = true;
      this.phase = 'switchover';
      return;
    }
    if (this.opts.autoConverge) {
      if (p.remainingBytes >= this.lastRemaining * 0.9) this.strikes++;
      else this.strikes = 0;
      if (this.strikes >= 2) {
        this.strikes = 0;
        this.throttleLevel = this.throttleLevel === 0 ? 0.2 : Math.min(0.99, this.throttleLevel + 0.1);
        this.maxThrottle = Math.max(this.maxThrottle, this.throttleLevel);
        this.applyThrottle(this.throttleLevel);
      }
    }
    this.lastRemaining = p.remainingBytes;
  }

  private applyThrottle(fraction: number): void {
    const t = this.opts.throttle ?? this.machine.throttle?.bind(this.machine);
    t?.(fraction);
  }

  private async switchover(): Promise<MigrationReport> {
    const t0 = performance.now();
    this.pausedByUs = !this.machine.paused;
    this.machine.pause();
    // Completing a pending string I/O may write memory: quiesce before the last dirty log.
    for (const v of this.machine.vcpus) quiesceVcpu(v);
    this.collectDirty();
    this.opts.onProgress?.(this.progress('switchover'));
    const finalPages = this.queue.remaining;
    const bytesBefore = this.writer.bytes;
    while (this.queue.remaining > 0 || this.enc.size > 0) {
      if (this.asyncError) throw this.asyncError;
      this.send(1 << 20);
      if (this.writer.needsDrain) await this.guard(this.writer.drain());
    }
    const t1 = performance.now();
    const finalBytes = this.writer.bytes - bytesBefore;
    const state = captureState(this.machine);
    this.writer.json(Section.State, state);
    this.writer.json(Section.End, { sections: this.writer.sections, pages: ramPagesOf(this.enc.stats) });
    await this.guard(this.writer.flush());
    const t2 = performance.now();
    await this.guard(this.waitAck());
    const t3 = performance.now();
    // Past this point the destination owns the guest.
    this.writer.json(Section.Commit, {});
    await this.guard(this.writer.flush());
    this.phase = 'done';
    this.pauseMs = performance.now() - t0;
    this.disableDirtyLog();
    this.applyThrottle(0);
    this.detach();
    this.connection.end();
    return {
      totalMs: performance.now() - this.startMs,
      downtimeMs: this.pauseMs,
      bytes: this.writer.bytes,
      rounds: this.round,
      ram: { ...this.enc.stats },
      forcedSwitchover: this.forced,
      maxThrottle: this.maxThrottle,
      downtime: { finalPages, finalBytes, finalPagesMs: t1 - t0, stateMs: t2 - t1, ackMs: t3 - t2 },
    };
  }

  private waitAck(): Promise<void> {
    if (this.acked) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new MigrationError('timeout', `the destination did not acknowledge within ${this.opts.ackTimeoutMs} ms`));
      }, this.opts.ackTimeoutMs);
      this.ackWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private disableDirtyLog(): void {
    const vm = this.machine.vm;
    for (const s of vm.memory.listSlots()) {
      const flags = this.savedFlags.get(s.id);
      if (flags !== undefined && flags !== s.flags) {
        vm.setUserMemoryRegion({ slot: s.id, flags, guestPhysAddr: s.guestPhysAddr, memorySize: s.size, userspaceAddr: s.bytes });
      }
    }
  }

  private detach(): void {
    this.connection.off('data', this.onData);
    this.connection.off('close', this.onClose);
    // Keep a no-op error listener: a late socket error must not crash the VMM.
    this.connection.off('error', this.onError);
    this.connection.on('error', () => undefined);
    this.writer.detach();
  }

  private fail(error: MigrationError): StepResult {
    this.phase = 'done';
    this.result = { state: 'failed', error };
    try {
      if (!this.connection.destroyed && this.connection.writable) {
        this.connection.end(encodeFrame(Section.Abandon, jsonPayload({ reason: error.message })));
        setTimeout(() => this.connection.destroy(), 2000).unref();
      } else {
        this.connection.destroy();
      }
    } catch {
      this.connection.destroy();
    }
    this.detach();
    try {
      this.disableDirtyLog();
    } finally {
      this.applyThrottle(0);
      if (this.pausedByUs) {
        this.pausedByUs = false;
        this.machine.resume();
      }
    }
    return this.result;
  }
}

/** Options of {@link receiveMigration}. */
export interface IncomingOptions {
  /** How long to wait for COMMIT after sending ACK (default 30 s). */
  commitTimeoutMs?: number;
  onRound?(round: number): void;
}

/** A received machine, paused until the caller runs it (it is resumed on COMMIT). */
export type IncomingResult<M extends MigratableMachine> = Loaded<M>;

/**
 * The destination: reads the stream from `connection` into the machine `target` builds (or
 * is), acknowledges, waits for COMMIT and resumes the machine's clock. On any failure the
 * machine is closed (when built here), the source is told with an ERROR message, and a
 * MigrationError is thrown.
 */
export async function receiveMigration<M extends MigratableMachine>(connection: Duplex, target: LoadTarget<M>, options: IncomingOptions = {}): Promise<IncomingResult<M>> {
  const reader = new StreamReader(connection, 'migration stream');
  const errors: Error[] = [];
  const onError = (e: Error): void => void errors.push(e);
  connection.on('error', onError);
  let loaded: Loaded<M> | undefined;
  try {
    loaded = await loadStream(reader, target, options.onRound ? { onRound: options.onRound } : {});
    connection.write(encodeFrame(Section.Ack, jsonPayload({ ok: true })));
    const timeoutMs = options.commitTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const f = await Promise.race([
      reader.expect('while waiting for COMMIT'),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new MigrationError('timeout', `the source did not send COMMIT within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (f.type === Section.Abandon) {
      throw new MigrationError('remote', `the source abandoned the migration: ${String((parseJson(f) as { reason?: unknown }).reason)}`);
    }
    if (f.type !== Section.Commit) throw new MigrationError('protocol', `expected COMMIT, got ${sectionName(f.type)} (section #${f.index})`);
    loaded.machine.resume();
    connection.end();
    return loaded;
  } catch (err) {
    const e = asMigrationError(err, 'connection');
    if (loaded && typeof target === 'function') loaded.machine.close?.();
    try {
      if (!connection.destroyed && connection.writable) {
        // Tell the source, then let the connection close gracefully (the source closes it).
        connection.end(encodeFrame(Section.Error, jsonPayload({ message: e.message })));
        setTimeout(() => connection.destroy(), 2000).unref();
      } else {
        connection.destroy();
      }
    } catch {
      connection.destroy();
    }
    throw e;
  } finally {
    connection.off('error', onError);
    connection.on('error', () => undefined);
  }
}
