import { describe, expect, it } from 'vitest';
import { startMmioDevice } from '../test-driver.js';
import { VIRTIO_RNG_MAX_REQUEST, VirtioRng } from './rng.js';

describe('VirtioRng', () => {
  it('fills device-writable buffers with bytes from its source and interrupts', () => {
    let n = 0;
    const rng = new VirtioRng({ fill: (buf) => buf.forEach((_, i) => (buf[i] = n++ & 0xff)) });
    const m = startMmioDevice(rng);
    const q = m.queues[0]!;
    q.publish(q.addChain([{ addr: 0x80000, len: 16, write: true }, { addr: 0x80100, len: 8, write: true }]));
    m.notify(0);
    expect(q.usedIdx()).toBe(1);
    expect(q.usedElem(0).len).toBe(24);
    expect([...m.ram.subarray(0x80000, 0x80010)]).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect([...m.ram.subarray(0x80100, 0x80108)]).toEqual(Array.from({ length: 8 }, (_, i) => 16 + i));
    expect(m.irqs).toEqual([true]);
    expect(rng.bytesServed).toBe(24);
  });

  it('uses crypto randomness by default and caps each request', () => {
    const m = startMmioDevice(new VirtioRng(), 16, 0x200000);
    const q = m.queues[0]!;
    q.publish(q.addChain([{ addr: 0x80000, len: 0x20000, write: true }]));
    m.notify(0);
    expect(q.usedElem(0).len).toBe(VIRTIO_RNG_MAX_REQUEST);
    const got = m.ram.subarray(0x80000, 0x80000 + VIRTIO_RNG_MAX_REQUEST);
    // 64 KiB of random bytes: every byte value shows up, nothing past the cap is written.
    expect(new Set(got).size).toBe(256);
    expect(m.ram.subarray(0x80000 + VIRTIO_RNG_MAX_REQUEST, 0xa0000).every((b) => b === 0)).toBe(true);
  });

  it('answers a read-only buffer with 0 bytes and survives save/restore', () => {
    const rng = new VirtioRng();
    const m = startMmioDevice(rng);
    const q = m.queues[0]!;
    q.publish(q.addChain([{ addr: 0x80000, len: 16 }]));
    m.notify(0);
    expect(q.usedElem(0)).toEqual({ id: 0, len: 0 });
    const state = JSON.parse(JSON.stringify(m.t.save())) as ReturnType<typeof m.t.save>;
    expect(state.transport.device).toEqual({ version: 1 });
    expect(() => rng.restore({ version: 2 as 1 })).toThrow(RangeError);
  });
});
