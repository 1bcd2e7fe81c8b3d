/**
 * The monitor server: listens on a Unix socket or TCP, greets each client, and answers its
 * requests one at a time, in order, from a {@link MonitorCommandRegistry}. Malformed input
 * (bad JSON, a non-object, unknown members, unknown commands, bad arguments, a line longer than
 * the limit) gets an error reply; nothing a client sends can crash the VMM.
 * @module
 */

import { lstatSync, unlinkSync } from 'node:fs';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { builtinRegistry } from './commands.js';
import type { MonitorMachine } from './machine.js';
import {
  type MonitorAddress,
  MonitorCommandError,
  type MonitorErrorClass,
  type MonitorGreeting,
  type MonitorReply,
  describeIssues,
  makeEvent,
  monitorRequestSchema,
  parseMonitorAddress,
} from './protocol.js';
import type { MonitorCommandRegistry, MonitorContext } from './registry.js';

/** Longest request line accepted (bytes); longer ones are answered with an error and skipped. */
export const MONITOR_MAX_LINE = 1024 * 1024;

/** Options of {@link MonitorServer.listen}. */
export interface MonitorServerOptions<M extends MonitorMachine = MonitorMachine> {
  machine: M;
  /** Commands (default: a fresh {@link builtinRegistry}). */
  registry?: MonitorCommandRegistry<M>;
  /** Version string for the greeting (default "0.1.0"). */
  version?: string;
  /** Longest request line in bytes (default {@link MONITOR_MAX_LINE}). */
  maxLineBytes?: number;
  /** Told about failures of `afterReply` actions (e.g. `quit`), which have no client to go to. */
  onError?: (error: unknown) => void;
}

/** One client connection: a line buffer and a queue so requests run one after another. */
class MonitorSession {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private discarding = false;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly socket: Socket,
    private readonly server: MonitorServer<MonitorMachine>,
    private readonly maxLine: number,
  ) {
    // Raw bytes: a newline byte never occurs inside a UTF-8 sequence, so lines split safely.
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {}); // a client that vanishes is not our problem; 'close' follows
  }

  send(message: object): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(`${JSON.stringify(message)}\n`);
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      this.take(chunk.subarray(start, nl));
      const line = Buffer.concat(this.buffered, this.bufferedBytes);
      const skipped = this.discarding;
      this.buffered = [];
      this.bufferedBytes = 0;
      this.discarding = false;
      if (!skipped) this.enqueue(line.toString('utf8'));
      start = nl + 1;
    }
    this.take(chunk.subarray(start));
  }

  private take(part: Buffer): void {
    if (this.discarding || part.length === 0) return;
    if (this.bufferedBytes + part.length > this.maxLine) {
      this.buffered = [];
      this.bufferedBytes = 0;
      this.discarding = true; // until the end of this line
      this.queue = this.queue.then(() => this.send(errorReply('GenericError', `request line longer than ${this.maxLine} bytes`)));
      return;
    }
    this.buffered.push(Buffer.from(part));
    this.bufferedBytes += part.length;
  }

  private enqueue(raw: string): void {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') return;
    this.queue = this.queue.then(async () => {
      const afterReply: (() => void | Promise<void>)[] = [];
      const reply = await this.server.handleLine(line, (action) => afterReply.push(action));
      if (afterReply.length === 0) {
        this.send(reply);
        return;
      }
      // Let the reply reach the client before acting (quit must not cut its own answer off).
      await new Promise<void>((resolve) => this.socket.write(`${JSON.stringify(reply)}\n`, () => resolve()));
      for (const action of afterReply) {
        try {
          await action();
        } catch (err) {
          this.server.reportError(err);
        }
      }
    });
  }
}

const errorReply = (errorClass: MonitorErrorClass, desc: string, id?: unknown): MonitorReply =>
  id === undefined ? { error: { class: errorClass, desc } } : { error: { class: errorClass, desc }, id };

/** A listening monitor. */
export class MonitorServer<M extends MonitorMachine = MonitorMachine> {
  readonly registry: MonitorCommandRegistry<M>;
  private readonly sessions = new Set<MonitorSession>();
  private readonly greeting: MonitorGreeting;
  private readonly onError: ((error: unknown) => void) | undefined;

  private constructor(
    private readonly server: Server,
    private readonly machine: M,
    options: MonitorServerOptions<M>,
    private readonly unixPath: string | undefined,
  ) {
    this.registry = options.registry ?? builtinRegistry<M>();
    this.greeting = { QMP: { version: { kvmts: options.version ?? '0.1.0' }, capabilities: [] } };
    this.onError = options.onError;
    const maxLine = options.maxLineBytes ?? MONITOR_MAX_LINE;
    server.on('connection', (socket) => {
      const session = new MonitorSession(socket, this as unknown as MonitorServer<MonitorMachine>, maxLine);
      this.sessions.add(session);
      socket.on('close', () => this.sessions.delete(session));
      session.send(this.greeting);
    });
  }

  /**
   * Listen on `address` (`unix:PATH`, `tcp:HOST:PORT`, or parsed). A stale Unix socket file at
   * PATH (nobody accepts on it) is replaced; a live one is not. Rejects if the address cannot be bound (e.g. EADDRINUSE).
   */
  static async listen<M extends MonitorMachine>(address: MonitorAddress | string, options: MonitorServerOptions<M>): Promise<MonitorServer<M>> {
    const where = typeof address === 'string' ? parseMonitorAddress(address) : address;
    const server = createServer();
    if (where.kind === 'unix') await removeStaleSocket(where.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (where.kind === 'unix') server.listen(where.path, done);
      else server.listen(where.port, where.host, done);
    });
    server.on('error', (err) => options.onError?.(err));
    return new MonitorServer(server, options.machine, options, where.kind === 'unix' ? where.path : undefined);
  }

  /** Where the server listens (for `tcp:...:0`, with the port chosen). */
  get address(): MonitorAddress {
    if (this.unixPath !== undefined) return { kind: 'unix', path: this.unixPath };
    const a = this.server.address() as AddressInfo;
    return { kind: 'tcp', host: a.address, port: a.port };
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.sessions.size;
  }

  /** Send an event to every client (e.g. BALLOON_CHANGE from the balloon's `onActualChange`). */
  emitEvent(name: string, data?: Record<string, unknown>): void {
    const event = makeEvent(name, data);
    for (const s of this.sessions) s.send(event);
  }

  /** Stop listening and drop every client. */
  async close(): Promise<void> {
    for (const s of this.sessions) s.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Node removes its own Unix socket file on close; nothing else to clean.
  }

  /** @internal */
  reportError(error: unknown): void {
    this.onError?.(error);
  }

  /**
   * Answer one request line (without its newline). Never throws. `afterReply` queues an action
   * to run once the reply has been written.
   */
  async handleLine(line: string, afterReply: (action: () => void | Promise<void>) => void = () => {}): Promise<MonitorReply> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (err) {
      return errorReply('GenericError', `JSON parse error: ${err instanceof Error ? err.message : String(err)}`);
    }
    const id = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as { id?: unknown }).id : undefined;
    const request = monitorRequestSchema.safeParse(parsed);
    if (!request.success) return errorReply('GenericError', `Invalid request: ${describeIssues(request.error)}`, id);
    const { execute, arguments: args = {} } = request.data;
    const command = this.registry.get(execute);
    if (command === undefined) return errorReply('CommandNotFound', `The command ${execute} has not been found`, id);
    const checked = command.args.safeParse(args);
    if (!checked.success) return errorReply('GenericError', `Invalid arguments for ${execute}: ${describeIssues(checked.error)}`, id);
    const context: MonitorContext<M> = {
      machine: this.machine,
      registry: this.registry,
      emitEvent: (name, data) => this.emitEvent(name, data),
      afterReply,
    };
    try {
      const value: unknown = await command.run(checked.data, context);
      const ret = value === undefined ? {} : value;
      return id === undefined ? { return: ret } : { return: ret, id };
    } catch (err) {
      if (err instanceof MonitorCommandError) return errorReply(err.errorClass, err.message, id);
      return errorReply('GenericError', err instanceof Error ? err.message : String(err), id);
    }
  }
}

/**
 * Remove a Unix socket file left by a VMM that died (connecting is refused). A live one (another
 * VMM's monitor) is left alone, so listen fails with EADDRINUSE instead of stealing its path.
 */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if (!lstatSync(path).isSocket()) return;
  } catch {
    return; // nothing there
  }
  const refused = await new Promise<boolean>((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(false);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
  if (refused) {
    try {
      unlinkSync(path);
    } catch {
      // Gone already, or not ours: listen reports any real problem.
    }
  }
}
