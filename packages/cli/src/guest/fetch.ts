/**
 * `kvmts guest fetch`: build the default Linux guest from stock Debian i386 packages.
 *
 * Steps: check the host has apt; enable the i386 architecture for apt if needed (root);
 * refresh apt's lists if needed (root); pick the kernel (the `-unsigned` twin of what
 * `linux-image-686:i386` depends on) and `busybox-static:i386`; `apt-get download` them (or
 * reuse earlier downloads whose sha256 apt agrees with); unpack them; take the kernel, its
 * config and the virtio modules with everything they depend on; write the initramfs (our
 * own cpio writer and /init), the test disk and VERSIONS.txt.
 * @module
 */

import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CliError, ExitStatus } from '../errors.js';
import { describeFsError } from '../image.js';
import { decompressMember, extractDeb } from './deb.js';
import { type Runner, type RunResult, findOnPath, isRoot, lastLine, runHostCommand } from './host.js';
import { INITRAMFS_RECIPE, buildDiskImage, buildInitramfs } from './initramfs.js';
import { modinfoDepends, moduleName, parseModulesDep, readModinfo, resolveLoadOrder } from './modules.js';

/** The virtio drivers the guest loads (with their dependencies). */
export const VIRTIO_MODULES: readonly string[] = [
  'virtio_pci',
  'virtio_mmio',
  'virtio_blk',
  'virtio_net',
  'virtio_balloon',
  'virtio_console',
  'virtio_rng',
];

/** The metapackage whose dependency names the current 686 (non-PAE) kernel. */
export const KERNEL_METAPACKAGE = 'linux-image-686:i386';
/** Where busybox comes from. */
export const BUSYBOX_PACKAGE = 'busybox-static:i386';

/** The files of a fetched guest; VERSIONS.txt is written last. */
export const GUEST_FILES = ['bzImage', 'initramfs.cpio.gz', 'disk.img'] as const;
export const VERSIONS_FILE = 'VERSIONS.txt';

/** `$KVMTS_GUEST_DIR`, else `~/.cache/kvmts/guests/debian-i386`. */
export function defaultGuestDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const dir = env.KVMTS_GUEST_DIR;
  if (dir !== undefined && dir !== '') return resolve(dir);
  return join(home, '.cache', 'kvmts', 'guests', 'debian-i386');
}

/** Options of `kvmts guest fetch`. */
export interface FetchOptions {
  /** Output directory (made if missing). */
  out: string;
  /** Rebuild even if `out` already holds a complete guest. */
  force?: boolean;
  /** Run `apt-get update` first (root). It also runs when i386 was just enabled or apt does not know the packages. */
  update?: boolean;
  /** Timestamp of the initramfs entries (SOURCE_DATE_EPOCH). Default 0. */
  sourceDateEpoch?: number;
}

/** The host, for tests to replace. */
export interface FetchHost {
  run: Runner;
  which: (command: string) => string | undefined;
  isRoot: () => boolean;
  /** Progress, one line at a time (without newline). */
  log: (line: string) => void;
}

/** What `fetchGuest` did. */
export interface FetchResult {
  dir: string;
  /** False when `dir` already held a complete guest and nothing was done. */
  built: boolean;
  kernelRelease?: string;
  /** sha256 of each output file, by name. */
  sha256: Record<string, string>;
}

export const defaultFetchHost = (log: (line: string) => void): FetchHost => ({
  run: runHostCommand,
  which: (c) => findOnPath(c),
  isRoot,
  log,
});

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** The `<sha256>  <file>` lines of a VERSIONS.txt. */
export function parseSums(versions: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of versions.split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](\S+)$/.exec(line.trim());
    if (m) sums.set(m[2]!, m[1]!);
  }
  return sums;
}

/**
 * Whether `dir` holds a complete guest: VERSIONS.txt and every output, each matching its
 * recorded sha256. Returns the sums when complete, `undefined` when files are missing, and
 * throws a CliError when a file does not match.
 */
export function checkExistingGuest(dir: string): Record<string, string> | undefined {
  let versions: string;
  try {
    versions = readFileSync(join(dir, VERSIONS_FILE), 'utf8');
  } catch {
    return undefined;
  }
  const sums = parseSums(versions);
  // A guest built with another /init, other busybox applets or other tools is stale: rebuild it (the .deb files are kept).
  if (!versions.split('\n').includes(`init_sha256=${sha256(Buffer.from(INITRAMFS_RECIPE))}`)) return undefined;
  const out: Record<string, string> = {};
  for (const f of GUEST_FILES) {
    const want = sums.get(f);
    if (want === undefined || !existsSync(join(dir, f))) return undefined;
    const got = sha256(readFileSync(join(dir, f)));
    if (got !== want) {
      throw new CliError(`'${join(dir, f)}' does not match its sha256 in ${VERSIONS_FILE}; rebuild with 'kvmts guest fetch --force'`);
    }
    out[f] = got;
  }
  return out;
}

/** A one-line reason for a failed write, e.g. "no space left on device". */
export function describeWriteError(err: unknown): string {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'ENOSPC':
      return 'no space left on device';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EROFS':
      return 'read-only file system';
    default:
      return describeFsError(err);
  }
}

function cannotWrite(path: string, err: unknown): CliError {
  return new CliError(`cannot write '${path}': ${describeWriteError(err)}`, ExitStatus.CantCreate);
}

/** Write `data` to `dir/name` through a temporary file and a rename. */
export function writeOutput(dir: string, name: string, data: Uint8Array | string): void {
  const path = join(dir, name);
  const part = `${path}.part`;
  try {
    writeFileSync(part, data);
    renameSync(part, path);
  } catch (err) {
    rmSync(part, { force: true });
    throw cannotWrite(path, err);
  }
}

/** Make `dir` and check that files can be created in it. */
function prepareDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw cannotWrite(dir, err);
  }
  const probe = join(dir, `.kvmts-write-test-${process.pid}`);
  try {
    writeFileSync(probe, 'x');
    unlinkSync(probe);
  } catch (err) {
    rmSync(probe, { force: true });
    throw new CliError(`cannot write to '${dir}': ${describeWriteError(err)}; choose another directory with --out DIR`, ExitStatus.CantCreate);
  }
}

/** How host tools say the disk is full (ENOSPC, EDQUOT). */
const DISK_FULL = /no space left on device|disk quota exceeded/i;

const ROOT_HINT = 'run kvmts as root (e.g. with sudo), or run it yourself';

/** Check that the host has apt and dpkg. */
function checkTools(host: FetchHost): void {
  for (const tool of ['apt-get', 'apt-cache', 'dpkg']) {
    if (host.which(tool) === undefined) {
      throw new CliError(
        `${tool} not found: 'kvmts guest fetch' downloads the guest's Debian packages with apt, so it needs a Debian or Ubuntu host ` +
          `(or build the guest on one and copy it to the guest directory, see 'kvmts guest path')`,
        ExitStatus.Unavailable,
      );
    }
  }
}

/** Enable i386 and refresh apt's lists where needed. Returns whether `apt-get update` ran, and how. */
async function prepareApt(host: FetchHost, update: boolean): Promise<{ updated: boolean; updateResult?: RunResult }> {
  const native = await host.run('dpkg', ['--print-architecture']);
  if (native.status !== 0) throw new CliError(`dpkg --print-architecture failed: ${lastLine(native)}`, ExitStatus.Unavailable);
  let needUpdate = update;
  if (native.stdout.trim() !== 'i386') {
    const foreign = await host.run('dpkg', ['--print-foreign-architectures']);
    if (foreign.status !== 0) throw new CliError(`dpkg --print-foreign-architectures failed: ${lastLine(foreign)}`, ExitStatus.Unavailable);
    if (!foreign.stdout.split(/\s+/).includes('i386')) {
      if (!host.isRoot()) {
        throw new CliError(
          `apt is not set up for i386 packages: enabling it needs root for 'dpkg --add-architecture i386' and 'apt-get update'; ${ROOT_HINT}: ` +
            `sudo dpkg --add-architecture i386 && sudo apt-get update`,
          ExitStatus.NoPerm,
        );
      }
      host.log('enabling the i386 architecture for apt (dpkg --add-architecture i386)');
      const add = await host.run('dpkg', ['--add-architecture', 'i386']);
      if (add.status !== 0) throw new CliError(`dpkg --add-architecture i386 failed: ${lastLine(add)}`, ExitStatus.Unavailable);
      needUpdate = true;
    }
  }
  if (!needUpdate) return { updated: false };
  return { updated: true, updateResult: await aptUpdate(host) };
}

async function aptUpdate(host: FetchHost): Promise<RunResult> {
  if (!host.isRoot()) {
    throw new CliError(`'apt-get update' needs root; ${ROOT_HINT}: sudo apt-get update`, ExitStatus.NoPerm);
  }
  host.log('refreshing apt package lists (apt-get update)');
  const r = await host.run('apt-get', ['update']);
  // One failing index (a mirror mid-sync) need not matter: the packages are looked up next.
  if (r.status !== 0 || /^[WE]: /m.test(r.stderr)) host.log(`apt-get update had problems (${lastLine(r)}); trying the lists apt has`);
  return r;
}

/** The kernel package: the `-unsigned` twin of what linux-image-686:i386 depends on, if it exists. */
async function resolveKernelPackage(host: FetchHost): Promise<string | undefined> {
  const deps = await host.run('apt-cache', ['depends', KERNEL_METAPACKAGE]);
  const m = /^\s*Depends:\s*(linux-image-\d[^\s:<>]*)/m.exec(deps.stdout);
  if (deps.status !== 0 || !m) return undefined;
  const signed = m[1]!;
  const unsigned = `${signed}-unsigned`;
  if ((await candidate(host, unsigned, 'i386')) !== undefined) return `${unsigned}:i386`;
  host.log(`${unsigned}:i386 does not exist; using ${signed}:i386`);
  return `${signed}:i386`;
}

/** apt's candidate version of `name:arch`, or undefined. */
async function candidate(host: FetchHost, name: string, arch: string): Promise<string | undefined> {
  const r = await host.run('apt-cache', ['policy', `${name}:${arch}`]);
  const m = /^\s*Candidate:\s*(\S+)/m.exec(r.stdout);
  return r.status === 0 && m && m[1] !== '(none)' ? m[1] : undefined;
}

/** A package to download, with what apt knows about it. */
interface PackageRef {
  spec: string;
  name: string;
  arch: string;
  version: string;
  /** sha256 of the .deb as apt's lists give it, if they do. */
  sha256?: string;
}

async function describePackage(host: FetchHost, spec: string): Promise<PackageRef | undefined> {
  const [name, arch = 'i386'] = spec.split(':') as [string, string?];
  const version = await candidate(host, name, arch);
  if (version === undefined) return undefined;
  const show = await host.run('apt-cache', ['show', `${name}:${arch}=${version}`]);
  const sum = /^SHA256:\s*([0-9a-f]{64})\s*$/m.exec(show.stdout)?.[1];
  return { spec, name, arch, version, ...(sum ? { sha256: sum } : {}) };
}

/** apt-get download's file name: name_version_arch.deb, with the epoch's colon as %3a. */
export function debFileName(name: string, version: string, arch: string): string {
  return `${name}_${version.replace(/:/g, '%3a')}_${arch}.deb`;
}

/** The .deb of `pkg` in `debsDir`: reused if apt's sha256 matches, else downloaded. */
async function downloadPackage(host: FetchHost, pkg: PackageRef, debsDir: string): Promise<{ path: string; sha256: string }> {
  const file = join(debsDir, debFileName(pkg.name, pkg.version, pkg.arch));
  if (existsSync(file)) {
    const have = sha256(readFileSync(file));
    if (pkg.sha256 === undefined || have === pkg.sha256) {
      host.log(`using ${pkg.name}:${pkg.arch} ${pkg.version} downloaded before (${file})`);
      return { path: file, sha256: have };
    }
    rmSync(file, { force: true });
  }
  // Older versions of the same package are of no further use.
  for (const f of readdirSync(debsDir)) {
    if (f.startsWith(`${pkg.name}_`) && f.endsWith(`_${pkg.arch}.deb`)) rmSync(join(debsDir, f), { force: true });
  }
  host.log(`downloading ${pkg.name}:${pkg.arch} ${pkg.version} (apt-get download)`);
  // As root, apt drops to the _apt user for downloads, which may not write here.
  const sandbox = host.isRoot() ? ['-o', 'APT::Sandbox::User=root'] : [];
  const r = await host.run('apt-get', ['download', ...sandbox, `${pkg.name}:${pkg.arch}=${pkg.version}`], { cwd: debsDir });
  if (r.status !== 0 || !existsSync(file)) {
    rmSync(file, { force: true }); // a partial download
    const line = lastLine(r);
    if (DISK_FULL.test(line)) {
      throw new CliError(`apt-get download ${pkg.name}:${pkg.arch}=${pkg.version} failed: ${line} (the disk holding '${debsDir}' is full)`, ExitStatus.CantCreate);
    }
    throw new CliError(
      `apt-get download ${pkg.name}:${pkg.arch}=${pkg.version} failed: ${line} ` +
        `(check the network; if apt's lists are stale, retry as root with --update)`,
      ExitStatus.Unavailable,
    );
  }
  const got = sha256(readFileSync(file));
  if (pkg.sha256 !== undefined && got !== pkg.sha256) {
    throw new CliError(`downloaded ${file} has sha256 ${got}, but apt's lists say ${pkg.sha256}`, ExitStatus.Unavailable);
  }
  return { path: file, sha256: got };
}

/** All files under `dir` (relative paths), not following symlinks. */
function walk(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const d of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const p = rel === '' ? d.name : `${rel}/${d.name}`;
    if (d.isDirectory()) out.push(...walk(dir, p));
    else if (d.isFile()) out.push(p);
  }
  return out;
}

function firstExisting(root: string, candidates: readonly string[]): string | undefined {
  return candidates.map((c) => join(root, c)).find((p) => existsSync(p));
}

/** The kernel modules to put in the initramfs, in load order, read from an unpacked kernel package. */
export function collectModules(
  kernelRoot: string,
  release: string,
  wanted: readonly string[] = VIRTIO_MODULES,
): { name: string; data: Uint8Array }[] {
  const modRoot = firstExisting(kernelRoot, [`lib/modules/${release}`, `usr/lib/modules/${release}`]);
  if (modRoot === undefined) throw new CliError(`the kernel package has no modules for ${release}`, ExitStatus.Unavailable);
  const files = new Map<string, string>();
  for (const f of walk(modRoot)) {
    if (/\.ko(\.(xz|zst|gz))?$/.test(f)) files.set(moduleName(f), join(modRoot, f));
  }
  const cache = new Map<string, Uint8Array>();
  const load = (name: string): Uint8Array => {
    let data = cache.get(name);
    if (data === undefined) {
      const path = files.get(name)!;
      const raw = readFileSync(path);
      data = path.endsWith('.ko') ? new Uint8Array(raw) : decompressMember(path, raw);
      cache.set(name, data);
    }
    return data;
  };
  // depmod's modules.dep if the package has one (Debian makes it at install time), else
  // each module's own "depends=" from its .modinfo section: the same information.
  const depFile = join(modRoot, 'modules.dep');
  const fromDep = existsSync(depFile) ? parseModulesDep(readFileSync(depFile, 'utf8')).deps : undefined;
  const depsOf = (name: string): readonly string[] | undefined => {
    if (!files.has(name)) return undefined;
    return fromDep?.get(name) ?? modinfoDepends(readModinfo(load(name)));
  };
  let order: string[];
  try {
    order = resolveLoadOrder(wanted, depsOf);
  } catch (err) {
    throw new CliError(`kernel ${release}: ${err instanceof Error ? err.message : String(err)}`, ExitStatus.Unavailable);
  }
  return order.map((name) => ({ name, data: load(name) }));
}

/**
 * Build the guest into `options.out` (see the module description). Throws {@link CliError}
 * with a one-line message on failure; `host.log` gets progress lines.
 */
export async function fetchGuest(options: FetchOptions, host: FetchHost): Promise<FetchResult> {
  const dir = resolve(options.out);
  if (!options.force) {
    const sums = checkExistingGuest(dir);
    if (sums !== undefined) return { dir, built: false, sha256: sums };
  }
  const epoch = options.sourceDateEpoch ?? 0;

  checkTools(host);
  prepareDir(dir);
  const prepared = await prepareApt(host, options.update ?? false);
  let updateResult = prepared.updateResult;

  let kernelSpec = await resolveKernelPackage(host);
  if (kernelSpec === undefined && !prepared.updated) {
    if (!host.isRoot()) {
      throw new CliError(
        `apt does not know ${KERNEL_METAPACKAGE}: its i386 package lists are missing or stale; ${ROOT_HINT}: sudo apt-get update`,
        ExitStatus.NoPerm,
      );
    }
    updateResult = await aptUpdate(host);
    kernelSpec = await resolveKernelPackage(host);
  }
  if (kernelSpec === undefined) {
    const aptSaid = updateResult !== undefined && (updateResult.status !== 0 || /^[WE]: /m.test(updateResult.stderr));
    const why = aptSaid ? `; apt-get update said: ${lastLine(updateResult!)}` : '';
    throw new CliError(`apt cannot find ${KERNEL_METAPACKAGE} (no network, or no i386 lists?)${why}`, ExitStatus.Unavailable);
  }
  const packages: PackageRef[] = [];
  for (const spec of [kernelSpec, BUSYBOX_PACKAGE]) {
    const pkg = await describePackage(host, spec);
    if (pkg === undefined) throw new CliError(`apt has no candidate version of ${spec}`, ExitStatus.Unavailable);
    packages.push(pkg);
  }
  const [kernelPkg, busyboxPkg] = packages as [PackageRef, PackageRef];
  host.log(`kernel: ${kernelPkg.spec} ${kernelPkg.version}; busybox: ${busyboxPkg.spec} ${busyboxPkg.version}`);

  const debsDir = join(dir, '.debs');
  try {
    mkdirSync(debsDir, { recursive: true });
  } catch (err) {
    throw cannotWrite(debsDir, err);
  }
  const kernelDeb = await downloadPackage(host, kernelPkg, debsDir);
  const busyboxDeb = await downloadPackage(host, busyboxPkg, debsDir);

  // Unpack next to the output, not in a (possibly small, RAM-backed) /tmp: the kernel
  // package is a few hundred MB unpacked.
  let work: string;
  try {
    work = mkdtempSync(join(dir, '.work-'));
  } catch (err) {
    throw cannotWrite(join(dir, '.work-*'), err);
  }
  try {
    host.log(`unpacking the packages (${host.which('dpkg-deb') !== undefined ? 'dpkg-deb -x' : "no dpkg-deb: kvmts's own .deb reader"})`);
    const unpack = async (deb: string, into: string): Promise<void> => {
      try {
        await extractDeb(deb, into, host.run, host.which);
      } catch (err) {
        if (err instanceof CliError) throw err;
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== undefined) throw cannotWrite(into, err);
        const message = err instanceof Error ? err.message : String(err);
        if (DISK_FULL.test(message)) throw new CliError(`cannot unpack ${deb}: ${message}`, ExitStatus.CantCreate);
        throw new CliError(`cannot unpack ${deb}: ${err instanceof Error ? err.message : String(err)}`, ExitStatus.Unavailable);
      }
    };
    await unpack(kernelDeb.path, join(work, 'kernel'));
    await unpack(busyboxDeb.path, join(work, 'busybox'));

    const boot = join(work, 'kernel', 'boot');
    const images = existsSync(boot) ? readdirSync(boot).filter((f) => f.startsWith('vmlinuz-')).sort() : [];
    if (images.length !== 1) {
      throw new CliError(`${kernelPkg.spec} should hold one boot/vmlinuz-*, found ${images.length}`, ExitStatus.Unavailable);
    }
    const release = images[0]!.slice('vmlinuz-'.length);
    const bzImage = readFileSync(join(boot, images[0]!));
    const configPath = join(boot, `config-${release}`);
    const config = existsSync(configPath) ? readFileSync(configPath) : undefined;
    const modules = collectModules(join(work, 'kernel'), release);
    host.log(`kernel ${release}; modules in load order: ${modules.map((m) => m.name).join(' ')}`);

    const busyboxPath = firstExisting(join(work, 'busybox'), ['bin/busybox', 'usr/bin/busybox']);
    if (busyboxPath === undefined) throw new CliError(`${busyboxPkg.spec} has no bin/busybox`, ExitStatus.Unavailable);
    const initramfs = buildInitramfs({ busybox: readFileSync(busyboxPath), modules, mtime: epoch });
    const disk = buildDiskImage();

    const sums: Record<string, string> = {
      bzImage: sha256(bzImage),
      'initramfs.cpio.gz': sha256(initramfs.gz),
      'disk.img': sha256(disk),
    };
    const versions = [
      `# Debian i386 Linux guest for kvmts, written by 'kvmts guest fetch'`,
      `kernel_pkg=${kernelPkg.spec} version=${kernelPkg.version} deb_sha256=${kernelDeb.sha256}`,
      `busybox_pkg=${busyboxPkg.spec} version=${busyboxPkg.version} deb_sha256=${busyboxDeb.sha256}`,
      `kernel_release=${release}`,
      `modules=${modules.map((m) => m.name).join(' ')}`,
      `SOURCE_DATE_EPOCH=${epoch}`,
      `initramfs_cpio_sha256=${sha256(initramfs.cpio)}`,
      `init_sha256=${sha256(Buffer.from(INITRAMFS_RECIPE))}`,
      ...GUEST_FILES.map((f) => `${sums[f]}  ${f}`),
      '',
    ].join('\n');

    // From here on the directory is not a complete guest until VERSIONS.txt is back.
    rmSync(join(dir, VERSIONS_FILE), { force: true });
    writeOutput(dir, 'bzImage', bzImage);
    writeOutput(dir, 'initramfs.cpio.gz', initramfs.gz);
    writeOutput(dir, 'disk.img', disk);
    for (const f of readdirSync(dir)) {
      if (f.startsWith('config-') && f !== `config-${release}`) rmSync(join(dir, f), { force: true });
    }
    if (config !== undefined) writeOutput(dir, `config-${release}`, config);
    writeOutput(dir, VERSIONS_FILE, versions);
    return { dir, built: true, kernelRelease: release, sha256: sums };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
