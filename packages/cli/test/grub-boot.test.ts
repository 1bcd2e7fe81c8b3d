// End-to-end: Debian's GRUB 2 (i386-pc), a bootloader nobody here wrote, boots from a disk
// image through kvmts's BIOS with the built CLI (dist/bin.js; build it with `pnpm turbo run
// build --filter=@kvmts/cli...`). GRUB comes from `apt-get download grub-common grub-pc-bin`
// (cached in ~/.cache/kvmts/grub, see grub/fetch.ts); the disk is laid out in memory
// (grub/disk.ts): GRUB's MBR, core.img with an embedded config, and a partition holding a tar
// archive that GRUB's `tar` module reads as a filesystem. The last test boots the same GRUB
// disk with Debian's SeaBIOS instead of kvmts's BIOS (`kvmts run --bios`, the disk on
// virtio-blk). When CI is set, anything missing (apt, the packages, the CLI build, the
// reference guest) fails the test; otherwise the test is skipped with the reason printed.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultGuestDir } from '../src/guest/fetch.js';
import { grubDisk, ustar } from './grub/disk.js';
import { PackageUnavailable, fetchGrub, fetchSeabios, makeCoreImage, readBootImg, type GrubTools } from './grub/fetch.js';
import { runCli } from './e2e.js';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(here, '../dist/bin.js');
const haveBin = existsSync(bin);
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
const guestDir = defaultGuestDir();
const kernel = join(guestDir, 'bzImage');
const initrd = join(guestDir, 'initramfs.cpio.gz');
const haveGuest = existsSync(kernel) && existsSync(initrd);

/** What `fetch` gives, or why it cannot be had (fetched once, when the file is collected). */
async function load<T>(fetch: (options: { log: (line: string) => void }) => Promise<T>): Promise<{ value?: T; reason?: string }> {
  try {
    return { value: await fetch({ log: (line) => console.log(`grub-boot: ${line}`) }) };
  } catch (err) {
    if (!(err instanceof PackageUnavailable)) throw err;
    return { reason: err.message };
  }
}
const grub = await load(fetchGrub);
const seabios = grub.reason === undefined ? await load(fetchSeabios) : { reason: 'GRUB is unavailable' };
const skipReason = inCi
  ? undefined
  : grub.reason !== undefined
    ? `GRUB is unavailable: ${grub.reason}`
    : !haveBin
      ? `${bin} is missing: run 'pnpm turbo run build --filter=@kvmts/cli...'`
      : undefined;
if (skipReason !== undefined) console.log(`grub-boot: skipped: ${skipReason}`);
else if (!inCi && seabios.reason !== undefined) console.log(`grub-boot: SeaBIOS test skipped: SeaBIOS is unavailable: ${seabios.reason}`);

const run = runCli;

/** Fails with the reason when something the tests need is missing (reached only in CI or when all is there). */
function requireGrub(): GrubTools {
  expect(grub.reason, 'GRUB could not be fetched with apt-get').toBeUndefined();
  expect(haveBin, `${bin} is missing: run 'pnpm turbo run build --filter=@kvmts/cli...' first`).toBe(true);
  return grub.value!;
}

const dir = mkdtempSync(join(tmpdir(), 'kvmts-grub-boot-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const enc = new TextEncoder();
const GREETING = 'hello from the tar partition, read by GRUB through INT 13h';
/** The console output of a run, with what went wrong, for failed assertions. */
const context = (r: { status: number | null; stdout: string; stderr: string }): string => {
  const lines = r.stdout.split(/\r?\n/);
  return `status ${String(r.status)}\n--- stderr\n${r.stderr}\n--- last console lines\n${lines.slice(-40).join('\n')}`;
};

/** A disk whose GRUB prints GRUB-OK-KVMTS, shows greeting.txt from its partition and halts; returns its path. */
async function writeHaltDisk(tools: GrubTools, name: string): Promise<string> {
  const coreImg = await makeCoreImage(tools, {
    // The last echo gives a serial console that sends lazily (SeaBIOS's) time to flush the greeting.
    config: `echo GRUB-OK-KVMTS\ncat (hd0,msdos1)/greeting.txt\necho GRUB-HALTING\nhalt\n`,
    modules: ['biosdisk', 'part_msdos', 'tar', 'normal', 'echo', 'cat', 'halt'],
  });
  const img = join(dir, name);
  writeFileSync(img, grubDisk({ bootImg: readBootImg(tools), coreImg, partition: ustar([{ name: 'greeting.txt', data: enc.encode(`${GREETING}\n`) }]) }));
  return img;
}

describe.skipIf(skipReason !== undefined)('GRUB 2 from disk (Debian grub-pc-bin)', () => {
  it('runs its embedded config: prints, reads a file from the disk, and powers off with halt', async () => {
    const img = await writeHaltDisk(requireGrub(), 'grub-halt.img');
    const r = await run(['run', '--disk', img, '--mem', '64M'], 120_000);
    expect(r.stdout, context(r)).toContain('Booting from Hard Disk 0x80...');
    expect(r.stdout, context(r)).toContain('GRUB loading');
    // GRUB writes with INT 10h AH=09h; the BIOS mirrors that to the serial console.
    expect(r.stdout.split(/\r?\n\r?/), context(r)).toContain('GRUB-OK-KVMTS');
    expect(r.stdout, context(r)).toContain(GREETING);
    // GRUB's halt on i386-pc tries ACPI first (the DSDT's \_S5 written to PM1a_CNT), then APM.
    expect(r.stderr, context(r)).toContain('kvmts: exit: guest powered off (ACPI S5)');
    expect(r.status, context(r)).toBe(0);
  }, 180_000);

  it("runs normal mode: reads grub.cfg from the disk, shows the menu and boots its default entry after the timeout", async () => {
    const tools = requireGrub();
    const coreImg = await makeCoreImage(tools, {
      config: '', // no embedded commands: normal mode reads $prefix/grub.cfg
      modules: ['biosdisk', 'part_msdos', 'tar', 'normal', 'echo', 'halt'],
    });
    const grubCfg = [
      'set timeout=1',
      "menuentry 'kvmts first entry' {",
      '  echo MENU-ENTRY-OK',
      '  halt',
      '}',
      "menuentry 'kvmts second entry' {",
      '  echo WRONG-ENTRY',
      '}',
      '',
    ].join('\n');
    const img = join(dir, 'grub-menu.img');
    writeFileSync(img, grubDisk({ bootImg: readBootImg(tools), coreImg, partition: ustar([{ name: 'boot/grub/grub.cfg', data: enc.encode(grubCfg) }]) }));
    const r = await run(['run', '--disk', img, '--mem', '64M'], 120_000);
    expect(r.stdout, context(r)).toContain('GNU GRUB  version');
    expect(r.stdout, context(r)).toContain('kvmts second entry');
    // The countdown needs the timer (GRUB reads the BDA tick count, kept by IRQ 0).
    expect(r.stdout, context(r)).toContain('The highlighted entry will be executed automatically in 0s.');
    expect(r.stdout, context(r)).toContain("Booting `kvmts first entry'");
    expect(r.stdout, context(r)).toContain('MENU-ENTRY-OK');
    expect(r.stdout, context(r)).not.toContain('WRONG-ENTRY');
    expect(r.stderr, context(r)).toContain('kvmts: exit: guest powered off (ACPI S5)');
    expect(r.status, context(r)).toBe(0);
  }, 180_000);

  it.skipIf(!inCi && !haveGuest)(
    'loads the reference kernel and initrd from the disk with linux/initrd and boots them to GUEST-DONE',
    async () => {
      const tools = requireGrub();
      // Skipped above outside CI; CI fetches the guest first.
      expect(haveGuest, `no reference guest in ${guestDir}: run 'kvmts guest fetch' (or set KVMTS_GUEST_DIR)`).toBe(true);
      const coreImg = await makeCoreImage(tools, {
        config: [
          'echo GRUB-OK-KVMTS',
          'linux (hd0,msdos1)/bzImage console=ttyS0',
          'initrd (hd0,msdos1)/initramfs.cpio.gz',
          'boot',
          '',
        ].join('\n'),
        modules: ['biosdisk', 'part_msdos', 'tar', 'normal', 'echo', 'linux'],
      });
      const partition = ustar([
        { name: 'bzImage', data: new Uint8Array(readFileSync(kernel)) },
        { name: 'initramfs.cpio.gz', data: new Uint8Array(readFileSync(initrd)) },
      ]);
      const img = join(dir, 'grub-linux.img');
      writeFileSync(img, grubDisk({ bootImg: readBootImg(tools), coreImg, partition }));
      const r = await run(['run', '--disk', img, '--mem', '256M', '--no-reboot'], 14 * 60_000);
      const lines = r.stdout.split(/\r?\n\r?/);
      expect(lines, context(r)).toContain('GRUB-OK-KVMTS');
      // GRUB's linux command passes its own BOOT_IMAGE= before the arguments.
      expect(r.stdout, context(r)).toContain('Kernel command line: BOOT_IMAGE=(hd0,msdos1)/bzImage console=ttyS0');
      expect(lines.some((l) => l.startsWith('GUEST-BOOT-OK ')), context(r)).toBe(true);
      expect(lines.some((l) => l.startsWith('GUEST-DONE ')), context(r)).toBe(true);
      expect(r.stdout, context(r)).toContain('reboot: Power down');
      expect(r.status, context(r)).toBe(0);
    },
    15 * 60_000,
  );
});

/** Terminal control sequences (SeaBIOS's serial console positions the cursor around each write). */
const stripAnsi = (text: string): string => text.replace(/\x1b(\[[0-9;?]*[A-Za-z]|c)/g, '');

describe.skipIf(skipReason !== undefined || (!inCi && seabios.reason !== undefined))('kvmts run --bios (Debian SeaBIOS)', () => {
  it('runs SeaBIOS through POST (fw_cfg, ACPI table loader, PCI, virtio-blk) and boots GRUB from a virtio disk', async () => {
    const tools = requireGrub();
    expect(seabios.reason, 'SeaBIOS could not be fetched with apt-get').toBeUndefined();
    const img = await writeHaltDisk(tools, 'seabios-grub.img');
    const r = await run(['run', '--bios', seabios.value!.biosBin, '--disk', `${img},if=virtio`, '--mem', '128M', '--no-reboot'], 120_000);
    const shown = stripAnsi(r.stdout);
    const ctx = `${context(r)}\n--- console without control sequences\n${shown}`;
    // SeaBIOS's log on the debug console (port 0x402) goes to stderr.
    expect(r.stderr, ctx).toContain('bios: Found QEMU fw_cfg');
    expect(r.stderr, ctx).toContain('bios: qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]');
    expect(r.stderr, ctx).toContain('bios: found virtio-blk at 00:02.0');
    // Its screen reaches COM1 through its serial console (fw_cfg etc/sercon-port).
    expect(shown, ctx).toContain('SeaBIOS (version');
    expect(shown, ctx).toContain('Booting from Hard Disk...');
    expect(shown, ctx).toContain('GRUB loading');
    expect(shown, ctx).toContain('GRUB-OK-KVMTS');
    expect(shown, ctx).toContain(GREETING);
    // SeaBIOS placed kvmts's ACPI tables (fw_cfg etc/table-loader), so GRUB's halt finds \_S5.
    expect(r.stderr, ctx).toContain('kvmts: exit: guest powered off (ACPI S5)');
    expect(r.status, ctx).toBe(0);
  }, 180_000);
});
