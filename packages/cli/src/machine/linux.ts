/**
 * `kvmts run --kernel`: boot a Linux bzImage on a {@link PcMachine} with COM1 as the console.
 *
 * The guest's COM1 output goes to stdout; stdin feeds COM1's receiver (in raw mode when it is a
 * terminal, where Ctrl-A X quits as in QEMU). The run ends when the guest powers off (ACPI S5),
 * halts with interrupts disabled (Linux's `halt`, and `poweroff` when it finds no ACPI), writes
 * the debug-exit port (with `--debug-exit`), or resets with `--no-reboot`; without
 * `--no-reboot` a reset boots the same kernel again on a fresh machine.
 * @module
 */

import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { BootError, enterLinux, loadLinux, parseBzImage, type AcpiTables } from '@kvmts/firmware';
import { formatSize } from '../args.js';
import { ConsoleSink } from '../console.js';
import { CliError, ExitStatus } from '../errors.js';
import { describeFsError } from '../image.js';
import { ESCAPE_HELP, EscapeFilter } from './escape.js';
import { PcMachine } from './pc.js';
import type { PcVirtioOptions } from './virtio.js';
import { PcRunLoop, type LoopHost, type LoopOutcome, type QuitReason } from './run-loop.js';
import type { PcRunSession } from './run-session.js';

/** Where a firmware-less boot puts a copy of the RSDP: 16-byte aligned in the BIOS area (0xE0000–0xFFFFF) that E820 reserves, clear of the MP tables at 0xF0000. */
export const FIRMWARELESS_RSDP_ADDRESS = 0xff000;

/** Smallest RAM `kvmts run --kernel` accepts; the kernel's own checks come on top. */
export const MIN_LINUX_MEM = 16 * 1024 * 1024;
/** Default RAM for `kvmts run --kernel`. */
export const DEFAULT_LINUX_MEM = 256 * 1024 * 1024;

/** Options of `kvmts run --kernel`. */
export interface LinuxRunOptions {
  kernel: string;
  initrd?: string;
  append: string;
  memSize: number;
  /** Exit with status 0 when the guest resets, instead of booting it again. */
  noReboot?: boolean;
  /** Map the debug-exit port 0xF4; a write of v ends the run with status v. */
  debugExit?: boolean;
  /** Omit the ACPI tables (as QEMU's -no-acpi): power-off then goes through the halt path. */
  noAcpi?: boolean;
  /** Guest time from retired instructions instead of the host clock. */
  clockMode?: 'host' | 'instructions';
  /** A file that receives what the guest writes to COM2 (which is then mapped). */
  serial2?: string;
  /** Print boot timing and guest MIPS on stderr at the end. */
  stats?: boolean;
  /** Virtio devices (already opened; the caller closes them) and their transport. */
  virtio?: PcVirtioOptions;
  /** The interrupt controller (default the in-kernel one); a restored snapshot names its own. */
  irqchip?: 'kernel' | 'userspace';
  /** Monitor, snapshots and migration around the run loop (the caller closes it). */
  session?: PcRunSession;
}

/** Where the guest's console input comes from. */
export interface GuestInput {
  /** A terminal: put it in raw mode and honour Ctrl-A X. */
  readonly tty: boolean;
  /** Start delivering input; the returned function stops it (and restores the terminal). */
  start(onData: (chunk: Uint8Array) => void, onEnd: () => void): () => void;
}

/** The process's stdin as {@link GuestInput}. */
export function processInput(): GuestInput {
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  return {
    tty,
    start(onData, onEnd) {
      const data = (chunk: Buffer): void => onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
      if (tty) stdin.setRawMode(true);
      stdin.on('data', data);
      stdin.on('end', onEnd);
      stdin.on('error', onEnd);
      stdin.resume();
      return () => {
        stdin.off('data', data);
        stdin.off('end', onEnd);
        stdin.off('error', onEnd);
        if (tty) stdin.setRawMode(false);
        stdin.pause();
      };
    },
  };
}

/** Output and diagnostics of the command (CliIo has them). */
export interface LinuxRunIo {
  stdout(chunk: Uint8Array | string): void;
  stderr(text: string): void;
  /**
   * Calls `handler` when the process is asked to terminate (SIGTERM, SIGINT, SIGHUP), so the run
   * ends through its normal path: terminal restored, disks flushed, summary printed. Returns
   * the function that stops listening.
   */
  onTerminate?(handler: (signal: NodeJS.Signals) => void): () => void;
}

/** A file's bytes, or a CliError naming the file as `what`. */
export function readInput(path: string, what: string): Uint8Array {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new CliError(`cannot read ${what} '${path}': ${describeFsError(err)}`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** Sleeping and waking for the run loop, driven by the input's arrival. */
class Host implements LoopHost {
  private wakeUp: (() => void) | null = null;
  open = false;

  yield(): Promise<void> {
    return new Promise((resolve) => setImmediate(resolve));
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, Math.max(0, ms)) : undefined;
      const self = this;
      function done(): void {
        if (timer !== undefined) clearTimeout(timer);
        self.wakeUp = null;
        resolve();
      }
      this.wakeUp = done;
    });
  }

  wake(): void {
    this.wakeUp?.();
  }

  inputOpen(): boolean {
    return this.open;
  }
}

/** Bytes typed but not yet taken by the UART's receive FIFO. */
class InputQueue {
  private bytes: number[] = [];
  private head = 0;

  get length(): number {
    return this.bytes.length - this.head;
  }

  push(chunk: Uint8Array): void {
    for (const b of chunk) this.bytes.push(b);
  }

  /** Hand over up to `room` bytes. */
  take(room: number): number[] {
    const n = Math.min(room, this.length);
    const out = this.bytes.slice(this.head, this.head + n);
    this.head += n;
    if (this.head === this.bytes.length) {
      this.bytes = [];
      this.head = 0;
    }
    return out;
  }
}

function hex(v: number): string {
  return `0x${(v >>> 0).toString(16)}`;
}

/** `kvmts run --kernel ...`: boots until the guest ends; returns the exit status. */
export async function runLinux(options: LinuxRunOptions, io: LinuxRunIo, input?: GuestInput): Promise<number> {
  if (options.memSize < MIN_LINUX_MEM) {
    throw new CliError(`--mem ${formatSize(options.memSize)} is too small to boot Linux: at least ${formatSize(MIN_LINUX_MEM)} is needed`);
  }
  const kernel = readInput(options.kernel, 'kernel');
  try {
    parseBzImage(kernel, `'${options.kernel}'`);
  } catch (err) {
    if (err instanceof BootError) throw new CliError(err.message);
    throw err;
  }
  const initrd = options.initrd !== undefined ? readInput(options.initrd, 'initrd') : undefined;
  return runPcGuest(options, io, input, (machine, acpi) => {
    // Without ACPI, virtio-mmio windows can only be announced on the command line.
    const mmioDevices = acpi === null ? (machine.virtio?.kernelCmdline() ?? '') : '';
    try {
      const loaded = loadLinux(machine.vm.memory, {
        kernel,
        ...(initrd ? { initrd } : {}),
        cmdline: mmioDevices === '' ? options.append : `${options.append} ${mmioDevices}`.trim(),
        ramSize: options.memSize,
        ...(acpi ? { reserved: [acpi.e820Reserved], rsdpAddr: acpi.rsdpAddress } : {}),
      });
      enterLinux(machine.vcpu, loaded);
    } catch (err) {
      if (err instanceof BootError) {
        const msg = err.message.replace(/^kernel image\b/, `'${options.kernel}'`);
        throw new CliError(msg.replace(/^the initrd\b/, `the initrd '${options.initrd ?? ''}'`));
      }
      throw err;
    }
  });
}

/** The machine-level options of {@link runPcGuest} (what is not about the kernel). */
export type PcRunOptions = Omit<LinuxRunOptions, 'kernel' | 'initrd' | 'append'>;

/**
 * Puts a guest into a fresh {@link PcMachine} (its ACPI tables, `null` with `noAcpi`, are
 * already in memory): loads it and sets the vCPU's entry state; throws CliError for bad input.
 */
export type PcGuestSetup = (machine: PcMachine, acpi: AcpiTables | null) => void;

/**
 * Runs a guest on the PC with COM1 as the console until it ends (rebooting it with `setup`
 * again on a reset, unless `noReboot`); returns the exit status. Shared by Linux and Multiboot.
 */
export async function runPcGuest(options: PcRunOptions, io: LinuxRunIo, input: GuestInput | undefined, setup: PcGuestSetup): Promise<number> {
  const sink = new ConsoleSink((chunk) => io.stdout(chunk));
  // COM2's output goes to a file (QEMU's second -serial), opened before the guest starts.
  let com2: { fd: number; sink: ConsoleSink } | undefined;
  if (options.serial2 !== undefined) {
    let fd: number;
    try {
      fd = openSync(options.serial2, 'w');
    } catch (err) {
      throw new CliError(`cannot open '${options.serial2}' for COM2: ${describeFsError(err)}`);
    }
    com2 = { fd, sink: new ConsoleSink((chunk) => writeSync(fd, chunk)) };
  }
  const host = new Host();
  const queue = new InputQueue();
  const escape = new EscapeFilter();
  let loop: PcRunLoop | null = null;
  let quit: 'user' | 'signal' | null = null;
  let signal: NodeJS.Signals | undefined;
  let stopInput: (() => void) | undefined;
  const stopSignals = io.onTerminate?.((sig) => {
    signal ??= sig;
    quit = 'signal';
    loop?.quit('signal');
    host.wake();
  });
  if (input) {
    host.open = true;
    stopInput = input.start(
      (chunk) => {
        if (input.tty) {
          const r = escape.feed(chunk);
          if (r.help) io.stderr(ESCAPE_HELP);
          queue.push(r.data);
          if (r.quit) {
            quit ??= 'user';
            loop?.quit('user');
          }
        } else {
          queue.push(chunk);
        }
        host.wake();
      },
      () => {
        host.open = false;
        host.wake();
      },
    );
  }

  const t0 = performance.now();
  // When the guest first ran: after a restore or an incoming migration, not at process start.
  let ranFrom = -1;
  let instructions = 0;
  let bootOkMs = -1;
  const marker = 'GUEST-BOOT-OK';
  let matched = 0;
  const out = (byte: number): void => {
    sink.push(byte);
    if (options.stats && bootOkMs < 0) {
      matched = byte === marker.charCodeAt(matched) ? matched + 1 : byte === marker.charCodeAt(0) ? 1 : 0;
      if (matched === marker.length) bootOkMs = performance.now() - t0;
    }
  };

  try {
    for (let boot = 0; ; boot++) {
      let machine: PcMachine;
      try {
        machine = new PcMachine({
          memSize: options.memSize,
          serialOutput: out,
          ...(com2 ? { serial2Output: (byte: number) => com2.sink.push(byte) } : {}),
          clockMode: options.clockMode ?? 'host',
          debugExit: options.debugExit ?? false,
          ...(options.irqchip ? { irqchip: options.irqchip } : {}),
          ...(options.virtio ? { virtio: options.virtio } : {}),
        });
      } catch (err) {
        if (err instanceof RangeError) throw new CliError(`cannot allocate ${formatSize(options.memSize)} of guest memory`);
        throw err;
      }
      let outcome: LoopOutcome;
      // A device that completes work on the event loop (virtio-blk I/O) wakes a halted vCPU.
      if (machine.virtio) machine.virtio.onInterrupt = () => host.wake();
      const session = options.session;
      try {
        // --restore / --incoming: the first machine gets its state (RAM included) from there.
        if (!(await session?.load(machine))) {
          const acpi = options.noAcpi ? null : machine.acpiTables(options.memSize);
          for (const w of acpi?.writes ?? []) machine.vm.memory.write(w.addr, w.bytes);
          // What a BIOS leaves in its area for OSes that scan for it (Multiboot kernels, Linux
          // without boot_params' RSDP): the MP tables and a copy of the RSDP. A BIOS boot maps its
          // own ROM over this and writes its own.
          const mp = machine.mpTables();
          for (const w of mp?.writes ?? []) machine.vm.memory.write(w.addr, w.bytes);
          if (acpi) machine.vm.memory.write(FIRMWARELESS_RSDP_ADDRESS, acpi.rsdp);
          setup(machine, acpi);
        }
        const serial = machine.serial;
        const l = new PcRunLoop({
          vcpu: machine.vcpu,
          io: machine.ioBus,
          mmio: machine.mmioBus,
          ...(machine.pic ? { intc: machine.pic } : {}),
          timers: machine.vm.timers,
          clock: machine.vm.clock,
          takeStop: () => machine.takeStop(),
          poll: () => {
            if (queue.length > 0 && serial.rxFree > 0) serial.enqueueInput(queue.take(serial.rxFree));
          },
        });
        loop = l;
        if (quit !== null) l.quit(quit);
        session?.attach(machine, l, () => host.wake());
        const hostYield = host.yield.bind(host);
        if (ranFrom < 0) ranFrom = performance.now();
        outcome = await l.run({
          ...(session ? { between: () => session.between() } : {}),
          yield: () => {
            sink.flush();
            return hostYield();
          },
          sleep: (ms) => {
            sink.flush();
            // A live migration sends between slices: do not sleep long while it lasts.
            return host.sleep(session?.busy ? Math.min(ms, 2) : ms);
          },
          // In-flight device work will interrupt the guest: worth waiting for, like input.
          inputOpen: () => host.inputOpen() || (machine.virtio?.busy() ?? false),
        });
        sink.flush();
        if (outcome.kind === 'internal-error' || outcome.kind === 'unknown-exit') io.stderr(describeVcpu(machine));
      } finally {
        session?.detach();
        loop = null;
        instructions += machine.vcpu.stats().instructions;
        machine.close();
      }
      const status = finish(outcome, options, io, boot, signal);
      if (status === 'reboot') continue;
      const seconds = (performance.now() - (ranFrom < 0 ? t0 : ranFrom)) / 1000;
      const bootOk = options.stats && bootOkMs >= 0 ? `, GUEST-BOOT-OK after ${(bootOkMs / 1000).toFixed(1)} s` : '';
      io.stderr(
        `kvmts: exit: ${describeOutcome(outcome)}; ran ${seconds.toFixed(1)} s, ` +
          `${formatCount(instructions)} instructions (${(instructions / seconds / 1e6).toFixed(1)} MIPS)${bootOk}\n`,
      );
      return status;
    }
  } finally {
    sink.flush();
    if (com2) {
      com2.sink.flush();
      closeSync(com2.fd);
    }
    stopInput?.();
    stopSignals?.();
  }
}

/** The exit status for an outcome, or 'reboot'; prints the outcome's message. */
function finish(outcome: LoopOutcome, options: PcRunOptions, io: LinuxRunIo, boot: number, signal: NodeJS.Signals | undefined): number | 'reboot' {
  switch (outcome.kind) {
    case 'poweroff':
      return ExitStatus.Ok;
    case 'debug-exit':
      return outcome.value & 0xff;
    case 'quit':
      if (outcome.reason === 'migrated') io.stderr('kvmts: the guest migrated to the destination; stopping here\n');
      else if (outcome.reason === 'monitor') io.stderr('kvmts: terminated by the monitor (quit)\n');
      // As QEMU: a termination signal is an orderly stop, status 0.
      else if (outcome.reason === 'signal') io.stderr(`\r\nkvmts: terminating on signal ${signal ?? '(unknown)'}\n`);
      else io.stderr('\r\nkvmts: terminated by the user (Ctrl-A X)\n');
      return ExitStatus.Ok;
    case 'reset':
    case 'shutdown': {
      const source = outcome.kind === 'reset' ? outcome.source : 'triple fault';
      if (options.noReboot) {
        io.stderr(`kvmts: guest requested reset (${source}); exiting (--no-reboot)\n`);
        return ExitStatus.Ok;
      }
      io.stderr(`kvmts: guest reset (${source}); rebooting${boot > 0 ? ` (boot ${boot + 2})` : ''}\n`);
      return 'reboot';
    }
    case 'halted':
      io.stderr(`kvmts: the guest halted with interrupts disabled at eip ${hex(outcome.rip)}; nothing can wake it, stopping\n`);
      return ExitStatus.Ok;
    case 'halted-forever':
      io.stderr(`kvmts: the guest halted at eip ${hex(outcome.rip)} waiting for an interrupt, but no timer is armed and no input can come; stopping\n`);
      return ExitStatus.HaltedWithInterrupts;
    case 'internal-error':
      io.stderr(`kvmts: internal error: ${outcome.message}\n`);
      return ExitStatus.InternalError;
    case 'unknown-exit':
      io.stderr(`kvmts: internal error: unexpected exit reason ${outcome.reason}\n`);
      return ExitStatus.InternalError;
  }
}

const QUIT_DESCRIPTIONS: Record<QuitReason, string> = {
  user: 'quit by the user',
  monitor: 'quit from the monitor',
  migrated: 'guest migrated away',
  signal: 'terminated by a signal',
};

/** The exit reason in a few words, for the summary line. */
function describeOutcome(outcome: LoopOutcome): string {
  switch (outcome.kind) {
    case 'poweroff': return 'guest powered off (ACPI S5)';
    case 'debug-exit': return `debug-exit port written with ${outcome.value}`;
    case 'quit': return QUIT_DESCRIPTIONS[outcome.reason ?? 'user'];
    case 'reset': return `guest reset (${outcome.source})`;
    case 'shutdown': return 'triple fault (shutdown)';
    case 'halted': return 'guest halted with interrupts disabled';
    case 'halted-forever': return 'guest halted with nothing left to wake it';
    case 'internal-error': return 'internal error';
    case 'unknown-exit': return `unknown exit reason ${outcome.reason}`;
  }
}

/** 1234567 → "1.23 M". */
function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  return String(n);
}

/** The vCPU's registers, for an internal error report. */
function describeVcpu(machine: PcMachine): string {
  const r = machine.vcpu.getRegs();
  const s = machine.vcpu.getSregs();
  return (
    `kvmts: vcpu state: eip=${hex(r.rip)} eflags=${hex(r.rflags)} eax=${hex(r.rax)} ebx=${hex(r.rbx)} ecx=${hex(r.rcx)} ` +
    `edx=${hex(r.rdx)} esi=${hex(r.rsi)} edi=${hex(r.rdi)} ebp=${hex(r.rbp)} esp=${hex(r.rsp)}\n` +
    `kvmts:   cs=${hex(s.cs.selector)} ss=${hex(s.ss.selector)} ds=${hex(s.ds.selector)} cr0=${hex(s.cr0)} cr2=${hex(s.cr2)} ` +
    `cr3=${hex(s.cr3)} cr4=${hex(s.cr4)}\n`
  );
}
