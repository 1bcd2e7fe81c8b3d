import { createSocket } from 'node:dgram';
import { type Socket, connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startMmioDevice } from '../test-driver.js';
import { VIRTIO_NET_HDR_SIZE, VirtioNet } from './net.js';
import {
  FrameDecoder,
  SOCKET_NET_MAX_FRAME,
  StreamSocketNetBackend,
  UdpSocketNetBackend,
  encodeFrame,
  openSocketNetBackend,
  parseSocketNetSpec,
} from './socket-backend.js';

/** Wait until `cond()` holds (polling), failing after 3 s. */
async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const frame = (n: number, len = 60): Uint8Array => Uint8Array.from({ length: len }, (_, i) => (n + i) & 0xff);

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});
const closing = <T extends { close(): Promise<void> }>(b: T): T => {
  cleanups.push(() => b.close());
  return b;
};
const rawClient = async (port: number): Promise<Socket> => {
  const s = connect({ host: '127.0.0.1', port });
  cleanups.push(() => void s.destroy());
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  return s;
};

describe('FrameDecoder', () => {
  it('reassembles 4-byte big-endian length-prefixed frames from any chunking', () => {
    const got: number[][] = [];
    const d = new FrameDecoder((f) => got.push([...f]));
    const wire = Buffer.concat([encodeFrame(Uint8Array.of(1, 2, 3)), encodeFrame(new Uint8Array(0)), encodeFrame(Uint8Array.of(9))]);
    expect([...wire.subarray(0, 4)]).toEqual([0, 0, 0, 3]);
    for (const byte of wire) expect(d.push(Uint8Array.of(byte))).toBe(true);
    expect(got).toEqual([[1, 2, 3], [9]]); // the empty frame is skipped
    d.push(wire); // all at once
    expect(got.length).toBe(4);
  });

  it('refuses a length beyond the largest frame', () => {
    const d = new FrameDecoder(() => {});
    const head = Buffer.alloc(4);
    head.writeUInt32BE(SOCKET_NET_MAX_FRAME + 1);
    expect(d.push(head)).toBe(false);
  });
});

describe('StreamSocketNetBackend', () => {
  it('carries frames both ways between a listening and a connecting backend', async () => {
    const server = closing(await StreamSocketNetBackend.listen({ port: 0 }));
    const port = server.localAddress!.port;
    expect(server.localAddress!.host).toBe('127.0.0.1');
    const client = closing(StreamSocketNetBackend.connect({ host: '127.0.0.1', port }));
    const atServer: Uint8Array[] = [];
    const atClient: Uint8Array[] = [];
    server.attach((f) => atServer.push(f));
    client.attach((f) => atClient.push(f));
    await client.whenConnected();
    await server.whenConnected();
    for (let i = 0; i < 50; i++) client.send(frame(i, 60 + i));
    server.send(frame(200, 1514));
    server.send(frame(201, 9000));
    await until(() => atServer.length === 50 && atClient.length === 2, 'frames');
    expect(atServer.map((f) => f.length)).toEqual(Array.from({ length: 50 }, (_, i) => 60 + i));
    expect([...atServer[49]!]).toEqual([...frame(49, 109)]);
    expect([...atClient[1]!]).toEqual([...frame(201, 9000)]);
    expect(client.stats).toMatchObject({ framesSent: 50, framesReceived: 2, connects: 1, txDropped: 0 });
    expect(server.stats).toMatchObject({ framesReceived: 50, bytesReceived: 50 * 60 + (49 * 50) / 2 });
  });

  it('speaks QEMU\'s wire format: a 4-byte big-endian length, then the frame', async () => {
    const server = closing(await StreamSocketNetBackend.listen({ port: 0 }));
    const got: Uint8Array[] = [];
    server.attach((f) => got.push(f));
    const raw = await rawClient(server.localAddress!.port);
    const received: Buffer[] = [];
    raw.on('data', (c: Buffer) => received.push(c));
    await server.whenConnected();
    server.send(Uint8Array.of(0xde, 0xad, 0xbe, 0xef, 0x01));
    await until(() => Buffer.concat(received).length === 9, 'raw bytes');
    expect([...Buffer.concat(received)]).toEqual([0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x01]);
    // A frame written in pieces arrives whole.
    const wire = encodeFrame(frame(7, 300));
    raw.write(wire.subarray(0, 2));
    await new Promise((r) => setTimeout(r, 20));
    raw.write(wire.subarray(2, 150));
    raw.write(wire.subarray(150));
    await until(() => got.length === 1, 'frame');
    expect([...got[0]!]).toEqual([...frame(7, 300)]);
  });

  it('drops frames while disconnected and reconnects when the listener comes back', async () => {
    const first = await StreamSocketNetBackend.listen({ port: 0 });
    const port = first.localAddress!.port;
    const client = closing(StreamSocketNetBackend.connect({ host: '127.0.0.1', port, reconnectMs: 30 }));
    const changes: boolean[] = [];
    client.onConnectionChange = (up) => changes.push(up);
    await client.whenConnected();
    await first.close(); // the peer VM goes away
    await until(() => !client.connected, 'disconnect');
    client.send(frame(1));
    client.send(frame(2));
    expect(client.stats.txDropped).toBe(2);

    const second = closing(await StreamSocketNetBackend.listen({ port }));
    const got: Uint8Array[] = [];
    second.attach((f) => got.push(f));
    await until(() => client.connected, 'reconnect');
    client.send(frame(3));
    await until(() => got.length === 1, 'frame after reconnect');
    expect([...got[0]!]).toEqual([...frame(3)]);
    expect(changes).toEqual([true, false, true]);
    expect(client.stats).toMatchObject({ connects: 2, disconnects: 1 });
  });

  it('keeps retrying a peer that is not there yet, without failing', async () => {
    const probe = await StreamSocketNetBackend.listen({ port: 0 });
    const port = probe.localAddress!.port;
    await probe.close(); // now nothing listens on `port`
    const client = closing(StreamSocketNetBackend.connect({ host: '127.0.0.1', port, reconnectMs: 20 }));
    const failures: string[] = [];
    client.onConnectError = (err) => failures.push((err as NodeJS.ErrnoException).code ?? err.message);
    await until(() => client.stats.errors >= 2, 'a few failed attempts');
    expect(client.connected).toBe(false);
    // Each failed attempt is reported, so the VMM can say which peer is unreachable and why.
    expect(failures.length).toBeGreaterThanOrEqual(1);
    expect(failures[0]).toBe('ECONNREFUSED');
    const server = closing(await StreamSocketNetBackend.listen({ port }));
    await until(() => client.connected && server.connected, 'late connection');
  });

  it('drops a peer that sends an impossible length, and takes the next one', async () => {
    const server = closing(await StreamSocketNetBackend.listen({ port: 0 }));
    const got: Uint8Array[] = [];
    server.attach((f) => got.push(f));
    const bad = await rawClient(server.localAddress!.port);
    const closed = new Promise<void>((r) => bad.once('close', () => r()));
    bad.on('error', () => {});
    bad.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await closed;
    expect(server.stats.errors).toBe(1);
    expect(got).toEqual([]);
    const good = await rawClient(server.localAddress!.port);
    good.write(encodeFrame(frame(5)));
    await until(() => got.length === 1, 'frame from the next peer');
    expect(server.stats.connects).toBe(2);
  });

  it('counts frames that arrive before a device is attached as dropped', async () => {
    const server = closing(await StreamSocketNetBackend.listen({ port: 0 }));
    const raw = await rawClient(server.localAddress!.port);
    raw.write(encodeFrame(frame(1)));
    await until(() => server.stats.rxDropped === 1, 'drop');
  });

  it('connects two virtio-net devices in the same way two processes would', async () => {
    const server = closing(await StreamSocketNetBackend.listen({ port: 0 }));
    const client = closing(StreamSocketNetBackend.connect({ host: '127.0.0.1', port: server.localAddress!.port }));
    const a = new VirtioNet({ mac: '52:54:00:00:00:0a', backend: server });
    const b = new VirtioNet({ mac: '52:54:00:00:00:0b', backend: client });
    const ma = startMmioDevice(a);
    const mb = startMmioDevice(b);
    await Promise.all([server.whenConnected(), client.whenConnected()]);
    mb.queues[0]!.publish(mb.queues[0]!.addChain([{ addr: 0x80000, len: 1526, write: true }]));
    mb.notify(0);
    const f = Uint8Array.from([...[0x52, 0x54, 0, 0, 0, 0xb], ...[0x52, 0x54, 0, 0, 0, 0xa], 0x08, 0x00, ...Buffer.from('over tcp')]);
    ma.ram.set(f, 0xc0020);
    ma.queues[1]!.publish(ma.queues[1]!.addChain([{ addr: 0xc0000, len: VIRTIO_NET_HDR_SIZE }, { addr: 0xc0020, len: f.length }]));
    ma.notify(1);
    await until(() => mb.queues[0]!.usedIdx() === 1, 'frame in the peer guest');
    expect(mb.queues[0]!.usedElem(0).len).toBe(VIRTIO_NET_HDR_SIZE + f.length);
    expect([...mb.ram.subarray(0x80000 + VIRTIO_NET_HDR_SIZE, 0x80000 + VIRTIO_NET_HDR_SIZE + f.length)]).toEqual([...f]);
    expect(b.stats.rxFrames).toBe(1);
  });
});

describe('UdpSocketNetBackend', () => {
  it('sends one frame per datagram to its remote and ignores strangers', async () => {
    const a = closing(await UdpSocketNetBackend.open({ remote: { host: '127.0.0.1', port: 9 } })); // remote fixed below
    const b = closing(await UdpSocketNetBackend.open({ remote: a.localAddress }));
    // Re-open A pointing at B now that B's port is known.
    await a.close();
    const a2 = closing(await UdpSocketNetBackend.open({ remote: b.localAddress, local: { port: a.localAddress.port } }));
    const atA: Uint8Array[] = [];
    const atB: Uint8Array[] = [];
    a2.attach((f) => atA.push(f));
    b.attach((f) => atB.push(f));
    a2.send(frame(1, 100));
    b.send(frame(2, 1514));
    await until(() => atA.length === 1 && atB.length === 1, 'datagrams');
    expect([...atB[0]!]).toEqual([...frame(1, 100)]);
    expect([...atA[0]!]).toEqual([...frame(2, 1514)]);
    const stranger = createSocket('udp4');
    cleanups.push(() => new Promise<void>((r) => stranger.close(() => r())));
    stranger.send(Buffer.from(frame(3)), b.localAddress.port, '127.0.0.1');
    await until(() => b.stats.rxDropped === 1, 'stranger dropped');
    a2.send(new Uint8Array(70000)); // too big for a datagram
    expect(a2.stats.txDropped).toBe(1);
    expect(atB.length).toBe(1);
  });
});

describe('parseSocketNetSpec / openSocketNetBackend', () => {
  it('parses QEMU-style specs', () => {
    expect(parseSocketNetSpec('listen=:1234')).toEqual({ kind: 'listen', host: '127.0.0.1', port: 1234 });
    expect(parseSocketNetSpec('listen=0.0.0.0:1')).toEqual({ kind: 'listen', host: '0.0.0.0', port: 1 });
    expect(parseSocketNetSpec('connect=[::1]:80,reconnect=0.5')).toEqual({ kind: 'connect', host: '::1', port: 80, reconnectMs: 500 });
    expect(parseSocketNetSpec('connect=example.test:80')).toMatchObject({ reconnectMs: 1000 });
    expect(parseSocketNetSpec('udp=127.0.0.1:5000,localaddr=:5001')).toEqual({
      kind: 'udp',
      remote: { host: '127.0.0.1', port: 5000 },
      local: { host: '127.0.0.1', port: 5001 },
    });
    for (const bad of ['', 'listen=1234', 'listen=:99999', 'listen=:1,connect=:2', 'connect=:1,localaddr=:2', 'connect=:1,reconnect=x', 'listen=:1,listen=:2', 'mcast=1.2.3.4:5']) {
      expect(() => parseSocketNetSpec(bad), bad).toThrow(RangeError);
    }
  });

  it('opens the backend a spec describes', async () => {
    const server = closing(await openSocketNetBackend('listen=127.0.0.1:0'));
    expect(server).toBeInstanceOf(StreamSocketNetBackend);
    const port = (server as StreamSocketNetBackend).localAddress!.port;
    const client = closing(await openSocketNetBackend(`connect=127.0.0.1:${port},reconnect=0`));
    await (client as StreamSocketNetBackend).whenConnected();
    const udp = closing(await openSocketNetBackend('udp=127.0.0.1:9'));
    expect(udp).toBeInstanceOf(UdpSocketNetBackend);
    await expect(openSocketNetBackend(`listen=127.0.0.1:${port}`)).rejects.toThrow(/EADDRINUSE/);
  });
});
