import { afterEach, describe, expect, it } from 'vitest';
import { KVM_MEM_LOG_DIRTY_PAGES } from '@kvmts/kvm-core';
import { MigrationError, Section, connectMigration, driveMigration, listenForMigration, type MachineConfig, type MigrationProgress, type PrecopyOptions } from '../src/index.js';
import { TestMachine, blankLike, closeAll, type TestMachineOptions } from './guest.js';
import { CutProxy, type CutSpec } from './proxy.js';

afterEach(closeAll);

function optionsOf(config: MachineConfig): TestMachineOptions {
  return { memSize: config.memorySize, irqchip: config.options.irqchip as boolean, hotPages: config.options.hotPages as number };
}

/** Checks that `m` behaves exactly like a machine that ran the guest from boot without interruption. */
function expectPristine(m: TestMachine, opts: TestMachineOptions): void {
  const until = m.outlog.count + 3;
  m.run({ untilCount: until });
  const ref = new TestMachine(opts);
  ref.run({ untilCount: until });
  expect(m.counter()).toBe(until * 1024);
  expect(m.checksum()).toBe(ref.checksum());
  expect(m.vcpu.getRegs()).toEqual(ref.vcpu.getRegs());
  expect(m.outlog.save()).toEqual(ref.outlog.save());
  ref.close();
}

async function migrate(srcOpts: TestMachineOptions, options: PrecopyOptions, destOpts?: TestMachineOptions, via?: CutSpec) {
  const a = new TestMachine(srcOpts);
  a.run({ untilCount: 2 });
  let built: TestMachine | undefined;
  const server = await listenForMigration('tcp:127.0.0.1:0', (config) => (built = blankLike(destOpts ?? optionsOf(config))));
  let proxy: CutProxy | undefined;
  let port = server.address.port;
  if (via) {
    proxy = new CutProxy(via, port);
    await proxy.listen();
    port = proxy.port;
  }
  const progress: MigrationProgress[] = [];
  const source = await connectMigration(a, { host: '127.0.0.1', port }, { ...options, onProgress: (p) => progress.push(p) });
  let sourceError: MigrationError | undefined;
  const report = await driveMigration(source, () => a.run({ maxExits: 10 })).catch((e: MigrationError) => {
    sourceError = e;
    return undefined;
  });
  let destError: MigrationError | undefined;
  const dest = await server.result.catch((e: MigrationError) => {
    destError = e;
    return undefined;
  });
  proxy?.close();
  server.close();
  return { a, report, sourceError, dest, destError, built, progress };
}

describe('pre-copy live migration over TCP', () => {
  it('moves a running guest: identical memory, and it continues exactly', async () => {
    for (const irqchip of [false, true]) {
      const opts = { irqchip, hotPages: 64 };
      const { a, report, dest, progress } = await migrate(opts, { downtimeLimitMs: 0.05, maxRounds: 5, stepBytes: 256 << 10, stepMs: 0 });
      expect(report).toBeDefined();
      const b = dest!.machine;
      // The source stopped where the destination starts.
      expect(a.paused).toBe(true);
      expect(b.paused).toBe(false);
      expect(b.checksum()).toBe(a.checksum());
      expect(b.vcpu.getRegs()).toEqual(a.vcpu.getRegs());
      expect(b.outlog.save()).toEqual(a.outlog.save());
      expect(report!.rounds).toBeGreaterThanOrEqual(2);
      expect(report!.ram.xbzrlePages).toBeGreaterThan(0);
      expect(report!.bytes).toBeGreaterThan(1 << 20);
      expect(report!.downtimeMs).toBeLessThan(report!.totalMs);
      expect(progress[0]).toMatchObject({ phase: 'first-pass', round: 1 });
      expect(progress.some((p) => p.phase === 'iterating' && p.round >= 2)).toBe(true);
      expect(progress.at(-1)!.phase).toBe('switchover');
      for (const p of progress) expect(p.remainingMiB).toBeCloseTo(p.remainingBytes / 2 ** 20);
      // Both continue identically from the switchover point.
      a.resume();
      const until = a.outlog.count + 3;
      a.run({ untilCount: until });
      b.run({ untilCount: until });
      expect(b.checksum()).toBe(a.checksum());
      expectPristine(b, opts);
    }
  });

  it('switches over as soon as the downtime limit is met', async () => {
    const { report, dest } = await migrate({ hotPages: 4 }, { downtimeLimitMs: 300 });
    expect(report!.rounds).toBe(2);
    expect(report!.forcedSwitchover).toBe(false);
    expect(dest!.machine.checksum()).toBeDefined();
  });

  it('auto-converge throttles the guest when rounds stop shrinking, and releases it at the end', async () => {
    const { a, report } = await migrate({ hotPages: 256 }, { downtimeLimitMs: 0, maxRounds: 8, stepBytes: 64 << 10, stepMs: 0 });
    expect(report!.forcedSwitchover).toBe(true);
    expect(report!.maxThrottle).toBeGreaterThanOrEqual(0.2);
    const calls = a.throttleCalls;
    expect(calls.at(-1)).toBe(0);
    expect(calls.slice(0, -1)).toEqual([...calls.slice(0, -1)].sort((x, y) => x - y));
  });

  it('postpones the switchover while a device has I/O in flight, and can be cancelled', async () => {
    const a = new TestMachine({});
    let checks = 0;
    (a as TestMachine & { quiescent(): boolean }).quiescent = () => ++checks > 5;
    const server = await listenForMigration('tcp:127.0.0.1:0', () => blankLike({}));
    const source = await connectMigration(a, server.address, { downtimeLimitMs: 300 });
    const report = await driveMigration(source, () => a.run({ maxExits: 10 }));
    expect(checks).toBe(6);
    const b = (await server.result).machine;
    expect(b.checksum()).toBe(a.checksum());
    server.close();

    const c = new TestMachine({});
    const server2 = await listenForMigration('tcp:127.0.0.1:0', () => blankLike({}));
    const source2 = await connectMigration(c, server2.address, { stepBytes: 64 << 10, stepMs: 0 });
    let steps = 0;
    const err = await driveMigration(source2, () => {
      if (++steps === 3) source2.abort();
      c.run({ maxExits: 10 });
    }).catch((e: MigrationError) => e);
    expect((err as MigrationError).kind).toBe('aborted');
    await expect(server2.result).rejects.toThrow(/the source abandoned the migration: migration cancelled/);
    expect(report.rounds).toBeGreaterThanOrEqual(2);
    expectPristine(c, {});
  });

  it('a step sends for stepMs, not just one stepBytes chunk, so a migration needs few guest interruptions', async () => {
    const run = async (stepMs: number) => {
      const a = new TestMachine({});
      a.run({ untilCount: 2 });
      const server = await listenForMigration('tcp:127.0.0.1:0', () => blankLike({}));
      const source = await connectMigration(a, server.address, { stepBytes: 64 << 10, stepMs, downtimeLimitMs: 300 });
      let steps = 0;
      const report = await driveMigration(source, () => {
        steps++;
        a.run({ maxExits: 10 });
      });
      const b = (await server.result).machine;
      expect(b.checksum()).toBe(a.checksum());
      server.close();
      return { steps, bytes: report.bytes };
    };
    const one = await run(0);
    const timed = await run(1000);
    // One 64 KiB chunk per step: about bytes / 64 KiB steps. Timed steps: a handful.
    expect(one.steps).toBeGreaterThan(one.bytes / (64 << 10) / 2);
    expect(timed.steps).toBeLessThan(5);
  });

  it('honours the bandwidth cap', async () => {
    const t0 = performance.now();
    const { report } = await migrate({ hotPages: 4 }, { maxBandwidth: 4 << 20, stepBytes: 256 << 10, stepMs: 0 });
    // About 1.6 MiB at 4 MiB/s.
    expect(report!.bytes).toBeGreaterThan(1.2 * (1 << 20));
    expect(performance.now() - t0).toBeGreaterThan(((report!.bytes - 1.2 * (1 << 20)) / (4 << 20)) * 1000);
  });

  it('a destination that cannot take the guest refuses it; the source keeps running', async () => {
    const { a, sourceError, destError, built } = await migrate({}, {}, { memSize: 8 << 20 });
    expect(destError!.kind).toBe('config-mismatch');
    expect(destError!.message).toMatch(/memory size is 4 MiB in the stream but 8 MiB here/);
    expect(sourceError!.kind).toBe('remote');
    expect(sourceError!.message).toMatch(/the destination failed: configuration mismatch: memory size/);
    expect(built!.closed).toBe(true);
    expect(a.paused).toBe(false);
    expect(a.vm.memory.getSlot(0)!.flags & KVM_MEM_LOG_DIRTY_PAGES).toBe(0);
    expectPristine(a, {});
  });

  const cuts: [string, CutSpec][] = [
    ['inside the magic', { byte: 3 }],
    ['right after the header', { byte: 12 }],
    ['inside the first section header', { byte: 14 }],
    ['inside CONFIG', { type: Section.Config, into: 0.5 }],
    ['at the start of the first RAM section', { type: Section.Ram, into: 0 }],
    ['1% into the first pass', { type: Section.Ram, into: 0.01 }],
    ['half-way through the first RAM section', { type: Section.Ram, into: 0.5 }],
    ['at the end of the first RAM section', { type: Section.Ram, into: 0.999 }],
    ['in the middle of the first pass', { type: Section.Ram, nth: 3, into: 0.3 }],
    ['late in the first pass', { type: Section.Ram, nth: 5, into: 0.7 }],
    ['on the first ROUND marker', { type: Section.Round, into: 0.5 }],
    ['at the start of round 2', { type: Section.Ram, afterRounds: 1, into: 0.2 }],
    ['mid round 2', { type: Section.Ram, afterRounds: 1, nth: 1, into: 0.6 }],
    ['mid round 3', { type: Section.Ram, afterRounds: 2, into: 0.5 }],
    ['on the second ROUND marker', { type: Section.Round, nth: 1, into: 0.1 }],
    ['in the final dirty pages', { type: Section.Ram, afterRounds: 4, into: 0.5 }],
    ['at the start of the final state', { type: Section.State, into: 0 }],
    ['inside the final state', { type: Section.State, into: 0.4 }],
    ['at the end of the final state', { type: Section.State, into: 0.99 }],
    ['inside END', { type: Section.End, into: 0.5 }],
    ['after END, before the ACK reaches the source', { type: Section.End, into: 1, dropReplies: true }],
  ];
  const corruptions: [string, CutSpec][] = [
    ['a flipped bit in the first pass', { type: Section.Ram, nth: 2, into: 0.5, corrupt: true }],
    ['a flipped bit in a dirty round', { type: Section.Ram, afterRounds: 1, into: 0.5, corrupt: true }],
    ['a flipped bit in the final state', { type: Section.State, into: 0.5, corrupt: true }],
  ];
  const mopts: PrecopyOptions = { downtimeLimitMs: 0, maxRounds: 4, stepBytes: 128 << 10, stepMs: 0, ackTimeoutMs: 5000 };

  it.each(cuts)('connection cut %s: the source continues unchanged, the destination discards', async (_name, spec) => {
    const { a, report, sourceError, destError, built } = await migrate({}, mopts, undefined, spec);
    expect(report).toBeUndefined();
    expect(sourceError).toBeInstanceOf(MigrationError);
    expect(['connection', 'remote']).toContain(sourceError!.kind);
    expect(destError).toBeInstanceOf(MigrationError);
    expect(destError!.message).toMatch(/truncated|connection|reading the stream failed|bad magic/);
    if (built) expect(built.closed).toBe(true);
    expect(a.paused).toBe(false);
    expect(a.throttleFraction).toBe(0);
    expect(a.vm.memory.getSlot(0)!.flags & KVM_MEM_LOG_DIRTY_PAGES).toBe(0);
    expectPristine(a, {});
  });

  it('an ACK that never comes: the source times out, resumes, and tells the destination to discard', async () => {
    const { a, sourceError, destError, built } = await migrate({}, { ...mopts, ackTimeoutMs: 300 }, undefined, { dropReplies: true });
    expect(sourceError!.kind).toBe('timeout');
    expect(sourceError!.message).toMatch(/did not acknowledge within 300 ms/);
    expect(destError!.message).toMatch(/the source abandoned the migration: the destination did not acknowledge/);
    expect(built!.closed).toBe(true);
    expectPristine(a, {});
  });

  it.each(corruptions)('%s: the destination reports a checksum error, the source resumes', async (_name, spec) => {
    const { a, report, sourceError, destError, built } = await migrate({}, mopts, undefined, spec);
    expect(report).toBeUndefined();
    expect(destError!.kind).toBe('corrupt');
    expect(destError!.message).toMatch(/checksum mismatch in (RAM|STATE) section #\d+ at byte \d+/);
    expect(sourceError!.kind).toBe('remote');
    expect(sourceError!.message).toMatch(/the destination failed: checksum mismatch/);
    expect(built!.closed).toBe(true);
    expect(a.paused).toBe(false);
    expectPristine(a, {});
  });
});
