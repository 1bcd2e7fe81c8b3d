/**
 * Snapshots: a paused machine written to a file as one migration stream, and restored into a
 * fresh machine built from (and checked against) the stream's configuration.
 * @module
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { describeMachine, type MachineConfig } from './config.js';
import { MigrationError } from './errors.js';
import { loadStream, ramPagesOf, readConfig, type LoadTarget, type Loaded } from './load.js';
import { vmSlots } from './pages.js';
import type { MigratableMachine } from './persist.js';
import { captureState } from './state.js';
import { Section, sectionName } from './stream/format.js';
import { RamEncoder, type RamEncoderOptions, type RamStats } from './stream/ram.js';
import { StreamReader } from './stream/reader.js';
import { StreamWriter } from './stream/writer.js';

/** Options of {@link saveSnapshot} / {@link writeSnapshot}. */
export interface SnapshotOptions {
  /** Deflate runs of non-zero pages (default false). */
  deflate?: boolean;
  /** How long to wait for the machine's devices to become quiescent (default 10 s). */
  quiesceTimeoutMs?: number;
}

/** Waits until `m.quiescent()` holds (the run loop is not running the guest meanwhile). */
async function waitQuiescent(m: MigratableMachine, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (m.quiescent?.() === false) {
    if (performance.now() > end) throw new MigrationError('timeout', `the machine's devices still have I/O in flight after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** What a snapshot wrote. */
export interface SnapshotReport {
  bytes: number;
  ram: RamStats;
  /** How long the machine was paused, in ms. */
  pausedMs: number;
}

/**
 * Writes `m` as a stream to `out` (not ended). The machine is paused for the duration (and
 * resumed afterwards if it was running).
 */
export async function writeSnapshot(m: MigratableMachine, out: Writable, options: SnapshotOptions = {}): Promise<SnapshotReport> {
  await waitQuiescent(m, options.quiesceTimeoutMs ?? 10_000);
  const t0 = performance.now();
  const wasPaused = m.paused;
  if (!wasPaused) m.pause();
  const w = new StreamWriter(out);
  try {
    // Quiescing may complete a string I/O into memory: capture the state before reading RAM.
    const state = captureState(m);
    const config = describeMachine(m);
    w.header();
    w.json(Section.Config, config);
    const enc = new RamEncoder({ xbzrle: false, ...(options.deflate !== undefined ? { deflate: options.deflate } : {}) });
    const released = (slot: number): Uint8Array | undefined => m.releasedPages?.(slot);
    for (const slot of vmSlots(m.vm)) {
      const rel = released(slot.id);
      for (let p = 0; p < slot.pages; p++) {
        if (rel && rel[p >>> 3]! & (1 << (p & 7))) {
          enc.skip();
          continue;
        }
        enc.page(slot.id, slot.bytes, p);
        if (enc.full && !w.section(Section.Ram, enc.take()!)) await w.drain();
      }
    }
    const last = enc.take();
    if (last) w.section(Section.Ram, last);
    w.json(Section.State, state);
    w.json(Section.End, { sections: w.sections, pages: ramPagesOf(enc.stats) });
    await w.flush();
    return { bytes: w.bytes, ram: enc.stats, pausedMs: performance.now() - t0 };
  } finally {
    w.detach();
    if (!wasPaused) m.resume();
  }
}

/**
 * Saves a snapshot of `m` to `file`, atomically: it is written to `file.tmp-<pid>` and
 * renamed into place only when complete.
 */
export async function saveSnapshot(m: MigratableMachine, file: string, options: SnapshotOptions = {}): Promise<SnapshotReport> {
  const tmp = `${file}.tmp-${process.pid}`;
  const out = createWriteStream(tmp);
  const opened = new Promise<void>((resolve, reject) => {
    out.once('open', () => resolve());
    out.once('error', reject);
  });
  try {
    await opened;
  } catch (err) {
    throw new MigrationError('io', `cannot write snapshot '${file}': ${(err as Error).message}`, { cause: err });
  }
  try {
    const report = await writeSnapshot(m, out, options);
    await new Promise<void>((resolve, reject) => {
      out.once('error', reject);
      out.end(() => resolve());
    });
    await rename(tmp, file);
    return report;
  } catch (err) {
    out.destroy();
    await unlink(tmp).catch(() => undefined);
    if (err instanceof MigrationError) throw new MigrationError(err.kind === 'connection' ? 'io' : err.kind, `saving snapshot '${file}': ${err.message}`, { cause: err });
    throw new MigrationError('io', `saving snapshot '${file}': ${(err as Error).message}`, { cause: err });
  }
}

async function openSnapshot(file: string): Promise<StreamReader> {
  try {
    const fh = await open(file, 'r');
    await fh.close();
  } catch (err) {
    throw new MigrationError('io', `cannot read snapshot '${file}': ${(err as Error).message}`, { cause: err });
  }
  return new StreamReader(createReadStream(file, { highWaterMark: 1 << 20 }), `snapshot '${file}'`);
}

/** The machine configuration stored in a snapshot (to build a matching machine). */
export async function readSnapshotConfig(file: string): Promise<MachineConfig> {
  const reader = await openSnapshot(file);
  try {
    return await readConfig(reader);
  } finally {
    await reader.close();
  }
}

/** Options of {@link restoreSnapshot}. */
export interface RestoreOptions {
  /** Leave the restored machine paused (default false: resume it). */
  paused?: boolean;
}

/**
 * Restores a snapshot into a fresh machine: `target` builds it from the stream's configuration
 * (or is a fresh machine already), the configuration is checked, RAM loaded, and the state
 * applied once the whole file has been verified. On any error the machine built here is closed
 * and a MigrationError thrown.
 */
export async function restoreSnapshot<M extends MigratableMachine>(file: string, target: LoadTarget<M>, options: RestoreOptions = {}): Promise<Loaded<M>> {
  const reader = await openSnapshot(file);
  try {
    const loaded = await loadStream(reader, target);
    try {
      // Whatever follows END (a frame, garbage that does not parse, a cut-off section) is an error.
      const extra = await reader.next();
      if (extra) throw new MigrationError('corrupt', `corrupt snapshot '${file}': data after the END section (a ${sectionName(extra.type)} section at byte ${extra.offset})`);
    } catch (err) {
      // The machine built here is discarded on every error, not only on a well-framed extra section.
      if (typeof target === 'function') loaded.machine.close?.();
      throw err;
    }
    if (!options.paused) loaded.machine.resume();
    return loaded;
  } finally {
    await reader.close();
  }
}

