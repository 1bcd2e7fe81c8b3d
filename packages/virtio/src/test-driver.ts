/**
 * Test support (not exported): a VM with RAM, and the driver side of a split virtqueue that
 * writes descriptors and rings straight into guest RAM, as a guest driver would.
 * @module
 */

import { Kvm, type VmFd } from '@kvmts/kvm-core';
import { TRANSPORT_FEATURES } from './constants.js';
import type { VirtioActivation, VirtioDevice } from './device.js';
import { VirtioMmioTransport } from './transport/mmio.js';

/** A VM with `size` bytes of RAM at guest-physical 0, and a DataView onto that RAM. */
export function makeVm(size = 0x100000, flags = 0): { vm: VmFd; ram: Uint8Array; dv: DataView } {
  const vm = new Kvm().createVm();
  const buf = new ArrayBuffer(size);
  vm.setUserMemoryRegion({ slot: 0, flags, guestPhysAddr: 0, memorySize: size, userspaceAddr: buf });
  return { vm, ram: new Uint8Array(buf), dv: new DataView(buf) };
}

/** One buffer of a chain: guest address, length, device-writable or not. */
export interface TestBuffer {
  addr: number;
  len: number;
  write?: boolean;
}

/** Driver side of one split queue laid out at `base`: descriptors, then avail, then used (4-aligned). */
export class TestQueueDriver {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  /** Next descriptor index to hand out (wraps). */
  nextDesc = 0;
  availIdx = 0;

  constructor(
    private readonly dv: DataView,
    base: number,
    readonly size: number,
  ) {
    this.desc = base;
    this.avail = base + 16 * size;
    this.used = (this.avail + 6 + 2 * size + 3) & ~3;
  }

  /** Bytes from `base` the queue occupies. */
  get end(): number {
    return this.used + 6 + 8 * this.size;
  }

  setDesc(table: number, index: number, addr: number, len: number, flags: number, next: number): void {
    const at = table + 16 * index;
    this.dv.setUint32(at, addr % 2 ** 32, true);
    this.dv.setUint32(at + 4, Math.floor(addr / 2 ** 32), true);
    this.dv.setUint32(at + 8, len, true);
    this.dv.setUint16(at + 12, flags, true);
    this.dv.setUint16(at + 14, next, true);
  }

  /** Write `buffers` as a chain of consecutive (wrapping) descriptors; returns the head. */
  addChain(buffers: TestBuffer[]): number {
    const head = this.nextDesc;
    buffers.forEach((b, i) => {
      const idx = (head + i) % this.size;
      const last = i === buffers.length - 1;
      this.setDesc(this.desc, idx, b.addr, b.len, (last ? 0 : 1) | (b.write ? 2 : 0), (idx + 1) % this.size);
    });
    this.nextDesc = (head + buffers.length) % this.size;
    return head;
  }

  /** Write `buffers` as an indirect table at `table`, and one descriptor pointing to it; returns the head. */
  addIndirect(table: number, buffers: TestBuffer[]): number {
    buffers.forEach((b, i) => {
      const last = i === buffers.length - 1;
      this.setDesc(table, i, b.addr, b.len, (last ? 0 : 1) | (b.write ? 2 : 0), i + 1);
    });
    const head = this.nextDesc;
    this.setDesc(this.desc, head, table, 16 * buffers.length, 4, 0);
    this.nextDesc = (head + 1) % this.size;
    return head;
  }

  /** Put `head` on the available ring and publish the new index. */
  publish(head: number): void {
    this.dv.setUint16(this.avail + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.dv.setUint16(this.avail + 2, this.availIdx, true);
  }

  /** Set the available index directly (for wraparound tests and lies). */
  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.dv.setUint16(this.avail + 2, this.availIdx, true);
  }

  setAvailFlags(v: number): void {
    this.dv.setUint16(this.avail, v, true);
  }

  setUsedEvent(v: number): void {
    this.dv.setUint16(this.avail + 4 + 2 * this.size, v, true);
  }

  usedIdx(): number {
    return this.dv.getUint16(this.used + 2, true);
  }

  usedFlags(): number {
    return this.dv.getUint16(this.used, true);
  }

  availEvent(): number {
    return this.dv.getUint16(this.used + 4 + 8 * this.size, true);
  }

  /** Used ring entry for free-running used index `i`. */
  usedElem(i: number): { id: number; len: number } {
    const at = this.used + 4 + 8 * (i % this.size);
    return { id: this.dv.getUint32(at, true), len: this.dv.getUint32(at + 4, true) };
  }
}

/**
 * A minimal device for transport tests: type 42, two queues of 8, feature bit 0, an 8-byte
 * config whose byte 7 is writable. Each chain gets its readable bytes copied, reversed, into
 * its writable bytes.
 */
export class EchoDevice implements VirtioDevice<{ version: 1; configByte: number }> {
  readonly deviceType = 42;
  readonly queueMaxSizes = [8, 8];
  readonly features = 1n;
  readonly configSize = 8;
  activation: VirtioActivation | null = null;
  resets = 0;
  processed: number[] = [];
  private readonly config = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 0]);

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }
  writeConfig(offset: number, data: Uint8Array): void {
    if (offset + data.length === 8) this.config[7] = data[data.length - 1]!;
  }
  activate(activation: VirtioActivation): void {
    this.activation = activation;
  }
  processQueue(index: number): void {
    this.processed.push(index);
    const a = this.activation!;
    const q = a.queues[index]!;
    for (let c = q.pop(); c !== null; c = q.pop()) {
      const bytes = new Uint8Array(c.readableLength);
      c.read(a.memory, 0, bytes);
      const n = c.write(a.memory, 0, bytes.reverse());
      q.addUsed(c.head, n);
    }
    a.interrupt.signalUsed(index);
  }
  reset(): void {
    this.resets++;
    this.activation = null;
    this.config[7] = 0;
  }
  save(): { version: 1; configByte: number } {
    return { version: 1, configByte: this.config[7]! };
  }
  restore(state: { version: 1; configByte: number }): void {
    this.config[7] = state.configByte;
  }
}

/**
 * The virtio-mmio status and feature handshake up to FEATURES_OK: reset, ACKNOWLEDGE|DRIVER,
 * the `accepted` feature bits written as two 32-bit halves, FEATURES_OK.
 */
export function mmioNegotiate(reg: (off: number, v: number) => void, accepted: bigint): void {
  reg(0x070, 0);
  reg(0x070, 3);
  reg(0x024, 0);
  reg(0x020, Number(accepted & 0xffffffffn));
  reg(0x024, 1);
  reg(0x020, Number(accepted >> 32n));
  reg(0x070, 0xb);
}

/**
 * What a driver does to bring up a virtio-mmio device, through `reg` (a 32-bit register write
 * at an offset of the window): reset, ACKNOWLEDGE|DRIVER, every offered feature plus
 * VERSION_1, FEATURES_OK, then each queue laid out at `queueBase(i)` and made ready. The caller
 * sets DRIVER_OK (0xF) when it is done.
 */
export function mmioDriverSetup(
  device: { features: bigint; queueMaxSizes: readonly number[] },
  dv: DataView,
  reg: (off: number, v: number) => void,
  queueBase: (i: number) => number,
  queueSize: number,
): TestQueueDriver[] {
  mmioNegotiate(reg, device.features | TRANSPORT_FEATURES);
  return device.queueMaxSizes.map((_, i) => {
    const q = new TestQueueDriver(dv, queueBase(i), queueSize);
    reg(0x030, i);
    reg(0x038, queueSize);
    reg(0x080, q.desc);
    reg(0x090, q.avail);
    reg(0x0a0, q.used);
    reg(0x044, 1);
    return q;
  });
}

/**
 * A device behind virtio-mmio, brought up as Linux would with every offered feature accepted
 * and each queue `i` at 0x10000 * (i + 1) with `queueSize` entries. `notify(i)` kicks queue i.
 */
export function startMmioDevice<S>(device: VirtioDevice<S>, queueSize = 16, ramSize = 0x100000) {
  const { vm, ram, dv } = makeVm(ramSize);
  const irqs: boolean[] = [];
  const t = new VirtioMmioTransport(device, { memory: vm.memory, irq: (l) => irqs.push(l) });
  const reg = (off: number, v: number): void => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    t.write(off, d);
  };
  const queues = mmioDriverSetup(device, dv, reg, (i) => 0x10000 * (i + 1), queueSize);
  reg(0x070, 0xf);
  if (t.core.status !== 0xf) throw new Error(`device did not start: status 0x${t.core.status.toString(16)} (${t.core.failure ?? ''})`);
  return { vm, ram, dv, t, irqs, queues, notify: (i: number) => reg(0x050, i) };
}
