import { describe, expect, it } from 'vitest';
import { MmioBus } from '@kvmts/kvm-core';
import {
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_STATUS_ACKNOWLEDGE as ACK,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_STATUS_DRIVER as DRIVER,
  VIRTIO_STATUS_DRIVER_OK as DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK as FEATURES_OK,
} from '../constants.js';
import { EchoDevice, TestQueueDriver, makeVm } from '../test-driver.js';
import { VIRTIO_MMIO_SIZE, VirtioMmioTransport, type VirtioMmioState } from './mmio.js';

const BASE = 0xd0000000;
const DATA = 0x20000;

function machine() {
  const { vm, ram, dv } = makeVm();
  const device = new EchoDevice();
  const irqs: boolean[] = [];
  const t = new VirtioMmioTransport(device, { memory: vm.memory, irq: (l) => irqs.push(l) });
  const bus = new MmioBus();
  bus.insert(t, BASE, VIRTIO_MMIO_SIZE);
  const rd = (off: number, size = 4): number => {
    const d = new Uint8Array(size);
    bus.read(BASE + off, d);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + d[i]!;
    return v;
  };
  const wr = (off: number, v: number, size = 4): void => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
    bus.write(BASE + off, d);
  };
  const queues = [new TestQueueDriver(dv, 0x1000, 8), new TestQueueDriver(dv, 0x2000, 4)];
  return { vm, ram, dv, device, irqs, t, bus, rd, wr, queues };
}

type M = ReturnType<typeof machine>;

/** What Linux's virtio_mmio + virtio core do at probe time, up to DRIVER_OK. */
function linuxProbe(m: M, features = [1 | (1 << VIRTIO_F_RING_INDIRECT_DESC) | (1 << VIRTIO_F_RING_EVENT_IDX), 1 << (VIRTIO_F_VERSION_1 - 32)]): void {
  const { rd, wr } = m;
  expect(rd(0x000)).toBe(0x74726976);
  expect(rd(0x004)).toBe(2);
  expect(rd(0x008)).toBe(42);
  expect(rd(0x00c)).toBe(0x1af4);
  wr(0x070, 0); // reset
  expect(rd(0x070)).toBe(0);
  wr(0x070, ACK);
  wr(0x070, rd(0x070) | DRIVER);
  wr(0x014, 1);
  const high = rd(0x010);
  wr(0x014, 0);
  const low = rd(0x010);
  expect(high & 1).toBe(1); // VERSION_1 is bit 32
  wr(0x024, 1);
  wr(0x020, features[1]! & high);
  wr(0x024, 0);
  wr(0x020, features[0]! & low);
  wr(0x070, rd(0x070) | FEATURES_OK);
  expect(rd(0x070) & FEATURES_OK).toBe(FEATURES_OK);
  m.queues.forEach((q, i) => {
    wr(0x030, i);
    expect(rd(0x044)).toBe(0); // not already in use
    expect(rd(0x034)).toBe(8);
    wr(0x038, q.size);
    wr(0x080, q.desc);
    wr(0x084, 0);
    wr(0x090, q.avail);
    wr(0x094, 0);
    wr(0x0a0, q.used);
    wr(0x0a4, 0);
    wr(0x044, 1);
    expect(rd(0x044)).toBe(1);
  });
  wr(0x070, rd(0x070) | DRIVER_OK);
  expect(rd(0x070)).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}

describe('VirtioMmioTransport', () => {
  it('goes through Linux\'s probe handshake and activates the device with the negotiated features', () => {
    const m = machine();
    linuxProbe(m);
    const a = m.device.activation!;
    expect(a).not.toBeNull();
    expect(a.features).toBe((1n << 32n) | (1n << 29n) | (1n << 28n) | 1n);
    expect(a.queues.map((q) => [q.size, q.descTable, q.usable, q.eventIdx, q.indirectDesc])).toEqual([
      [8, 0x1000, true, true, true],
      [4, 0x2000, true, true, true],
    ]);
    // Unknown or absent queues read NumMax 0.
    m.wr(0x030, 2);
    expect(m.rd(0x034)).toBe(0);
    // No shared memory regions.
    m.wr(0x0ac, 0);
    expect(m.rd(0x0b0)).toBe(0xffffffff);
  });

  it('processes a notified queue, raises the interrupt and lowers it on ACK', () => {
    const m = machine();
    linuxProbe(m);
    const q = m.queues[1]!;
    m.ram.set([1, 2, 3], DATA);
    q.publish(q.addChain([{ addr: DATA, len: 3 }, { addr: DATA + 0x10, len: 3, write: true }]));
    m.wr(0x050, 1);
    expect(m.device.processed).toEqual([1]);
    expect([...m.ram.subarray(DATA + 0x10, DATA + 0x13)]).toEqual([3, 2, 1]);
    expect(q.usedIdx()).toBe(1);
    expect(q.usedElem(0).len).toBe(3);
    expect(m.rd(0x060)).toBe(1);
    expect(m.irqs).toEqual([true]);
    m.wr(0x064, 1);
    expect(m.rd(0x060)).toBe(0);
    expect(m.irqs).toEqual([true, false]);
  });

  it('refuses FEATURES_OK without VERSION_1 or with features it did not offer', () => {
    for (const features of [[1, 0], [1 | (1 << 5), 1]]) {
      const m = machine();
      m.wr(0x070, ACK | DRIVER);
      m.wr(0x024, 1);
      m.wr(0x020, features[1]!);
      m.wr(0x024, 0);
      m.wr(0x020, features[0]!);
      m.wr(0x070, ACK | DRIVER | FEATURES_OK);
      expect(m.rd(0x070)).toBe(ACK | DRIVER);
      // DRIVER_OK without FEATURES_OK does not activate the device either.
      m.wr(0x070, ACK | DRIVER | DRIVER_OK);
      expect(m.device.activation).toBeNull();
    }
  });

  it('ignores status writes that clear bits, and freezes features after FEATURES_OK', () => {
    const m = machine();
    linuxProbe(m);
    m.wr(0x070, ACK);
    expect(m.rd(0x070)).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    m.wr(0x024, 0);
    m.wr(0x020, 0);
    m.wr(0x024, 0);
    expect(m.rd(0x020)).toBe(0); // DriverFeatures is write-only in v2; reads 0
    expect(m.t.core.driverFeatures & 1n).toBe(1n);
    // Queue registers are frozen once the driver is running.
    m.wr(0x030, 0);
    m.wr(0x038, 2);
    expect(m.rd(0x038)).toBe(8);
  });

  it('resets on status 0: device reset, queues cleared, interrupt lowered', () => {
    const m = machine();
    linuxProbe(m);
    const q = m.queues[0]!;
    q.publish(q.addChain([{ addr: DATA, len: 1 }, { addr: DATA + 1, len: 1, write: true }]));
    m.wr(0x050, 0);
    expect(m.rd(0x060)).toBe(1);
    const before = m.device.resets; // the probe itself starts with a reset
    m.wr(0x070, 0);
    expect(m.device.resets).toBe(before + 1);
    expect(m.device.activation).toBeNull();
    expect(m.rd(0x070)).toBe(0);
    expect(m.rd(0x060)).toBe(0);
    expect(m.irqs.at(-1)).toBe(false);
    m.wr(0x030, 0);
    expect([m.rd(0x044), m.rd(0x038), m.rd(0x080)]).toEqual([0, 8, 0]);
    expect(m.t.core.driverFeatures).toBe(0n);
    // A notify after reset does nothing.
    m.wr(0x050, 0);
    expect(m.device.processed).toEqual([0]);
  });

  it('reads and writes device config at 0x100 with any width; registers need aligned dwords', () => {
    const m = machine();
    expect(m.rd(0x100, 1)).toBe(1);
    expect(m.rd(0x102, 2)).toBe(0x0403);
    expect(m.rd(0x100, 4)).toBe(0x04030201);
    m.wr(0x107, 0x99, 1);
    expect(m.rd(0x104, 4)).toBe(0x99070605);
    expect(m.rd(0x106, 4)).toBe(0); // past the 8-byte config
    expect(m.rd(0x000, 2)).toBe(0);
    expect(m.rd(0x002, 4)).toBe(0);
    m.wr(0x070, ACK, 1);
    expect(m.rd(0x070)).toBe(0);
    // Config generation moves when the device signals a change.
    linuxProbe(m);
    const gen = m.rd(0x0fc);
    m.device.activation!.interrupt.signalConfigChange();
    expect(m.rd(0x0fc)).toBe(gen + 1);
    expect(m.rd(0x060)).toBe(2);
  });

  it('sets DEVICE_NEEDS_RESET with a config interrupt when the driver corrupts a ring, and recovers by reset', () => {
    const m = machine();
    linuxProbe(m);
    const q = m.queues[0]!;
    q.publish(7);
    q.setDesc(q.desc, 7, 0x7fffffff, 16, 0, 0); // buffer outside RAM
    expect(() => m.wr(0x050, 0)).not.toThrow();
    expect(m.rd(0x070) & NEEDS_RESET).toBe(NEEDS_RESET);
    expect(m.rd(0x060)).toBe(2);
    expect(m.t.core.failure).toMatch(/queue 0: buffer 0x7fffffff\+0x10 of chain 7 is outside guest memory/);
    // Further notifies are ignored until reset; then the handshake works again.
    m.wr(0x050, 1);
    expect(m.device.processed).toEqual([0]);
    linuxProbe(m);
    expect(m.rd(0x070) & NEEDS_RESET).toBe(0);
    expect(m.t.core.queues[0]!.error).toBeNull();
  });

  it('sets DEVICE_NEEDS_RESET at DRIVER_OK when a queue is outside RAM', () => {
    const m = machine();
    m.queues[1] = new TestQueueDriver(m.dv, 0x200000, 4); // past the 1 MiB of RAM
    linuxProbeTolerant(m);
    expect(m.rd(0x070) & NEEDS_RESET).toBe(NEEDS_RESET);
    expect(m.t.core.failure).toMatch(/queue 1: descriptor table 0x200000/);
  });

  it('saves and restores mid-operation: pending interrupt, half-consumed ring, device state', () => {
    const m = machine();
    linuxProbe(m);
    m.wr(0x107, 0x55, 1);
    const q = m.queues[0]!;
    m.ram.set([7, 8], DATA);
    q.publish(q.addChain([{ addr: DATA, len: 2 }, { addr: DATA + 0x10, len: 2, write: true }]));
    m.wr(0x050, 0);
    // A second request is made available but not yet notified when the snapshot is taken.
    m.ram.set([9, 10], DATA + 0x20);
    q.publish(q.addChain([{ addr: DATA + 0x20, len: 2 }, { addr: DATA + 0x30, len: 2, write: true }]));
    const state = JSON.parse(JSON.stringify(m.t.save())) as VirtioMmioState<{ version: 1; configByte: number }>;

    // Destination: same RAM contents, fresh device and transport.
    const { vm, ram } = makeVm();
    ram.set(m.ram);
    const device = new EchoDevice();
    const irqs: boolean[] = [];
    const t2 = new VirtioMmioTransport(device, { memory: vm.memory, irq: (l) => irqs.push(l) });
    t2.restore(state);
    expect(irqs).toEqual([true]); // interrupt still pending from the first request
    expect(t2.core.status).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(device.activation).not.toBeNull();
    const cfg = new Uint8Array(1);
    t2.read(0x107, cfg);
    expect(cfg[0]).toBe(0x55);
    t2.write(0x050, new Uint8Array([0, 0, 0, 0]));
    expect([...ram.subarray(DATA + 0x30, DATA + 0x32)]).toEqual([10, 9]);
    const dv2 = new DataView(ram.buffer);
    expect(dv2.getUint16(q.used + 2, true)).toBe(2);
    expect(() => t2.restore({ ...state, version: 3 as 1 })).toThrow(RangeError);
    expect(() => t2.restore({ ...state, transport: { ...state.transport, queues: [] } })).toThrow(/2 queues/);
  });
});

/** The probe without its expectations about the final status. */
function linuxProbeTolerant(m: M): void {
  const { rd, wr } = m;
  wr(0x070, 0);
  wr(0x070, ACK | DRIVER);
  wr(0x024, 1);
  wr(0x020, 1);
  wr(0x024, 0);
  wr(0x020, 0);
  wr(0x070, ACK | DRIVER | FEATURES_OK);
  m.queues.forEach((q, i) => {
    wr(0x030, i);
    wr(0x038, q.size);
    wr(0x080, q.desc);
    wr(0x090, q.avail);
    wr(0x0a0, q.used);
    wr(0x044, 1);
  });
  wr(0x070, rd(0x070) | DRIVER_OK);
}
