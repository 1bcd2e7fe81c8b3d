import { Command, CommanderError } from 'commander';
import { afterEach, describe, expect, it } from 'vitest';
import { CliError, ExitStatus } from '../errors.js';
import type { CliIo } from '../main.js';
import { MONITOR_ERROR_REPLY_STATUS, addMonitorCommand, requestLine } from './command.js';
import type { MonitorMachine } from './machine.js';
import { MonitorServer } from './server.js';

const machine: MonitorMachine = {
  runState: 'paused',
  ramSize: 64 * 1024 * 1024,
  pause: () => {},
  resume: () => {},
  quit: () => {},
};

/** Run `kvmts ARGV` with only the monitor command, as main() would, and collect its output. */
async function kvmts(argv: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  let status: number = ExitStatus.Ok;
  const io: CliIo = { stdout: (c) => void (stdout += String(c)), stderr: (t) => void (stderr += t) };
  const program = new Command('kvmts').exitOverride().configureOutput({ writeOut: (s) => void (stdout += s), writeErr: (s) => void (stderr += s) });
  addMonitorCommand(program, io, (s) => {
    status = s;
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CliError) return { status: err.exitCode, stdout, stderr: `${stderr}kvmts: ${err.message}\n` };
    if (err instanceof CommanderError) return { status: err.exitCode === 0 ? 0 : ExitStatus.Usage, stdout, stderr };
    throw err;
  }
  return { status, stdout, stderr };
}

let server: MonitorServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});
const listen = async (): Promise<string> => {
  server = await MonitorServer.listen('tcp:127.0.0.1:0', { machine });
  const a = server.address;
  if (a.kind !== 'tcp') throw new Error('tcp expected');
  return `tcp:${a.host}:${a.port}`;
};

describe('kvmts monitor', () => {
  it('sends JSON requests and command names, printing one reply per line', async () => {
    const address = await listen();
    const r = await kvmts(['monitor', address, '{"execute":"query-status","id":1}', 'query-status']);
    expect(r.status).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { return: { status: 'paused', running: false }, id: 1 },
      { return: { status: 'paused', running: false } },
    ]);
  });

  it('prints the greeting when given no request', async () => {
    const r = await kvmts(['monitor', await listen()]);
    expect(JSON.parse(r.stdout)).toEqual({ QMP: { version: { kvmts: '0.1.0' }, capabilities: [] } });
    expect(r.status).toBe(0);
  });

  it('prints error replies and exits 1', async () => {
    const r = await kvmts(['monitor', await listen(), 'query-balloon', 'query-status']);
    const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toEqual({ error: { class: 'DeviceNotActive', desc: 'No balloon device has been activated' } });
    expect(lines[1]).toHaveProperty('return');
    expect(r.status).toBe(MONITOR_ERROR_REPLY_STATUS);
  });

  it('reports bad addresses, bad requests and unreachable monitors', async () => {
    expect(await kvmts(['monitor', 'udp:1.2.3.4:5'])).toMatchObject({ status: ExitStatus.Usage, stderr: expect.stringMatching(/must start with unix: or tcp:/) as unknown });
    const address = await listen();
    expect(await kvmts(['monitor', address, '{"execute":'])).toMatchObject({ status: ExitStatus.Usage, stderr: expect.stringMatching(/not valid JSON/) as unknown });
    expect(await kvmts(['monitor', address, 'Query Status'])).toMatchObject({ status: ExitStatus.Usage });
    expect(await kvmts(['monitor', address, '--timeout', 'soon'])).toMatchObject({ status: ExitStatus.Usage });
    await server!.close();
    server = undefined;
    expect(await kvmts(['monitor', address, 'query-status'])).toMatchObject({ status: ExitStatus.Unavailable, stderr: expect.stringMatching(/cannot reach the monitor/) as unknown });
  });

  it('turns arguments into request lines', () => {
    expect(requestLine('stop')).toBe('{"execute":"stop"}');
    expect(requestLine(' {"execute":"x"} ')).toBe('{"execute":"x"}');
    expect(() => requestLine('[1]')).toThrow(CliError);
  });
});
