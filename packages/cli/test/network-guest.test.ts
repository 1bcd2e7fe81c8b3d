// End-to-end: two reference guests in two `kvmts run` processes, their virtio-net NICs joined by
// the stream-socket backend (`--net socket:127.0.0.1:PORT,listen` on one side, `--net
// socket:127.0.0.1:PORT` on the other). The addresses are set statically in the guests' shells
// (guest.shell=1) and each pings the other with busybox ping. One of them also has a NIC on an
// in-process switch with the DHCP server (`--net switch:lan,dhcp`) and gets a lease there.
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { guestInitrd as initrd, guestKernel as kernel, guestMissing, skipWithoutGuest } from './e2e.js';
import { GuestVm } from './guest-vm.js';

const vms: GuestVm[] = [];
afterAll(() => {
  for (const vm of vms) vm.kill();
});

const skip = skipWithoutGuest('the network e2e test');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

describe.skipIf(skip)('--net socket: two VMs in two processes', () => {
  it('ping each other over the socket backend', async () => {
    expect(guestMissing()).toBe('');
    const port = await freePort();
    const common = ['--initrd', initrd, '--mem', '128M'];
    const append = (extra = ''): string[] => ['--append', `console=ttyS0 guest.shell=1${extra}`];
    const t0 = performance.now();
    // vm-a also has a NIC on an in-process switch with a DHCP server, and runs udhcpc on its
    // NICs at boot (guest.dhcp=1): eth1 gets a lease there (eth0's udhcpc finds no server).
    const a = new GuestVm('vm-a', ['run', '--kernel', kernel, ...common, ...append(' guest.dhcp=1'), '--net', `socket:127.0.0.1:${port},listen,mac=52:54:00:00:00:0a`, '--net', 'switch:lan,dhcp']);
    vms.push(a);
    // The listening side must be bound before the other connects (it retries every second anyway).
    await new Promise((r) => setTimeout(r, 1000));
    const b = new GuestVm('vm-b', ['run', '--kernel', kernel, ...common, ...append(), '--net', `socket:127.0.0.1:${port},mac=52:54:00:00:00:0b`]);
    vms.push(b);
    await Promise.all([a.waitOut(/GUEST-SHELL ready/, 12 * 60_000), b.waitOut(/GUEST-SHELL ready/, 12 * 60_000)]);
    console.log(`both guests at the shell after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (const vm of [a, b]) expect(vm.stdout).toMatch(/GUEST-NET eth0 mac=52:54:00:00:00:0[ab] driver=virtio_net/);
    expect(a.stdout).toMatch(/GUEST-DHCP .*lease of 10\.0\.2\.15 obtained from 10\.0\.2\.2/);
    await a.sh('ip addr add 10.0.2.1/24 dev eth0; ip link set eth0 up; echo up');
    await b.sh('ip addr add 10.0.2.2/24 dev eth0; ip link set eth0 up; echo up');
    const ab = await a.sh("ping -c 3 -W 5 10.0.2.2 2>&1 | tail -2 | tr '\\n' ' '", 120_000);
    const ba = await b.sh("ping -c 3 -W 5 10.0.2.1 2>&1 | tail -2 | tr '\\n' ' '", 120_000);
    console.log(`a -> b: ${ab}\nb -> a: ${ba}`);
    expect(ab).toMatch(/3 packets transmitted, 3 packets received, 0% packet loss/);
    expect(ba).toMatch(/3 packets transmitted, 3 packets received, 0% packet loss/);
    for (const vm of [a, b]) {
      vm.type('poweroff -f');
      const exit = await vm.exited;
      expect(exit.status).toBe(0);
    }
  }, 20 * 60_000);
});
