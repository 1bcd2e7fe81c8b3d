import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VirtioBalloon, VirtioBlock, VirtioConsole, VirtioNet, VirtioRng } from '@kvmts/virtio';
import { CliError } from '../errors.js';
import { main, type CliIo } from '../main.js';
import { openVirtioDevices, parseDeviceName, parseNetSpec, parseVirtioTransport } from './virtio-config.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-virtio-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('virtio command-line specs', () => {
  it('parses --net backends and options', () => {
    expect(parseNetSpec('none')).toEqual({ kind: 'none' });
    expect(parseNetSpec('switch:lan0,mac=52:54:00:AA:bb:01')).toEqual({ kind: 'switch', name: 'lan0', mac: '52:54:00:AA:bb:01' });
    expect(parseNetSpec('socket:127.0.0.1:5555,listen')).toEqual({ kind: 'socket', host: '127.0.0.1', port: 5555, listen: true });
    expect(parseNetSpec('socket:[::1]:80')).toEqual({ kind: 'socket', host: '::1', port: 80, listen: false });
    expect(parseNetSpec('switch:lan,dhcp')).toEqual({ kind: 'switch', name: 'lan', dhcp: true });
    expect(() => parseNetSpec('none,dhcp')).toThrow(/'dhcp' is for switch:NAME/);
  });

  it.each([
    ['user', /expected none\|switch:NAME/],
    ['none,mac=52:54:00:12:34', /invalid MAC address/],
    ['none,mac=01:00:5e:00:00:01', /multicast/],
    ['none,listen', /'listen' is for socket/],
    ['switch:', /switch:NAME takes/],
    ['socket:host:0', /port from 1 to 65535/],
    ['socket:host', /socket:HOST:PORT/],
    ['none,speed=10', /invalid --net option 'speed=10'/],
  ])('rejects --net %s', (spec, message) => {
    expect(() => parseNetSpec(spec)).toThrow(CliError);
    expect(() => parseNetSpec(spec)).toThrow(message);
  });

  it('parses --device and --virtio-transport', () => {
    expect(parseDeviceName('virtio-rng')).toBe('virtio-rng');
    expect(parseDeviceName('virtio-console')).toBe('virtio-console');
    expect(parseDeviceName('virtio-balloon')).toBe('virtio-balloon');
    expect(() => parseDeviceName('virtio-gpu')).toThrow(/unknown --device 'virtio-gpu': expected one of virtio-rng, virtio-console, virtio-balloon/);
    expect(parseVirtioTransport('mmio')).toBe('mmio');
    expect(() => parseVirtioTransport('ccw')).toThrow(/expected 'pci' or 'mmio'/);
  });
});

describe('openVirtioDevices', () => {
  it('opens disks, NICs and the other devices in that order, with distinct default MACs', async () => {
    const img = join(dir, 'a.img');
    writeFileSync(img, new Uint8Array(4096));
    const opened = await openVirtioDevices({
      disks: [{ path: img, readOnly: true, interface: 'virtio' }],
      nets: [{ kind: 'none' }, { kind: 'switch', name: 'x' }],
      devices: ['virtio-console', 'virtio-rng'],
      consoleOutput: () => {},
    });
    try {
      const [disk, nic0, nic1, con, rng] = opened.devices;
      expect(disk).toBeInstanceOf(VirtioBlock);
      expect((disk as VirtioBlock).capacity).toBe(8);
      expect(nic0).toBeInstanceOf(VirtioNet);
      expect(con).toBeInstanceOf(VirtioConsole);
      expect(rng).toBeInstanceOf(VirtioRng);
      const mac = (d: unknown): string => (d as VirtioNet).save().mac;
      expect([mac(nic0), mac(nic1)]).toEqual(['52:54:00:12:34:56', '52:54:00:12:34:57']);
    } finally {
      await opened.close();
    }
  });

  it('names a disk it cannot open in a one-line CliError, closing the ones it opened', async () => {
    const img = join(dir, 'b.img');
    writeFileSync(img, new Uint8Array(512));
    const missing = join(dir, 'missing.img');
    const p = openVirtioDevices({ disks: [{ path: img, readOnly: false, interface: 'virtio' }, { path: missing, readOnly: false, interface: 'virtio' }], nets: [], devices: [], consoleOutput: () => {} });
    await expect(p).rejects.toThrow(new CliError(`cannot open disk image '${missing}': no such file`));
    await expect(openVirtioDevices({ disks: [{ path: dir, readOnly: false, interface: 'virtio' }], nets: [], devices: [], consoleOutput: () => {} })).rejects.toThrow(/not a regular file/);
  });

  it('opens socket backends (listen and connect), a switch with a DHCP server and the balloon', async () => {
    const { createServer } = await import('node:net');
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const listening = await openVirtioDevices({ disks: [], nets: [{ kind: 'socket', host: '127.0.0.1', port, listen: true }], devices: ['virtio-balloon'], consoleOutput: () => {} });
    const connecting = await openVirtioDevices({ disks: [], nets: [{ kind: 'socket', host: '127.0.0.1', port, listen: false }, { kind: 'switch', name: 'lan', dhcp: true }], devices: [], consoleOutput: () => {} });
    try {
      expect(listening.devices[0]).toBeInstanceOf(VirtioNet);
      expect(listening.devices[1]).toBeInstanceOf(VirtioBalloon);
      expect(connecting.devices.length).toBe(2);
    } finally {
      await connecting.close();
      await listening.close();
    }
    await expect(openVirtioDevices({ disks: [], nets: [{ kind: 'socket', host: '127.0.0.1', port, listen: true }, { kind: 'socket', host: '127.0.0.1', port, listen: true }], devices: [], consoleOutput: () => {} })).rejects.toThrow(/cannot listen on 127.0.0.1:/);
  });
});

describe('kvmts run with virtio options', () => {
  const run = async (...argv: string[]): Promise<{ status: number; stderr: string }> => {
    let stderr = '';
    const io: CliIo = { stdout: () => {}, stderr: (s) => (stderr += s) };
    const status = await main(argv, io);
    return { status, stderr };
  };

  it('fails with one line and status 64 for a missing --disk', async () => {
    const missing = join(dir, 'nope.img');
    const r = await run('run', '--kernel', join(dir, 'bzImage'), '--disk', `${missing},if=virtio`);
    expect(r).toEqual({ status: 64, stderr: `kvmts: cannot open disk image '${missing}': no such file\n` });
  });

  it('rejects bad virtio options before opening anything', async () => {
    expect((await run('run', '--kernel', 'k', '--virtio-transport', 'isa')).stderr).toMatch(/invalid --virtio-transport 'isa'/);
    expect((await run('run', '--kernel', 'k', '--device', 'rng')).stderr).toMatch(/unknown --device 'rng'/);
    expect((await run('run', '--kernel', 'k', '--disk', 'x.img,if=ide')).stderr).toMatch(/if=ide needs BIOS boot/);
    expect((await run('run', '--demo', '--net', 'none')).stderr).toMatch(/--device and --net need a PC guest/);
  });
});
