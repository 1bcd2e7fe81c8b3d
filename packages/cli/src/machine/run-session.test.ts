import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CliError } from '../errors.js';
import { main, type CliIo } from '../main.js';
import { MonitorClient } from '../monitor/client.js';
import { PcRunSession } from './run-session.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-run-session-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function io(): CliIo & { err: string } {
  const r = { err: '', stdout: () => {}, stderr: (t: string) => void (r.err += t) };
  return r;
}

describe('PcRunSession', () => {
  it('serves the monitor before a machine runs (paused), registers the migration commands, and closes it', async () => {
    const sock = join(dir, 'm.sock');
    const session = await PcRunSession.open({ monitor: `unix:${sock}`, memSize: 64 << 20, log: () => {} });
    const client = await MonitorClient.connect(`unix:${sock}`);
    try {
      expect(await client.execute('query-status')).toEqual({ status: 'paused', running: false });
      expect(await client.execute('query-migrate')).toEqual({ status: 'none' });
      const names = ((await client.execute('query-commands')) as { name: string }[]).map((c) => c.name);
      expect(names).toEqual(expect.arrayContaining(['snapshot-save', 'migrate', 'migrate-cancel', 'query-migrate', 'balloon', 'quit']));
      const reply = await client.request({ execute: 'snapshot-save', arguments: { file: join(dir, 'x.snap') } });
      expect(reply).toMatchObject({ error: { class: 'DeviceNotActive' } });
      const balloon = await client.request({ execute: 'query-balloon' });
      expect(balloon).toMatchObject({ error: { class: 'DeviceNotActive' } });
    } finally {
      client.close();
      await session.close();
    }
    await expect(MonitorClient.connect(`unix:${sock}`, { timeoutMs: 1000 })).rejects.toThrow();
  });

  it('refuses a bad monitor address with a CliError', async () => {
    await expect(PcRunSession.open({ monitor: 'udp:1', memSize: 1 << 20, log: () => {} })).rejects.toThrow(CliError);
  });
});

describe('kvmts run --monitor/--restore/--incoming: command-line checks', () => {
  it.each([
    [['run', '--monitor', 'unix:/tmp/x.sock', '--demo'], /--monitor needs a PC guest/],
    [['run', '--restore', '/nonexistent.snap'], /cannot restore '\/nonexistent.snap'/],
    [['run', '--incoming', 'unix:/x'], /invalid --incoming 'unix:\/x': expected tcp:HOST:PORT/],
    [['run', '--incoming', 'tcp:127.0.0.1:0', '--restore', 'f'], /either --restore FILE or --incoming/],
    [['run', '--incoming', 'tcp:127.0.0.1:0', '--demo'], /cannot be combined with --kernel/],
  ])('%j', async (argv, message) => {
    const out = io();
    expect(await main(argv, out)).toBe(64);
    expect(out.err).toMatch(message);
  });
});
