// Debian's GRUB for the BIOS (i386-pc), SeaBIOS and memtest86+, for the boot tests, without
// installing anything: `apt-get download grub-common grub-pc-bin` (and `seabios`, `memtest86+`) into a cache directory,
// `dpkg-deb -x` them there, and grub-mkimage (grub-common's, a host binary) builds core.img
// from grub-pc-bin's modules. The i386-pc images and modules are the same in every
// architecture's grub-pc-bin, so the host's architecture is tried first and then i386/amd64.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOnPath, lastLine, runHostCommand, type RunResult } from '../../src/guest/host.js';

/** A package cannot be had here: apt-get or dpkg-deb is missing, or apt could not download it. */
export class PackageUnavailable extends Error {
  override readonly name = 'PackageUnavailable';
}

export interface GrubTools {
  /** grub-mkimage from the unpacked grub-common. */
  mkimage: string;
  /** The unpacked usr/lib/grub/i386-pc: boot.img, kernel.img, *.mod. */
  moduleDir: string;
  /** The Debian version of the packages, e.g. 2.06-13+deb12u2. */
  version: string;
}

/** `$KVMTS_GRUB_DIR`, else ~/.cache/kvmts/grub. */
export function defaultGrubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.KVMTS_GRUB_DIR;
  return dir !== undefined && dir !== '' ? dir : join(homedir(), '.cache', 'kvmts', 'grub');
}

/** A package to download: its name, and the `apt-get download` arguments to try in turn. */
interface DebPackage {
  name: string;
  specs: readonly string[];
}
const GRUB_PACKAGES: readonly DebPackage[] = [
  { name: 'grub-common', specs: ['grub-common'] },
  { name: 'grub-pc-bin', specs: ['grub-pc-bin', 'grub-pc-bin:i386', 'grub-pc-bin:amd64'] },
];
const SEABIOS_PACKAGE: DebPackage = { name: 'seabios', specs: ['seabios'] };
const MEMTEST_PACKAGE: DebPackage = { name: 'memtest86+', specs: ['memtest86+'] };

/** The cached .deb of `pkg` (apt-get download's name_version_arch.deb), newest name first. */
function cachedDeb(dir: string, pkg: string): { file: string; version: string } | undefined {
  const pattern = new RegExp(`^${pkg.replace(/[.+]/g, '\\$&')}_([^_]+)_[^_]+\\.deb$`);
  const matches = existsSync(dir) ? readdirSync(dir).filter((f) => pattern.test(f)).sort().reverse() : [];
  const file = matches[0];
  if (file === undefined) return undefined;
  return { file: join(dir, file), version: decodeURIComponent(pattern.exec(file)![1]!) };
}

const isRoot = (): boolean => process.getuid?.() === 0;

async function aptDownload(dir: string, specs: readonly string[]): Promise<RunResult> {
  // As root, apt's _apt sandbox user may not be able to write into the cache directory.
  const sandbox = isRoot() ? ['-o', 'APT::Sandbox::User=root'] : [];
  return runHostCommand('apt-get', ['download', ...sandbox, ...specs], { cwd: dir });
}

/** Downloads whichever of the packages the cache lacks; `apt-get update` (as root) when apt does not know them. */
async function download(dir: string, missing: readonly DebPackage[], log: (line: string) => void): Promise<void> {
  let updated = false;
  for (const { name: pkg, specs } of missing) {
    let last: RunResult | undefined;
    for (;;) {
      for (const spec of specs) {
        log(`downloading ${spec} (apt-get download) into ${dir}`);
        last = await aptDownload(dir, [spec]);
        if (last.status === 0 && cachedDeb(dir, pkg)) break;
      }
      if (cachedDeb(dir, pkg) || updated || !isRoot()) break;
      // Stale or missing package lists: refresh them once. A partial failure (one index
      // failing) still leaves usable lists, so its status is not fatal.
      log('refreshing apt package lists (apt-get update)');
      const r = await runHostCommand('apt-get', ['update']);
      if (r.missing) throw new PackageUnavailable(`apt-get update could not run: ${lastLine(r)}`);
      updated = true;
    }
    if (!cachedDeb(dir, pkg)) {
      throw new PackageUnavailable(`apt-get download ${pkg} failed: ${last ? lastLine(last) : 'not tried'}${isRoot() ? '' : " (as another user than root, run 'apt-get update' first)"}`);
    }
  }
}

/** Unpacks the .debs into `<dir>/<rootName>` (once; atomically, through a temporary directory). */
async function unpack(dir: string, debs: readonly string[], rootName: string): Promise<string> {
  const root = join(dir, rootName);
  const stamp = join(root, '.unpacked');
  if (existsSync(stamp)) return root;
  const tmp = mkdtempSync(join(dir, '.unpack-'));
  try {
    for (const deb of debs) {
      const r = await runHostCommand('dpkg-deb', ['-x', deb, tmp]);
      if (r.status !== 0) throw new PackageUnavailable(`dpkg-deb -x ${deb} failed: ${lastLine(r)}`);
    }
    writeFileSync(join(tmp, '.unpacked'), `${debs.join('\n')}\n`);
    rmSync(root, { recursive: true, force: true });
    renameSync(tmp, root);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return root;
}

export interface FetchOptions {
  /** Where the .debs and what they hold are kept (default: {@link defaultGrubCacheDir}). */
  cacheDir?: string;
  log?: (line: string) => void;
}

/** Downloads (as needed) and unpacks `packages` under `cacheDir`; returns the unpacked root and the versions. */
async function fetchDebs(packages: readonly DebPackage[], { cacheDir = defaultGrubCacheDir(), log = () => {} }: FetchOptions): Promise<{ root: string; versions: string[] }> {
  for (const tool of ['apt-get', 'dpkg-deb']) {
    if (!findOnPath(tool)) throw new PackageUnavailable(`${tool} is not on PATH (needed for Debian's ${packages.map((p) => p.name).join(', ')})`);
  }
  mkdirSync(cacheDir, { recursive: true });
  const missing = packages.filter((p) => !cachedDeb(cacheDir, p.name));
  if (missing.length > 0) await download(cacheDir, missing, log);
  const debs = packages.map((p) => cachedDeb(cacheDir, p.name)!);
  const versions = debs.map((d) => d.version);
  const rootName = `root-${packages.map((p, i) => `${p.name}_${versions[i]!}`).join('+')}`;
  return { root: await unpack(cacheDir, debs.map((d) => d.file), rootName), versions };
}

/**
 * GRUB's tools and i386-pc modules, downloaded and unpacked under `cacheDir` as needed. Throws
 * PackageUnavailable with the reason when they cannot be had.
 */
export async function fetchGrub(options: FetchOptions = {}): Promise<GrubTools> {
  const { root, versions } = await fetchDebs(GRUB_PACKAGES, options);
  const version = versions[1]!;
  const tools: GrubTools = { mkimage: join(root, 'usr/bin/grub-mkimage'), moduleDir: join(root, 'usr/lib/grub/i386-pc'), version };
  for (const file of [tools.mkimage, join(tools.moduleDir, 'boot.img'), join(tools.moduleDir, 'kernel.img')]) {
    if (!existsSync(file)) throw new PackageUnavailable(`the unpacked GRUB packages in ${root} have no ${file}`);
  }
  const r = await runHostCommand(tools.mkimage, ['--version']);
  if (r.status !== 0) throw new PackageUnavailable(`${tools.mkimage} does not run on this host: ${lastLine(r)}`);
  return tools;
}

export interface CoreImageOptions {
  /** The configuration embedded in core.img, run before anything is read from disk. */
  config: string;
  /** Modules built into core.img (their dependencies are added by grub-mkimage). */
  modules: readonly string[];
  /** GRUB's $prefix, where it would look for grub.cfg and more modules. */
  prefix?: string;
}

/** Runs grub-mkimage for i386-pc and returns core.img. */
export async function makeCoreImage(tools: GrubTools, { config, modules, prefix = '(hd0,msdos1)/boot/grub' }: CoreImageOptions): Promise<Uint8Array> {
  const work = mkdtempSync(join(tmpdir(), 'kvmts-grub-mkimage-'));
  try {
    const cfg = join(work, 'embedded.cfg');
    const out = join(work, 'core.img');
    writeFileSync(cfg, config);
    const r = await runHostCommand(tools.mkimage, ['-O', 'i386-pc', '-d', tools.moduleDir, '-o', out, '-p', prefix, '-c', cfg, ...modules]);
    if (r.status !== 0) throw new Error(`grub-mkimage failed: ${lastLine(r)}`);
    return new Uint8Array(readFileSync(out));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** GRUB's MBR code (boot.img) from the unpacked modules. */
export function readBootImg(tools: GrubTools): Uint8Array {
  return new Uint8Array(readFileSync(join(tools.moduleDir, 'boot.img')));
}

/** SeaBIOS's image for QEMU's PC (`/usr/share/seabios/bios.bin` of Debian's seabios), unpacked under `cacheDir`. */
export async function fetchSeabios(options: FetchOptions = {}): Promise<{ biosBin: string; version: string }> {
  const { root, versions } = await fetchDebs([SEABIOS_PACKAGE], options);
  const biosBin = join(root, 'usr/share/seabios/bios.bin');
  if (!existsSync(biosBin)) throw new PackageUnavailable(`the unpacked seabios package in ${root} has no usr/share/seabios/bios.bin`);
  return { biosBin, version: versions[0]! };
}

/** memtest86+'s 32-bit image with the Linux boot protocol (`boot/memtest86+ia32.bin`), unpacked under `cacheDir`. */
export async function fetchMemtest(options: FetchOptions = {}): Promise<{ image: string; version: string }> {
  const { root, versions } = await fetchDebs([MEMTEST_PACKAGE], options);
  const image = join(root, 'boot/memtest86+ia32.bin');
  if (!existsSync(image)) throw new PackageUnavailable(`the unpacked memtest86+ package in ${root} has no boot/memtest86+ia32.bin`);
  return { image, version: versions[0]! };
}
