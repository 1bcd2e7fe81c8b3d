// Synthetic kernel modules, tar and ar archives and .deb files for the guest-fetch tests.
import { gzipSync } from 'node:zlib';

const enc = new TextEncoder();

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A minimal relocatable ELF file with a `.modinfo` section holding `name=` and `depends=`,
 * like a kernel module; its other sections are an empty `.text` and the section name table.
 */
export function fakeModule(
  name: string,
  depends: readonly string[],
  { bits = 32, bigEndian = false }: { bits?: 32 | 64; bigEndian?: boolean } = {},
): Uint8Array {
  const le = !bigEndian;
  const modinfo = enc.encode(`license=GPL\0depends=${depends.join(',')}\0retpoline=Y\0name=${name}\0vermagic=6.1.0 SMP mod_unload 686\0`);
  const shstrtab = enc.encode('\0.text\0.modinfo\0.shstrtab\0');
  const ehsize = bits === 32 ? 52 : 64;
  const shentsize = bits === 32 ? 40 : 64;
  const modinfoOff = ehsize;
  const strOff = modinfoOff + modinfo.length;
  const shoff = Math.ceil((strOff + shstrtab.length) / 8) * 8;
  const buf = new Uint8Array(shoff + 4 * shentsize);
  const dv = new DataView(buf.buffer);
  buf.set([0x7f, 0x45, 0x4c, 0x46, bits === 32 ? 1 : 2, le ? 1 : 2, 1], 0);
  dv.setUint16(16, 1, le); // ET_REL
  dv.setUint16(18, bits === 32 ? 3 : 62, le);
  dv.setUint32(20, 1, le);
  if (bits === 32) {
    dv.setUint32(0x20, shoff, le);
    dv.setUint16(0x28, ehsize, le);
    dv.setUint16(0x2e, shentsize, le);
    dv.setUint16(0x30, 4, le);
    dv.setUint16(0x32, 3, le);
  } else {
    dv.setBigUint64(0x28, BigInt(shoff), le);
    dv.setUint16(0x34, ehsize, le);
    dv.setUint16(0x3a, shentsize, le);
    dv.setUint16(0x3c, 4, le);
    dv.setUint16(0x3e, 3, le);
  }
  buf.set(modinfo, modinfoOff);
  buf.set(shstrtab, strOff);
  const section = (i: number, nameOff: number, type: number, offset: number, size: number): void => {
    const b = shoff + i * shentsize;
    dv.setUint32(b, nameOff, le);
    dv.setUint32(b + 4, type, le);
    if (bits === 32) {
      dv.setUint32(b + 0x10, offset, le);
      dv.setUint32(b + 0x14, size, le);
    } else {
      dv.setBigUint64(b + 0x18, BigInt(offset), le);
      dv.setBigUint64(b + 0x20, BigInt(size), le);
    }
  };
  section(1, 1, 1, modinfoOff, 0); // .text, empty
  section(2, 7, 1, modinfoOff, modinfo.length); // .modinfo
  section(3, 16, 3, strOff, shstrtab.length); // .shstrtab
  return buf;
}

export interface TarInput {
  path: string;
  type?: 'file' | 'dir' | 'symlink';
  data?: Uint8Array | string;
  mode?: number;
  linkname?: string;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader(path: string, typeflag: string, size: number, mode: number, linkname = ''): Uint8Array {
  const h = new Uint8Array(512);
  const put = (text: string, at: number): void => h.set(enc.encode(text), at);
  put(path.slice(0, 100), 0);
  put(octal(mode, 8), 100);
  put(octal(0, 8), 108);
  put(octal(0, 8), 116);
  put(octal(size, 12), 124);
  put(octal(0, 12), 136);
  put('        ', 148);
  put(typeflag, 156);
  put(linkname, 157);
  put('ustar  \0', 257); // GNU
  put('root', 265);
  put('root', 297);
  const sum = h.reduce((a, b) => a + b, 0);
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

const pad512 = (n: number): Uint8Array => new Uint8Array((512 - (n % 512)) % 512);

/** A GNU-style tar archive; names over 100 bytes get a `././@LongLink` entry. */
export function tar(entries: readonly TarInput[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const type = e.type ?? 'file';
    const data = typeof e.data === 'string' ? enc.encode(e.data) : (e.data ?? new Uint8Array(0));
    let path = type === 'dir' && !e.path.endsWith('/') ? `${e.path}/` : e.path;
    if (enc.encode(path).length > 100) {
      const long = enc.encode(`${path}\0`);
      parts.push(tarHeader('././@LongLink', 'L', long.length, 0o644), long, pad512(long.length));
      path = path.slice(0, 100);
    }
    const flag = type === 'file' ? '0' : type === 'dir' ? '5' : '2';
    const mode = e.mode ?? (type === 'dir' ? 0o755 : 0o644);
    const size = type === 'file' ? data.length : 0;
    parts.push(tarHeader(path, flag, size, mode, e.linkname ?? ''));
    if (size > 0) parts.push(data, pad512(size));
  }
  parts.push(new Uint8Array(1024));
  return concat(parts);
}

/** A System V ar archive. */
export function ar(members: readonly { name: string; data: Uint8Array }[]): Uint8Array {
  const parts: Uint8Array[] = [enc.encode('!<arch>\n')];
  for (const m of members) {
    const head =
      m.name.padEnd(16) + '0'.padEnd(12) + '0'.padEnd(6) + '0'.padEnd(6) + '100644'.padEnd(8) + String(m.data.length).padEnd(10) + '`\n';
    parts.push(enc.encode(head), m.data);
    if (m.data.length % 2) parts.push(enc.encode('\n'));
  }
  return concat(parts);
}

/** A .deb whose data.tar.gz holds `files` (directories are added for their parents). */
export function fakeDeb(control: string, files: readonly TarInput[]): Uint8Array {
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const entries: TarInput[] = [
    { path: './', type: 'dir' },
    ...[...dirs].sort().map((d): TarInput => ({ path: `./${d}`, type: 'dir' })),
    ...files.map((f) => ({ ...f, path: `./${f.path}` })),
  ];
  return ar([
    { name: 'debian-binary', data: enc.encode('2.0\n') },
    { name: 'control.tar.gz', data: gzipSync(tar([{ path: './control', data: control }])) },
    { name: 'data.tar.gz', data: gzipSync(tar(entries)) },
  ]);
}

/** The virtio modules of a 6.1 686 kernel and what they depend on (as modpost records it). */
export const FAKE_MODULE_DEPS: Record<string, string[]> = {
  virtio: [],
  virtio_ring: [],
  virtio_pci_modern_dev: [],
  virtio_pci_legacy_dev: [],
  virtio_pci: ['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio'],
  virtio_mmio: ['virtio', 'virtio_ring'],
  virtio_blk: ['virtio', 'virtio_ring'],
  failover: [],
  net_failover: ['failover'],
  virtio_net: ['virtio_ring', 'virtio', 'net_failover'],
  virtio_balloon: ['virtio', 'virtio_ring'],
  virtio_console: ['virtio', 'virtio_ring'],
  'virtio-rng': ['virtio', 'virtio_ring'],
  e1000: [],
};

export const FAKE_RELEASE = '6.1.0-99-686';

/** A kernel package: boot/vmlinuz-*, boot/config-*, and the modules above under lib/modules. */
export function fakeKernelDeb(release = FAKE_RELEASE): Uint8Array {
  const subdir = (m: string): string =>
    m === 'virtio-rng'
      ? 'drivers/char/hw_random'
      : m === 'virtio_blk'
        ? 'drivers/block'
        : m.startsWith('virtio')
          ? 'drivers/virtio'
          : m === 'e1000'
            ? 'drivers/net/ethernet/intel/e1000'
            : 'net/core';
  const modules: TarInput[] = Object.entries(FAKE_MODULE_DEPS).map(([m, deps]) => ({
    path: `lib/modules/${release}/kernel/${subdir(m)}/${m}.ko`,
    data: fakeModule(m.replace(/-/g, '_'), deps),
  }));
  return fakeDeb(`Package: linux-image-${release}-unsigned\nVersion: 6.1.999-1\nArchitecture: i386\n`, [
    { path: `boot/vmlinuz-${release}`, data: `fake bzImage for ${release}\n`.repeat(100) },
    { path: `boot/config-${release}`, data: 'CONFIG_VIRTIO=m\n' },
    { path: `boot/System.map-${release}`, data: 'c1000000 T _text\n' },
    { path: `lib/modules/${release}/modules.order`, data: 'kernel/drivers/virtio/virtio.ko\n' },
    ...modules,
  ]);
}

/** A busybox-static package with a fake bin/busybox. */
export function fakeBusyboxDeb(): Uint8Array {
  return fakeDeb('Package: busybox-static\nVersion: 1:1.35.0-4\nArchitecture: i386\n', [
    { path: 'bin/busybox', data: '\x7fELF fake busybox\n', mode: 0o755 },
    { path: 'usr/share/doc/busybox-static/copyright', data: 'GPL-2\n' },
  ]);
}
