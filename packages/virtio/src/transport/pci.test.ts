import { describe, expect, it } from 'vitest';
import { MmioBus } from '@kvmts/kvm-core';
import { PCI_COMMAND, PCI_COMMAND_BUS_MASTER, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MEMORY, PCI_STATUS_INTERRUPT, PciHostBridge } from '@kvmts/devices';
import {
  VIRTIO_STATUS_ACKNOWLEDGE as ACK,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_STATUS_DRIVER as DRIVER,
  VIRTIO_STATUS_DRIVER_OK as DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK as FEATURES_OK,
} from '../constants.js';
import { EchoDevice, TestQueueDriver, makeVm } from '../test-driver.js';
import { VIRTIO_PCI_BAR_SIZE, VirtioPciTransport, type VirtioPciState } from './pci.js';

const BAR_ADDR = 0xfebf0000;
const DATA = 0x20000;

function machine(options: { barKind?: 'mem32' | 'mem64' } = {}) {
  const { vm, ram, dv } = makeVm();
  const device = new EchoDevice();
  const irqs: boolean[] = [];
  const bus = new MmioBus();
  const t = new VirtioPciTransport(device, { memory: vm.memory, irq: (l) => irqs.push(l), mmio: bus, ...options });
  const cfg = (off: number, size: 1 | 2 | 4 = 4): number => {
    const d = new Uint8Array(size);
    t.readConfig(off, d);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + d[i]!;
    return v;
  };
  const setCfg = (off: number, v: number, size: 1 | 2 | 4 = 4): void => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
    t.writeConfig(off, d);
  };
  const rd = (addr: number, size: number): number => {
    const d = new Uint8Array(size).fill(0xee);
    if (!bus.read(addr, d)) throw new Error(`nothing mapped at 0x${addr.toString(16)}`);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + d[i]!;
    return v;
  };
  const wr = (addr: number, v: number, size: number): void => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
    if (!bus.write(addr, d)) throw new Error(`nothing mapped at 0x${addr.toString(16)}`);
  };
  const queues = [new TestQueueDriver(dv, 0x1000, 8), new TestQueueDriver(dv, 0x2000, 8)];
  return { vm, ram, dv, device, irqs, bus, t, cfg, setCfg, rd, wr, queues };
}

type M = ReturnType<typeof machine>;

interface Caps {
  common: number;
  isr: number;
  device: number;
  notify: number;
  multiplier: number;
}

/** Walk the capability list and size/assign the BAR, as firmware and virtio_pci_modern do. */
function discover(m: M): Caps {
  const { cfg, setCfg } = m;
  expect(cfg(0x00, 2)).toBe(0x1af4);
  expect(cfg(0x02, 2)).toBe(0x1040 + 42);
  expect(cfg(0x08, 1)).toBe(1); // revision
  expect(cfg(0x2c, 2)).toBe(0x1af4);
  expect(cfg(0x3d, 1)).toBe(1); // INTA#
  expect(cfg(0x06, 2) & 0x10).toBe(0x10); // capability list
  const found = new Map<number, { bar: number; offset: number; length: number; at: number }>();
  for (let at = cfg(0x34, 1), n = 0; at !== 0 && n < 48; at = cfg(at + 1, 1), n++) {
    if (cfg(at, 1) !== 0x09) continue;
    const type = cfg(at + 3, 1);
    expect(cfg(at + 2, 1)).toBe(type === 2 ? 20 : 16); // cap_len
    found.set(type, { bar: cfg(at + 4, 1), offset: cfg(at + 8), length: cfg(at + 12), at });
  }
  expect([...found.keys()].sort()).toEqual([1, 2, 3, 4]);
  for (const c of found.values()) {
    expect(c.bar).toBe(0);
    expect(c.offset + c.length).toBeLessThanOrEqual(VIRTIO_PCI_BAR_SIZE);
  }
  // Size the BAR: all-ones, read back the mask, then assign an address and enable decoding.
  setCfg(0x10, 0xffffffff);
  expect(cfg(0x10)).toBe(0xffffc000); // 16 KiB, 32-bit, not prefetchable
  setCfg(0x10, BAR_ADDR);
  setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_BUS_MASTER, 2);
  expect(m.t.barAddress).toBe(BAR_ADDR);
  const at = (type: number): number => BAR_ADDR + found.get(type)!.offset;
  return { common: at(1), notify: at(2), isr: at(3), device: at(4), multiplier: cfg(found.get(2)!.at + 16) };
}

/** virtio_pci_modern's probe plus the virtio core handshake and find_vqs (INTx, no MSI-X). */
function linuxProbe(m: M, caps: Caps): void {
  const { rd, wr } = m;
  const c = caps.common;
  wr(c + 0x14, 0, 1); // reset
  expect(rd(c + 0x14, 1)).toBe(0);
  wr(c + 0x14, ACK, 1);
  wr(c + 0x14, ACK | DRIVER, 1);
  wr(c + 0x00, 1, 4);
  const high = rd(c + 0x04, 4);
  wr(c + 0x00, 0, 4);
  const low = rd(c + 0x04, 4);
  expect(high).toBe(1); // VERSION_1 only
  expect(low).toBe(1 | (1 << 28) | (1 << 29));
  wr(c + 0x08, 0, 4);
  wr(c + 0x0c, low, 4);
  wr(c + 0x08, 1, 4);
  wr(c + 0x0c, high, 4);
  wr(c + 0x14, ACK | DRIVER | FEATURES_OK, 1);
  expect(rd(c + 0x14, 1)).toBe(ACK | DRIVER | FEATURES_OK);
  expect(rd(c + 0x12, 2)).toBe(2); // num_queues
  expect(rd(c + 0x10, 2)).toBe(0xffff); // config_msix_vector: no MSI-X
  m.queues.forEach((q, i) => {
    wr(c + 0x16, i, 2);
    expect(rd(c + 0x18, 2)).toBe(8);
    expect(rd(c + 0x1c, 2)).toBe(0);
    wr(c + 0x18, q.size, 2);
    wr(c + 0x20, q.desc, 4);
    wr(c + 0x24, 0, 4);
    wr(c + 0x28, q.avail, 4);
    wr(c + 0x2c, 0, 4);
    wr(c + 0x30, q.used, 4);
    wr(c + 0x34, 0, 4);
    expect(rd(c + 0x1e, 2)).toBe(i); // queue_notify_off
  });
  m.queues.forEach((_, i) => {
    wr(c + 0x16, i, 2);
    wr(c + 0x1c, 1, 2);
  });
  wr(c + 0x14, ACK | DRIVER | FEATURES_OK | DRIVER_OK, 1);
  expect(rd(c + 0x14, 1)).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}

describe('VirtioPciTransport', () => {
  it('presents a modern virtio function with its four capabilities in one BAR, and the Linux handshake works', () => {
    const m = machine();
    const caps = discover(m);
    expect(caps.multiplier).toBe(4);
    expect(m.bus.ranges().map((r) => [r.base, r.len])).toEqual([[BAR_ADDR, VIRTIO_PCI_BAR_SIZE]]);
    linuxProbe(m, caps);
    const a = m.device.activation!;
    expect(a.features).toBe((1n << 32n) | (1n << 29n) | (1n << 28n) | 1n);
    expect(a.queues.map((q) => [q.size, q.descTable, q.availRing, q.usedRing, q.usable])).toEqual([
      [8, 0x1000, m.queues[0]!.avail, m.queues[0]!.used, true],
      [8, 0x2000, m.queues[1]!.avail, m.queues[1]!.used, true],
    ]);
    // Queue selectors past the last queue read size 0.
    m.wr(caps.common + 0x16, 5, 2);
    expect(m.rd(caps.common + 0x18, 2)).toBe(0);
    // The device config is there, at any width.
    expect(m.rd(caps.device, 4)).toBe(0x04030201);
    expect(m.rd(caps.device + 6, 2)).toBe(0x0007);
  });

  it('notifies through the notify region, asserts INTx, and the ISR read clears it', () => {
    const m = machine();
    const caps = discover(m);
    linuxProbe(m, caps);
    const q = m.queues[1]!;
    m.ram.set([4, 5], DATA);
    q.publish(q.addChain([{ addr: DATA, len: 2 }, { addr: DATA + 0x10, len: 2, write: true }]));
    m.wr(caps.notify + 1 * caps.multiplier, 1, 2);
    expect(m.device.processed).toEqual([1]);
    expect([...m.ram.subarray(DATA + 0x10, DATA + 0x12)]).toEqual([5, 4]);
    expect(m.irqs).toEqual([true]);
    expect(m.cfg(0x06, 2) & PCI_STATUS_INTERRUPT).toBe(PCI_STATUS_INTERRUPT);
    expect(m.rd(caps.isr, 1)).toBe(1);
    expect(m.irqs).toEqual([true, false]);
    expect(m.cfg(0x06, 2) & PCI_STATUS_INTERRUPT).toBe(0);
    expect(m.rd(caps.isr, 1)).toBe(0);
  });

  it('keeps INTx low while the command register disables it, but shows the pending status', () => {
    const m = machine();
    const caps = discover(m);
    linuxProbe(m, caps);
    m.setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE, 2);
    m.device.activation!.interrupt.signalConfigChange();
    expect(m.irqs).toEqual([]);
    expect(m.cfg(0x06, 2) & PCI_STATUS_INTERRUPT).toBe(PCI_STATUS_INTERRUPT);
    m.setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    expect(m.irqs).toEqual([true]);
    expect(m.rd(caps.isr, 1)).toBe(2);
    expect(m.irqs).toEqual([true, false]);
  });

  it('moves and unmaps the BAR with the guest; 64-bit BARs take two slots', () => {
    const m = machine({ barKind: 'mem64' });
    m.setCfg(0x10, 0xe0000000);
    m.setCfg(0x14, 0);
    expect(m.bus.ranges()).toEqual([]);
    m.setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    expect(m.bus.ranges().map((r) => r.base)).toEqual([0xe0000000]);
    expect(m.cfg(0x10) & 0x6).toBe(0x4); // 64-bit type
    m.setCfg(0x10, 0xd0000000);
    expect(m.bus.ranges().map((r) => r.base)).toEqual([0xd0000000]);
    m.setCfg(PCI_COMMAND, 0, 2);
    expect(m.bus.ranges()).toEqual([]);
    expect(m.t.barAddress).toBeNull();
  });

  it('works behind the PCI host bridge', () => {
    const m = machine();
    const host = new PciHostBridge();
    host.attach(m.t, 4);
    const d = new Uint8Array(4);
    const dv = new DataView(d.buffer);
    dv.setUint32(0, (0x80000000 | (4 << 11)) >>> 0, true);
    host.configAddressPort.write(0, d);
    host.configDataPort.read(0, d);
    expect(dv.getUint32(0, true)).toBe(0x106a1af4);
    expect(host.device(4, 0)).toBe(m.t);
  });

  it('sets DEVICE_NEEDS_RESET on a corrupt ring and recovers after reset', () => {
    const m = machine();
    const caps = discover(m);
    linuxProbe(m, caps);
    const q = m.queues[0]!;
    q.setAvailIdx(100); // far more than a ring's worth
    m.wr(caps.notify, 0, 2);
    expect(m.rd(caps.common + 0x14, 1) & NEEDS_RESET).toBe(NEEDS_RESET);
    expect(m.rd(caps.isr, 1)).toBe(2);
    linuxProbe(m, caps);
    expect(m.rd(caps.common + 0x14, 1) & NEEDS_RESET).toBe(0);
  });

  it('saves and restores the config space, BAR mapping, queues and pending interrupt', () => {
    const m = machine();
    const caps = discover(m);
    linuxProbe(m, caps);
    const q = m.queues[0]!;
    q.publish(q.addChain([{ addr: DATA, len: 1 }, { addr: DATA + 8, len: 1, write: true }]));
    m.wr(caps.notify, 0, 2);
    q.publish(q.addChain([{ addr: DATA + 1, len: 1 }, { addr: DATA + 9, len: 1, write: true }]));
    m.ram[DATA + 1] = 0x42;
    const state = JSON.parse(JSON.stringify(m.t.save())) as VirtioPciState<{ version: 1; configByte: number }>;

    const { vm, ram } = makeVm();
    ram.set(m.ram);
    const bus = new MmioBus();
    const irqs: boolean[] = [];
    const device = new EchoDevice();
    const t2 = new VirtioPciTransport(device, { memory: vm.memory, irq: (l) => irqs.push(l), mmio: bus });
    t2.restore(state);
    expect(bus.ranges().map((r) => r.base)).toEqual([BAR_ADDR]);
    expect(irqs).toEqual([true]);
    bus.write(caps.notify, new Uint8Array([0, 0]));
    expect(ram[DATA + 9]).toBe(0x42);
    const isr = new Uint8Array(1);
    bus.read(caps.isr, isr);
    expect(isr[0]).toBe(1);
    expect(irqs).toEqual([true, false]);
  });
});
