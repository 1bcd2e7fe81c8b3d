import { describe, expect, it } from 'vitest';
import { KVM_MEM_LOG_DIRTY_PAGES, PAGE_SIZE } from '@kvmts/kvm-core';
import { TestQueueDriver, makeVm } from '../test-driver.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_USED_F_NO_NOTIFY,
  Virtqueue,
  type VirtqueueError,
  type VirtqueueErrorKind,
} from './virtqueue.js';

const RAM = 0x100000;
const QBASE = 0x1000;
const DATA = 0x20000;

/** A VM, a driver-side queue at QBASE and a device-side queue configured to match it. */
function setup(size = 8, opts: { eventIdx?: boolean; indirect?: boolean; flags?: number } = {}) {
  const { vm, ram, dv } = makeVm(RAM, opts.flags ?? 0);
  const drv = new TestQueueDriver(dv, QBASE, size);
  const q = new Virtqueue(size);
  q.size = size;
  q.descTable = drv.desc;
  q.availRing = drv.avail;
  q.usedRing = drv.used;
  q.ready = true;
  q.eventIdx = opts.eventIdx ?? false;
  q.indirectDesc = opts.indirect ?? false;
  const errors: VirtqueueError[] = [];
  q.onError = (e) => errors.push(e);
  return { vm, ram, dv, drv, q, errors };
}

describe('Virtqueue: popping chains', () => {
  it('pops a chain with readable then writable buffers and gathers/scatters its bytes', () => {
    const { vm, ram, drv, q, errors } = setup();
    expect(q.activate(vm.memory)).toBe(true);
    ram.set([1, 2, 3, 4], DATA);
    ram.set([5, 6], DATA + 0x100);
    const head = drv.addChain([
      { addr: DATA, len: 4 },
      { addr: DATA + 0x100, len: 2 },
      { addr: DATA + 0x200, len: 3, write: true },
      { addr: DATA + 0x300, len: 5, write: true },
    ]);
    expect(q.pop()).toBeNull();
    drv.publish(head);
    expect(q.availableCount()).toBe(1);
    const chain = q.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.segmentCount).toBe(4);
    expect(chain.readableCount).toBe(2);
    expect(chain.readableLength).toBe(6);
    expect(chain.writableLength).toBe(8);
    const got = new Uint8Array(5);
    expect(chain.read(vm.memory, 1, got)).toBe(5);
    expect([...got]).toEqual([2, 3, 4, 5, 6]);
    // Writable stream crosses from the 3-byte buffer into the 5-byte one.
    expect(chain.write(vm.memory, 1, new Uint8Array([9, 8, 7, 6, 5, 4, 3, 2]))).toBe(7);
    expect([...ram.subarray(DATA + 0x200, DATA + 0x203)]).toEqual([0, 9, 8]);
    expect([...ram.subarray(DATA + 0x300, DATA + 0x305)]).toEqual([7, 6, 5, 4, 3]);
    expect(q.pop()).toBeNull();
    expect(q.addUsed(chain.head, 8)).toBe(true);
    expect(drv.usedIdx()).toBe(1);
    expect(drv.usedElem(0)).toEqual({ id: head, len: 8 });
    expect(errors).toEqual([]);
  });

  it('marks pages the device writes dirty (used ring and buffers) for migration', () => {
    const { vm, drv, q } = setup(8, { flags: KVM_MEM_LOG_DIRTY_PAGES });
    q.activate(vm.memory);
    vm.getDirtyLog(0, RAM); // start clean
    drv.publish(drv.addChain([{ addr: DATA + 5 * PAGE_SIZE, len: 16, write: true }]));
    const chain = q.pop()!;
    chain.write(vm.memory, 0, new Uint8Array(16).fill(0xaa));
    q.addUsed(chain.head, 16);
    const log = vm.getDirtyLog(0, RAM);
    const dirty = (gpa: number): boolean => (log[(gpa / PAGE_SIZE) >> 3]! & (1 << ((gpa / PAGE_SIZE) & 7))) !== 0;
    expect(dirty(DATA + 5 * PAGE_SIZE)).toBe(true);
    expect(dirty(drv.used)).toBe(true);
    expect(dirty(DATA + 6 * PAGE_SIZE)).toBe(false);
  });

  it('follows indirect tables, which count as one ring entry', () => {
    const { vm, ram, drv, q, errors } = setup(4, { indirect: true });
    q.activate(vm.memory);
    ram.set([0x11, 0x22], DATA);
    const table = 0x30000;
    const head = drv.addIndirect(table, [
      { addr: DATA, len: 2 },
      { addr: DATA + 0x10, len: 4, write: true },
      { addr: DATA + 0x20, len: 4, write: true },
    ]);
    drv.publish(head);
    const chain = q.pop()!;
    expect(errors).toEqual([]);
    expect(chain.head).toBe(head);
    expect(chain.segmentCount).toBe(3);
    expect(chain.readableLength).toBe(2);
    expect(chain.writableLength).toBe(8);
    const b = new Uint8Array(2);
    chain.read(vm.memory, 0, b);
    expect([...b]).toEqual([0x11, 0x22]);
  });

  it('accepts an indirect table longer than the queue (up to the chain limit)', () => {
    const { vm, drv, q, errors } = setup(4, { indirect: true });
    q.activate(vm.memory);
    const bufs = Array.from({ length: 40 }, (_, i) => ({ addr: DATA + i * 16, len: 16, write: i >= 20 }));
    drv.publish(drv.addIndirect(0x30000, bufs));
    const chain = q.pop()!;
    expect(errors).toEqual([]);
    expect(chain.segmentCount).toBe(40);
    expect(chain.readableCount).toBe(20);
  });

  it('wraps the 16-bit ring indices at 65536', () => {
    const { vm, drv, q, errors } = setup(4);
    // The driver and device have both handled 65534 chains.
    q.restore({ ...q.save(), nextAvail: 65534, nextUsed: 65534 });
    drv.setAvailIdx(65534);
    vm.memory.writeU16(drv.used + 2, 65534);
    q.activate(vm.memory);
    const heads: number[] = [];
    for (let i = 0; i < 4; i++) {
      const h = drv.addChain([{ addr: DATA + i * 0x10, len: 0x10, write: true }]);
      heads.push(h);
      drv.publish(h);
    }
    expect(drv.availIdx).toBe(2);
    expect(q.availableCount()).toBe(4);
    const popped: number[] = [];
    for (let c = q.pop(); c !== null; c = q.pop()) {
      popped.push(c.head);
      q.addUsed(c.head, 0x10);
    }
    expect(popped).toEqual(heads);
    expect(q.nextAvail).toBe(2);
    expect(q.nextUsed).toBe(2);
    expect(drv.usedIdx()).toBe(2);
    // Used entries 65534, 65535, 0, 1 sit in ring slots 2, 3, 0, 1.
    expect([65534, 65535, 65536, 65537].map((i) => drv.usedElem(i).id)).toEqual(heads);
    expect(errors).toEqual([]);
  });
});

describe('Virtqueue: notification suppression', () => {
  it('without EVENT_IDX, honours NO_INTERRUPT and sets/clears NO_NOTIFY', () => {
    const { vm, drv, q } = setup();
    q.activate(vm.memory);
    drv.publish(drv.addChain([{ addr: DATA, len: 1, write: true }]));
    q.addUsed(q.pop()!.head, 1);
    expect(q.needsNotification()).toBe(true);
    drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(q.needsNotification()).toBe(false);
    q.disableNotification();
    expect(drv.usedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(q.enableNotification()).toBe(false);
    expect(drv.usedFlags()).toBe(0);
    drv.publish(drv.addChain([{ addr: DATA, len: 1, write: true }]));
    q.disableNotification();
    // A chain that arrived while notifications were off is reported when re-enabling.
    expect(q.enableNotification()).toBe(true);
  });

  it('with EVENT_IDX, interrupts only when used_event is crossed and ignores NO_INTERRUPT', () => {
    const { vm, drv, q } = setup(8, { eventIdx: true });
    q.activate(vm.memory);
    const complete = (): void => {
      drv.publish(drv.addChain([{ addr: DATA, len: 1, write: true }]));
      q.addUsed(q.pop()!.head, 1);
    };
    drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    drv.setUsedEvent(0);
    complete(); // used idx 0 -> 1
    expect(q.needsNotification()).toBe(true); // first decision, and entry 0 was asked for
    drv.setUsedEvent(3); // "interrupt me when entry 3 is used"
    complete(); // 2
    expect(q.needsNotification()).toBe(false);
    complete(); // 3
    expect(q.needsNotification()).toBe(false);
    complete(); // 4: entry 3 now used
    expect(q.needsNotification()).toBe(true);
    complete(); // 5
    expect(q.needsNotification()).toBe(false);
    // Two completions at once still cross an event between them.
    drv.setUsedEvent(6);
    complete();
    complete(); // 7
    expect(q.needsNotification()).toBe(true);
  });

  it('with EVENT_IDX, publishes avail_event as it consumes and never sets the used flags', () => {
    const { vm, drv, q } = setup(8, { eventIdx: true });
    q.activate(vm.memory);
    expect(drv.availEvent()).toBe(0);
    drv.publish(drv.addChain([{ addr: DATA, len: 1 }]));
    drv.publish(drv.addChain([{ addr: DATA, len: 1 }]));
    q.pop();
    expect(drv.availEvent()).toBe(1);
    q.disableNotification();
    expect(drv.usedFlags()).toBe(0);
    q.pop();
    expect(drv.availEvent()).toBe(1); // suppressed: not advanced while disabled
    expect(q.enableNotification()).toBe(false);
    expect(drv.availEvent()).toBe(2);
  });
});

describe('Virtqueue: a misbehaving driver gets a clean per-queue error', () => {
  const expectError = (errors: VirtqueueError[], q: Virtqueue, kind: VirtqueueErrorKind): void => {
    expect(errors.map((e) => e.kind)).toEqual([kind]);
    expect(q.error?.kind).toBe(kind);
    expect(q.usable).toBe(false);
    expect(q.pop()).toBeNull();
    expect(q.addUsed(0, 0)).toBe(false);
    expect(q.needsNotification()).toBe(false);
    expect(errors).toHaveLength(1); // reported once
  };

  it('rejects a bad size, misaligned rings and rings outside RAM at activation', () => {
    const cases: [(q: Virtqueue) => void, VirtqueueErrorKind][] = [
      [(q) => (q.size = 6), 'InvalidSize'],
      [(q) => (q.size = 16), 'InvalidSize'], // above the max of 8
      [(q) => (q.size = 0), 'InvalidSize'],
      [(q) => (q.descTable += 8), 'RingMisaligned'],
      [(q) => (q.usedRing += 2), 'RingMisaligned'],
      [(q) => (q.availRing = RAM - 4), 'RingOutsideMemory'],
      [(q) => (q.descTable = 2 ** 40), 'RingOutsideMemory'],
      [(q) => (q.usedRing = 2 ** 60), 'RingOutsideMemory'],
    ];
    for (const [mutate, kind] of cases) {
      const { vm, q, errors } = setup();
      mutate(q);
      expect(q.activate(vm.memory)).toBe(false);
      expectError(errors, q, kind);
    }
  });

  it('rejects malformed chains', () => {
    type Case = [string, (drv: TestQueueDriver) => void, VirtqueueErrorKind, boolean?];
    const cases: Case[] = [
      ['head index past the table', (d) => d.publish(9), 'HeadIndex'],
      ['avail idx more than a ring ahead', (d) => d.setAvailIdx(9), 'AvailIndex'],
      ['avail idx behind (huge distance)', (d) => d.setAvailIdx(0xffff), 'AvailIndex'],
      ['next index past the table', (d) => { d.setDesc(d.desc, 0, DATA, 1, 1, 8); d.publish(0); }, 'NextIndex'],
      ['a loop', (d) => { d.setDesc(d.desc, 0, DATA, 1, 1, 1); d.setDesc(d.desc, 1, DATA, 1, 1, 0); d.publish(0); }, 'ChainTooLong'],
      ['a self-loop', (d) => { d.setDesc(d.desc, 3, DATA, 1, 1, 3); d.publish(3); }, 'ChainTooLong'],
      ['a buffer outside RAM', (d) => d.publish(d.addChain([{ addr: RAM - 8, len: 16 }])), 'BufferOutsideMemory'],
      ['a buffer at a 64-bit address', (d) => d.publish(d.addChain([{ addr: 2 ** 36, len: 1 }])), 'BufferOutsideMemory'],
      ['readable after writable', (d) => d.publish(d.addChain([{ addr: DATA, len: 1, write: true }, { addr: DATA, len: 1 }])), 'DescriptorOrder'],
      ['more than 4 GiB in one chain', (d) => d.publish(d.addChain([{ addr: DATA, len: 0 }, ...Array.from({ length: 2 }, () => ({ addr: 0, len: 0xffffffff }))])), 'BufferOutsideMemory'],
      ['indirect without the feature', (d) => d.publish(d.addIndirect(0x30000, [{ addr: DATA, len: 1 }])), 'IndirectNotNegotiated'],
      ['indirect table of bad length', (d) => { d.setDesc(d.desc, 0, 0x30000, 24, 4, 0); d.publish(0); }, 'IndirectTable', true],
      ['indirect table of length 0', (d) => { d.setDesc(d.desc, 0, 0x30000, 0, 4, 0); d.publish(0); }, 'IndirectTable', true],
      ['indirect with NEXT', (d) => { d.setDesc(d.desc, 0, 0x30000, 16, 4 | 1, 1); d.publish(0); }, 'IndirectTable', true],
      ['indirect table outside RAM', (d) => { d.setDesc(d.desc, 0, RAM - 16, 32, 4, 0); d.publish(0); }, 'BufferOutsideMemory', true],
      ['nested indirect', (d) => { d.setDesc(0x30000, 0, 0x31000, 16, 4, 0); d.setDesc(d.desc, 0, 0x30000, 16, 4, 0); d.publish(0); }, 'NestedIndirect', true],
      ['a loop inside an indirect table', (d) => { d.setDesc(0x30000, 0, DATA, 1, 1, 1); d.setDesc(0x30000, 1, DATA, 1, 1, 0); d.setDesc(d.desc, 0, 0x30000, 32, 4, 0); d.publish(0); }, 'ChainTooLong', true],
      ['next past an indirect table', (d) => { d.setDesc(0x30000, 0, DATA, 1, 1, 2); d.setDesc(d.desc, 0, 0x30000, 32, 4, 0); d.publish(0); }, 'NextIndex', true],
    ];
    for (const [name, build, kind, indirect] of cases) {
      const { vm, drv, q, errors } = setup(8, { indirect: indirect ?? false });
      q.activate(vm.memory);
      build(drv);
      expect(() => q.pop(), name).not.toThrow();
      expect(errors.map((e) => e.kind), name).toEqual([kind]);
      expectError(errors, q, kind);
    }
  });

  it('turns a memory slot vanishing under an active queue into MemoryFault', () => {
    const { vm, drv, q, errors } = setup();
    q.activate(vm.memory);
    drv.publish(drv.addChain([{ addr: DATA, len: 1 }]));
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: 0, userspaceAddr: new ArrayBuffer(0) });
    expect(q.pop()).toBeNull();
    expectError(errors, q, 'MemoryFault');
  });

  it('addUsed rejects a head outside the queue', () => {
    const { vm, q, errors } = setup();
    q.activate(vm.memory);
    expect(q.addUsed(8, 0)).toBe(false);
    expectError(errors, q, 'UsedIndex');
  });

  it('reset clears the error and the configuration', () => {
    const { vm, drv, q } = setup();
    q.activate(vm.memory);
    drv.publish(9);
    q.pop();
    expect(q.error).not.toBeNull();
    q.reset();
    expect(q.error).toBeNull();
    expect(q.ready).toBe(false);
    expect([q.size, q.descTable, q.nextAvail]).toEqual([8, 0, 0]);
  });
});

describe('Virtqueue save/restore', () => {
  it('round-trips mid-operation through JSON and carries on where it left off', () => {
    const { vm, drv, q } = setup(8, { eventIdx: true, indirect: true });
    q.activate(vm.memory);
    for (let i = 0; i < 3; i++) drv.publish(drv.addChain([{ addr: DATA + i, len: 1, write: true }]));
    const first = q.pop()!;
    q.addUsed(first.head, 1);
    q.needsNotification();
    const state = JSON.parse(JSON.stringify(q.save())) as ReturnType<Virtqueue['save']>;
    expect(state).toMatchObject({ version: 1, size: 8, nextAvail: 1, nextUsed: 1, eventIdx: true, indirectDesc: true, signalledUsed: 1, error: null });

    const q2 = new Virtqueue(8);
    q2.restore(state);
    expect(q2.usable).toBe(false); // until the transport activates it
    expect(q2.activate(vm.memory)).toBe(true);
    expect(q2.availableCount()).toBe(2);
    const second = q2.pop()!;
    expect(second.head).toBe(1);
    q2.addUsed(second.head, 1);
    expect(drv.usedIdx()).toBe(2);
    expect(drv.usedElem(1)).toEqual({ id: 1, len: 1 });
    expect(q2.save()).toMatchObject({ nextAvail: 2, nextUsed: 2 });
  });

  it('keeps an error across save/restore and rejects malformed snapshots', () => {
    const { vm, drv, q } = setup();
    q.activate(vm.memory);
    drv.publish(9);
    q.pop();
    const q2 = new Virtqueue(8);
    q2.restore(q.save());
    expect(q2.error?.kind).toBe('HeadIndex');
    expect(() => new Virtqueue(16).restore(q.save())).toThrow(RangeError);
    expect(() => q2.restore({ ...q.save(), nextAvail: 70000 })).toThrow(/16-bit/);
    expect(() => q2.restore({ ...q.save(), version: 2 as 1 })).toThrow(/version/);
  });
});
