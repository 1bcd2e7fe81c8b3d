/**
 * Live migration over TCP: the source connects to `tcp:HOST:PORT`, the destination listens
 * there for one connection.
 * @module
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { MigrationError } from './errors.js';
import type { LoadTarget } from './load.js';
import type { MigratableMachine } from './persist.js';
import { PrecopySource, receiveMigration, type IncomingOptions, type IncomingResult, type MigrationReport, type PrecopyOptions, type StepResult } from './precopy.js';

/** A TCP endpoint. */
export interface TcpAddress {
  host: string;
  port: number;
}

/** Parses `tcp:HOST:PORT` (also `HOST:PORT`, `tcp:[v6]:PORT`); throws a MigrationError naming what is wrong. */
export function parseTcpAddress(text: string): TcpAddress {
  const s = text.startsWith('tcp:') ? text.slice(4) : text;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s);
  if (!m) throw new MigrationError('connection', `'${text}' is not a migration address: expected tcp:HOST:PORT`);
  const port = Number(m[3]);
  if (port > 65535) throw new MigrationError('connection', `'${text}': port ${port} is out of range`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** Connects to the destination and returns the source, ready to be stepped. */
export async function connectMigration(machine: MigratableMachine, address: string | TcpAddress, options: PrecopyOptions = {}): Promise<PrecopySource> {
  const a = typeof address === 'string' ? parseTcpAddress(address) : address;
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host: a.host, port: a.port });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', (err) => reject(new MigrationError('connection', `cannot connect to ${a.host}:${a.port}: ${err.message}`, { cause: err })));
  });
  socket.setNoDelay(true);
  return new PrecopySource(machine, socket, options);
}

/** A destination waiting for (or receiving) one incoming migration. */
export interface IncomingServer<M extends MigratableMachine> {
  /** The bound address (port 0 becomes the real port). */
  readonly address: TcpAddress;
  /** The received machine (resumed), or the error that made the destination discard it. */
  readonly result: Promise<IncomingResult<M>>;
  /** Stops listening (and drops a connection in progress). */
  close(): void;
}

/**
 * Listens on `address` for one migration; the first connection is received into the machine
 * `target` builds, further connections are refused.
 */
export async function listenForMigration<M extends MigratableMachine>(address: string | TcpAddress, target: LoadTarget<M>, options: IncomingOptions = {}): Promise<IncomingServer<M>> {
  const a = typeof address === 'string' ? parseTcpAddress(address) : address;
  let conn: Socket | undefined;
  let server!: Server;
  const result = new Promise<IncomingResult<M>>((resolve, reject) => {
    server = createServer((socket) => {
      if (conn) {
        socket.destroy();
        return;
      }
      conn = socket;
      socket.setNoDelay(true);
      server.close();
      receiveMigration(socket, target, options).then(resolve, reject);
    });
    server.once('close', () => {
      if (!conn) reject(new MigrationError('aborted', 'stopped listening before a migration arrived'));
    });
  });
  result.catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new MigrationError('connection', `cannot listen on ${a.host}:${a.port}: ${err.message}`, { cause: err })));
    server.listen(a.port, a.host, () => resolve());
  });
  const bound = server.address();
  const port = typeof bound === 'object' && bound ? bound.port : a.port;
  return {
    address: { host: a.host, port },
    result,
    close: () => {
      server.close();
      conn?.destroy();
    },
  };
}

/**
 * Drives a source to the end: `runGuest` runs the guest for a slice between steps (the VMM's
 * run loop does the same with its own slices). Resolves with the report; rejects with the
 * MigrationError if the migration failed (the source is then running again).
 */
export async function driveMigration(source: PrecopySource, runGuest: () => void | Promise<void>): Promise<MigrationReport> {
  for (;;) {
    const r: StepResult = await source.step();
    if (r.state === 'completed') return r.report;
    if (r.state === 'failed') throw r.error;
    await runGuest();
    await new Promise((resolve) => setImmediate(resolve));
  }
}
