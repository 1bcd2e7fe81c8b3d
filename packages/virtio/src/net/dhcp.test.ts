import { describe, expect, it } from 'vitest';
import { startMmioDevice } from '../test-driver.js';
import { NetSwitch } from './backend.js';
import { DHCP_ACK, DHCP_DISCOVER, DHCP_INFORM, DHCP_NAK, DHCP_OFFER, DHCP_RELEASE, DHCP_REQUEST, DhcpServer } from './dhcp.js';
import { VIRTIO_NET_HDR_SIZE, VirtioNet } from './net.js';

const ip = (s: string): number[] => s.split('.').map(Number);
const u32 = (v: number): number[] => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

/** One's-complement sum check: a correct header/datagram (with its checksum) sums to 0xffff. */
function onesSum(bytes: Uint8Array | number[]): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** A client's DHCP message in an Ethernet/IPv4/UDP frame, built independently of the server. */
function clientFrame(mac: number[], type: number, opts: { xid?: number; ciaddr?: string; requested?: string; serverId?: string; broadcast?: boolean } = {}): Uint8Array {
  const options = [53, 1, type];
  if (opts.requested) options.push(50, 4, ...ip(opts.requested));
  if (opts.serverId) options.push(54, 4, ...ip(opts.serverId));
  options.push(55, 3, 1, 3, 6, 255);
  const bootp = new Array<number>(236).fill(0);
  bootp[0] = 1;
  bootp[1] = 1;
  bootp[2] = 6;
  bootp.splice(4, 4, ...u32(opts.xid ?? 0x12345678));
  if (opts.broadcast) bootp[10] = 0x80;
  if (opts.ciaddr) bootp.splice(12, 4, ...ip(opts.ciaddr));
  bootp.splice(28, 6, ...mac);
  const payload = [...bootp, 0x63, 0x82, 0x53, 0x63, ...options];
  const udp = [0, 68, 0, 67, (payload.length + 8) >> 8, (payload.length + 8) & 0xff, 0, 0, ...payload];
  const total = 20 + udp.length;
  const ipHeader = [0x45, 0, total >> 8, total & 0xff, 0, 0, 0, 0, 64, 17, 0, 0, ...(opts.ciaddr ? ip(opts.ciaddr) : [0, 0, 0, 0]), 255, 255, 255, 255];
  return Uint8Array.from([...Array<number>(6).fill(0xff), ...mac, 0x08, 0x00, ...ipHeader, ...udp]);
}

interface Reply {
  dstMac: number[];
  dstIp: string;
  srcIp: string;
  xid: number;
  yiaddr: string;
  options: Map<number, number[]>;
}

/** Parse a server reply, checking the IPv4 and UDP checksums. */
function parseReply(f: Uint8Array): Reply {
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
  expect(v.getUint16(12)).toBe(0x0800);
  expect(onesSum(f.subarray(14, 34))).toBe(0xffff);
  const udpLen = v.getUint16(34 + 4);
  const pseudo = [...f.subarray(26, 34), 0, 17, udpLen >> 8, udpLen & 0xff];
  expect(onesSum([...pseudo, ...f.subarray(34, 34 + udpLen)])).toBe(0xffff);
  expect([v.getUint16(34), v.getUint16(36)]).toEqual([67, 68]);
  const b = 42;
  expect(f[b]).toBe(2);
  expect(udpLen - 8).toBeGreaterThanOrEqual(300);
  expect(v.getUint32(b + 236)).toBe(0x63825363);
  const options = new Map<number, number[]>();
  for (let at = b + 240; f[at] !== 255; ) {
    if (f[at] === 0) {
      at++;
      continue;
    }
    options.set(f[at]!, [...f.subarray(at + 2, at + 2 + f[at + 1]!)]);
    at += 2 + f[at + 1]!;
  }
  const dot = (at: number): string => [...f.subarray(at, at + 4)].join('.');
  return { dstMac: [...f.subarray(0, 6)], dstIp: dot(30), srcIp: dot(26), xid: v.getUint32(b + 4), yiaddr: dot(b + 16), options };
}

const MAC_A = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const MAC_B = [0x52, 0x54, 0, 0x12, 0x34, 0x57];

function network(options: ConstructorParameters<typeof DhcpServer>[0] = {}) {
  const sw = new NetSwitch();
  const server = new DhcpServer(options);
  server.connect(sw.createPort());
  const port = sw.createPort();
  const got: Reply[] = [];
  port.attach((f) => got.push(parseReply(f)));
  return { server, send: (f: Uint8Array) => port.send(f), got };
}

describe('DhcpServer', () => {
  it('offers, then acknowledges, an address with the network parameters', () => {
    const n = network({ dns: ['10.0.2.3'], domainName: 'kvmts.test' });
    n.send(clientFrame(MAC_A, DHCP_DISCOVER, { xid: 0xabcdef01 }));
    expect(n.got.length).toBe(1);
    const offer = n.got[0]!;
    expect(offer.options.get(53)).toEqual([DHCP_OFFER]);
    expect(offer.xid).toBe(0xabcdef01);
    expect(offer.yiaddr).toBe('10.0.2.15');
    expect(offer.dstMac).toEqual(MAC_A); // no broadcast flag: unicast to the client's MAC
    expect(offer.dstIp).toBe('10.0.2.15');
    expect(offer.srcIp).toBe('10.0.2.2');
    expect(offer.options.get(54)).toEqual(ip('10.0.2.2'));
    expect(offer.options.get(1)).toEqual([255, 255, 255, 0]);
    expect(offer.options.get(3)).toEqual(ip('10.0.2.2'));
    expect(offer.options.get(6)).toEqual(ip('10.0.2.3'));
    expect(offer.options.get(15)).toEqual([...Buffer.from('kvmts.test')]);
    expect(offer.options.get(28)).toEqual(ip('10.0.2.255'));
    expect(offer.options.get(51)).toEqual(u32(86400));
    expect(n.server.leases).toEqual([{ mac: '52:54:00:12:34:56', ip: '10.0.2.15', bound: false }]);

    n.send(clientFrame(MAC_A, DHCP_REQUEST, { requested: '10.0.2.15', serverId: '10.0.2.2', broadcast: true }));
    const ack = n.got[1]!;
    expect(ack.options.get(53)).toEqual([DHCP_ACK]);
    expect(ack.yiaddr).toBe('10.0.2.15');
    expect(ack.dstMac).toEqual([255, 255, 255, 255, 255, 255]); // the client asked for broadcast
    expect(ack.dstIp).toBe('255.255.255.255');
    expect(n.server.leases[0]!.bound).toBe(true);
  });

  it('gives each MAC its own address and the same one again', () => {
    const n = network();
    n.send(clientFrame(MAC_A, DHCP_DISCOVER));
    n.send(clientFrame(MAC_B, DHCP_DISCOVER, { requested: '10.0.2.20' }));
    n.send(clientFrame(MAC_A, DHCP_DISCOVER));
    expect(n.got.map((r) => r.yiaddr)).toEqual(['10.0.2.15', '10.0.2.20', '10.0.2.15']);
    expect(n.server.leases.map((l) => l.ip)).toEqual(['10.0.2.15', '10.0.2.20']);
  });

  it('refuses a request for someone else\'s address with a broadcast NAK', () => {
    const n = network();
    n.send(clientFrame(MAC_A, DHCP_DISCOVER));
    n.send(clientFrame(MAC_B, DHCP_REQUEST, { requested: '10.0.2.15' }));
    const nak = n.got[1]!;
    expect(nak.options.get(53)).toEqual([DHCP_NAK]);
    expect(nak.yiaddr).toBe('0.0.0.0');
    expect(nak.dstIp).toBe('255.255.255.255');
    expect(nak.options.has(1)).toBe(false);
    expect(n.server.leases.map((l) => l.mac)).toEqual(['52:54:00:12:34:56']); // no lease made for B
    // A rebooting client may claim a free address it had.
    n.send(clientFrame(MAC_B, DHCP_REQUEST, { requested: '10.0.2.17' }));
    expect(n.got[2]!.options.get(53)).toEqual([DHCP_ACK]);
    // Outside the pool: NAK.
    n.send(clientFrame([2, 0, 0, 0, 0, 9], DHCP_REQUEST, { requested: '192.168.1.5' }));
    expect(n.got[3]!.options.get(53)).toEqual([DHCP_NAK]);
  });

  it('renews by unicast, releases, and ignores requests meant for another server', () => {
    const n = network();
    n.send(clientFrame(MAC_A, DHCP_DISCOVER));
    n.send(clientFrame(MAC_A, DHCP_REQUEST, { requested: '10.0.2.15', serverId: '10.0.2.2' }));
    n.send(clientFrame(MAC_A, DHCP_REQUEST, { ciaddr: '10.0.2.15' })); // renewing
    expect(n.got[2]!.options.get(53)).toEqual([DHCP_ACK]);
    expect(n.got[2]!.dstIp).toBe('10.0.2.15');
    n.send(clientFrame(MAC_A, DHCP_RELEASE, { ciaddr: '10.0.2.15' }));
    expect(n.server.leases).toEqual([]);
    n.send(clientFrame(MAC_B, DHCP_DISCOVER));
    n.send(clientFrame(MAC_B, DHCP_REQUEST, { requested: '10.0.2.15', serverId: '10.9.9.9' }));
    expect(n.got.length).toBe(4); // no answer to a request for another server
    expect(n.server.leases).toEqual([]); // and the offer was withdrawn
    expect(n.server.stats.ignored).toBe(1);
  });

  it('answers INFORM with parameters only', () => {
    const n = network();
    n.send(clientFrame(MAC_A, DHCP_INFORM, { ciaddr: '10.0.2.99' }));
    const ack = n.got[0]!;
    expect(ack.options.get(53)).toEqual([DHCP_ACK]);
    expect(ack.yiaddr).toBe('0.0.0.0');
    expect(ack.options.has(51)).toBe(false);
    expect(ack.options.get(1)).toEqual([255, 255, 255, 0]);
    expect(n.server.leases).toEqual([]);
  });

  it('stays silent when the pool is exhausted', () => {
    const n = network({ poolSize: 1 });
    n.send(clientFrame(MAC_A, DHCP_DISCOVER));
    n.send(clientFrame(MAC_B, DHCP_DISCOVER));
    expect(n.got.length).toBe(1);
    expect(n.server.stats).toMatchObject({ discovers: 2, offers: 1, ignored: 1 });
  });

  it('ignores foreign and malformed frames', () => {
    const n = network();
    const good = clientFrame(MAC_A, DHCP_DISCOVER);
    const variants: Uint8Array[] = [new Uint8Array(0), good.subarray(0, 100), Uint8Array.from([...good.subarray(0, 12), 0x86, 0xdd, ...good.subarray(14)])];
    const wrongPort = good.slice();
    wrongPort[14 + 20 + 3] = 53;
    const noCookie = good.slice();
    noCookie[42 + 236] = 0;
    const badOption = good.slice(0, 42 + 240 + 2); // option 53 cut short
    const reply = good.slice();
    reply[42] = 2;
    variants.push(wrongPort, noCookie, badOption, reply);
    for (const f of variants) n.send(f);
    expect(n.got).toEqual([]);
    n.send(good);
    expect(n.got.length).toBe(1);
  });

  it('checks its options', () => {
    expect(() => new DhcpServer({ serverIp: '10.0.2.300' })).toThrow(RangeError);
    expect(() => new DhcpServer({ poolStart: '10.0.3.15' })).toThrow(/subnet/);
    expect(() => new DhcpServer({ serverIp: '10.0.2.16' })).toThrow(/pool/);
    expect(() => new DhcpServer({ leaseSeconds: 5 })).toThrow(RangeError);
    expect(() => new DhcpServer({ prefixLength: 0 })).toThrow(RangeError);
  });

  it('configures a virtio-net guest through the in-process switch', () => {
    const sw = new NetSwitch();
    new DhcpServer().connect(sw.createPort());
    const nic = new VirtioNet({ mac: '52:54:00:12:34:56', backend: sw.createPort() });
    const m = startMmioDevice(nic);
    m.queues[0]!.publish(m.queues[0]!.addChain([{ addr: 0x80000, len: 1526, write: true }]));
    m.notify(0);
    const discover = clientFrame(MAC_A, DHCP_DISCOVER, { broadcast: true });
    m.ram.set(discover, 0xc0020);
    m.queues[1]!.publish(m.queues[1]!.addChain([{ addr: 0xc0000, len: VIRTIO_NET_HDR_SIZE }, { addr: 0xc0020, len: discover.length }]));
    m.notify(1);
    const e = m.queues[0]!.usedElem(0);
    const offer = parseReply(m.ram.slice(0x80000 + VIRTIO_NET_HDR_SIZE, 0x80000 + e.len));
    expect(offer.options.get(53)).toEqual([DHCP_OFFER]);
    expect(offer.yiaddr).toBe('10.0.2.15');
  });
});
