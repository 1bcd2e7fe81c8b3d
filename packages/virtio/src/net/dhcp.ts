/**
 * A DHCP server (RFC 2131/2132) that plugs into a network the way a NIC does, so guests on an
 * in-process {@link NetSwitch} (or behind any {@link NetBackend}) can configure themselves with
 * `udhcpc` or `dhclient`. It hands out addresses from a small pool, QEMU-user-networking style
 * (10.0.2.15 onwards, server and router 10.0.2.2), remembers them per MAC address, and answers
 * DISCOVER, REQUEST (selecting, renewing, rebooting), RELEASE and INFORM.
 *
 * It only speaks DHCP: it does not answer ARP or ping for its own address, and routes nothing.
 * Malformed or foreign frames are ignored.
 * @module
 */

import type { NetBackend } from './backend.js';

/** Options of {@link DhcpServer}. */
export interface DhcpServerOptions {
  /** The server's address, also its DHCP server identifier (default 10.0.2.2). */
  serverIp?: string;
  /** The server's MAC address (default 52:55:0a:00:02:02). */
  serverMac?: string;
  /** Prefix length of the subnet (default 24). */
  prefixLength?: number;
  /** First address handed out (default 10.0.2.15). */
  poolStart?: string;
  /** How many addresses the pool has (default 16). */
  poolSize?: number;
  /** Default gateway given to clients (default the server's address; null: none). */
  router?: string | null;
  /** DNS servers given to clients (default none). */
  dns?: string[];
  /** Domain name given to clients (option 15; default none). */
  domainName?: string;
  /** Lease time in seconds (default 86400). */
  leaseSeconds?: number;
}

/** One lease, for inspection. */
export interface DhcpLease {
  mac: string;
  ip: string;
  /** Whether the client has requested it (ACKed), not just been offered it. */
  bound: boolean;
}

// Message types (option 53).
export const DHCP_DISCOVER = 1;
export const DHCP_OFFER = 2;
export const DHCP_REQUEST = 3;
export const DHCP_DECLINE = 4;
export const DHCP_ACK = 5;
export const DHCP_NAK = 6;
export const DHCP_RELEASE = 7;
export const DHCP_INFORM = 8;

/** UDP ports of BOOTP/DHCP. */
export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

const ETH_HEADER = 14;
const IP_HEADER = 20;
const UDP_HEADER = 8;
/** BOOTP fixed part: op .. file, then the magic cookie. */
const BOOTP_FIXED = 236;
const MAGIC_COOKIE = 0x63825363;
/** Replies are padded to the BOOTP minimum, which some clients insist on. */
const BOOTP_MIN = 300;

const OPT_PAD = 0;
const OPT_SUBNET_MASK = 1;
const OPT_ROUTER = 3;
const OPT_DNS = 6;
const OPT_DOMAIN_NAME = 15;
const OPT_BROADCAST = 28;
const OPT_REQUESTED_IP = 50;
const OPT_LEASE_TIME = 51;
const OPT_MESSAGE_TYPE = 53;
const OPT_SERVER_ID = 54;
const OPT_RENEWAL_TIME = 58;
const OPT_REBINDING_TIME = 59;
const OPT_END = 255;

const parseIp = (text: string): number => {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) throw new RangeError(`"${text}" is not an IPv4 address`);
  return parts.reduce((a, p) => a * 256 + Number(p), 0);
};
const formatIp = (v: number): string => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff].join('.');
const parseMac = (text: string): Uint8Array => {
  const parts = text.split(':');
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-f]{2}$/i.test(p))) throw new RangeError(`"${text}" is not a MAC address`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
};
const formatMac = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

/** The Internet checksum (RFC 1071) of `bytes`, starting from `sum`. */
function checksum(bytes: Uint8Array, sum = 0): number {
  let s = sum;
  for (let i = 0; i + 1 < bytes.length; i += 2) s += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2 === 1) s += bytes[bytes.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

interface DhcpRequest {
  type: number;
  xid: number;
  flags: number;
  ciaddr: number;
  giaddr: number;
  chaddr: Uint8Array;
  requestedIp: number | undefined;
  serverId: number | undefined;
}

/** Parse a frame as a BOOTREQUEST to port 67; undefined for anything else. */
function parseRequest(frame: Uint8Array): DhcpRequest | undefined {
  if (frame.length < ETH_HEADER + IP_HEADER + UDP_HEADER + BOOTP_FIXED + 4) return undefined;
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (v.getUint16(12) !== 0x0800) return undefined; // IPv4 only (no VLAN tags)
  const ihl = (frame[ETH_HEADER]! & 0x0f) * 4;
  if (frame[ETH_HEADER]! >> 4 !== 4 || ihl < IP_HEADER || frame[ETH_HEADER + 9] !== 17) return undefined;
  if ((v.getUint16(ETH_HEADER + 6) & 0x3fff) !== 0) return undefined; // fragments: not for us
  const udp = ETH_HEADER + ihl;
  if (v.getUint16(udp + 2) !== DHCP_SERVER_PORT) return undefined;
  const bootp = udp + UDP_HEADER;
  const end = Math.min(frame.length, udp + v.getUint16(udp + 4));
  if (end < bootp + BOOTP_FIXED + 4) return undefined;
  // op 1 (request), htype 1 (Ethernet), hlen 6.
  if (frame[bootp] !== 1 || frame[bootp + 1] !== 1 || frame[bootp + 2] !== 6) return undefined;
  if (v.getUint32(bootp + BOOTP_FIXED) !== MAGIC_COOKIE) return undefined;
  let type: number | undefined;
  let requestedIp: number | undefined;
  let serverId: number | undefined;
  for (let at = bootp + BOOTP_FIXED + 4; at < end; ) {
    const code = frame[at]!;
    if (code === OPT_END) break;
    if (code === OPT_PAD) {
      at++;
      continue;
    }
    if (at + 2 > end) return undefined;
    const len = frame[at + 1]!;
    const data = at + 2;
    if (data + len > end) return undefined;
    if (code === OPT_MESSAGE_TYPE && len === 1) type = frame[data];
    else if (code === OPT_REQUESTED_IP && len === 4) requestedIp = v.getUint32(data);
    else if (code === OPT_SERVER_ID && len === 4) serverId = v.getUint32(data);
    at = data + len;
  }
  if (type === undefined) return undefined; // plain BOOTP: not served
  return {
    type,
    xid: v.getUint32(bootp + 4),
    flags: v.getUint16(bootp + 10),
    ciaddr: v.getUint32(bootp + 12),
    giaddr: v.getUint32(bootp + 24),
    chaddr: frame.slice(bootp + 28, bootp + 34),
    requestedIp,
    serverId,
  };
}

/** The DHCP server; see the module comment. */
export class DhcpServer {
  /** Counters (JSON-able). */
  readonly stats = { discovers: 0, offers: 0, requests: 0, acks: 0, naks: 0, releases: 0, ignored: 0 };

  private readonly serverIp: number;
  private readonly serverMac: Uint8Array;
  private readonly mask: number;
  private readonly poolStart: number;
  private readonly poolSize: number;
  private readonly router: number | null;
  private readonly dns: number[];
  private readonly domainName: Uint8Array | undefined;
  private readonly leaseSeconds: number;
  /** MAC (as text) → lease. */
  private readonly leasesByMac = new Map<string, { ip: number; bound: boolean }>();
  private backend: NetBackend | undefined;

  constructor(options: DhcpServerOptions = {}) {
    this.serverIp = parseIp(options.serverIp ?? '10.0.2.2');
    this.serverMac = parseMac(options.serverMac ?? '52:55:0a:00:02:02');
    const prefix = options.prefixLength ?? 24;
    if (!Number.isInteger(prefix) || prefix < 1 || prefix > 30) throw new RangeError(`prefix length ${String(prefix)} is not 1 to 30`);
    this.mask = (0xffffffff << (32 - prefix)) >>> 0;
    this.poolStart = parseIp(options.poolStart ?? '10.0.2.15');
    this.poolSize = options.poolSize ?? 16;
    if (!Number.isInteger(this.poolSize) || this.poolSize < 1) throw new RangeError(`pool size ${String(this.poolSize)} is not a positive integer`);
    const poolEnd = this.poolStart + this.poolSize - 1;
    if ((this.poolStart & this.mask) >>> 0 !== (this.serverIp & this.mask) >>> 0 || (poolEnd & this.mask) >>> 0 !== (this.serverIp & this.mask) >>> 0) {
      throw new RangeError('the address pool must lie in the server\'s subnet');
    }
    if (this.serverIp >= this.poolStart && this.serverIp <= poolEnd) throw new RangeError('the server\'s address must not be in the pool');
    this.router = options.router === null ? null : parseIp(options.router ?? formatIp(this.serverIp));
    this.dns = (options.dns ?? []).map(parseIp);
    this.domainName = options.domainName === undefined ? undefined : new TextEncoder().encode(options.domainName);
    if (this.domainName !== undefined && (this.domainName.length === 0 || this.domainName.length > 255)) throw new RangeError('domain name must be 1 to 255 bytes');
    this.leaseSeconds = options.leaseSeconds ?? 86400;
    if (!Number.isInteger(this.leaseSeconds) || this.leaseSeconds < 60 || this.leaseSeconds > 0xffffffff) throw new RangeError('lease time must be 60 s to 2^32-1 s');
  }

  /** Plug the server into a network: e.g. `server.connect(netSwitch.createPort())`. */
  connect(backend: NetBackend): void {
    this.backend = backend;
    backend.attach((frame) => this.handleFrame(frame));
  }

  /** The current leases (offered or bound), sorted by address. */
  get leases(): DhcpLease[] {
    return [...this.leasesByMac.entries()]
      .map(([mac, l]) => ({ mac, ip: formatIp(l.ip), bound: l.bound }))
      .sort((a, b) => parseIp(a.ip) - parseIp(b.ip));
  }

  /** Look at one frame from the network; answers DHCP requests, ignores the rest. */
  handleFrame(frame: Uint8Array): void {
    const req = parseRequest(frame);
    if (req === undefined) return;
    const mac = formatMac(req.chaddr);
    switch (req.type) {
      case DHCP_DISCOVER: {
        this.stats.discovers++;
        const ip = this.allocate(mac, req.requestedIp);
        if (ip === undefined) {
          this.stats.ignored++; // pool exhausted: stay silent, as servers do
          return;
        }
        this.stats.offers++;
        this.reply(req, DHCP_OFFER, ip);
        return;
      }
      case DHCP_REQUEST: {
        this.stats.requests++;
        if (req.serverId !== undefined && req.serverId !== this.serverIp) {
          // The client chose another server's offer: forget ours.
          const lease = this.leasesByMac.get(mac);
          if (lease && !lease.bound) this.leasesByMac.delete(mac);
          this.stats.ignored++;
          return;
        }
        const wanted = req.requestedIp ?? req.ciaddr;
        let lease = this.leasesByMac.get(mac);
        // A client that rebooted (or a server that restarted) may ask for a free address it had.
        if (lease === undefined && this.isFree(wanted)) this.leasesByMac.set(mac, (lease = { ip: wanted, bound: false }));
        if (wanted === 0 || lease?.ip !== wanted) {
          this.stats.naks++;
          this.reply(req, DHCP_NAK, 0);
          return;
        }
        lease.bound = true;
        this.stats.acks++;
        this.reply(req, DHCP_ACK, wanted);
        return;
      }
      case DHCP_RELEASE:
      case DHCP_DECLINE: {
        this.stats.releases++;
        const lease = this.leasesByMac.get(mac);
        if (lease && (req.type === DHCP_DECLINE || lease.ip === req.ciaddr)) this.leasesByMac.delete(mac);
        return;
      }
      case DHCP_INFORM:
        // The client has an address; it only wants the other parameters.
        this.stats.acks++;
        this.reply(req, DHCP_ACK, 0);
        return;
      default:
        this.stats.ignored++;
    }
  }

  /** The client's address: its lease, else the one it asks for if free, else the first free one. */
  private allocate(mac: string, requested: number | undefined): number | undefined {
    const existing = this.leasesByMac.get(mac);
    if (existing) return existing.ip;
    let ip: number | undefined;
    if (requested !== undefined && this.isFree(requested)) ip = requested;
    for (let i = 0; ip === undefined && i < this.poolSize; i++) if (this.isFree(this.poolStart + i)) ip = this.poolStart + i;
    if (ip !== undefined) this.leasesByMac.set(mac, { ip, bound: false });
    return ip;
  }

  /** In the pool and nobody's lease. */
  private isFree(ip: number): boolean {
    if (ip < this.poolStart || ip >= this.poolStart + this.poolSize) return false;
    for (const l of this.leasesByMac.values()) if (l.ip === ip) return false;
    return true;
  }

  private reply(req: DhcpRequest, type: number, yiaddr: number): void {
    const options: number[] = [OPT_MESSAGE_TYPE, 1, type, OPT_SERVER_ID, 4, ...ipBytes(this.serverIp)];
    if (type !== DHCP_NAK) {
      if (type !== DHCP_ACK || yiaddr !== 0) {
        const t = this.leaseSeconds;
        options.push(OPT_LEASE_TIME, 4, ...u32Bytes(t), OPT_RENEWAL_TIME, 4, ...u32Bytes(Math.floor(t / 2)), OPT_REBINDING_TIME, 4, ...u32Bytes(Math.floor((t * 7) / 8)));
      }
      options.push(OPT_SUBNET_MASK, 4, ...ipBytes(this.mask));
      options.push(OPT_BROADCAST, 4, ...ipBytes(((this.serverIp & this.mask) | ~this.mask) >>> 0));
      if (this.router !== null) options.push(OPT_ROUTER, 4, ...ipBytes(this.router));
      if (this.dns.length > 0) options.push(OPT_DNS, 4 * this.dns.length, ...this.dns.flatMap(ipBytes));
      if (this.domainName !== undefined) options.push(OPT_DOMAIN_NAME, this.domainName.length, ...this.domainName);
    }
    options.push(OPT_END);

    const bootpLen = Math.max(BOOTP_MIN, BOOTP_FIXED + 4 + options.length);
    const udpLen = UDP_HEADER + bootpLen;
    const ipLen = IP_HEADER + udpLen;
    const frame = new Uint8Array(ETH_HEADER + ipLen);
    const v = new DataView(frame.buffer);
    // RFC 2131 4.1: to the client's address when it has one, else broadcast if it asked or for a
    // NAK, else to the offered address at the client's MAC.
    const broadcast = req.ciaddr === 0 && ((req.flags & 0x8000) !== 0 || type === DHCP_NAK);
    const dstIp = req.ciaddr !== 0 && type !== DHCP_NAK ? req.ciaddr : broadcast || yiaddr === 0 ? 0xffffffff : yiaddr;
    frame.set(dstIp === 0xffffffff ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : req.chaddr, 0);
    frame.set(this.serverMac, 6);
    v.setUint16(12, 0x0800);

    const ip = ETH_HEADER;
    frame[ip] = 0x45;
    v.setUint16(ip + 2, ipLen);
    frame[ip + 8] = 64; // TTL
    frame[ip + 9] = 17; // UDP
    v.setUint32(ip + 12, this.serverIp);
    v.setUint32(ip + 16, dstIp);
    v.setUint16(ip + 10, checksum(frame.subarray(ip, ip + IP_HEADER)));

    const udp = ip + IP_HEADER;
    v.setUint16(udp, DHCP_SERVER_PORT);
    v.setUint16(udp + 2, DHCP_CLIENT_PORT);
    v.setUint16(udp + 4, udpLen);

    const b = udp + UDP_HEADER;
    frame[b] = 2; // BOOTREPLY
    frame[b + 1] = 1;
    frame[b + 2] = 6;
    v.setUint32(b + 4, req.xid);
    v.setUint16(b + 10, req.flags & 0x8000);
    if (type === DHCP_ACK && yiaddr === 0) v.setUint32(b + 12, req.ciaddr); // INFORM: echo ciaddr
    v.setUint32(b + 16, yiaddr);
    v.setUint32(b + 20, this.serverIp); // siaddr
    v.setUint32(b + 24, req.giaddr);
    frame.set(req.chaddr, b + 28);
    v.setUint32(b + BOOTP_FIXED, MAGIC_COOKIE);
    frame.set(options, b + BOOTP_FIXED + 4);

    // UDP checksum over the pseudo-header (source, destination, protocol, length) and the datagram.
    const pseudo = new Uint8Array(12);
    const pv = new DataView(pseudo.buffer);
    pv.setUint32(0, this.serverIp);
    pv.setUint32(4, dstIp);
    pseudo[9] = 17;
    pv.setUint16(10, udpLen);
    const partial = ~checksum(pseudo) & 0xffff;
    const sum = checksum(frame.subarray(udp, udp + udpLen), partial);
    v.setUint16(udp + 6, sum === 0 ? 0xffff : sum);

    this.backend?.send(frame);
  }
}

const ipBytes = (v: number): number[] => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const u32Bytes = ipBytes;
