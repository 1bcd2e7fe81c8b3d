import { describe, expect, it } from 'vitest';
import { VIRTIO_INT_CONFIG_CHANGE } from '../constants.js';
import { startMmioDevice } from '../test-driver.js';
import { type NetBackend, NetSwitch, NullNetBackend } from './backend.js';
import { VIRTIO_NET_HDR_SIZE, VirtioNet } from './net.js';

const MAC_A = [0x52, 0x54, 0, 0, 0, 0xa];
const MAC_B = [0x52, 0x54, 0, 0, 0, 0xb];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const frame = (dst: number[], src: number[], payload: string): Uint8Array => Uint8Array.from([...dst, ...src, 0x08, 0x00, ...Buffer.from(payload)]);

function nic(mac: string, backend: NetBackend) {
  const dev = new VirtioNet({ mac, backend });
  const m = startMmioDevice(dev);
  const rx = m.queues[0];
  const tx = m.queues[1];
  let rxAt = 0x80000;
  let txAt = 0xc0000;
  return {
    dev,
    ...m,
    rx: rx!,
    tx: tx!,
    /** Post `n` receive buffers of `len` bytes. */
    post(n: number, len = 1526) {
      for (let i = 0; i < n; i++) {
        rx!.publish(rx!.addChain([{ addr: rxAt, len, write: true }]));
        rxAt += 0x800;
      }
      m.notify(0);
    },
    /** Transmit one frame (header descriptor, then the frame). */
    send(f: Uint8Array) {
      m.ram.fill(0, txAt, txAt + VIRTIO_NET_HDR_SIZE);
      m.ram.set(f, txAt + 0x20);
      tx!.publish(tx!.addChain([{ addr: txAt, len: VIRTIO_NET_HDR_SIZE }, { addr: txAt + 0x20, len: f.length }]));
      txAt += 0x800;
      m.notify(1);
    },
    /** Frame received into used entry `i`. */
    received(i: number): Uint8Array {
      const e = rx!.usedElem(i);
      const at = 0x80000 + 0x800 * e.id;
      return m.ram.slice(at + VIRTIO_NET_HDR_SIZE, at + e.len);
    },
  };
}

describe('VirtioNet', () => {
  it('exposes MAC and link status in config, and signals link changes', () => {
    const a = nic('52:54:00:00:00:0a', new NullNetBackend());
    const cfg = new Uint8Array(8);
    a.t.read(0x100, cfg);
    expect([...cfg]).toEqual([...MAC_A, 1, 0]);
    a.dev.setLinkUp(false);
    a.t.read(0x106, cfg.subarray(0, 2));
    expect(cfg[0]).toBe(0);
    expect(a.t.core.interruptStatus & VIRTIO_INT_CONFIG_CHANGE).toBe(VIRTIO_INT_CONFIG_CHANGE);
    expect(() => new VirtioNet({ mac: 'nope' })).toThrow(RangeError);
  });

  it('connects two guests through the in-process switch: flood, learn, unicast', () => {
    const sw = new NetSwitch();
    const a = nic('52:54:00:00:00:0a', sw.createPort());
    const b = nic('52:54:00:00:00:0b', sw.createPort());
    const c = nic('52:54:00:00:00:0c', sw.createPort());
    a.post(4);
    b.post(4);
    c.post(4);
    const hello = frame(BCAST, MAC_A, 'who has');
    a.send(hello);
    expect(a.tx.usedIdx()).toBe(1);
    expect(b.rx.usedIdx()).toBe(1);
    expect(c.rx.usedIdx()).toBe(1);
    expect(a.rx.usedIdx()).toBe(0); // not back to the sender
    expect([...b.received(0)]).toEqual([...hello]);
    expect(b.irqs).toEqual([true]);
    // B answers A by unicast: the switch learnt where A is, so C does not see it.
    const reply = frame(MAC_A, MAC_B, 'is at');
    b.send(reply);
    expect(a.rx.usedIdx()).toBe(1);
    expect([...a.received(0)]).toEqual([...reply]);
    expect(c.rx.usedIdx()).toBe(1);
    expect(sw.learnt).toBe(2);
    expect(a.dev.stats).toMatchObject({ txFrames: 1, rxFrames: 1 });
  });

  it('holds frames until receive buffers arrive, and drops frames too big for the buffer', () => {
    const sw = new NetSwitch();
    const a = nic('52:54:00:00:00:0a', sw.createPort());
    const b = nic('52:54:00:00:00:0b', sw.createPort());
    a.send(frame(BCAST, MAC_A, 'early'));
    expect(b.rx.usedIdx()).toBe(0);
    b.post(1, 20); // too small for header + 19-byte frame: returned empty, frame dropped
    expect(b.rx.usedIdx()).toBe(1);
    expect(b.rx.usedElem(0).len).toBe(0);
    expect(b.dev.stats.rxDropped).toBe(1);
    a.send(Uint8Array.from([...BCAST, ...MAC_A])); // 12-byte runt: the switch drops it (no EtherType)
    b.post(1);
    expect(b.rx.usedIdx()).toBe(1);
    a.send(frame(BCAST, MAC_A, 'ok'));
    expect(b.rx.usedIdx()).toBe(2);
    expect(Buffer.from(b.received(1).subarray(14)).toString()).toBe('ok');
  });

  it('counts frames sent into the null backend; save/restore keeps MAC and link', () => {
    const nul = new NullNetBackend();
    const a = nic('52:54:00:00:00:0a', nul);
    a.send(frame(BCAST, MAC_A, 'hello'));
    expect(nul.framesSent).toBe(1);
    expect(nul.bytesSent).toBe(19);
    a.dev.setLinkUp(false);
    const state = JSON.parse(JSON.stringify(a.t.save())) as ReturnType<typeof a.t.save>;
    expect(state.transport.device).toEqual({ version: 1, mac: '52:54:00:00:00:0a', linkUp: false });
    const other = new VirtioNet();
    other.restore(state.transport.device as ReturnType<VirtioNet['save']>);
    expect([other.mac, other.linkUp]).toEqual(['52:54:00:00:00:0a', false]);
  });
});
