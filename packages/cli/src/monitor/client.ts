/**
 * A monitor client, for tests, scripts and `kvmts monitor`: connects, reads the greeting, and
 * matches replies to requests in order (the server answers one request at a time). Events that
 * arrive meanwhile are collected in {@link MonitorClient.events}.
 * @module
 */

import { type Socket, connect } from 'node:net';
import {
  type MonitorAddress,
  MonitorCommandError,
  type MonitorEvent,
  type MonitorGreeting,
  type MonitorReply,
  parseMonitorAddress,
} from './protocol.js';

/** Options of {@link MonitorClient.connect}. */
export interface MonitorClientOptions {
  /** Give up connecting, or waiting for a reply, after this many ms (default 10000). */
  timeoutMs?: number;
}

interface Pending {
  resolve: (reply: MonitorReply) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A connection to a monitor. */
export class MonitorClient {
  /** Events received so far, oldest first. */
  readonly events: MonitorEvent[] = [];
  /** Told about each event as it arrives. */
  onEvent: ((event: MonitorEvent) => void) | undefined;

  private readonly pending: Pending[] = [];
  private buffered = '';
  private greetingWaiter: ((greeting: MonitorGreeting) => void) | undefined;
  private closedError: Error | undefined;
  private greetingValue: MonitorGreeting | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('the monitor closed the connection')));
  }

  /** Connect and wait for the greeting. Rejects if the monitor is not there or does not greet in time. */
  static async connect(address: MonitorAddress | string, options: MonitorClientOptions = {}): Promise<MonitorClient> {
    const where = typeof address === 'string' ? parseMonitorAddress(address) : address;
    const timeoutMs = options.timeoutMs ?? 10_000;
    const socket = where.kind === 'unix' ? connect({ path: where.path }) : connect({ host: where.host, port: where.port });
    const client = new MonitorClient(socket, timeoutMs);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no greeting from the monitor within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      socket.once('error', (err) => settle(err));
      socket.once('close', () => settle(client.closedError ?? new Error('the monitor closed the connection')));
      client.greetingWaiter = () => settle();
    });
    return client;
  }

  /** The greeting the server sent. */
  get greeting(): MonitorGreeting {
    return this.greetingValue!;
  }

  /**
   * Send one request and resolve with its reply (an error reply resolves too). A string is sent
   * as it is (one line), so tests can send malformed input; anything else is JSON-encoded.
   */
  request(message: string | object): Promise<MonitorReply> {
    if (this.closedError) return Promise.reject(this.closedError);
    const line = typeof message === 'string' ? message : JSON.stringify(message);
    return new Promise<MonitorReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.pending.findIndex((p) => p.timer === timer);
        if (i >= 0) this.pending.splice(i, 1);
        reject(new Error(`no reply from the monitor within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.push({ resolve, reject, timer });
      this.socket.write(`${line}\n`);
    });
  }

  /** Run a command and return its `return` value; an error reply throws {@link MonitorCommandError}. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = await this.request(args === undefined ? { execute: command } : { execute: command, arguments: args });
    if ('error' in reply) throw new MonitorCommandError(reply.error.class, reply.error.desc);
    return reply.return;
  }

  /** Resolve with the next event named `name` (or one already received and not yet waited for). */
  waitForEvent(name: string): Promise<MonitorEvent> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) {
      this.events.splice(this.events.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${name} event within ${this.timeoutMs} ms`)), this.timeoutMs);
      const previous = this.onEvent;
      this.onEvent = (event) => {
        previous?.(event);
        if (event.event !== name) return;
        clearTimeout(timer);
        this.onEvent = previous;
        this.events.splice(this.events.indexOf(event), 1);
        resolve(event);
      };
    });
  }

  /** Close the connection. Requests still waiting are rejected. */
  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      if (line.trim() !== '') this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.fail(new Error(`the monitor sent something that is not JSON: ${line.slice(0, 80)}`));
      this.socket.destroy();
      return;
    }
    if (typeof message !== 'object' || message === null) return;
    if ('QMP' in message) {
      this.greetingValue = message as MonitorGreeting;
      this.greetingWaiter?.(this.greetingValue);
      this.greetingWaiter = undefined;
    } else if ('event' in message) {
      const event = message as MonitorEvent;
      this.events.push(event);
      this.onEvent?.(event);
    } else if ('return' in message || 'error' in message) {
      const waiter = this.pending.shift();
      if (waiter) {
        clearTimeout(waiter.timer);
        waiter.resolve(message as MonitorReply);
      }
    }
  }

  private fail(error: Error): void {
    this.closedError ??= error;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}
