/**
 * The `kvmts` command line: `kvmts run`, `kvmts demo build` and `kvmts guest path|fetch`.
 * @module
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { checkMemSize, formatSize, hex, parseAddress, parseSize } from './args.js';
import { ConsoleSink } from './console.js';
import { CliError, ExitStatus } from './errors.js';
import { addGuestCommands } from './guest/command.js';
import { buildDemoGuest } from './guests/demo.js';
import { REAL_MODE_LOAD_LIMIT, checkPlacement, describeFsError, readImageFile, realModeEntry } from './image.js';
import { Vmm, outcomeExitStatus, outcomeMessage } from './vmm.js';
import { DEFAULT_LINUX_MEM, processInput, runLinux, runPcGuest, type GuestInput, type PcRunOptions } from './machine/linux.js';
import { isMultibootKernelFile, runMultiboot } from './machine/multiboot.js';
import { DEFAULT_BIOS_MEM, parseDiskSpec, runBios, type DiskSpec } from './machine/bios.js';
import { runFirmware } from './machine/firmware.js';
import { NET_SPEC_HELP, VIRTIO_DEVICE_NAMES, openVirtioDevices, parseDeviceName, parseNetSpec, parseVirtioTransport, type VirtioConfig } from './machine/virtio-config.js';
import type { PcVirtioOptions } from './machine/virtio.js';
import { addMonitorCommand } from './monitor/command.js';
import { PcRunSession } from './machine/run-session.js';
import { pcOptionsFromSnapshot } from './machine/migration-control.js';

/** Where the command writes. Guest serial output goes to `stdout`. */
export interface CliIo {
  stdout(chunk: Uint8Array | string): void;
  stderr(text: string): void;
  /** Calls `handler` on SIGTERM, SIGINT or SIGHUP (a run then stops in order); returns the function that stops listening. */
  onTerminate?(handler: (signal: NodeJS.Signals) => void): () => void;
  /** The guest console's input for `kvmts run --kernel` (none: the guest gets no input). */
  input?: GuestInput;
}

/** The real process streams. */
export function processIo(): CliIo {
  let stdoutOpen = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    stdoutOpen = false;
    // A reader that went away (`kvmts run ... | head`) is normal: drop the rest, as cat does.
    if (err.code !== 'EPIPE') {
      process.stderr.write(`kvmts: cannot write to stdout: ${err.message}\n`);
      process.exitCode = ExitStatus.Software;
    }
  });
  return {
    stdout: (chunk) => {
      if (stdoutOpen) process.stdout.write(chunk);
    },
    stderr: (text) => {
      process.stderr.write(text);
    },
    input: processInput(),
    onTerminate: (handler) => {
      const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
      let received = 0;
      const onSignal = (signal: NodeJS.Signals): void => {
        // A second signal means the orderly stop is not wanted (or stuck): go at once.
        if (++received > 1) {
          process.stderr.write(`\r\nkvmts: ${signal} again: exiting at once\n`);
          process.exit(ExitStatus.Software);
        }
        handler(signal);
      };
      for (const s of signals) process.on(s, onSignal);
      return () => {
        for (const s of signals) process.off(s, onSignal);
      };
    },
  };
}

/** Options of `kvmts run`, already parsed. */
export interface RunOptions {
  /** Flat binary to load; exactly one of `raw` and `demo`. */
  raw?: string;
  demo?: boolean;
  loadAddr: number;
  memSize: number;
}

const DEFAULT_LOAD_ADDR = '0x7c00';
const DEFAULT_MEM = '16M';

const EXIT_STATUS_HELP = `
Linux (--kernel): COM1 is the console on stdout, and stdin is its input (on a terminal in
raw mode: type Ctrl-A X to quit, Ctrl-A H for help). A guest reset reboots the kernel
unless --no-reboot is given.

Virtio (with --kernel, or beside BIOS disks): --disk FILE[,ro] is a virtio-blk disk with
--kernel (if=virtio is the default there); --net adds a virtio-net NIC, --device adds
virtio-rng, virtio-console (hvc0, its output goes to stdout) or virtio-balloon. They sit on PCI slots 2, 3,
... in the order disks, NICs, --devices, or with --virtio-transport mmio in virtio-mmio
windows at 0xd0000000 + n*0x200 (announced to Linux by an ACPI SSDT).

Multiboot (--kernel with a Multiboot header instead of a bzImage): the same machine and
console; each --initrd is a module (its string is the file name), and the command line
is the kernel's file name followed by --append, as GRUB and QEMU pass it.

Exit status of 'kvmts run':
  0    the guest halted with interrupts disabled, or powered off (ACPI S5), or reset
       with --no-reboot, or the user quit with Ctrl-A X
  v    the guest wrote v to the debug-exit port 0xf4 (the raw value, low 8 bits;
       QEMU's isa-debug-exit would give (v << 1) | 1)
  1    the guest halted with interrupts enabled (no device can interrupt it yet)
  2    the guest triple-faulted (shutdown)
  3    the vCPU stopped with an internal error (e.g. an unsupported instruction)
  64   bad command line or unusable input
  69   --incoming: the live migration failed (the source keeps running)
  70   an internal failure of kvmts itself`;

/**
 * Run the `kvmts` command with `argv` (the arguments after the program name) and return the
 * exit status. Never throws: failures are reported on `io.stderr` as `kvmts: <message>`.
 */
export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  let status: number = ExitStatus.Ok;
  const program = buildProgram(io, (s) => {
    status = s;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return status;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed its message (or the help).
      return err.exitCode === 0 ? ExitStatus.Ok : ExitStatus.Usage;
    }
    if (err instanceof CliError) {
      io.stderr(`kvmts: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr(`kvmts: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`);
    return ExitStatus.Software;
  }
}

/** `kvmts run`'s options as commander parses them. */
interface RunCliOptions {
  kernel?: string;
  /** Every --initrd, in order (Linux takes one; a Multiboot kernel takes each as a module). */
  initrd: string[];
  append: string;
  reboot: boolean;
  debugExit?: boolean;
  acpi: boolean;
  clock: string;
  stats?: boolean;
  serial2?: string;
  raw?: string;
  demo?: boolean;
  loadAddr: string;
  mem?: string;
  /** Every --disk, in order. */
  disk: string[];
  /** A third-party firmware image to boot instead of kvmts's BIOS. */
  bios?: string;
  boot?: string;
  virtioTransport: string;
  /** Every --device, in order. */
  device: string[];
  /** Every --net, in order. */
  net: string[];
  monitor?: string;
  restore?: string;
  incoming?: string;
}

function buildProgram(io: CliIo, setStatus: (status: number) => void): Command {
  const program = new Command('kvmts');
  program
    .description('Run x86 guests on kvmts, a KVM-style virtualization stack in TypeScript.')
    .version(packageVersion())
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      outputError: (s, write) => write(`kvmts: ${s.replace(/^error: /, '')}`),
    })
    .showSuggestionAfterError();

  program
    .command('run')
    .description('Boot a Linux bzImage on a PC, or a flat binary (or the built-in demo) in real mode; COM1 goes to stdout.')
    .option('--kernel <file>', 'Linux bzImage or Multiboot kernel to boot on the PC machine')
    .option('--initrd <file>', 'initial ramdisk for --kernel; a Multiboot module (repeat for more)', (file: string, all: string[]) => [...all, file], [] as string[])
    .option('--append <cmdline>', 'kernel command line for --kernel', '')
    .option('--no-reboot', 'with --kernel: exit (status 0) when the guest resets instead of rebooting')
    .option('--debug-exit', 'with --kernel: map the debug-exit port 0xf4 (a write of v exits with status v)')
    .option('--no-acpi', 'with --kernel: give the guest no ACPI tables (power-off then halts the CPU)')
    .option('--clock <mode>', "with --kernel: guest time from the 'host' clock or retired 'instructions' (deterministic)", 'host')
    .option('--serial2 <file>', 'map COM2 (0x2f8, IRQ 3) and write what the guest sends there to FILE')
    .option('--stats', 'with --kernel: print the time to GUEST-BOOT-OK and the run time on stderr')
    .option('--raw <file>', 'flat binary image to load')
    .option('--demo', 'run the built-in demo guest instead of a file')
    .option('--load-addr <addr>', 'guest-physical load address, hex or decimal; the vCPU starts there', DEFAULT_LOAD_ADDR)
    .option(
      '--disk <file>',
      'disk image FILE[,ro][,if=ide|virtio]: with --kernel a virtio-blk disk; without, a disk the BIOS boots (if=ide, the default there); repeat for more',
      (file: string, all: string[]) => [...all, file],
      [] as string[],
    )
    .option('--virtio-transport <kind>', "how virtio devices attach: 'pci' (modern virtio-pci) or 'mmio' (virtio-mmio)", 'pci')
    .option('--device <name>', `add a virtio device: ${VIRTIO_DEVICE_NAMES.join(' or ')} (repeat for more)`, (name: string, all: string[]) => [...all, name], [] as string[])
    .option('--net <backend>', `add a virtio-net NIC: ${NET_SPEC_HELP} (none: not connected to anything; repeat for more)`, (spec: string, all: string[]) => [...all, spec], [] as string[])
    .option('--boot <n>', 'with --disk: boot the n-th disk (0 = the first --disk); the others follow in order')
    .option('--bios <file>', "boot this PC firmware image (e.g. SeaBIOS's bios.bin) instead of kvmts's BIOS; its disks are virtio (--disk FILE,if=virtio)")
    .option('--monitor <address>', 'with --kernel, --restore or --incoming: serve the JSON monitor on unix:PATH or tcp:HOST:PORT (see kvmts monitor)')
    .option('--restore <file>', 'resume the PC guest saved in a snapshot FILE (monitor snapshot-save); give the same --disk/--net/--device options')
    .option('--incoming <address>', 'wait on tcp:HOST:PORT for a live migration (monitor migrate) and run the guest it brings; give the source\'s --mem and virtio options')
    .option('--mem <size>', `guest RAM size (K, M or G suffix; default ${DEFAULT_MEM}, ${formatSize(DEFAULT_LINUX_MEM)} with --kernel)`)
    .addHelpText('after', EXIT_STATUS_HELP)
    .action(async (opts: RunCliOptions) => {
      const biosBoot = opts.kernel === undefined && opts.disk.length > 0;
      const mem = opts.mem ?? (opts.kernel !== undefined ? formatSize(DEFAULT_LINUX_MEM) : biosBoot || opts.bios !== undefined ? formatSize(DEFAULT_BIOS_MEM) : DEFAULT_MEM);
      const memSize = parseSize(mem, '--mem');
      checkMemSize(memSize, mem);
      const transport = parseVirtioTransport(opts.virtioTransport);
      if (opts.clock !== 'host' && opts.clock !== 'instructions') throw new CliError(`invalid --clock '${opts.clock}': expected 'host' or 'instructions'`);
      const extraDevices = opts.device.map(parseDeviceName);
      const nets = opts.net.map(parseNetSpec);
      const virtioConfig = (disks: readonly DiskSpec[]): VirtioConfig => ({ disks, nets, devices: extraDevices, consoleOutput: (data) => io.stdout(data), log: (line) => io.stderr(line) });
      if (opts.restore !== undefined || opts.incoming !== undefined) {
        if (opts.restore !== undefined && opts.incoming !== undefined) throw new CliError('use either --restore FILE or --incoming ADDRESS, not both');
        if (opts.kernel !== undefined || opts.raw !== undefined || opts.demo || opts.bios !== undefined) {
          throw new CliError('--restore and --incoming bring their own guest: they cannot be combined with --kernel, --raw, --demo or --bios');
        }
        if (opts.incoming !== undefined && !/^tcp:/.test(opts.incoming)) throw new CliError(`invalid --incoming '${opts.incoming}': expected tcp:HOST:PORT`);
        const disks = opts.disk.map((d) => parseDiskSpec(d, 'virtio'));
        let shape: { memSize: number; irqchip?: 'kernel' | 'userspace'; clockMode: 'host' | 'instructions'; debugExit: boolean } = {
          memSize: parseSize(opts.mem ?? formatSize(DEFAULT_LINUX_MEM), '--mem'),
          clockMode: opts.clock as 'host' | 'instructions',
          debugExit: opts.debugExit === true,
        };
        if (opts.restore !== undefined) {
          try {
            const s = await pcOptionsFromSnapshot(opts.restore);
            shape = { memSize: s.memSize, irqchip: s.irqchip, clockMode: s.clockMode ?? 'host', debugExit: s.debugExit ?? false };
          } catch (err) {
            throw new CliError(`cannot restore '${opts.restore}': ${err instanceof Error ? err.message : String(err)}`);
          }
        }
        await withVirtio(virtioConfig(disks), transport, (virtio) =>
          withSession(opts, shape.memSize, io, async (session) => {
            const machine = {
              ...shape,
              // The guest's kernel is not at hand: a reset ends the run.
              noReboot: true,
              noAcpi: opts.acpi === false,
              stats: opts.stats === true,
              ...(opts.serial2 !== undefined ? { serial2: opts.serial2 } : {}),
              ...(virtio ? { virtio } : {}),
              session,
            };
            setStatus(
              await runPcGuest(machine, io, io.input, () => {
                throw new CliError('nothing to boot: the guest came from --restore/--incoming');
              }),
            );
          }),
        );
        return;
      }
      if (opts.monitor !== undefined && opts.kernel === undefined) throw new CliError('--monitor needs a PC guest started with --kernel, --restore or --incoming');
      if (opts.bios !== undefined) {
        if (opts.kernel !== undefined || opts.raw !== undefined || opts.demo) throw new CliError('--bios boots a firmware image: it cannot be combined with --kernel, --raw or --demo');
        if (opts.boot !== undefined) throw new CliError('--boot is for kvmts\'s BIOS: with --bios the firmware chooses');
        const disks = opts.disk.map((d) => parseDiskSpec(d, 'virtio'));
        const ide = disks.find((d) => d.interface === 'ide');
        if (ide) throw new CliError(`--disk '${ide.path}',if=ide is for kvmts's BIOS: with --bios, disks are virtio-blk (if=virtio)`);
        const bios = opts.bios;
        await withVirtio(virtioConfig(disks), transport, async (virtio) => {
          const machine = pcRunOptions(opts, memSize, virtio);
          setStatus(await runFirmware({ ...machine, bios }, io, io.input));
        });
        return;
      }
      if (opts.kernel !== undefined) {
        if (opts.raw !== undefined || opts.demo) throw new CliError('use either --kernel FILE or --raw FILE/--demo, not both');
        const disks = opts.disk.map((d) => parseDiskSpec(d, 'virtio'));
        const ide = disks.find((d) => d.interface === 'ide');
        if (ide) throw new CliError(`--disk '${ide.path}',if=ide needs BIOS boot (no --kernel): a kernel gets virtio disks (if=virtio)`);
        const multiboot = isMultibootKernelFile(opts.kernel);
        if (!multiboot && opts.initrd.length > 1) throw new CliError('a Linux kernel takes one --initrd (several are for Multiboot kernels, as modules)');
        await withVirtio(virtioConfig(disks), transport, async (virtio) => {
          const machine = pcRunOptions(opts, memSize, virtio);
          const kernel = opts.kernel!;
          if (multiboot) {
            setStatus(await runMultiboot({ ...machine, kernel, modules: opts.initrd, append: opts.append }, io, io.input));
            return;
          }
          const initrd = opts.initrd[0];
          await withSession(opts, memSize, io, async (session) => {
            setStatus(await runLinux({ ...machine, kernel, ...(initrd !== undefined ? { initrd } : {}), append: opts.append, session }, io, io.input));
          });
        });
        return;
      }
      if (opts.initrd.length > 0) throw new CliError('--initrd needs --kernel');
      if (biosBoot) {
        if (opts.raw !== undefined || opts.demo) throw new CliError('use either --disk FILE or --raw FILE/--demo, not both');
        const boot = opts.boot === undefined ? 0 : Number(opts.boot);
        if (opts.boot !== undefined && !/^\d+$/.test(opts.boot)) throw new CliError(`invalid --boot '${opts.boot}': expected a disk number (0 = the first --disk)`);
        const disks = opts.disk.map((d) => parseDiskSpec(d, 'ide'));
        const biosDisks = disks.filter((d) => d.interface === 'ide');
        // Virtio disks are for the OS the BIOS boots; the BIOS itself cannot read them.
        await withVirtio(virtioConfig(disks.filter((d) => d.interface === 'virtio')), transport, async (virtio) => {
          const machine = pcRunOptions(opts, memSize, virtio);
          setStatus(await runBios({ ...machine, disks: biosDisks, boot }, io, io.input));
        });
        return;
      }
      if (opts.boot !== undefined) throw new CliError('--boot needs --disk');
      if (opts.device.length > 0 || opts.net.length > 0) throw new CliError('--device and --net need a PC guest: give --kernel FILE or --disk FILE');
      const loadAddr = parseAddress(opts.loadAddr, '--load-addr');
      if (opts.raw !== undefined && opts.demo) throw new CliError('use either --raw FILE or --demo, not both');
      if (opts.raw === undefined && !opts.demo) throw new CliError("nothing to run: give --kernel FILE, --disk FILE, --raw FILE or --demo (see 'kvmts run --help')");
      const run: RunOptions = opts.demo ? { demo: true, loadAddr, memSize } : { raw: opts.raw!, loadAddr, memSize };
      setStatus(runCommand(run, io));
    });

  const demo = program.command('demo').description('The built-in demo guest.');
  demo
    .command('build')
    .description("Write the demo guest as a flat binary, to run with 'kvmts run --raw FILE'.")
    .requiredOption('-o, --output <file>', 'where to write the binary')
    .option('--load-addr <addr>', 'address it will be loaded at (pass the same to run)', DEFAULT_LOAD_ADDR)
    .action((opts: { output: string; loadAddr: string }) => {
      const loadAddr = parseAddress(opts.loadAddr, '--load-addr');
      setStatus(demoBuildCommand(opts.output, loadAddr, io));
    });

  addGuestCommands(program, io, setStatus);
  addMonitorCommand(program, io, setStatus);

  return program;
}

/**
 * Opens the virtio devices of `config` (none: `run` gets undefined), runs `run` with them and
 * closes them afterwards (waiting for disk I/O still in flight).
 */
/** The PC options every boot path shares (`kvmts run` flags to {@link PcRunOptions}). */
function pcRunOptions(opts: RunCliOptions, memSize: number, virtio: PcVirtioOptions | undefined): PcRunOptions {
  return {
    memSize,
    noReboot: !opts.reboot,
    debugExit: opts.debugExit === true,
    noAcpi: opts.acpi === false,
    clockMode: opts.clock as 'host' | 'instructions',
    stats: opts.stats === true,
    ...(opts.serial2 !== undefined ? { serial2: opts.serial2 } : {}),
    ...(virtio ? { virtio } : {}),
  };
}

async function withVirtio(
  config: VirtioConfig,
  transport: PcVirtioOptions['transport'],
  run: (virtio: PcVirtioOptions | undefined) => Promise<void>,
): Promise<void> {
  if (config.disks.length + config.nets.length + config.devices.length === 0) {
    await run(undefined);
    return;
  }
  const opened = await openVirtioDevices(config);
  try {
    await run({ ...(transport ? { transport } : {}), devices: opened.devices });
  } finally {
    await opened.close();
  }
}

/**
 * Opens the session of a PC run (the monitor with --monitor; --restore/--incoming), runs `run`
 * with it and closes it afterwards (an open monitor would keep the process alive).
 */
async function withSession(opts: RunCliOptions, memSize: number, io: CliIo, run: (session: PcRunSession) => Promise<void>): Promise<void> {
  const session = await PcRunSession.open({
    memSize,
    log: (text) => io.stderr(text),
    ...(opts.monitor !== undefined ? { monitor: opts.monitor } : {}),
    ...(opts.restore !== undefined ? { restore: opts.restore } : {}),
    ...(opts.incoming !== undefined ? { incoming: opts.incoming } : {}),
  });
  try {
    await run(session);
  } finally {
    await session.close();
  }
}

/** `kvmts run`: returns the exit status. Throws {@link CliError} for unusable input. */
export function runCommand(options: RunOptions, io: CliIo): number {
  const { loadAddr, memSize } = options;
  let image: Uint8Array;
  let name: string;
  if (options.demo) {
    checkLoadAddr(loadAddr);
    image = buildDemoGuest({ origin: realModeEntry(loadAddr).ip });
    name = 'the demo guest';
  } else {
    const file = options.raw ?? '';
    image = readImageFile(file);
    name = `image '${file}'`;
  }
  checkPlacement(name, image.length, loadAddr, memSize);

  const sink = new ConsoleSink((chunk) => io.stdout(chunk));
  let vmm: Vmm;
  try {
    vmm = new Vmm({ memSize, image, loadAddr, serialOutput: (b) => sink.push(b), onTimeSlice: () => sink.flush() });
  } catch (err) {
    if (err instanceof RangeError) throw new CliError(`cannot allocate ${formatSize(memSize)} of guest memory`);
    throw err;
  }
  try {
    const outcome = vmm.run();
    sink.flush();
    const message = outcomeMessage(outcome);
    if (message !== undefined) io.stderr(`kvmts: ${message}\n`);
    return outcomeExitStatus(outcome);
  } finally {
    sink.flush();
    vmm.close();
  }
}

/** `kvmts demo build`: returns the exit status. Throws {@link CliError} on failure. */
export function demoBuildCommand(output: string, loadAddr: number, io: CliIo): number {
  checkLoadAddr(loadAddr);
  const image = buildDemoGuest({ origin: realModeEntry(loadAddr).ip });
  try {
    writeFileSync(output, image);
  } catch (err) {
    throw new CliError(`cannot write '${output}': ${describeFsError(err)}`);
  }
  io.stdout(`kvmts: wrote the demo guest to '${output}' (${image.length} bytes, for --load-addr ${hex(loadAddr)})\n`);
  return ExitStatus.Ok;
}

function checkLoadAddr(loadAddr: number): void {
  if (loadAddr > REAL_MODE_LOAD_LIMIT) {
    throw new CliError(`--load-addr ${hex(loadAddr)} is above ${hex(REAL_MODE_LOAD_LIMIT)}: a real-mode guest must start in the first 1M`);
  }
}

function packageVersion(): string {
  try {
    // Same relative path from src/ and from dist/.
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}
