/**
 * `pnpm bench` (migration part): live migration of the reference guest between two `kvmts`
 * processes on the loopback while it dirties memory, as a user runs it: the source under
 * `--monitor`, the destination with `--incoming tcp:127.0.0.1:0`, `migrate` through the monitor.
 * The guest has 256 MiB; kvmts-dirty (our program in the guest's initramfs) rewrites whole pages
 * of a 64 MiB buffer round-robin at 50 MB/s (the rate measured from its output goes in the report).
 * Records the downtime (guest paused on the source until the destination took it over), its
 * breakdown, the total time, the bytes and the rounds.
 *
 *   tsx packages/cli/bench/migration.ts [--out FILE] [--downtime-limit MS] [--dirty-mbps N]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MonitorClient } from '../src/monitor/client.js';
import { GuestVm } from '../test/guest-vm.js';
import { appendResults, option, reportPath } from './report.js';

const bin = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/bin.js');
const out = reportPath();
const downtimeLimitMs = Number(option('downtime-limit', '30'));
const targetMBps = Number(option('dirty-mbps', '50'));
const MEM_MIB = 256;
const WORKING_SET_MIB = 64;

const guestDir = process.env.KVMTS_GUEST_DIR ?? spawnSync(process.execPath, [bin, 'guest', 'path'], { encoding: 'utf8' }).stdout.trim();
const kernel = join(guestDir, 'bzImage');
const initrd = join(guestDir, 'initramfs.cpio.gz');
if (!existsSync(kernel) || !existsSync(initrd)) {
  console.log(`migration benchmark skipped: no guest in ${guestDir} (run 'kvmts guest fetch')`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), 'kvmts-bench-migration-'));
const vms: GuestVm[] = [];
const start = (name: string, args: string[]): GuestVm => {
  const vm = new GuestVm(name, args);
  vms.push(vm);
  return vm;
};

async function execute(client: MonitorClient, command: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
  const reply = await client.request(args ? { execute: command, arguments: args } : { execute: command });
  if ('error' in reply) throw new Error(`${command}: ${JSON.stringify(reply.error)}`);
  return (reply as { return: Record<string, unknown> }).return;
}

try {
  const machine = ['--mem', `${MEM_MIB}M`];
  const srcSock = join(work, 'source.sock');
  const source = start('source', ['run', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0 guest.shell=1', ...machine, '--monitor', `unix:${srcSock}`]);
  await source.waitOut(/GUEST-SHELL ready/, 10 * 60_000);

  // The workload: kvmts-dirty (in the initramfs) rewrites whole pages of a ${WORKING_SET_MIB} MiB buffer
  // round-robin at the target rate and prints DIRTIED 16 per 16 MiB; the host measures the rate.
  source.type(`kvmts-dirty ${WORKING_SET_MIB} ${targetMBps} &`);
  // The first pass over the buffer takes a page fault per page: measure after it.
  await source.until('the first pass over the buffer', () => source.counts('DIRTIED').length >= WORKING_SET_MIB / 16 + 1, 300_000);
  const from0 = source.stdout.length;
  const t0 = performance.now();
  await source.until('8 DIRTIED lines', () => source.counts('DIRTIED', from0).length >= 8, 120_000);
  const measured = (8 * 16 * 2 ** 20) / ((performance.now() - t0) / 1000) / 1e6;
  console.log(`workload: kvmts-dirty ${WORKING_SET_MIB} ${targetMBps} dirties ${measured.toFixed(1)} MB/s`);

  const dest = start('destination', ['run', '--incoming', 'tcp:127.0.0.1:0', ...machine]);
  const port = Number((await dest.waitErr(/waiting for an incoming migration on [^:]+:(\d+)/, 60_000))[1]);
  const mon = await MonitorClient.connect(`unix:${srcSock}`, { timeoutMs: 120_000 });
  let report: Record<string, unknown>;
  let duringMBps = 0;
  const timeline: { atMs: number; phase: string; round: number; remainingMiB: number; rateMiBps: number }[] = [];
  try {
    // The result comes as a MIGRATION event; the source exits right after a completed one.
    const startedMs = performance.now();
    const finished = new Promise<Record<string, unknown>>((resolve) => {
      mon.onEvent = (e) => {
        if (e.event === 'MIGRATION' && e.data?.status === 'active') {
          timeline.push({ atMs: Math.round(performance.now() - startedMs), phase: String(e.data.phase), round: Number(e.data.round), remainingMiB: Number((e.data.remainingMiB as number).toFixed(1)), rateMiBps: Number((e.data.rateMiBps as number).toFixed(1)) });
        }
        if (e.event === 'MIGRATION' && (e.data?.status === 'completed' || e.data?.status === 'failed')) resolve(e.data);
      };
    });
    const dirtiedFrom = source.stdout.length;
    await execute(mon, 'migrate', { uri: `tcp:127.0.0.1:${port}`, 'downtime-limit': downtimeLimitMs });
    report = await finished;
    // How fast the guest kept dirtying while it was being migrated (it shares the thread).
    const during = source.counts('DIRTIED', dirtiedFrom).length * 16 * 2 ** 20;
    duringMBps = during / ((performance.now() - startedMs) / 1000) / 1e6;
  } finally {
    mon.close();
  }
  if (report.status !== 'completed') throw new Error(`the migration failed: ${String(report.error)}\n${source.stderr.slice(-2000)}`);
  // The guest goes on at the destination.
  const from = dest.stdout.length;
  await dest.waitOut(/DIRTIED 16/, 60_000, from);
  console.log(source.stderr.split('\n').filter((l) => /migration|downtime/.test(l)).join('\n'));
  const d = report.downtime as { finalPages: number; finalBytes: number; finalPagesMs: number; stateMs: number; ackMs: number };
  const result = {
    name: 'live-migration',
    description: `reference guest, ${MEM_MIB} MiB, kvmts-dirty rewriting whole pages of a ${WORKING_SET_MIB} MiB buffer; two kvmts processes on 127.0.0.1, downtime-limit ${downtimeLimitMs} ms`,
    dirtyMBps: Number(measured.toFixed(1)),
    dirtyDuringMigrationMBps: Number(duringMBps.toFixed(1)),
    downtimeMs: Number((report.downtimeMs as number).toFixed(1)),
    totalMs: Number((report.totalMs as number).toFixed(0)),
    rounds: report.rounds,
    mebibytes: Number(((report.bytes as number) / 2 ** 20).toFixed(1)),
    timeline,
    downtime: {
      finalPages: d.finalPages,
      finalKiB: Math.round(d.finalBytes / 1024),
      finalPagesMs: Number(d.finalPagesMs.toFixed(1)),
      stateMs: Number(d.stateMs.toFixed(1)),
      ackMs: Number(d.ackMs.toFixed(1)),
    },
  };
  console.log(
    `live-migration  dirtying ${result.dirtyMBps} MB/s (${result.dirtyDuringMigrationMBps} MB/s while migrating): downtime ${result.downtimeMs} ms ` +
      `(last pages ${result.downtime.finalPagesMs} ms, state ${result.downtime.stateMs} ms, destination ${result.downtime.ackMs} ms), ` +
      `total ${result.totalMs} ms, ${result.mebibytes} MiB in ${String(result.rounds)} rounds`,
  );
  for (const t of timeline) console.log(`  +${t.atMs} ms ${t.phase} round ${t.round}: ${t.remainingMiB} MiB left at ${t.rateMiBps} MiB/s`);
  appendResults(out, [result]);
} catch (err) {
  console.error(`migration benchmark failed: ${err instanceof Error ? err.message : String(err)}`);
  for (const vm of vms) console.error(`--- ${vm.name} stderr:\n${vm.stderr.slice(-1500)}`);
  process.exitCode = 1;
} finally {
  for (const vm of vms) vm.kill();
  rmSync(work, { recursive: true, force: true });
}
