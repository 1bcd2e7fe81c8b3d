/**
 * The wire protocol of the kvmts monitor, modelled on QEMU's QMP: JSON objects, one per line
 * (`\n`, a trailing `\r` is accepted), in both directions.
 *
 * - On connect the server sends a greeting: `{"QMP": {"version": {...}, "capabilities": []}}`.
 * - A request is `{"execute": NAME, "arguments"?: {...}, "id"?: ANY}`; nothing else is allowed.
 * - Each request gets exactly one reply, in order: `{"return": VALUE, "id"?}` or
 *   `{"error": {"class": CLASS, "desc": TEXT}, "id"?}` (the `id` is echoed when given).
 * - Events may come between replies: `{"event": NAME, "data"?: {...}, "timestamp": {"seconds", "microseconds"}}`.
 * @module
 */

import { z } from 'zod';

/** QMP error classes used by the monitor. */
export type MonitorErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive';

/** The greeting the server sends on connect. */
export interface MonitorGreeting {
  QMP: { version: { kvmts: string }; capabilities: string[] };
}

/** A successful reply. */
export interface MonitorReturn {
  return: unknown;
  id?: unknown;
}

/** A failed request's reply. */
export interface MonitorErrorReply {
  error: { class: MonitorErrorClass; desc: string };
  id?: unknown;
}

/** One of the two replies. */
export type MonitorReply = MonitorReturn | MonitorErrorReply;

/** An asynchronous event. */
export interface MonitorEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** Schema of a request line, after JSON parsing. */
export const monitorRequestSchema = z.strictObject({
  execute: z.string().min(1),
  arguments: z.record(z.string(), z.unknown()).optional(),
  id: z.unknown().optional(),
});

/** A request that passed {@link monitorRequestSchema}. */
export type MonitorRequest = z.infer<typeof monitorRequestSchema>;

/** A command failure with its QMP class; thrown by command handlers, sent as an error reply. */
export class MonitorCommandError extends Error {
  readonly errorClass: MonitorErrorClass;
  constructor(errorClass: MonitorErrorClass, desc: string) {
    super(desc);
    this.name = 'MonitorCommandError';
    this.errorClass = errorClass;
  }
}

/** Turn zod issues into one line a person can act on. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.length > 0 ? `'${issue.path.join('.')}'` : 'input';
      if (issue.code === 'unrecognized_keys') return `${where} has unexpected member${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
      return `${where}: ${issue.message}`;
    })
    .join('; ');
}

/** Where a monitor listens or a client connects. */
export type MonitorAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/**
 * Parse `unix:PATH` or `tcp:HOST:PORT` (`tcp:[::1]:PORT` for IPv6; `tcp::PORT` means
 * 127.0.0.1). Port 0 asks for any free port when listening. Throws RangeError.
 */
export function parseMonitorAddress(text: string): MonitorAddress {
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (path === '') throw new RangeError(`monitor address "${text}" has an empty socket path`);
    return { kind: 'unix', path };
  }
  if (text.startsWith('tcp:')) {
    const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.slice(4));
    const port = m ? Number(m[3]) : NaN;
    if (!m || port > 65535) throw new RangeError(`monitor address "${text}" is not tcp:HOST:PORT`);
    const host = m[1] ?? m[2] ?? '';
    return { kind: 'tcp', host: host === '' ? '127.0.0.1' : host, port };
  }
  throw new RangeError(`monitor address "${text}" must start with unix: or tcp:`);
}

/** The address as `parseMonitorAddress` reads it. */
export function formatMonitorAddress(address: MonitorAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return `tcp:${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** An event object stamped with the current time, as QMP does. */
export function makeEvent(name: string, data?: Record<string, unknown>, nowMs = Date.now()): MonitorEvent {
  const seconds = Math.floor(nowMs / 1000);
  const timestamp = { seconds, microseconds: Math.round((nowMs - seconds * 1000) * 1000) };
  return data === undefined ? { event: name, timestamp } : { event: name, data, timestamp };
}
