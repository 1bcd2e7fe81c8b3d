// End-to-end: the reference guest under `kvmts run --monitor`, with a counter and a
// memory-writing workload typed into its shell (guest.shell=1). One boot serves everything:
//
// 1. balloon: inflate by 64 MiB from the monitor, the guest's MemTotal/MemFree shrink; deflate
//    restores them; query-balloon-stats has the guest's numbers;
// 2. snapshot-save, kill the process, `kvmts run --restore FILE`: the counter continues;
// 3. fault injection: live migrations of the restored VM through a proxy that cuts the TCP
//    connection after N bytes (N from the header to past the final state; a reply from the
//    destination — the ACK — is cut too, so none can complete): the source keeps running and
//    answers a typed command, the destination exits non-zero with a clear error;
// 4. a live migration to a second process: the counter continues there and the workload's
//    checksum of its in-memory file is unchanged; a loop writing numbered records to the
//    virtio-blk disk goes on writing them into the same disk file from the destination;
//    downtime, total time and rounds are printed.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MonitorClient } from '../src/monitor/client.js';
import { guestInitrd as initrd, guestKernel as kernel, guestMissing, skipWithoutGuest } from './e2e.js';
import { GuestVm } from './guest-vm.js';

const MEM = 192 * 2 ** 20;
const BALLOON = 64 * 2 ** 20;
const work = mkdtempSync(join(tmpdir(), 'kvmts-mig-e2e-'));
const vms: GuestVm[] = [];
afterAll(() => {
  for (const vm of vms) vm.kill();
  rmSync(work, { recursive: true, force: true });
});

const skip = skipWithoutGuest('the migration e2e test');
// One disk file for every process: the guest's disk writes must continue in it wherever the guest runs.
const disk = join(work, 'disk.img');
writeFileSync(disk, '');
truncateSync(disk, 8 << 20);
const machineArgs = ['--mem', String(MEM / 2 ** 20) + 'M', '--device', 'virtio-balloon', '--disk', disk];
/** Record k of the disk-writing loop: sector k holds `DISKREC <k as 8 digits>` (then zeros). */
const diskRecord = (k: number): string => `DISKREC ${String(k).padStart(8, '0')}`;

function start(name: string, args: string[]): GuestVm {
  const vm = new GuestVm(name, args);
  vms.push(vm);
  return vm;
}

async function monitor(sock: string): Promise<MonitorClient> {
  return MonitorClient.connect(`unix:${sock}`, { timeoutMs: 120_000 });
}

async function exec(client: MonitorClient, command: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
  const reply = await client.request(args ? { execute: command, arguments: args } : { execute: command });
  if ('error' in reply) throw new Error(`${command}: ${JSON.stringify(reply.error)}`);
  return (reply as { return: Record<string, unknown> }).return;
}

const kb = (meminfo: string, key: string): number => Number(new RegExp(`${key}: *(\\d+) kB`).exec(meminfo)![1]);

/** A destination for a live migration: `--incoming tcp:127.0.0.1:0`; resolves with its port. */
async function destination(name: string, extra: string[] = []): Promise<{ vm: GuestVm; port: number }> {
  const vm = start(name, ['run', '--incoming', 'tcp:127.0.0.1:0', ...machineArgs, ...extra]);
  const m = await vm.waitErr(/waiting for an incoming migration on [^:]+:(\d+)/, 60_000);
  return { vm, port: Number(m[1]) };
}

/**
 * A TCP proxy to `port` that forwards `limit` bytes from the source and then destroys both
 * sockets; anything from the destination (its ACK or ERROR) also ends it, so a migration
 * through it can never complete.
 */
function cuttingProxy(port: number, limit: number): Promise<{ server: Server; port: number; forwarded: () => number; why: () => string }> {
  let forwarded = 0;
  let why = 'not cut';
  const server = createServer((src: Socket) => {
    server.close();
    const dst = connect({ host: '127.0.0.1', port });
    // While the last bytes drain to the destination, the source's close must not reset it.
    let draining = false;
    const cut = (reason: string): void => {
      if (why === 'not cut') why = reason;
      if (draining) return;
      src.destroy();
      dst.destroy();
    };
    src.on('error', () => cut('source error'));
    dst.on('error', () => cut('destination error'));
    src.on('close', () => cut('source closed'));
    dst.on('close', () => cut('destination closed'));
    dst.on('data', () => cut(`destination replied after ${forwarded} bytes`));
    src.on('data', (chunk: Buffer) => {
      const room = limit - forwarded;
      if (chunk.length >= room) {
        if (room > 0) dst.write(chunk.subarray(0, room));
        forwarded += Math.max(0, room);
        why = `cut at ${limit} bytes`;
        draining = true;
        src.destroy();
        // Let the bytes reach the destination before closing.
        dst.end(() => {
          draining = false;
          dst.destroy();
        });
        return;
      }
      forwarded += chunk.length;
      dst.write(chunk);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port, forwarded: () => forwarded, why: () => why })));
}

describe.skipIf(skip)('kvmts run --monitor: balloon, snapshot/restore, live migration (reference guest)', () => {
  const srcSock = join(work, 'src.sock');
  let source: GuestVm;
  let snapshotBytes = 0;
  let restored: GuestVm;
  let restoredSock = '';

  it('boots with a monitor and a balloon; inflating 64 MiB shrinks the guest, deflating restores it', async () => {
    expect(guestMissing()).toBe('');
    const t0 = performance.now();
    source = start('source', ['run', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0 guest.shell=1', ...machineArgs, '--monitor', `unix:${srcSock}`]);
    await source.waitOut(/GUEST-SHELL ready/, 8 * 60_000);
    console.log(`source booted to the shell in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(source.stdout).toMatch(/GUEST-VIRTIO \S+ device=0x0005 \(balloon\) vendor=\S+ driver=virtio_balloon/);
    const mon = await monitor(srcSock);
    try {
      expect(await exec(mon, 'query-status')).toEqual({ status: 'running', running: true });
      const meminfo = (): Promise<string> => source.sh("grep -E 'MemTotal|MemFree' /proc/meminfo | tr -s ' \\n' '  '");
      const before = await meminfo();
      await exec(mon, 'balloon', { value: MEM - BALLOON });
      const deadline = performance.now() + 120_000;
      let q = await exec(mon, 'query-balloon');
      while (q.actual !== MEM - BALLOON && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        q = await exec(mon, 'query-balloon');
      }
      expect(q).toMatchObject({ actual: MEM - BALLOON, target: MEM - BALLOON });
      const inflated = await meminfo();
      console.log(`balloon: before ${before}; inflated ${inflated}; query-balloon ${JSON.stringify(q)}`);
      expect(kb(before, 'MemTotal') - kb(inflated, 'MemTotal')).toBe(BALLOON / 1024);
      expect(kb(before, 'MemFree') - kb(inflated, 'MemFree')).toBeGreaterThan((BALLOON / 1024) * 0.9);

      await exec(mon, 'balloon', { value: MEM });
      q = await exec(mon, 'query-balloon');
      while (q.actual !== MEM && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        q = await exec(mon, 'query-balloon');
      }
      expect(q).toMatchObject({ actual: MEM, target: MEM });
      const deflated = await meminfo();
      expect(kb(deflated, 'MemTotal')).toBe(kb(before, 'MemTotal'));
      expect(kb(deflated, 'MemFree')).toBeGreaterThan(kb(inflated, 'MemFree') + (BALLOON / 1024) * 0.9);

      await exec(mon, 'set-balloon-stats-interval', { seconds: 1 });
      let stats = await exec(mon, 'query-balloon-stats');
      while (Object.keys(stats.stats as object).length === 0 && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        stats = await exec(mon, 'query-balloon-stats');
      }
      console.log(`query-balloon-stats: ${JSON.stringify(stats)}`);
      const s = stats.stats as Record<string, number>;
      expect(s['stat-total-memory']).toBeGreaterThan(MEM * 0.5);
      expect(s['stat-free-memory']).toBeGreaterThan(0);
      expect(stats['polling-interval']).toBe(1);
      await exec(mon, 'set-balloon-stats-interval', { seconds: 0 });
    } finally {
      mon.close();
    }
  }, 15 * 60_000);

  it('snapshot-save, kill, --restore: the counter continues and the shell answers', async () => {
    // The workloads: a counter, and a loop that keeps rewriting a ~4 MiB in-memory file from a
    // fixed one and prints its checksum (dirtying memory all the time).
    source.type('i=0; while :; do i=$((i+1)); echo COUNT $i; sleep 1; done &');
    // (Not /dev/urandom: it blocks until the guest's CRNG is initialised, minutes here.)
    source.type('cat /bin/busybox /bin/busybox >/tmp/a; while :; do cat /tmp/a >/tmp/b; echo "WORK $(md5sum </tmp/b)"; sleep 1; done &');
    // And the disk: record j into sector j, written through (O_DIRECT), then DISKW j.
    source.type("j=0; while :; do j=$((j+1)); printf 'DISKREC %08d' $j | dd of=/dev/vda bs=512 seek=$j conv=sync,notrunc oflag=direct 2>/dev/null && echo DISKW $j; sleep 1; done &");
    await source.until('COUNT 3 and a WORK line', () => Math.max(0, ...source.counts('COUNT')) >= 3 && /WORK [0-9a-f]{32}/.test(source.stdout), 60_000);
    const file = join(work, 'vm.snap');
    const mon = await monitor(srcSock);
    let reply: Record<string, unknown>;
    try {
      reply = await exec(mon, 'snapshot-save', { file });
    } finally {
      mon.close();
    }
    const atSnapshot = Math.max(...source.counts('COUNT'));
    snapshotBytes = statSync(file).size;
    console.log(`snapshot-save: ${JSON.stringify(reply)} (${(snapshotBytes / 2 ** 20).toFixed(1)} MiB file), COUNT was ${atSnapshot}`);
    expect(reply.bytes).toBe(snapshotBytes);
    // Let the source run on a bit, then kill it: the restored guest goes back to the snapshot.
    await source.until('two more COUNTs', () => Math.max(...source.counts('COUNT')) >= atSnapshot + 2, 30_000);
    const atKill = Math.max(...source.counts('COUNT'));
    source.kill();
    await source.exited;

    restoredSock = join(work, 'restored.sock');
    const t0 = performance.now();
    restored = start('restored', ['run', '--restore', file, '--device', 'virtio-balloon', '--disk', disk, '--monitor', `unix:${restoredSock}`]);
    await restored.until('COUNT after the restore', () => restored.counts('COUNT').length >= 2, 60_000);
    const first = restored.counts('COUNT')[0]!;
    console.log(`restored in ${((performance.now() - t0) / 1000).toFixed(1)} s: first COUNT ${first} (snapshot at ${atSnapshot}, killed at ${atKill})`);
    expect(restored.stderr).toMatch(/restored the guest from/);
    expect(first).toBeGreaterThanOrEqual(atSnapshot);
    expect(first).toBeLessThanOrEqual(atSnapshot + 2);
    expect(await restored.sh('echo ALIVE-R')).toBe('ALIVE-R');
  }, 5 * 60_000);

  it('survives 20+ migrations cut at random points: the source runs on, the destination fails cleanly', async () => {
    // The stream is about the snapshot's size S (the first pass) plus the later rounds, the final
    // pages and the state: cuts in the header and the configuration, 12 spread over the first
    // pass, 8 in [0.95 S, 1.05 S] (end of the first pass, rounds, final pages, STATE, END), and 2
    // far beyond the end, which become a lost ACK (the proxy cuts when the destination replies).
    const spread = (n: number, from: number, to: number): number[] => Array.from({ length: n }, (_, k) => Math.floor(snapshotBytes * (from + ((to - from) * (k + Math.random())) / n)));
    const points = [0, 5, 20, 200, ...spread(12, 0.01, 0.95), ...spread(8, 0.95, 1.05), ...spread(2, 1.2, 1.4)];
    const mon = await monitor(restoredSock);
    const results: string[] = [];
    try {
      for (const [k, limit] of points.entries()) {
        const dest = await destination(`cut-destination-${k}`);
        const proxy = await cuttingProxy(dest.port, limit);
        const from = restored.stderr.length;
        await exec(mon, 'migrate', { uri: `tcp:127.0.0.1:${proxy.port}` });
        let status = '';
        while (status !== 'failed') {
          const q = await exec(mon, 'query-migrate');
          status = String(q.status);
          expect(status).not.toBe('completed');
          if (status !== 'failed') await new Promise((r) => setTimeout(r, 100));
        }
        const q = await exec(mon, 'query-migrate');
        const exit = await Promise.race([dest.vm.exited, new Promise<null>((r) => setTimeout(() => r(null), 60_000))]);
        const destErr = dest.vm.stderr.trim().split('\n').pop() ?? '';
        const rounds = [...restored.stderr.slice(from).matchAll(/round (\d+)/g)].map((m) => Number(m[1]));
        results.push(`#${k} cut ${limit} B (${proxy.why()}), source rounds seen ${rounds.length ? Math.max(...rounds) : 0}: source "${String(q.error)}"; destination exit ${exit?.status} "${destErr}"`);
        expect(exit).not.toBeNull();
        expect(exit!.status).not.toBe(0);
        expect(dest.vm.stderr).toMatch(/kvmts: incoming migration failed: \S/);
        expect(restored.stderr.slice(from)).toMatch(/migration failed, the guest keeps running here/);
        expect(await restored.sh(`echo ALIVE-${k}`)).toBe(`ALIVE-${k}`);
      }
    } finally {
      mon.close();
      console.log(`fault injection:\n${results.join('\n')}`);
    }
    expect(results.length).toBeGreaterThanOrEqual(20);
    const before = restored.counts('COUNT');
    await restored.until('the counter to go on', () => Math.max(...restored.counts('COUNT')) > Math.max(...before), 30_000);
  }, 20 * 60_000);

  it('live-migrates to another process: the counter continues, the checksum is the same', async () => {
    const works = (): string[] => [...restored.stdout.matchAll(/WORK ([0-9a-f]{32})/g)].map((m) => m[1]!);
    await restored.until('a WORK line on the source', () => works().length > 0, 120_000);
    const work1 = works();
    expect(new Set(work1).size).toBe(1);
    const destSock = join(work, 'dest.sock');
    const dest = await destination('destination', ['--monitor', `unix:${destSock}`]);
    const mon = await monitor(restoredSock);
    const from = restored.stderr.length;
    const t0 = performance.now();
    try {
      await exec(mon, 'migrate', { uri: `tcp:127.0.0.1:${dest.port}` });
      const exit = await restored.exited;
      expect(exit.status).toBe(0);
    } finally {
      mon.close();
    }
    const log = restored.stderr.slice(from);
    console.log(`source stderr during the migration:\n${log}`);
    const m = /migration completed in ([\d.]+) s: downtime (\d+) ms, ([\d.]+) MiB in (\d+) rounds/.exec(log);
    expect(m).not.toBeNull();
    console.log(`live migration: total ${m![1]} s, downtime ${m![2]} ms, ${m![3]} MiB, ${m![4]} rounds (wall ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    expect(log).toMatch(/migration \S+ round \d+: [\d.]+ MiB left, [\d.]+ MiB\/s, expected downtime \d+ ms/);
    expect(log).toMatch(/the guest migrated to the destination/);
    const lastSource = Math.max(...restored.counts('COUNT'));
    await dest.vm.until('COUNT on the destination', () => dest.vm.counts('COUNT').length >= 2, 60_000);
    const firstDest = dest.vm.counts('COUNT')[0]!;
    console.log(`COUNT: last on the source ${lastSource}, first on the destination ${firstDest}`);
    expect(firstDest).toBeGreaterThan(lastSource);
    expect(firstDest).toBeLessThanOrEqual(lastSource + 2);
    const work2 = await dest.vm.until('a WORK line on the destination', () => /WORK ([0-9a-f]{32})/.exec(dest.vm.stdout)?.[1], 60_000);
    expect(work2).toBe(work1[0]);
    expect(await dest.vm.sh('echo ALIVE-D')).toBe('ALIVE-D');
    await dest.vm.until('two disk records written on the destination', () => dest.vm.counts('DISKW').length >= 2, 60_000);
    const dmon = await monitor(destSock);
    try {
      expect(await exec(dmon, 'query-status')).toEqual({ status: 'running', running: true });
      await exec(dmon, 'quit');
    } finally {
      dmon.close();
    }
    const exit = await dest.vm.exited;
    expect(exit.status).toBe(0);
    expect(dest.vm.stderr).toMatch(/terminated by the monitor/);

    // The disk file holds every record up to the destination's last, those written by the source
    // before the switchover and those the destination wrote after it.
    const lastSourceDisk = Math.max(...restored.counts('DISKW'));
    const destDisk = dest.vm.counts('DISKW');
    console.log(`disk records: last on the source ${lastSourceDisk}, on the destination ${destDisk.join(', ')}`);
    expect(destDisk.length).toBeGreaterThanOrEqual(1);
    expect(destDisk[0]).toBeGreaterThan(lastSourceDisk);
    expect(destDisk[0]).toBeLessThanOrEqual(lastSourceDisk + 2); // +2: a DISKW line the switchover cut in two
    const image = readFileSync(disk);
    const last = Math.max(...destDisk);
    for (let k = 1; k <= last; k++) {
      expect(image.subarray(k * 512, k * 512 + 16).toString('latin1'), `sector ${k}`).toBe(diskRecord(k));
    }
    expect(image.subarray((last + 1) * 512, (last + 2) * 512).every((b) => b === 0)).toBe(true);
  }, 10 * 60_000);
});
