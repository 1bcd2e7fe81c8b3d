/**
 * `kvmts run --kernel` with a Multiboot (version 1) kernel, as QEMU's `-kernel` boots one: the
 * kernel and each `--initrd` file (as a module) are loaded by `@kvmts/firmware`'s Multiboot
 * loader, and the kernel starts in 32-bit protected mode on a {@link PcMachine}. Console, run
 * loop, exit statuses and reboots are those of Linux boot ({@link runPcGuest}).
 * @module
 */

import { readFileSync } from 'node:fs';
import { BootError, enterMultiboot, isMultiboot, loadMultiboot, parseBzImage, parseMultiboot } from '@kvmts/firmware';
import { formatSize } from '../args.js';
import { CliError } from '../errors.js';
import { readInput, runPcGuest, type GuestInput, type LinuxRunIo, type PcRunOptions } from './linux.js';

/** Smallest RAM for a Multiboot kernel: the PC's low memory, 1 MiB above it, and room for the ACPI tables. */
export const MIN_MULTIBOOT_MEM = 4 * 1024 * 1024;

/** Options of `kvmts run --kernel` for a Multiboot kernel. */
export interface MultibootRunOptions extends PcRunOptions {
  kernel: string;
  /** Module files in order (`--initrd`, repeatable); each module's string is its path. */
  modules: readonly string[];
  /** Arguments after the kernel's path on its command line. */
  append: string;
}

/**
 * Whether the file at `path` is a Multiboot kernel rather than a Linux bzImage. False when it
 * cannot be read or is neither, so the Linux path reports the problem as before.
 */
export function isMultibootKernelFile(path: string): boolean {
  let data: Uint8Array;
  try {
    data = readFileSync(path);
  } catch {
    return false;
  }
  try {
    parseBzImage(data);
    return false;
  } catch {
    return isMultiboot(data);
  }
}

/**
 * The kernel's command line: its path, then the arguments, as GRUB and QEMU pass it (kernels
 * such as Xen skip the first word).
 */
export function multibootCmdline(kernel: string, append: string): string {
  return append === '' ? kernel : `${kernel} ${append}`;
}

/** `kvmts run --kernel MULTIBOOT ...`: boots until the guest ends; returns the exit status. */
export async function runMultiboot(options: MultibootRunOptions, io: LinuxRunIo, input?: GuestInput): Promise<number> {
  if (options.memSize < MIN_MULTIBOOT_MEM) {
    throw new CliError(`--mem ${formatSize(options.memSize)} is too small for a Multiboot kernel: at least ${formatSize(MIN_MULTIBOOT_MEM)} is needed`);
  }
  const name = `'${options.kernel}'`;
  const kernel = readInput(options.kernel, 'kernel');
  try {
    for (const warning of parseMultiboot(kernel, name).warnings) io.stderr(`kvmts: warning: ${warning}\n`);
  } catch (err) {
    if (err instanceof BootError) throw new CliError(err.message);
    throw err;
  }
  const modules = options.modules.map((path) => ({ data: readInput(path, 'initrd (Multiboot module)'), string: path }));
  const cmdline = multibootCmdline(options.kernel, options.append);
  return runPcGuest(options, io, input, (machine, acpi) => {
    try {
      const loaded = loadMultiboot(machine.vm.memory, {
        kernel,
        modules,
        cmdline,
        ramSize: options.memSize,
        name,
        ...(acpi ? { reserved: [acpi.e820Reserved] } : {}),
      });
      enterMultiboot(machine.vcpu, loaded);
    } catch (err) {
      if (err instanceof BootError) throw new CliError(err.message);
      throw err;
    }
  });
}
