/**
 * The monitor's command registry: each command is a name, a zod schema for its `arguments`
 * and a handler. The server validates arguments before calling the handler, so handlers get
 * typed, checked input. Later work (migration: `migrate`, `query-migrate`, `snapshot-save`)
 * registers its commands on the same registry.
 * @module
 */

import type { z } from 'zod';
import type { MonitorMachine } from './machine.js';

/** What a handler can use besides its arguments. */
export interface MonitorContext<M extends MonitorMachine = MonitorMachine> {
  readonly machine: M;
  /** Send an event to every connected client. */
  emitEvent(name: string, data?: Record<string, unknown>): void;
  /** The registry the command came from (for `query-commands`). */
  readonly registry: MonitorCommandRegistry<M>;
  /** Run `action` once this command's reply has been written (e.g. to exit after `quit`). */
  afterReply(action: () => void | Promise<void>): void;
}

/** One command. `S` is the schema of its `arguments` object (use `z.strictObject`). */
export interface MonitorCommand<S extends z.ZodType = z.ZodType, M extends MonitorMachine = MonitorMachine> {
  readonly name: string;
  /** One line, for `query-commands` and `kvmts monitor --help`. */
  readonly description: string;
  /** Validates `arguments` (an absent `arguments` is checked as `{}`). */
  readonly args: S;
  /**
   * Do it; the value (undefined → `{}`) becomes the reply's `return`. Throw
   * `MonitorCommandError` for a failure with a QMP class; any other throw is a GenericError.
   */
  run(args: z.output<S>, context: MonitorContext<M>): unknown;
}

/** Define a command with its argument types inferred from the schema. */
export function defineCommand<S extends z.ZodType, M extends MonitorMachine = MonitorMachine>(command: MonitorCommand<S, M>): MonitorCommand<S, M> {
  return command;
}

/** Command names: lower case words joined by `-` (QMP style; `qmp_capabilities` is the historical exception). */
const COMMAND_NAME = /^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$/;

/** A set of commands by name. */
export class MonitorCommandRegistry<M extends MonitorMachine = MonitorMachine> {
  private readonly commands = new Map<string, MonitorCommand<z.ZodType, M>>();

  /** Add a command; throws if the name is malformed or taken. Returns the registry for chaining. */
  register<S extends z.ZodType>(command: MonitorCommand<S, M>): this {
    if (!COMMAND_NAME.test(command.name)) throw new RangeError(`monitor command name "${command.name}" is not lower-case words joined by '-'`);
    if (this.commands.has(command.name)) throw new RangeError(`monitor command "${command.name}" is already registered`);
    this.commands.set(command.name, command as unknown as MonitorCommand<z.ZodType, M>);
    return this;
  }

  get(name: string): MonitorCommand<z.ZodType, M> | undefined {
    return this.commands.get(name);
  }

  /** Every command, sorted by name. */
  list(): MonitorCommand<z.ZodType, M>[] {
    return [...this.commands.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
}
