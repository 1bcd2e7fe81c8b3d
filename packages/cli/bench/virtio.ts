/**
 * `pnpm bench` (third part): virtio throughput inside the default Linux guest, measured through
 * real `kvmts run` processes started as a user starts them, with commands typed into the guest's
 * shell (guest.shell=1). The figures are added to the JSON report:
 *
 * - `virtio-blk-pci`, `virtio-blk-mmio` (one boot each): on a sparse 96 MiB scratch disk, busybox
 *   dd writes 64 MiB of zeroes to /dev/vda and then reads them back, sequentially, in 1 MiB
 *   blocks with O_DIRECT (and the page cache dropped before the read), so every byte crosses the
 *   virtqueue; the disk's own counters (/sys/block/vda/stat) must show it.
 * - `virtio-net-socket`: two processes joined by the socket backend (`--net socket:…,listen` and
 *   `--net socket:…`), static addresses, busybox ping's round trip, then 8 MiB from one guest to
 *   the other through busybox nc, counted on arrival.
 *
 * Each transfer is timed inside the guest (/proc/uptime before and after the command, 10 ms steps;
 * the guest clock follows the host's, and the report names the guest's clocksource) and on the
 * host around the typed command (which adds the console round trip, most of a second at the
 * guest's speed). The figures in MB/s (10^6 bytes per second) are the guest-timed ones. Skipped, with a notice, when no guest has
 * been fetched; a step that does not complete ends the run with status 1 and the guest's console
 * tail, after writing what was measured.
 *
 *   tsx packages/cli/bench/virtio.ts [--out FILE] [--parts blk-pci,blk-mmio,net] [--blk-mib 64] [--net-mib 8]
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { guestInitrd, guestKernel, guestMissing } from '../test/e2e.js';
import { GuestVm } from '../test/guest-vm.js';
import { appendResults, option, reportPath } from './report.js';

const MiB = 2 ** 20;
const DISK_BYTES = 96 * MiB;
const NET_PORT = 5001;
const BOOT_TIMEOUT_MS = 15 * 60_000;
const STEP_TIMEOUT_MS = 10 * 60_000;

const out = reportPath();
const PARTS = ['blk-pci', 'blk-mmio', 'net'];
const parts = option('parts', PARTS.join(',')).split(',');
const blkMiB = Number(option('blk-mib', '64'));
const netMiB = Number(option('net-mib', '8'));
for (const p of parts) if (!PARTS.includes(p)) throw new Error(`--parts: '${p}' is not one of ${PARTS.join(', ')}`);
if (!Number.isInteger(blkMiB) || blkMiB < 1 || blkMiB * MiB > DISK_BYTES) throw new Error(`--blk-mib: 1 to ${DISK_BYTES / MiB}`);
if (!Number.isInteger(netMiB) || netMiB < 1) throw new Error('--net-mib: a whole number of MiB, at least 1');

const guestArgs = ['run', '--kernel', guestKernel, '--initrd', guestInitrd, '--append', 'console=ttyS0 guest.shell=1', '--no-reboot'];
const vms: GuestVm[] = [];

function start(name: string, args: readonly string[]): GuestVm {
  const vm = new GuestVm(name, [...guestArgs, ...args]);
  vms.push(vm);
  return vm;
}

/** An error naming the VM, with its console tail and stderr (as GuestVm's own timeouts have). */
function failure(vm: GuestVm, what: string): Error {
  return new Error(`${vm.name}: ${what}\n--- stdout tail:\n${vm.stdout.slice(-2000)}\n--- stderr:\n${vm.stderr.slice(-3000)}`);
}

/** Waits for the guest's shell; returns the seconds from process start. */
async function shellReady(vm: GuestVm, t0: number): Promise<number> {
  await vm.waitOut(/GUEST-SHELL ready/, BOOT_TIMEOUT_MS);
  return (performance.now() - t0) / 1000;
}

interface Timed {
  /** /proc/uptime after minus before, in the guest. */
  guestSeconds: number;
  /** From typing the command to its output on the console. */
  hostSeconds: number;
  /** What the command printed (stdout and stderr, newlines as spaces). */
  output: string;
}

/** Runs `command` in the guest's shell between two readings of /proc/uptime; it must exit with 0. */
async function timed(vm: GuestVm, command: string): Promise<Timed> {
  const t0 = performance.now();
  const line = await vm.sh(`a=$(cut -d' ' -f1 /proc/uptime); o=$(${command} 2>&1); s=$?; b=$(cut -d' ' -f1 /proc/uptime); echo $s $a $b $o`, STEP_TIMEOUT_MS);
  const hostSeconds = (performance.now() - t0) / 1000;
  const m = /^(\d+) ([\d.]+) ([\d.]+) ?(.*)$/.exec(line);
  if (!m || m[1] !== '0') throw failure(vm, `'${command}' failed: ${line}`);
  return { guestSeconds: Number(m[3]) - Number(m[2]), hostSeconds, output: m[4]! };
}

/** The guest's clocksource (tsc, or a slower fallback when Linux found the TSC unstable under host load). */
function clocksource(vm: GuestVm): Promise<string> {
  return vm.sh('cat /sys/devices/system/clocksource/clocksource0/current_clocksource');
}

/** /sys/block/vda/stat: [2] sectors read, [6] sectors written (Documentation/block/stat.rst). */
async function diskCounters(vm: GuestVm): Promise<number[]> {
  return (await vm.sh('cat /sys/block/vda/stat')).trim().split(/\s+/).map(Number);
}

/** `poweroff -f` in the guest; the process must exit with status 0. */
async function powerOff(vm: GuestVm): Promise<void> {
  vm.type('poweroff -f');
  const exit = await vm.until('the power-off', () => vm.exit, 120_000);
  if (exit.status !== 0) throw failure(vm, `exited with ${JSON.stringify(exit)} after poweroff -f`);
}

const round = (x: number, digits = 2): number => Number(x.toFixed(digits));
const mbps = (bytes: number, seconds: number): number => round(bytes / seconds / 1e6);

async function blkBench(transport: string, work: string): Promise<Record<string, unknown>> {
  const disk = join(work, `blk-${transport}.img`);
  writeFileSync(disk, '');
  truncateSync(disk, DISK_BYTES); // sparse
  const t0 = performance.now();
  const vm = start(`blk-${transport}`, ['--mem', '256M', '--virtio-transport', transport, '--disk', disk]);
  const bootSeconds = await shellReady(vm, t0);
  if (!vm.stdout.includes(`GUEST-BLK vda sectors=${DISK_BYTES / 512} `)) throw failure(vm, `no ${DISK_BYTES / MiB} MiB /dev/vda in the guest`);

  const bytes = blkMiB * MiB;
  const before = await diskCounters(vm);
  const write = await timed(vm, `dd if=/dev/zero of=/dev/vda bs=1M count=${blkMiB} oflag=direct`);
  const between = await diskCounters(vm);
  await vm.sh('sync; echo 3 >/proc/sys/vm/drop_caches; echo dropped');
  const read = await timed(vm, `dd if=/dev/vda of=/dev/null bs=1M count=${blkMiB} iflag=direct`);
  const after = await diskCounters(vm);
  if (!write.output.includes(`${blkMiB}+0 records out`)) throw failure(vm, `the write was short: ${write.output}`);
  if (!read.output.includes(`${blkMiB}+0 records in`)) throw failure(vm, `the read was short: ${read.output}`);
  const written = (between[6]! - before[6]!) * 512;
  const readBytes = (after[2]! - between[2]!) * 512;
  if (written < bytes) throw failure(vm, `only ${written} bytes reached the device in the write (/sys/block/vda/stat)`);
  if (readBytes < bytes) throw failure(vm, `only ${readBytes} bytes came from the device in the read (/sys/block/vda/stat)`);
  const guestClocksource = await clocksource(vm);
  await powerOff(vm);

  const result = {
    name: `virtio-blk-${transport}`,
    description: `virtio-blk over virtio-${transport}, sparse ${DISK_BYTES / MiB} MiB file: busybox dd to and from /dev/vda, 1 MiB blocks, O_DIRECT (page cache dropped before the read); guest-timed, MB = 10^6 bytes`,
    bytes,
    writeMBps: mbps(bytes, write.guestSeconds),
    readMBps: mbps(bytes, read.guestSeconds),
    writeSeconds: round(write.guestSeconds),
    readSeconds: round(read.guestSeconds),
    writeHostSeconds: round(write.hostSeconds),
    readHostSeconds: round(read.hostSeconds),
    shellReadySeconds: round(bootSeconds, 1),
    guestClocksource,
  };
  console.log(
    `${result.name.padEnd(17)} write ${result.writeMBps} MB/s, read ${result.readMBps} MB/s ` +
      `(${blkMiB} MiB in ${result.writeSeconds} s / ${result.readSeconds} s; host ${result.writeHostSeconds} s / ${result.readHostSeconds} s)`,
  );
  return result;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

async function netBench(): Promise<Record<string, unknown>> {
  const port = await freePort();
  const t0 = performance.now();
  const a = start('net-a', ['--mem', '128M', '--net', `socket:127.0.0.1:${port},listen,mac=52:54:00:00:00:0a`]);
  await sleep(1000); // let the listening side bind first (the other would retry every second anyway)
  const b = start('net-b', ['--mem', '128M', '--net', `socket:127.0.0.1:${port},mac=52:54:00:00:00:0b`]);
  const [readyA, readyB] = await Promise.all([shellReady(a, t0), shellReady(b, t0)]);
  for (const vm of [a, b]) {
    if ((await vm.sh('command -v nc')) === '') throw failure(vm, "the guest has no nc: it predates the nc applet, rebuild it with 'kvmts guest fetch'");
  }
  await a.sh('ip addr add 10.0.2.1/24 dev eth0; ip link set eth0 up; echo up');
  await b.sh('ip addr add 10.0.2.2/24 dev eth0; ip link set eth0 up; echo up');

  // One ping to resolve the address, then five timed ones.
  const ping = await b.sh("ping -c 1 -W 10 10.0.2.1 >/dev/null; ping -c 5 -W 5 10.0.2.1 2>&1 | tail -2 | tr '\\n' ' '", 120_000);
  const rtt = /(\d+) packets received.*min\/avg\/max = ([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(ping);
  if (!rtt || rtt[1] !== '5') throw failure(b, `ping 10.0.2.1: ${ping}`);

  // a receives in the foreground of its shell (nc's stdin is the idle console, so it sends
  // nothing back and does not half-close); b's nc half-closes after the last byte and exits when
  // a's nc has read everything and closed: b's time covers the whole delivery.
  const bytes = netMiB * MiB;
  const from = a.stdout.length;
  a.type(`echo "NC-""LISTENING"; echo "RX-""BYTES $(nc -l -p ${NET_PORT} | wc -c)"`);
  await a.waitOut(/NC-LISTENING/, 60_000, from);
  await sleep(1000); // nc listens right after that echo
  const send = await timed(b, `dd if=/dev/zero bs=64k count=${netMiB * 16} 2>/dev/null | nc 10.0.2.1 ${NET_PORT}`);
  const received = Number((await a.waitOut(/RX-BYTES (\d+)/, STEP_TIMEOUT_MS, from))[1]);
  if (received !== bytes) throw failure(a, `received ${received} of ${bytes} bytes`);
  const guestClocksource = await clocksource(b);
  await Promise.all([powerOff(a), powerOff(b)]);

  const MBps = mbps(bytes, send.guestSeconds);
  const result = {
    name: 'virtio-net-socket',
    description: 'virtio-net (virtio-pci) in two processes joined by --net socket: (TCP on 127.0.0.1): busybox dd | nc to nc -l | wc -c, guest-timed on the sender; ping: 5 after one to resolve ARP; MB = 10^6 bytes',
    bytes,
    MBps,
    Mbitps: round(MBps * 8, 1),
    seconds: round(send.guestSeconds),
    hostSeconds: round(send.hostSeconds),
    pingRttMs: { min: Number(rtt[2]), avg: Number(rtt[3]), max: Number(rtt[4]) },
    shellReadySeconds: [round(readyA, 1), round(readyB, 1)],
    guestClocksource,
  };
  console.log(
    `${result.name.padEnd(17)} ${result.MBps} MB/s = ${result.Mbitps} Mbit/s (${netMiB} MiB in ${result.seconds} s; host ${result.hostSeconds} s), ` +
      `ping min/avg/max ${rtt[2]}/${rtt[3]}/${rtt[4]} ms`,
  );
  return result;
}

const missing = guestMissing();
if (missing !== '') {
  console.log(`virtio benchmark skipped: ${missing}`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), 'kvmts-bench-virtio-'));
const results: Record<string, unknown>[] = [];
try {
  for (const transport of ['pci', 'mmio']) if (parts.includes(`blk-${transport}`)) results.push(await blkBench(transport, work));
  if (parts.includes('net')) results.push(await netBench());
} catch (e) {
  console.error(`virtio benchmark failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
} finally {
  for (const vm of vms) vm.kill();
  rmSync(work, { recursive: true, force: true });
}
if (results.length > 0) appendResults(out, results);
