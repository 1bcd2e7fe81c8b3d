import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Assembler, mem, reg } from '@kvmts/kvm-core/asm';
import { driveMigration, connectMigration, listenForMigration, readSnapshotConfig, restoreSnapshot, saveSnapshot, type MachineConfig } from '@kvmts/migration';
import { PcMigratable, pcOptionsFromConfig } from './migratable.js';
import { PcMachine } from './pc.js';
import { PcRunLoop } from './run-loop.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-migratable-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const open = new Set<PcMachine>();
afterEach(() => {
  for (const m of open) m.close();
  open.clear();
});

/** A real-mode guest that sets the UART's scratch register, then prints 0..9 forever, one digit per 512 counts. */
function guest(mask = 0x1ff): Uint8Array {
  const a = new Assembler({ bits: 16, origin: 0x1000 });
  a.mov(reg.dx, 0x3ff);
  a.mov(reg.al, 0x5a);
  a.out(reg.dx, reg.al);
  a.label('loop');
  a.inc(mem({ disp: 0x600, size: 32 }));
  a.mov(reg.eax, mem({ disp: 0x600, size: 32 }));
  a.test(reg.eax, mask);
  a.jnz('loop');
  a.mov(reg.al, mem({ disp: 0x604, size: 8 }));
  a.inc(reg.al);
  a.cmp(reg.al, 10);
  a.jb('ok');
  a.xor(reg.al, reg.al);
  a.label('ok');
  a.mov(mem({ disp: 0x604, size: 8 }), reg.al);
  a.add(reg.al, 0x30);
  a.mov(reg.dx, 0x3f8);
  a.out(reg.dx, reg.al);
  a.jmp('loop');
  return a.bytes();
}

interface Running {
  machine: PcMachine;
  out: number[];
  loop: PcRunLoop;
  /** The run loop stops once the console has this many bytes. */
  target: number;
}

function wrap(machine: PcMachine, out: number[]): Running {
  open.add(machine);
  const loop = new PcRunLoop({
    vcpu: machine.vcpu,
    io: machine.ioBus,
    mmio: machine.mmioBus,
    ...(machine.pic ? { intc: machine.pic } : {}),
    timers: machine.vm.timers,
    clock: machine.vm.clock,
    takeStop: () => machine.takeStop() ?? (out.length >= r.target ? { kind: 'debug-exit', value: 0 } : null),
  });
  const r: Running = { machine, out, loop, target: Infinity };
  return r;
}

function boot(irqchip: 'kernel' | 'userspace', clockMode: 'host' | 'instructions' = 'instructions', mask = 0x1ff): Running {
  const out: number[] = [];
  const machine = new PcMachine({ memSize: 2 << 20, irqchip, clockMode, serialOutput: (b) => out.push(b) });
  machine.vm.memory.write(0x1000, guest(mask));
  const s = machine.vcpu.getSregs();
  for (const seg of [s.cs, s.ds, s.es, s.ss, s.fs, s.gs]) {
    seg.selector = 0;
    seg.base = 0;
  }
  machine.vcpu.setSregs(s);
  const r = machine.vcpu.getRegs();
  r.rip = 0x1000;
  r.rsp = 0x8000;
  machine.vcpu.setRegs(r);
  return wrap(machine, out);
}

/** Runs until the console shows `n` bytes in total (`before` came from an earlier machine). */
function runUntil(r: Running, n: number, before = 0): void {
  r.target = n - before;
  for (let i = 0; i < 100_000 && r.out.length < r.target; i++) {
    const s = r.loop.runSlice(2);
    if (s.kind === 'stop' && s.outcome.kind !== 'debug-exit') throw new Error(`stopped: ${JSON.stringify(s.outcome)}`);
  }
  r.target = Infinity;
}

function fresh(config: MachineConfig, out: number[]): PcMigratable {
  const o = pcOptionsFromConfig(config);
  return new PcMigratable(new PcMachine({ memSize: o.memSize, irqchip: o.irqchip, clockMode: o.clockMode, debugExit: o.debugExit, serialOutput: (b) => out.push(b) }));
}

const text = (bytes: number[]): string => String.fromCharCode(...bytes);

/** `got` is a prefix of `ref`, at least `n` long. */
function expectPrefix(got: number[], ref: number[], n: number): void {
  expect(got.length).toBeGreaterThanOrEqual(n);
  expect(ref.length).toBeGreaterThanOrEqual(got.length);
  expect(text(got)).toBe(text(ref.slice(0, got.length)));
}

describe('PcMachine snapshots', () => {
  for (const irqchip of ['kernel', 'userspace'] as const) {
    it(`a snapshot of a running PC (${irqchip} irqchip) restores into a fresh PcMachine and continues exactly, console included`, async () => {
      const ref = boot(irqchip);
      runUntil(ref, 80);
      const a = boot(irqchip);
      runUntil(a, 13);
      // The loop stopped right after an OUT exit: the instruction completes only on the next
      // run(), which the save's quiesce step does.
      const file = join(dir, `pc-${irqchip}.snap`);
      const report = await saveSnapshot(new PcMigratable(a.machine), file);
      expect(report.bytes).toBeLessThan(1 << 20);
      const config = await readSnapshotConfig(file);
      expect(config).toMatchObject({ kind: 'pc', memorySize: 2 << 20, options: { irqchip, clockMode: 'instructions' } });
      expect(config.devices.map((d) => d.name)).toContain('serial0');

      const outB: number[] = [];
      const loaded = await restoreSnapshot(file, (c) => fresh(c, outB));
      const b = wrap(loaded.machine.machine, outB);
      expect(b.machine.serial.save()).toEqual(a.machine.serial.save());
      expect(b.machine.serial.save().scr).toBe(0x5a);
      expect(b.machine.vm.getClock()).toBe(a.machine.vm.getClock());
      runUntil(b, 40, a.out.length);
      expectPrefix([...a.out, ...outB], ref.out, 40);
      expect(text(ref.out)).toMatch(/^1234567890123/);
      // The original, continued, agrees too.
      runUntil(a, 40);
      expectPrefix(a.out, ref.out, 40);
    });
  }

  it('refuses a snapshot for a machine of another shape', async () => {
    const a = boot('kernel');
    runUntil(a, 3);
    const file = join(dir, 'shape.snap');
    await saveSnapshot(new PcMigratable(a.machine), file);
    let built: PcMachine | undefined;
    await expect(
      restoreSnapshot(file, () => new PcMigratable((built = new PcMachine({ memSize: 2 << 20, irqchip: 'userspace', clockMode: 'instructions' })))),
    ).rejects.toThrow(/configuration mismatch: device 'pic' is in this machine but not in the stream|option 'irqchip' is "kernel" in the stream but "userspace" here/);
    expect(built).toBeDefined();
  });
});

describe('PcMachine live migration', () => {
  it('migrates a running PC over 127.0.0.1 and the console continues on the destination', async () => {
    const ref = boot('kernel');
    runUntil(ref, 80);
    const a = boot('kernel');
    runUntil(a, 5);
    const outB: number[] = [];
    const server = await listenForMigration('tcp:127.0.0.1:0', (c) => fresh(c, outB));
    const source = await connectMigration(new PcMigratable(a.machine), server.address, { downtimeLimitMs: 1, maxRounds: 3 });
    const report = await driveMigration(source, () => runUntil(a, a.out.length + 1));
    const dest = await server.result;
    server.close();
    expect(report.rounds).toBeGreaterThanOrEqual(2);
    const b = wrap(dest.machine.machine, outB);
    expect(Buffer.from(b.machine.ram).equals(Buffer.from(a.machine.ram))).toBe(true);
    runUntil(b, 40, a.out.length);
    expectPrefix([...a.out, ...outB], ref.out, 40);
  });
});

describe('MigrationControl: the run-loop hooks', () => {
  it('snapshot-save and migrate from a running loop; --restore and --incoming load fresh machines', async () => {
    const { createServer } = await import('node:net');
    const { MigrationControl, pcOptionsFromSnapshot, receivePcMigration, restorePcSnapshot } = await import('./migration-control.js');
    // A host clock, so that the loop's slices end on time (the guest does not read the time).
    // The console of an uninterrupted run is "1234567890" repeated.
    const ref = { out: Array.from({ length: 1 << 16 }, (_, i) => 0x30 + ((i + 1) % 10)) };
    const a = boot('kernel', 'host');
    const logs: string[] = [];
    let migrated = false;
    const control = new MigrationControl(a.machine, { log: (t) => logs.push(t), migrated: () => ((migrated = true), a.loop.quit()) }, {}, 2);
    const host = {
      yield: async () => {
        await control.between();
        await new Promise((r) => setImmediate(r));
      },
      sleep: async () => {
        await control.between();
        await new Promise((r) => setTimeout(r, 1));
      },
      inputOpen: () => false,
    };
    const running = a.loop.run(host, 2);

    // snapshot-save while it runs.
    await new Promise((r) => setTimeout(r, 20));
    const file = join(dir, 'control.snap');
    const snap = await control.snapshotSave(file);
    // The loop has not run since the save (it resumes after a setImmediate).
    const atSnapshot = a.out.length;
    expect(snap.bytes).toBeGreaterThan(0);

    // --incoming on a free port, then migrate.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const outB: number[] = [];
    const opts = await pcOptionsFromSnapshot(file);
    expect(opts).toMatchObject({ memSize: 2 << 20, irqchip: 'kernel', clockMode: 'host' });
    const bMachine = new PcMachine({ memSize: opts.memSize, irqchip: opts.irqchip, clockMode: opts.clockMode, serialOutput: (x) => outB.push(x) });
    const incoming = receivePcMigration(bMachine, `tcp:127.0.0.1:${port}`, (t) => logs.push(t));
    await new Promise((r) => setTimeout(r, 20));
    await control.migrate(`tcp:127.0.0.1:${port}`, { downtimeLimitMs: 1, maxRounds: 3 });
    expect(control.status().state).toBe('active');
    const outcome = await running;
    await incoming;
    expect(outcome.kind).toBe('quit');
    expect(migrated).toBe(true);
    expect(control.status().state).toBe('completed');
    expect(logs.some((l) => l.includes('migration completed'))).toBe(true);
    const b = wrap(bMachine, outB);
    runUntil(b, a.out.length + 20, a.out.length);
    expectPrefix([...a.out, ...outB], ref.out, a.out.length + 20);

    // --restore FILE.
    const outC: number[] = [];
    const cMachine = new PcMachine({ memSize: opts.memSize, irqchip: opts.irqchip, clockMode: opts.clockMode, serialOutput: (x) => outC.push(x) });
    await restorePcSnapshot(cMachine, file);
    const c = wrap(cMachine, outC);
    runUntil(c, 20);
    // C continues from where A was when the snapshot was taken.
    expectPrefix([...a.out.slice(0, atSnapshot), ...outC], ref.out, atSnapshot + 20);
    expect(cMachine.serial.save().scr).toBe(0x5a);
  });
});

describe('monitor commands', () => {
  it('snapshot-save, migrate, migrate-cancel and query-migrate', async () => {
    const { MigrationControl } = await import('./migration-control.js');
    const { migrationCommands } = await import('./migration-commands.js');
    const a = boot('kernel');
    runUntil(a, 3);
    const control = new MigrationControl(a.machine, { log: () => undefined, migrated: () => undefined });
    const commands = new Map(migrationCommands(() => control).map((c) => [c.name, c]));
    expect([...commands.keys()]).toEqual(['snapshot-save', 'migrate', 'migrate-cancel', 'query-migrate']);
    const events: unknown[] = [];
    const context = { machine: {}, emitEvent: (name: string, data?: unknown) => events.push({ name, data }), registry: {}, afterReply: () => undefined } as never;
    const call = (name: string, args: object) => commands.get(name)!.run(commands.get(name)!.args.parse(args), context);

    expect(call('query-migrate', {})).toEqual({ status: 'none' });
    const file = join(dir, 'monitor.snap');
    const saving = call('snapshot-save', { file }) as Promise<{ bytes: number }>;
    await control.between(); // the run loop's hook runs the save
    expect((await saving).bytes).toBeGreaterThan(0);
    expect((await readSnapshotConfig(file)).kind).toBe('pc');

    await expect(call('migrate', { uri: 'tcp:127.0.0.1:1' }) as Promise<unknown>).rejects.toThrow(/cannot connect to 127\.0\.0\.1:1/);
    expect(() => commands.get('migrate')!.args.parse({ uri: 'unix:/x' })).toThrow(/only tcp:HOST:PORT/);

    const outB: number[] = [];
    const server = await listenForMigration('tcp:127.0.0.1:0', (c) => fresh(c, outB));
    await call('migrate', { uri: `tcp:127.0.0.1:${server.address.port}`, 'downtime-limit': 1000 });
    expect(call('query-migrate', {})).toMatchObject({ status: 'active' });
    while (control.active) {
      await control.between();
      runUntil(a, a.out.length + 1);
    }
    await server.result;
    server.close();
    expect(call('query-migrate', {})).toMatchObject({ status: 'completed', rounds: 2 });
    expect(events.at(-1)).toMatchObject({ name: 'MIGRATION', data: { status: 'completed' } });
    expect(events[0]).toMatchObject({ name: 'MIGRATION', data: { status: 'active', phase: 'first-pass' } });
    call('migrate-cancel', {});
  });
});

describe('PcMigratable.pause', () => {
  it('fires the timers already due, so that a deadline the loop slept until is not saved as lost', () => {
    const machine = new PcMachine({ memSize: 2 << 20, irqchip: 'kernel', clockMode: 'instructions' });
    open.add(machine);
    const fired: number[] = [];
    const due = machine.vm.timers.create((now) => fired.push(now));
    const later = machine.vm.timers.create((now) => fired.push(-now));
    const now = machine.vm.clock.nowNs();
    due.arm(now);
    later.arm(now + 1e9);
    const target = new PcMigratable(machine);
    target.pause();
    expect(fired).toEqual([now]);
    expect(machine.vm.timers.nextDeadlineNs()).toBe(now + 1e9);
    target.resume();
  });
});
