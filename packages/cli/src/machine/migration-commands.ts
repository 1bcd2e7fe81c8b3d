/**
 * Monitor commands for snapshots and live migration, to register on the monitor's registry:
 * `registry.register(...)` each of {@link migrationCommands}`(() => control)`.
 *
 * | command | arguments | reply |
 * | --- | --- | --- |
 * | `snapshot-save` | `{file}` | `{bytes, paused-ms, zero-pages}` once the file is written |
 * | `migrate` | `{uri: "tcp:HOST:PORT", downtime-limit?: ms, max-bandwidth?: bytes/s, max-rounds?, auto-converge?, xbzrle?, compress?}` | `{}` once connected; progress and the result as `MIGRATION` events `{status: active|completed|failed, ...}` |
 * | `migrate-cancel` | — | `{}` |
 * | `query-migrate` | — | `{status: none|active|completed|failed, ...}` |
 * @module
 */

import { z } from 'zod';
import { MigrationError, type PrecopyOptions } from '@kvmts/migration';
import { defineCommand, type MonitorCommand } from '../monitor/registry.js';
import { MonitorCommandError } from '../monitor/protocol.js';
import type { MigrationControl } from './migration-control.js';

const noArguments = z.strictObject({});

function need(control: MigrationControl | null): MigrationControl {
  if (!control) throw new MonitorCommandError('DeviceNotActive', 'the VM is not running');
  return control;
}

function fail(err: unknown): never {
  throw new MonitorCommandError('GenericError', err instanceof Error ? err.message : String(err));
}

/** The commands; `control` returns the running VM's {@link MigrationControl} (null when none). */
export function migrationCommands(control: () => MigrationControl | null): MonitorCommand[] {
  return [
    defineCommand({
      name: 'snapshot-save',
      description: 'Save the VM to a snapshot file (paused for the duration): {file}.',
      args: z.strictObject({ file: z.string().min(1) }),
      run: async ({ file }) => {
        try {
          const r = await need(control()).snapshotSave(file);
          return { bytes: r.bytes, 'paused-ms': Math.round(r.pausedMs), 'zero-pages': r.ram.zeroPages };
        } catch (err) {
          if (err instanceof MonitorCommandError) throw err;
          return fail(err);
        }
      },
    }),
    defineCommand({
      name: 'migrate',
      description: 'Live-migrate the VM to a destination started with --incoming: {uri: "tcp:HOST:PORT", downtime-limit?, max-bandwidth?, ...}.',
      args: z.strictObject({
        uri: z.string().regex(/^tcp:/, 'only tcp:HOST:PORT is supported'),
        'downtime-limit': z.number().nonnegative().optional(),
        'max-bandwidth': z.number().positive().optional(),
        'max-rounds': z.number().int().positive().optional(),
        'auto-converge': z.boolean().optional(),
        xbzrle: z.boolean().optional(),
        compress: z.boolean().optional(),
      }),
      run: async (a, { emitEvent }) => {
        const options: Omit<PrecopyOptions, 'onProgress'> = {
          ...(a['downtime-limit'] !== undefined ? { downtimeLimitMs: a['downtime-limit'] } : {}),
          ...(a['max-bandwidth'] !== undefined ? { maxBandwidth: a['max-bandwidth'] } : {}),
          ...(a['max-rounds'] !== undefined ? { maxRounds: a['max-rounds'] } : {}),
          ...(a['auto-converge'] !== undefined ? { autoConverge: a['auto-converge'] } : {}),
          ...(a.xbzrle !== undefined ? { xbzrle: a.xbzrle } : {}),
          ...(a.compress !== undefined ? { deflate: a.compress } : {}),
        };
        try {
          await need(control()).migrate(a.uri, options, (e) => {
            if (e.kind === 'progress') emitEvent('MIGRATION', { status: 'active', ...e.progress });
            else if (e.kind === 'completed') emitEvent('MIGRATION', { status: 'completed', ...e.report });
            else emitEvent('MIGRATION', { status: 'failed', error: e.error });
          });
          return {};
        } catch (err) {
          if (err instanceof MonitorCommandError) throw err;
          return fail(err instanceof MigrationError ? err : new Error(String(err)));
        }
      },
    }),
    defineCommand({
      name: 'migrate-cancel',
      description: 'Cancel the live migration; the VM keeps running here.',
      args: noArguments,
      run: () => {
        control()?.cancel();
        return {};
      },
    }),
    defineCommand({
      name: 'query-migrate',
      description: 'The live migration: {status, ...progress or report or error}.',
      args: noArguments,
      run: () => {
        const s = control()?.status() ?? { state: 'none' as const };
        switch (s.state) {
          case 'none':
            return { status: 'none' };
          case 'active':
            return { status: 'active', ...(s.progress ?? {}) };
          case 'completed':
            return { status: 'completed', ...s.report };
          case 'failed':
            return { status: 'failed', error: s.error };
        }
      },
    }),
  ] as unknown as MonitorCommand[];
}
