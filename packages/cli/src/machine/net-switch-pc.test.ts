// Two PcMachines in one process, their virtio-net NICs (virtio-mmio) on one in-process switch:
// the CLI runs one VM per process, so the switch between two whole machines is tested here
// through the library API. A host-side "driver" brings each NIC up through the machine's own
// MMIO bus and lays its queues out in the machine's RAM, as the guest's driver would.
import { afterEach, describe, expect, it } from 'vitest';
import { NetSwitch, VIRTIO_NET_HDR_SIZE, VirtioNet } from '@kvmts/virtio';
import { TestQueueDriver, mmioDriverSetup } from '../../../virtio/src/test-driver.js';
import { PcMachine } from './pc.js';
import { VIRTIO_MMIO_BASE } from './virtio.js';

const open: PcMachine[] = [];
afterEach(() => {
  for (const m of open.splice(0)) m.close();
});

function pcWithNic(mac: string, sw: NetSwitch) {
  const dev = new VirtioNet({ mac, backend: sw.createPort() });
  const machine = new PcMachine({ memSize: 4 << 20, virtio: { transport: 'mmio', devices: [dev] } });
  open.push(machine);
  const dv = new DataView(machine.ram);
  const ram = new Uint8Array(machine.ram);
  const reg = (off: number, v: number): void => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    machine.mmioBus.write(VIRTIO_MMIO_BASE + off, d);
  };
  const queues = mmioDriverSetup(dev, dv, reg, (i) => 0x100000 + 0x10000 * i, 16);
  reg(0x070, 0xf);
  const [rx, tx] = queues as [TestQueueDriver, TestQueueDriver];
  return {
    machine,
    rx,
    post(): void {
      rx.publish(rx.addChain([{ addr: 0x200000, len: 1526, write: true }]));
      reg(0x050, 0);
    },
    send(frame: Uint8Array): void {
      ram.fill(0, 0x280000, 0x280000 + VIRTIO_NET_HDR_SIZE);
      ram.set(frame, 0x280020);
      tx.publish(tx.addChain([{ addr: 0x280000, len: VIRTIO_NET_HDR_SIZE }, { addr: 0x280020, len: frame.length }]));
      reg(0x050, 1);
    },
    received(): Uint8Array {
      const len = rx.usedElem(0).len - VIRTIO_NET_HDR_SIZE;
      return ram.slice(0x200000 + VIRTIO_NET_HDR_SIZE, 0x200000 + VIRTIO_NET_HDR_SIZE + len);
    },
  };
}

describe('two PcMachines on one in-process switch', () => {
  it('a frame one machine sends arrives in the other machine\'s RAM', () => {
    const sw = new NetSwitch();
    const a = pcWithNic('52:54:00:00:00:0a', sw);
    const b = pcWithNic('52:54:00:00:00:0b', sw);
    b.post();
    const frame = Uint8Array.from([...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], ...[0x52, 0x54, 0, 0, 0, 0x0a], 0x08, 0x06, ...new TextEncoder().encode('hello from machine a')]);
    a.send(frame);
    expect(b.rx.usedIdx()).toBe(1);
    expect([...b.received()]).toEqual([...frame]);
  });
});
