/**
 * The built-in monitor commands: `qmp_capabilities`, `query-commands`, `query-status`, `stop`,
 * `cont`, `quit`, `query-balloon`, `balloon`, `query-balloon-stats` and
 * `set-balloon-stats-interval`.
 *
 * Balloon sizes follow QMP: `balloon {"value": N}` asks for the guest to be left with N bytes
 * (so the balloon holds RAM − N), and `query-balloon` reports `actual` the same way.
 * @module
 */

import { z } from 'zod';
import type { MonitorBalloon, MonitorMachine } from './machine.js';
import { MonitorCommandError } from './protocol.js';
import { type MonitorCommand, MonitorCommandRegistry, defineCommand } from './registry.js';

const noArguments = z.strictObject({});

function balloonOf(machine: MonitorMachine): MonitorBalloon {
  if (machine.balloon === undefined) throw new MonitorCommandError('DeviceNotActive', 'No balloon device has been activated');
  return machine.balloon;
}

/** `swapIn` → `stat-swap-in`, the style of QEMU's balloon statistics names. */
export const balloonStatName = (name: string): string => `stat-${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** The built-in commands, for a registry of your own. */
export const BUILTIN_COMMANDS: readonly MonitorCommand[] = [
  defineCommand({
    name: 'qmp_capabilities',
    description: 'Finish capability negotiation (accepted for QMP clients; no capabilities are offered).',
    args: z.strictObject({ enable: z.array(z.string()).max(0, 'no capabilities are offered').optional() }),
    run: () => ({}),
  }),
  defineCommand({
    name: 'query-commands',
    description: 'List the commands this monitor accepts.',
    args: noArguments,
    run: (_args, { registry }) => registry.list().map((c) => ({ name: c.name, description: c.description })),
  }),
  defineCommand({
    name: 'query-status',
    description: "The VM's run state: {status, running}.",
    args: noArguments,
    run: (_args, { machine }) => ({ status: machine.runState, running: machine.runState === 'running' }),
  }),
  defineCommand({
    name: 'stop',
    description: 'Pause the vCPUs (event STOP).',
    args: noArguments,
    run: async (_args, { machine, emitEvent }) => {
      if (machine.runState !== 'running') return {};
      await machine.pause();
      emitEvent('STOP');
      return {};
    },
  }),
  defineCommand({
    name: 'cont',
    description: 'Resume the vCPUs (event RESUME).',
    args: noArguments,
    run: async (_args, { machine, emitEvent }) => {
      if (machine.runState === 'shutdown') throw new MonitorCommandError('GenericError', 'The VM has shut down and cannot be resumed');
      if (machine.runState !== 'paused') return {};
      await machine.resume();
      emitEvent('RESUME');
      return {};
    },
  }),
  defineCommand({
    name: 'quit',
    description: 'End the VM and kvmts (event SHUTDOWN), after replying.',
    args: noArguments,
    run: (_args, { machine, emitEvent, afterReply }) => {
      emitEvent('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
      afterReply(() => machine.quit());
      return {};
    },
  }),
  defineCommand({
    name: 'query-balloon',
    description: 'Guest memory left by the balloon: {actual, target} in bytes, and host-released bytes.',
    args: noArguments,
    run: (_args, { machine }) => {
      const balloon = balloonOf(machine);
      return {
        actual: machine.ramSize - balloon.actualBytes,
        target: machine.ramSize - balloon.targetBytes,
        'released-bytes': balloon.stats.releasedBytes,
      };
    },
  }),
  defineCommand({
    name: 'balloon',
    description: 'Ask the guest to shrink or grow to {value} bytes of memory (at most its RAM).',
    args: z.strictObject({ value: z.number().int().positive() }),
    run: ({ value }, { machine }) => {
      const balloon = balloonOf(machine);
      // As QEMU does, asking for more than the RAM just empties the balloon.
      balloon.setTarget(machine.ramSize - Math.min(value, machine.ramSize));
      return {};
    },
  }),
  defineCommand({
    name: 'query-balloon-stats',
    description: "The guest's latest memory statistics: {stats, last-update (s), polling-interval (s)}.",
    args: noArguments,
    run: (_args, { machine }) => {
      const balloon = balloonOf(machine);
      const latest = balloon.latestStats;
      const stats: Record<string, number> = {};
      for (const [name, value] of Object.entries(latest?.stats ?? {})) if (typeof value === 'number') stats[balloonStatName(name)] = value;
      return {
        stats,
        'last-update': latest === null ? 0 : Math.floor(latest.timestamp / 1000),
        'polling-interval': balloon.statsPollingIntervalMs / 1000,
      };
    },
  }),
  defineCommand({
    name: 'set-balloon-stats-interval',
    description: 'Ask the guest for memory statistics every {seconds} (0 stops).',
    args: z.strictObject({ seconds: z.number().int().nonnegative().max(24 * 3600) }),
    run: ({ seconds }, { machine }) => {
      balloonOf(machine).setStatsPollingInterval(seconds * 1000);
      return {};
    },
  }),
];

/** A registry holding the built-in commands; register more on it. */
export function builtinRegistry<M extends MonitorMachine = MonitorMachine>(): MonitorCommandRegistry<M> {
  const registry = new MonitorCommandRegistry<M>();
  for (const command of BUILTIN_COMMANDS) registry.register(command as MonitorCommand<z.ZodType, M>);
  return registry;
}
