import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MonitorClient } from './client.js';
import type { MonitorBalloon, MonitorMachine, MonitorRunState } from './machine.js';
import { MonitorCommandError, type MonitorReply, formatMonitorAddress, parseMonitorAddress } from './protocol.js';
import { MonitorCommandRegistry, defineCommand } from './registry.js';
import { builtinRegistry } from './commands.js';
import { MonitorServer } from './server.js';

const MiB = 1024 * 1024;

class FakeBalloon implements MonitorBalloon {
  targetBytes = 0;
  actualBytes = 0;
  statsPollingIntervalMs = 0;
  latestStats: { timestamp: number; stats: object } | null = null;
  stats = { releasedBytes: 0 };
  setTarget(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`bad target ${bytes}`);
    this.targetBytes = bytes;
  }
  setStatsPollingInterval(ms: number): void {
    this.statsPollingIntervalMs = ms;
  }
}

class FakeMachine implements MonitorMachine {
  runState: MonitorRunState = 'running';
  readonly ramSize = 256 * MiB;
  readonly calls: string[] = [];
  balloon: FakeBalloon | undefined = new FakeBalloon();
  async pause(): Promise<void> {
    await new Promise((r) => setTimeout(r, 5)); // a real pause waits for the vCPU loop
    this.calls.push('pause');
    this.runState = 'paused';
  }
  resume(): void {
    this.calls.push('resume');
    this.runState = 'running';
  }
  quit(): void {
    this.calls.push('quit');
    this.runState = 'shutdown';
  }
}

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function start(machine: MonitorMachine = new FakeMachine(), options: { registry?: MonitorCommandRegistry; maxLineBytes?: number } = {}) {
  const server = await MonitorServer.listen('tcp:127.0.0.1:0', { machine, ...options });
  cleanups.push(() => server.close());
  const client = await MonitorClient.connect(server.address);
  cleanups.push(() => client.close());
  return { server, client, machine };
}

const errorOf = (reply: MonitorReply): { class: string; desc: string } => {
  if (!('error' in reply)) throw new Error(`expected an error, got ${JSON.stringify(reply)}`);
  return reply.error;
};

describe('monitor addresses', () => {
  it('parses unix: and tcp: addresses and refuses others', () => {
    expect(parseMonitorAddress('unix:/run/vm.sock')).toEqual({ kind: 'unix', path: '/run/vm.sock' });
    expect(parseMonitorAddress('tcp:localhost:4444')).toEqual({ kind: 'tcp', host: 'localhost', port: 4444 });
    expect(parseMonitorAddress('tcp::4444')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 4444 });
    expect(parseMonitorAddress('tcp:[::1]:1')).toEqual({ kind: 'tcp', host: '::1', port: 1 });
    expect(formatMonitorAddress({ kind: 'tcp', host: '::1', port: 1 })).toBe('tcp:[::1]:1');
    for (const bad of ['unix:', 'tcp:4444', 'tcp:h:70000', 'udp:h:1', '/path']) expect(() => parseMonitorAddress(bad), bad).toThrow(RangeError);
  });
});

describe('MonitorServer', () => {
  it('greets, then answers query-status and echoes ids', async () => {
    const { client } = await start();
    expect(client.greeting).toEqual({ QMP: { version: { kvmts: '0.1.0' }, capabilities: [] } });
    expect(await client.request({ execute: 'qmp_capabilities' })).toEqual({ return: {} });
    expect(await client.request({ execute: 'query-status', id: 'a-1' })).toEqual({ return: { status: 'running', running: true }, id: 'a-1' });
    expect(await client.request({ execute: 'query-status', arguments: {}, id: { n: 2 } })).toEqual({ return: { status: 'running', running: true }, id: { n: 2 } });
  });

  it('stops and continues the machine, with STOP and RESUME events', async () => {
    const { client, machine } = await start();
    const m = machine as FakeMachine;
    expect(await client.execute('stop')).toEqual({});
    expect(m.runState).toBe('paused');
    expect((await client.waitForEvent('STOP')).timestamp.seconds).toBeGreaterThan(1_600_000_000);
    expect(await client.execute('query-status')).toEqual({ status: 'paused', running: false });
    expect(await client.execute('stop')).toEqual({}); // already paused: nothing to do
    expect(await client.execute('cont')).toEqual({});
    await client.waitForEvent('RESUME');
    expect(m.calls).toEqual(['pause', 'resume']);
  });

  it('runs requests in order even when a handler is slow', async () => {
    const { client, machine } = await start();
    // Pipelined: stop takes a while; query-status must see its effect.
    const [stop, status] = await Promise.all([client.request({ execute: 'stop', id: 1 }), client.request({ execute: 'query-status', id: 2 })]);
    expect(stop).toEqual({ return: {}, id: 1 });
    expect(status).toEqual({ return: { status: 'paused', running: false }, id: 2 });
    expect((machine as FakeMachine).calls).toEqual(['pause']);
  });

  it('balloon, query-balloon and query-balloon-stats speak in guest memory sizes', async () => {
    const { client, machine } = await start();
    const balloon = (machine as FakeMachine).balloon!;
    expect(await client.execute('balloon', { value: 192 * MiB })).toEqual({});
    expect(balloon.targetBytes).toBe(64 * MiB);
    balloon.actualBytes = 32 * MiB; // the guest is on its way
    balloon.stats.releasedBytes = 32 * MiB;
    expect(await client.execute('query-balloon')).toEqual({ actual: 224 * MiB, target: 192 * MiB, 'released-bytes': 32 * MiB });
    expect(await client.execute('balloon', { value: 1024 * MiB })).toEqual({}); // more than RAM: empty balloon
    expect(balloon.targetBytes).toBe(0);

    expect(await client.execute('query-balloon-stats')).toEqual({ stats: {}, 'last-update': 0, 'polling-interval': 0 });
    balloon.latestStats = { timestamp: 1_700_000_000_500, stats: { swapIn: 1, freeMemory: 2 * MiB, hugetlbFailures: 0 } };
    expect(await client.execute('set-balloon-stats-interval', { seconds: 2 })).toEqual({});
    expect(balloon.statsPollingIntervalMs).toBe(2000);
    expect(await client.execute('query-balloon-stats')).toEqual({
      stats: { 'stat-swap-in': 1, 'stat-free-memory': 2 * MiB, 'stat-hugetlb-failures': 0 },
      'last-update': 1_700_000_000,
      'polling-interval': 2,
    });
  });

  it('reports DeviceNotActive when there is no balloon', async () => {
    const machine = new FakeMachine();
    machine.balloon = undefined;
    const { client } = await start(machine);
    for (const [command, args] of [['query-balloon', undefined], ['balloon', { value: MiB }], ['query-balloon-stats', undefined], ['set-balloon-stats-interval', { seconds: 1 }]] as const) {
      const reply = await client.request(args === undefined ? { execute: command } : { execute: command, arguments: args });
      expect(errorOf(reply), command).toEqual({ class: 'DeviceNotActive', desc: 'No balloon device has been activated' });
    }
  });

  it('answers malformed input with errors and keeps going', async () => {
    const { client, server } = await start();
    const cases: [string, string, RegExp][] = [
      ['{"execute": "query-status"', 'GenericError', /^JSON parse error/],
      ['[1, 2]', 'GenericError', /input: .*expected object/],
      ['"query-status"', 'GenericError', /expected object/],
      ['{"arguments": {}}', 'GenericError', /'execute'/],
      ['{"execute": 5}', 'GenericError', /'execute'.*expected string/],
      ['{"execute": "query-status", "bogus": 1}', 'GenericError', /unexpected member 'bogus'/],
      ['{"execute": "query-status", "arguments": []}', 'GenericError', /'arguments'/],
      ['{"execute": "no-such-thing"}', 'CommandNotFound', /The command no-such-thing has not been found/],
      ['{"execute": "query-status", "arguments": {"x": 1}}', 'GenericError', /Invalid arguments for query-status: input has unexpected member 'x'/],
      ['{"execute": "balloon"}', 'GenericError', /Invalid arguments for balloon: 'value'/],
      ['{"execute": "balloon", "arguments": {"value": -5}}', 'GenericError', /'value'/],
      ['{"execute": "balloon", "arguments": {"value": 1.5}}', 'GenericError', /'value'.*int/],
      ['{"execute": "balloon", "arguments": {"value": "1G"}}', 'GenericError', /'value'.*number/],
      ['{"execute": "set-balloon-stats-interval", "arguments": {"seconds": -1}}', 'GenericError', /'seconds'/],
      ['{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}', 'GenericError', /no capabilities/],
    ];
    for (const [line, errorClass, desc] of cases) {
      const error = errorOf(await client.request(line));
      expect(error.class, line).toBe(errorClass);
      expect(error.desc, line).toMatch(desc);
    }
    // The id comes back even when the request is otherwise wrong.
    expect(await client.request('{"execute": "nope", "id": 7}')).toMatchObject({ id: 7, error: { class: 'CommandNotFound' } });
    // Blank lines and CRLF are fine; invalid UTF-8 is just a parse error.
    expect(await client.request('\r\n\n{"execute":"query-status"}\r')).toEqual({ return: { status: 'running', running: true } });
    expect(errorOf(await client.request(Buffer.from([0xff, 0xfe, 0x7b]).toString('latin1'))).class).toBe('GenericError');
    expect(server.clientCount).toBe(1);
  });

  it('rejects an overlong line without losing the connection', async () => {
    const { client } = await start(new FakeMachine(), { maxLineBytes: 64 });
    const reply = await client.request(JSON.stringify({ execute: 'query-status', id: 'x'.repeat(200) }));
    expect(errorOf(reply).desc).toMatch(/longer than 64 bytes/);
    expect(await client.execute('query-status')).toEqual({ status: 'running', running: true });
  });

  it('turns a handler failure into an error reply', async () => {
    const machine = new FakeMachine();
    machine.balloon!.setTarget = () => {
      throw new RangeError('the balloon is jammed');
    };
    machine.pause = () => Promise.reject(new Error('vCPU did not stop'));
    const { client } = await start(machine);
    expect(errorOf(await client.request({ execute: 'balloon', arguments: { value: MiB } }))).toEqual({ class: 'GenericError', desc: 'the balloon is jammed' });
    expect(errorOf(await client.request({ execute: 'stop' }))).toEqual({ class: 'GenericError', desc: 'vCPU did not stop' });
    await expect(client.execute('cont')).resolves.toEqual({}); // still running: nothing to do
  });

  it('quit replies first, emits SHUTDOWN, then ends the machine', async () => {
    const { client, machine } = await start();
    const m = machine as FakeMachine;
    const events: string[] = [];
    client.onEvent = (e) => events.push(e.event);
    expect(await client.request({ execute: 'quit', id: 'q' })).toEqual({ return: {}, id: 'q' });
    await new Promise((r) => setTimeout(r, 20));
    expect(m.calls).toEqual(['quit']);
    expect(events).toEqual(['SHUTDOWN']);
    expect(client.events.at(-1)?.data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    expect(errorOf(await client.request({ execute: 'cont' })).desc).toMatch(/shut down/);
  });

  it('sends events to every client', async () => {
    const { server, client } = await start();
    const other = await MonitorClient.connect(server.address);
    cleanups.push(() => other.close());
    await client.execute('query-status'); // both sessions are up
    server.emitEvent('BALLOON_CHANGE', { actual: 123 });
    const [a, b] = await Promise.all([client.waitForEvent('BALLOON_CHANGE'), other.waitForEvent('BALLOON_CHANGE')]);
    expect(a.data).toEqual({ actual: 123 });
    expect(b.data).toEqual({ actual: 123 });
  });

  it('takes new commands through its registry, validated by their schemas', async () => {
    const registry = builtinRegistry();
    const saved: string[] = [];
    registry.register(
      defineCommand({
        name: 'snapshot-save',
        description: 'Save a snapshot (test stand-in).',
        args: z.strictObject({ tag: z.string().min(1) }),
        run: ({ tag }) => {
          saved.push(tag);
          return { tag };
        },
      }),
    );
    expect(() => registry.register(defineCommand({ name: 'snapshot-save', description: '', args: z.strictObject({}), run: () => ({}) }))).toThrow(/already registered/);
    expect(() => new MonitorCommandRegistry().register(defineCommand({ name: 'Bad Name', description: '', args: z.strictObject({}), run: () => ({}) }))).toThrow(RangeError);
    const { client } = await start(new FakeMachine(), { registry });
    expect(await client.execute('snapshot-save', { tag: 'before-upgrade' })).toEqual({ tag: 'before-upgrade' });
    expect(saved).toEqual(['before-upgrade']);
    await expect(client.execute('snapshot-save', { tag: '' })).rejects.toThrow(MonitorCommandError);
    const names = ((await client.execute('query-commands')) as { name: string }[]).map((c) => c.name);
    expect(names).toEqual([
      'balloon',
      'cont',
      'qmp_capabilities',
      'query-balloon',
      'query-balloon-stats',
      'query-commands',
      'query-status',
      'quit',
      'set-balloon-stats-interval',
      'snapshot-save',
      'stop',
    ]);
  });

  it('survives clients that disconnect mid-request', async () => {
    const { server, client } = await start();
    const address = server.address;
    if (address.kind !== 'tcp') throw new Error('tcp expected');
    const rude = connect({ host: address.host, port: address.port });
    await new Promise<void>((r) => rude.once('connect', () => r()));
    rude.write('{"execute": "stop"}\n{"execute": "query-sta');
    rude.destroy();
    await new Promise((r) => setTimeout(r, 30));
    expect(await client.execute('query-status')).toEqual({ status: 'paused', running: false });
  });

  it('listens on a Unix socket, replacing a stale socket file but not a live one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmts-monitor-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'vm.sock');
    // A VMM that died without closing its monitor leaves the socket file behind.
    const died = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]);
    expect(died.status).toBe(0);
    expect(existsSync(path)).toBe(true);
    const server = await MonitorServer.listen(`unix:${path}`, { machine: new FakeMachine() });
    cleanups.push(() => server.close());
    expect(server.address).toEqual({ kind: 'unix', path });
    const client = await MonitorClient.connect(`unix:${path}`);
    cleanups.push(() => client.close());
    expect(await client.execute('query-status')).toEqual({ status: 'running', running: true });
    await expect(MonitorServer.listen(`unix:${path}`, { machine: new FakeMachine() })).rejects.toThrow(/EADDRINUSE/);
    expect(await client.execute('query-status')).toEqual({ status: 'running', running: true });
  });

  it('the client reports a monitor that is not there', async () => {
    const server = await MonitorServer.listen('tcp:127.0.0.1:0', { machine: new FakeMachine() });
    const address = server.address;
    await server.close();
    await expect(MonitorClient.connect(address, { timeoutMs: 2000 })).rejects.toThrow(/ECONNREFUSED/);
  });
});
