import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { fakeModule } from '../../test/guest-fixtures.js';
import { readNewc, sortEntries } from './cpio.js';
import { BUSYBOX_APPLETS, INIT_SCRIPT } from './init-script.js';
import { DISK_SIGNATURE, DISK_SIZE, buildDiskImage, buildInitramfs, gzipReproducible, initramfsEntries } from './initramfs.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function inputs(mtime = 0) {
  return {
    busybox: new TextEncoder().encode('\x7fELF busybox'.repeat(1000)),
    modules: [
      { name: 'virtio_ring', data: fakeModule('virtio_ring', []) },
      { name: 'virtio', data: fakeModule('virtio', []) },
      { name: 'virtio_blk', data: fakeModule('virtio_blk', ['virtio', 'virtio_ring']) },
    ],
    mtime,
  };
}

describe('test disk', () => {
  it('is 8 MiB of zeros but for the signature line at the start of sector 0', () => {
    const disk = buildDiskImage();
    expect(disk.length).toBe(8 * 1024 * 1024);
    expect(DISK_SIZE / 512).toBe(16384);
    expect(Buffer.from(disk.subarray(0, 31)).toString('latin1')).toBe('VIRTIO-BLK-DISK-SIGNATURE-0001\n');
    expect(DISK_SIGNATURE).toBe('VIRTIO-BLK-DISK-SIGNATURE-0001');
    expect(disk.subarray(31).every((b) => b === 0)).toBe(true);
    // What /init prints: the first 32 bytes with all but [A-Za-z0-9-] dropped.
    expect(Buffer.from(disk.subarray(0, 32)).toString('latin1').replace(/[^A-Za-z0-9-]/g, '')).toBe(DISK_SIGNATURE);
    // the same bytes as the reference: truncate -s 8M, then the line at offset 0
    expect(sha256(disk)).toBe('669784d4a4e9323156926240017f0b794e57b800fc8d8fec2b829dfb2c22230f');
  });

  it('rejects sizes that are not whole sectors', () => {
    expect(() => buildDiskImage(1000)).toThrow(RangeError);
    expect(buildDiskImage(512).length).toBe(512);
  });
});

describe('initramfs', () => {
  it('holds /init, busybox with its applets, /dev/console, the modules and their load order', () => {
    const members = readNewc(buildInitramfs(inputs()).cpio);
    const byName = new Map(members.map((m) => [m.name, m]));
    const init = byName.get('init')!;
    expect(init.mode).toBe(0o100755);
    expect(Buffer.from(init.data).toString('utf8')).toBe(INIT_SCRIPT);
    expect(byName.get('bin/busybox')!.mode).toBe(0o100755);
    for (const a of ['sh', 'mount', 'insmod', 'poweroff', 'udhcpc', 'dd', 'tr']) {
      expect(BUSYBOX_APPLETS).toContain(a);
      expect(byName.get(`bin/${a}`)!.mode).toBe(0o120777);
      expect(Buffer.from(byName.get(`bin/${a}`)!.data).toString()).toBe('busybox');
    }
    const console = byName.get('dev/console')!;
    expect([console.mode, console.rdevmajor, console.rdevminor]).toEqual([0o020600, 5, 1]);
    for (const d of ['proc', 'sys', 'dev', 'tmp', 'lib/modules']) expect(byName.get(d)!.mode).toBe(0o040755);
    expect(byName.get('lib/modules/virtio_blk.ko')!.mode).toBe(0o100644);
    expect(Buffer.from(byName.get('lib/modules/load-order')!.data).toString()).toBe('virtio_ring\nvirtio\nvirtio_blk\n');
  });

  it('lists entries by path with inodes 1, 2, 3, ..., owner root and one timestamp', () => {
    const members = readNewc(buildInitramfs(inputs(1_700_000_000)).cpio);
    const names = members.map((m) => m.name);
    expect(names).toEqual([...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(members.map((m) => m.ino)).toEqual(members.map((_, i) => i + 1));
    expect(new Set(members.map((m) => `${m.uid}:${m.gid}:${m.mtime}`))).toEqual(new Set(['0:0:1700000000']));
    // every directory precedes its contents
    for (const [i, m] of members.entries()) {
      const parent = m.name.includes('/') ? m.name.slice(0, m.name.lastIndexOf('/')) : undefined;
      if (parent !== undefined) expect(names.indexOf(parent)).toBeLessThan(i);
    }
  });

  it('is reproducible: the same inputs give the same sha256', () => {
    const a = buildInitramfs(inputs());
    const b = buildInitramfs(inputs());
    expect(sha256(a.gz)).toBe(sha256(b.gz));
    expect(sha256(a.cpio)).toBe(sha256(b.cpio));
    expect(gunzipSync(a.gz)).toEqual(Buffer.from(a.cpio));
    // the entry list comes out sorted, whatever order it was collected in
    const e = initramfsEntries(inputs());
    expect(sortEntries([...e].reverse())).toEqual(e);
    // and it depends on the timestamp
    expect(sha256(buildInitramfs(inputs(1)).cpio)).not.toBe(sha256(a.cpio));
  });

  it('gzips with a fixed header: no name, mtime 0, OS Unix, best compression', () => {
    const gz = gzipReproducible(new TextEncoder().encode('hello'));
    expect(Array.from(gz.subarray(0, 10))).toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
    expect(gunzipSync(gz).toString()).toBe('hello');
  });
});

describe('/init', () => {
  it('prints the documented lines in the documented order and powers off', () => {
    const order = [
      'GUEST-BOOT-OK uptime=',
      "grep -m1 '^model name' /proc/cpuinfo",
      'GUEST-INFO cpus=',
      'GUEST-VIRTIO ${dev##*/} device=$id ($kind) vendor=',
      'GUEST-VIRTIO-COUNT $count',
      'GUEST-DEBUG module',
      'GUEST-DEBUG pci',
      'GUEST-BLK vda sectors=$(cat /sys/block/vda/size) sig=$sig',
      'GUEST-NET $name mac=',
      'GUEST-DHCP',
      'GUEST-DONE uptime=',
      'poweroff -f',
    ];
    const at = order.map((s) => INIT_SCRIPT.indexOf(s));
    expect(at.every((i) => i >= 0), order.filter((_, i) => at[i]! < 0).join(', ')).toBe(true);
    expect([...at].sort((x, y) => x - y)).toEqual(at);
    expect(INIT_SCRIPT.startsWith('#!/bin/sh\n')).toBe(true);
    expect(INIT_SCRIPT).toContain('driver=$(driver_of "$dev")');
    expect(INIT_SCRIPT).toContain('flag guest.debug');
    expect(INIT_SCRIPT).toContain('flag guest.dhcp');
    expect(INIT_SCRIPT).toContain("tr -cd 'A-Za-z0-9-'");
    expect(INIT_SCRIPT).toContain('</lib/modules/load-order');
    // the host's sh finds no syntax error (busybox ash in the guest is a superset of what we use)
    const check = spawnSync('sh', ['-n'], { input: INIT_SCRIPT, encoding: 'utf8' });
    if (!check.error) expect(check.stderr + String(check.status)).toBe('0');
    // no template placeholders left unexpanded
    expect(INIT_SCRIPT).not.toMatch(/\$\{(MODULE_DIR|LOAD_ORDER_FILE)\}/);
  });
});
