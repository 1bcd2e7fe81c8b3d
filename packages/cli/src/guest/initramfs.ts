/**
 * The guest's initramfs (busybox, the virtio modules and /init, as a gzipped newc cpio) and
 * its test disk. Pure functions of their inputs: the same inputs give the same bytes.
 * @module
 */

import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { type CpioEntry, sortEntries, writeNewc } from './cpio.js';
import { buildDirtier } from './dirtier.js';
import { BUSYBOX_APPLETS, INIT_SCRIPT, INIT_SCRIPT_RECIPE, LOAD_ORDER_FILE, MODULE_DIR } from './init-script.js';

/** What goes into the initramfs. */
export interface InitramfsInputs {
  /** The static busybox binary. */
  busybox: Uint8Array;
  /** Kernel modules in load order; `name` is the module name (`virtio_pci`). */
  modules: readonly { name: string; data: Uint8Array }[];
  /** Timestamp of every entry (SOURCE_DATE_EPOCH). Default 0. */
  mtime?: number;
}

/** Our own programs in the initramfs, beside busybox: see each builder. */
export const GUEST_TOOLS: readonly { path: string; data: Uint8Array }[] = [{ path: 'bin/kvmts-dirty', data: buildDirtier() }];

/**
 * What decides whether a built guest's initramfs is current besides the packages: the /init
 * script, the busybox applet links and our tools. `kvmts guest fetch` records its sha256 as
 * `init_sha256` and rebuilds a guest whose recorded value differs.
 */
export const INITRAMFS_RECIPE = `${INIT_SCRIPT_RECIPE}# tools: ${GUEST_TOOLS.map((t) => `${t.path} ${createHash('sha256').update(t.data).digest('hex')}`).join(' ')}\n`;

/** Directories of the initramfs, all mode 0755. */
const DIRS = ['bin', 'dev', 'etc', 'lib', MODULE_DIR, 'proc', 'sbin', 'sys', 'tmp', 'usr', 'usr/bin', 'usr/sbin'];

/** The initramfs entries, sorted by path. */
export function initramfsEntries(inputs: InitramfsInputs): CpioEntry[] {
  const entries: CpioEntry[] = DIRS.map((path) => ({ type: 'dir', path, mode: 0o755 }));
  entries.push({ type: 'file', path: 'init', mode: 0o755, data: new TextEncoder().encode(INIT_SCRIPT) });
  entries.push({ type: 'file', path: 'bin/busybox', mode: 0o755, data: inputs.busybox });
  for (const applet of BUSYBOX_APPLETS) entries.push({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  for (const tool of GUEST_TOOLS) entries.push({ type: 'file', path: tool.path, mode: 0o755, data: tool.data });
  // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
  entries.push({ type: 'char', path: 'dev/console', mode: 0o600, major: 5, minor: 1 });
  for (const m of inputs.modules) entries.push({ type: 'file', path: `${MODULE_DIR}/${m.name}.ko`, mode: 0o644, data: m.data });
  const order = inputs.modules.map((m) => `${m.name}\n`).join('');
  entries.push({ type: 'file', path: LOAD_ORDER_FILE, mode: 0o644, data: new TextEncoder().encode(order) });
  return sortEntries(entries);
}

/** The uncompressed cpio archive: entries by path, inodes from 1, uid/gid 0, one mtime. */
export function buildInitramfsCpio(inputs: InitramfsInputs): Uint8Array {
  return writeNewc(initramfsEntries(inputs), { mtime: inputs.mtime ?? 0, uid: 0, gid: 0 });
}

/**
 * gzip at level 9 with a fixed header: no file name, mtime 0 and OS "Unix" (zlib writes its
 * build's OS code there, which differs on macOS), so the bytes do not depend on the host.
 */
export function gzipReproducible(data: Uint8Array): Uint8Array {
  const gz = new Uint8Array(gzipSync(data, { level: 9 }));
  gz[4] = gz[5] = gz[6] = gz[7] = 0; // MTIME
  gz[9] = 3; // OS: Unix
  return gz;
}

/** The gzipped initramfs, and its uncompressed cpio. */
export function buildInitramfs(inputs: InitramfsInputs): { cpio: Uint8Array; gz: Uint8Array } {
  const cpio = buildInitramfsCpio(inputs);
  return { cpio, gz: gzipReproducible(cpio) };
}

/** The first bytes of the test disk; /init prints them as `GUEST-BLK vda … sig=…`. */
export const DISK_SIGNATURE = 'VIRTIO-BLK-DISK-SIGNATURE-0001';
/** Size of the test disk: 8 MiB, 16384 sectors of 512 bytes. */
export const DISK_SIZE = 8 * 1024 * 1024;

/** The raw test disk: zeros, with `DISK_SIGNATURE` and a newline at the start of sector 0. */
export function buildDiskImage(size: number = DISK_SIZE): Uint8Array {
  const sig = new TextEncoder().encode(`${DISK_SIGNATURE}\n`);
  if (size < 512 || size % 512 !== 0) throw new RangeError(`disk size ${size} is not a positive multiple of 512`);
  const disk = new Uint8Array(size);
  disk.set(sig, 0);
  return disk;
}
