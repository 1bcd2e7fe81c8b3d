/**
 * `kvmts run --disk FILE`: boot disk images through kvmts's BIOS (`@kvmts/firmware`'s
 * {@link Bios}) on a {@link PcMachine}: the CPU starts at the reset vector, the BIOS boots the
 * first disk of the boot order (its sector 0 at 0000:7C00), and bootloaders use INT 10h/13h/
 * 15h/16h/1Ah. Console, run loop, exit statuses and reboots are those of Linux boot
 * ({@link runPcGuest}).
 * @module
 */

import { BIOS_CALL_PORT, Bios, FileDisk, type DiskImage } from '@kvmts/firmware';
import { formatSize } from '../args.js';
import { CliError, ExitStatus } from '../errors.js';
import { describeFsError } from '../image.js';
import { runPcGuest, type GuestInput, type LinuxRunIo, type PcRunOptions } from './linux.js';

/** Smallest RAM for BIOS boot: conventional memory, the BIOS area and a little above 1 MiB. */
export const MIN_BIOS_MEM = 2 * 1024 * 1024;
/** Default RAM for `kvmts run --disk`. */
export const DEFAULT_BIOS_MEM = 128 * 1024 * 1024;

/** How the disk is attached: IDE (the BIOS's INT 13h disks) or virtio-blk (for the OS only). */
export type DiskInterface = 'ide' | 'virtio';

/** One `--disk FILE[,ro][,if=ide|virtio]`. */
export interface DiskSpec {
  path: string;
  readOnly: boolean;
  interface: DiskInterface;
}

/**
 * Parses `FILE[,ro][,if=ide|virtio]` (a file name containing commas cannot be given);
 * without `if=` the disk gets `defaultInterface`.
 */
export function parseDiskSpec(spec: string, defaultInterface: DiskInterface = 'ide'): DiskSpec {
  const [path = '', ...opts] = spec.split(',');
  if (path === '') throw new CliError(`invalid --disk '${spec}': expected FILE[,ro][,if=ide|virtio]`);
  const disk: DiskSpec = { path, readOnly: false, interface: defaultInterface };
  for (const opt of opts) {
    if (opt === 'ro') disk.readOnly = true;
    else if (opt === 'if=ide' || opt === 'if=virtio') disk.interface = opt.slice(3) as DiskInterface;
    else throw new CliError(`invalid --disk option '${opt}' in '${spec}': expected ro or if=ide|virtio`);
  }
  return disk;
}

/** Options of `kvmts run --disk`. */
export interface BiosRunOptions extends PcRunOptions {
  disks: readonly DiskSpec[];
  /** Index in `disks` of the disk to boot; the other BIOS disks follow in order. Default 0. */
  boot?: number;
}

/** Opens the BIOS's disks (hard disks 0x80, 0x81, ... in order), or throws a one-line CliError. */
function openDisks(specs: readonly DiskSpec[]): FileDisk[] {
  const opened: FileDisk[] = [];
  try {
    for (const spec of specs) {
      try {
        opened.push(new FileDisk(spec.path, spec.readOnly));
      } catch (err) {
        throw new CliError(`cannot open disk image '${spec.path}': ${describeFsError(err)}`);
      }
    }
    return opened;
  } catch (err) {
    for (const d of opened) d.close();
    throw err;
  }
}

/** `kvmts run --disk FILE ...`: boots until the guest ends; returns the exit status. */
export async function runBios(options: BiosRunOptions, io: LinuxRunIo, input?: GuestInput): Promise<number> {
  if (options.memSize < MIN_BIOS_MEM) {
    throw new CliError(`--mem ${formatSize(options.memSize)} is too small for BIOS boot: at least ${formatSize(MIN_BIOS_MEM)} is needed`);
  }
  const biosSpecs = options.disks.filter((d) => d.interface === 'ide');
  if (biosSpecs.length === 0) throw new CliError('nothing to boot: the BIOS boots --disk FILE with if=ide (it has no virtio-blk driver)');
  for (const d of options.disks) {
    if (d.interface !== 'ide') throw new CliError(`--disk '${d.path}',if=${d.interface}: runBios takes the BIOS's disks; give virtio disks as options.virtio`);
  }
  const boot = options.boot ?? 0;
  if (!Number.isInteger(boot) || boot < 0 || boot >= biosSpecs.length) {
    throw new CliError(`--boot ${boot} does not name a disk: give 0..${biosSpecs.length - 1} (the --disk options in order)`);
  }
  const disks: DiskImage[] = openDisks(biosSpecs);
  const bootOrder = [0x80 + boot, ...disks.map((_, i) => 0x80 + i).filter((d) => d !== 0x80 + boot)];
  let bios: Bios | undefined;
  try {
    const status = await runPcGuest(options, io, input, (machine, acpi) => {
      bios = new Bios({
        vm: machine.vm,
        vcpu: machine.vcpu,
        io: machine.ioBus,
        ramSize: options.memSize,
        hardDisks: disks,
        bootOrder,
        ...(acpi ? { acpi } : {}),
        nowNs: () => machine.vm.clock.nowNs(),
      });
      bios.install();
      machine.ioBus.insert(bios.callPort, BIOS_CALL_PORT, 1);
    });
    const result = bios?.bootResult;
    if (result?.kind === 'no-bootable-device') {
      const tried = result.tried.map((t) => `${biosSpecs[t.drive - 0x80]?.path ?? `drive 0x${t.drive.toString(16)}`}: ${t.reason}`);
      io.stderr(`kvmts: no bootable disk${tried.length > 0 ? ` (${tried.join('; ')})` : ''}\n`);
      return ExitStatus.Unavailable;
    }
    return status;
  } finally {
    for (const d of disks) d.close?.();
  }
}
