/**
 * `kvmts guest path` and `kvmts guest fetch`.
 * @module
 */

import type { Command } from 'commander';
import { CliError, ExitStatus } from '../errors.js';
import type { CliIo } from '../main.js';
import { type FetchHost, GUEST_FILES, defaultFetchHost, defaultGuestDir, fetchGuest } from './fetch.js';

const FETCH_HELP = `
Builds the default Linux guest from stock Debian packages: the 686 kernel
(linux-image-*-686-unsigned:i386) with its virtio modules, and busybox-static:i386,
fetched with 'apt-get download' (nothing is installed). DIR gets:
  bzImage            the kernel, unmodified
  initramfs.cpio.gz  busybox, the virtio modules and an /init that reports on the
                     console (console=ttyS0): GUEST-BOOT-OK ... GUEST-DONE, then powers off
  disk.img           an 8 MiB raw disk whose sector 0 starts with
                     VIRTIO-BLK-DISK-SIGNATURE-0001
  config-<release>   the kernel's config
  VERSIONS.txt       packages, versions and sha256 sums
and keeps the downloaded .deb files in DIR/.debs for a later --force.

Root is needed only to set up apt: 'dpkg --add-architecture i386' when apt has no
i386 packages yet, and 'apt-get update' (run when i386 was just added, when apt does
not know the kernel package, or with --update). As another user, run those two
yourself first. The initramfs is reproducible: entries sorted, uid/gid 0, every
mtime SOURCE_DATE_EPOCH (default 0).

Exit status:
  0    the guest is in DIR (built now, or already there)
  64   bad command line, or DIR holds a guest that does not match VERSIONS.txt
  69   apt-get missing, or apt / the network failed
  73   cannot write DIR (permission denied, disk full, ...)
  77   root is needed to set up apt`;

/** Add the `guest` command group to `program`. */
export function addGuestCommands(
  program: Command,
  io: CliIo,
  setStatus: (status: number) => void,
  host: FetchHost = defaultFetchHost((line) => io.stderr(`kvmts: ${line}\n`)),
): void {
  const guest = program
    .command('guest')
    .description('The default Linux guest: a Debian i386 kernel, busybox and the virtio modules.');

  guest
    .command('path')
    .description("Print the default guest directory ($KVMTS_GUEST_DIR, else ~/.cache/kvmts/guests/debian-i386).")
    .action(() => {
      io.stdout(`${defaultGuestDir()}\n`);
      setStatus(ExitStatus.Ok);
    });

  guest
    .command('fetch')
    .description('Download the Debian packages and build the guest (bzImage, initramfs.cpio.gz, disk.img) in DIR.')
    .option('--out <dir>', "where to put the guest (default: 'kvmts guest path')")
    .option('--force', 'rebuild even if DIR already holds the guest')
    .option('--update', "run 'apt-get update' first (needs root)")
    .addHelpText('after', FETCH_HELP)
    .action(async (opts: { out?: string; force?: boolean; update?: boolean }) => {
      const result = await fetchGuest(
        {
          out: opts.out ?? defaultGuestDir(),
          force: opts.force ?? false,
          update: opts.update ?? false,
          sourceDateEpoch: sourceDateEpoch(process.env.SOURCE_DATE_EPOCH),
        },
        host,
      );
      if (!result.built) {
        io.stdout(`kvmts: the guest is already in '${result.dir}' ('kvmts guest fetch --force' rebuilds it)\n`);
      } else {
        io.stdout(`kvmts: wrote the Debian i386 guest (kernel ${result.kernelRelease}) to '${result.dir}'\n`);
        for (const f of GUEST_FILES) io.stdout(`${result.sha256[f]}  ${f}\n`);
      }
      setStatus(ExitStatus.Ok);
    });
}

/** SOURCE_DATE_EPOCH as a number of seconds; unset or empty means 0. */
export function sourceDateEpoch(text: string | undefined): number {
  if (text === undefined || text.trim() === '') return 0;
  const t = text.trim();
  if (!/^\d+$/.test(t) || Number(t) > 0xffffffff) {
    throw new CliError(`invalid SOURCE_DATE_EPOCH '${text}': expected seconds since 1970 (0 to 4294967295)`);
  }
  return Number(t);
}
