/**
 * Network backends that connect the virtio-net devices of VMs in different processes, as
 * QEMU's `-netdev socket` (and `-netdev stream` / `-netdev dgram`) do, and with the same wire
 * formats so that a kvmts VM and a QEMU VM can share a segment:
 *
 * - **TCP** ({@link StreamSocketNetBackend}): one side listens, the other connects; each frame
 *   is sent as a 4-byte big-endian length followed by the frame. The connecting side reconnects
 *   after a loss; the listening side accepts the next peer (a new connection replaces the
 *   current one, so a peer that restarts gets back in even if the old connection was not seen
 *   to die). While disconnected, frames from the guest are dropped, as on an unplugged cable.
 * - **UDP** ({@link UdpSocketNetBackend}): one frame per datagram, no prefix, to a fixed remote.
 *
 * {@link openSocketNetBackend} builds either from a QEMU-like spec string for the command line.
 * Nothing here throws into the device: socket errors are counted and end the connection. No
 * socket or timer here keeps Node running by itself (all are unref'd): the VMM's run loop does,
 * and when the VM ends the process can exit even if {@link StreamSocketNetBackend.close} was
 * not called.
 * @module
 */

import { type Socket as UdpSocket, createSocket } from 'node:dgram';
import { type AddressInfo, type Server, type Socket, createServer, connect as netConnect } from 'node:net';
import type { NetBackend } from './backend.js';

/** Bytes of the big-endian length before each frame on a stream. */
export const SOCKET_NET_LENGTH_SIZE = 4;
/** Largest frame accepted from a peer (QEMU's NET_BUFSIZE); a larger length is a protocol error. */
export const SOCKET_NET_MAX_FRAME = 4096 + 65536;
/** Bytes queued on a socket beyond which frames are dropped rather than buffered (a stalled peer). */
export const SOCKET_NET_SEND_LIMIT = 4 * 1024 * 1024;
/** Largest UDP payload over IPv4. */
export const UDP_NET_MAX_FRAME = 65507;

/** Counters of a socket backend (JSON-able). */
export interface SocketNetStats {
  framesSent: number;
  bytesSent: number;
  framesReceived: number;
  bytesReceived: number;
  /** Guest frames dropped: not connected, peer too slow, or too big for the transport. */
  txDropped: number;
  /** Peer frames dropped: no device attached yet, or from an unexpected UDP source. */
  rxDropped: number;
  connects: number;
  disconnects: number;
  /** Connections ended because the peer sent a bad length, plus socket errors. */
  errors: number;
}

/** A host and port. */
export interface SocketNetAddress {
  host: string;
  port: number;
}

/** Options of {@link StreamSocketNetBackend.listen}. */
export interface StreamListenOptions {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (0: any free port, see {@link StreamSocketNetBackend.localAddress}). */
  port: number;
}

/** Options of {@link StreamSocketNetBackend.connect}. */
export interface StreamConnectOptions {
  host: string;
  port: number;
  /** Wait this long before retrying a failed or lost connection (default 1000 ms; 0: never retry). */
  reconnectMs?: number;
}

const newStats = (): SocketNetStats => ({
  framesSent: 0,
  bytesSent: 0,
  framesReceived: 0,
  bytesReceived: 0,
  txDropped: 0,
  rxDropped: 0,
  connects: 0,
  disconnects: 0,
  errors: 0,
});

/**
 * Splits a byte stream into length-prefixed frames. Returns false from {@link push} on a length
 * above {@link SOCKET_NET_MAX_FRAME}: the stream cannot be resynchronised after that.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly onFrame: (frame: Uint8Array) => void) {}

  push(chunk: Uint8Array): boolean {
    this.pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.pendingBytes += chunk.byteLength;
    for (;;) {
      if (this.pendingBytes < SOCKET_NET_LENGTH_SIZE) return true;
      const head = this.pending.length === 1 ? this.pending[0]! : this.flatten();
      const len = head.readUInt32BE(0);
      if (len > SOCKET_NET_MAX_FRAME) return false;
      if (this.pendingBytes < SOCKET_NET_LENGTH_SIZE + len) return true;
      const all = this.flatten();
      // Copy: the device may keep the frame in its backlog after the socket reuses its buffer.
      const frame = new Uint8Array(all.subarray(SOCKET_NET_LENGTH_SIZE, SOCKET_NET_LENGTH_SIZE + len));
      const rest = all.subarray(SOCKET_NET_LENGTH_SIZE + len);
      this.pending = rest.length > 0 ? [rest] : [];
      this.pendingBytes = rest.length;
      if (len > 0) this.onFrame(frame); // an empty frame carries nothing: skip it
    }
  }

  /** Forget a partial frame (the connection it came from is gone). */
  clear(): void {
    this.pending = [];
    this.pendingBytes = 0;
  }

  private flatten(): Buffer {
    if (this.pending.length !== 1) this.pending = [Buffer.concat(this.pending, this.pendingBytes)];
    return this.pending[0]!;
  }
}

/** `frame` with its 4-byte big-endian length in front, as one buffer (one write, one segment). */
export function encodeFrame(frame: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(SOCKET_NET_LENGTH_SIZE + frame.length);
  out.writeUInt32BE(frame.length, 0);
  out.set(frame, SOCKET_NET_LENGTH_SIZE);
  return out;
}

/** A TCP link to one peer, listening or connecting; see the module comment. */
export class StreamSocketNetBackend implements NetBackend {
  readonly stats: SocketNetStats = newStats();
  /** Told when a peer connects (`peer` is "host:port") or the connection is lost. */
  onConnectionChange: ((connected: boolean, peer: string | undefined) => void) | undefined;
  /** Told when a connection attempt fails (the connecting side then retries after `reconnectMs`). */
  onConnectError: ((err: Error) => void) | undefined;

  private receive: ((frame: Uint8Array) => void) | undefined;
  private socket: Socket | undefined;
  private server: Server | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private waiters: (() => void)[] = [];
  private readonly decoder = new FrameDecoder((frame) => this.deliver(frame));

  private constructor(private readonly target: StreamConnectOptions | undefined) {}

  /** Listen for the peer; resolves once listening. Rejects if the address cannot be bound. */
  static async listen(options: StreamListenOptions): Promise<StreamSocketNetBackend> {
    const backend = new StreamSocketNetBackend(undefined);
    const server = createServer({ noDelay: true }, (socket) => backend.adopt(socket));
    backend.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        // Later server errors (none are expected once listening) must not crash the VMM.
        server.on('error', () => backend.stats.errors++);
        server.unref();
        resolve();
      });
    });
    return backend;
  }

  /** Connect to a listening peer, in the background: frames are dropped until it is connected. */
  static connect(options: StreamConnectOptions): StreamSocketNetBackend {
    const backend = new StreamSocketNetBackend({ reconnectMs: 1000, ...options });
    backend.dial();
    return backend;
  }

  /** Whether a peer is connected now. */
  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** The listening address (with the port chosen for port 0), or undefined when connecting. */
  get localAddress(): SocketNetAddress | undefined {
    const a = this.server?.address() as AddressInfo | null | undefined;
    return a ? { host: a.address, port: a.port } : undefined;
  }

  /** Resolves when a peer is connected (at once if one is). Never rejects; `close()` resolves it. */
  whenConnected(): Promise<void> {
    if (this.connected || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  attach(receive: (frame: Uint8Array) => void): void {
    this.receive = receive;
  }

  send(frame: Uint8Array): void {
    const socket = this.socket;
    if (socket === undefined || socket.destroyed || socket.writableLength > SOCKET_NET_SEND_LIMIT) {
      this.stats.txDropped++;
      return;
    }
    socket.write(encodeFrame(frame));
    this.stats.framesSent++;
    this.stats.bytesSent += frame.length;
  }

  /** Drop the connection and stop listening or reconnecting. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.socket?.destroy();
    this.socket = undefined;
    this.wake();
    const server = this.server;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private dial(): void {
    const target = this.target;
    if (this.closed || target === undefined) return;
    const socket = netConnect({ host: target.host, port: target.port, noDelay: true });
    socket.unref();
    let established = false;
    socket.once('connect', () => {
      established = true;
      this.adopt(socket);
    });
    // A failed attempt: retry later. (Errors after `connect` are handled by adopt's listeners.)
    socket.once('error', (err) => {
      if (established) return;
      this.stats.errors++;
      this.onConnectError?.(err);
      socket.destroy();
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const delay = this.target?.reconnectMs ?? 0;
    if (this.closed || delay <= 0 || this.reconnectTimer !== undefined) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.dial();
    }, delay);
    this.reconnectTimer.unref?.();
  }

  private adopt(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.socket?.destroy(); // the newest peer wins; the old one's close event is ignored below
    this.decoder.clear();
    socket.unref();
    this.socket = socket;
    this.stats.connects++;
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return;
      if (!this.decoder.push(chunk)) {
        this.stats.errors++;
        socket.destroy(); // a length we cannot take: the stream is out of step for good
      }
    });
    socket.on('error', () => {
      this.stats.errors++;
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.decoder.clear();
      this.stats.disconnects++;
      this.onConnectionChange?.(false, peer);
      this.scheduleReconnect();
    });
    this.onConnectionChange?.(true, peer);
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private deliver(frame: Uint8Array): void {
    if (this.receive === undefined) {
      this.stats.rxDropped++;
      return;
    }
    this.stats.framesReceived++;
    this.stats.bytesReceived += frame.length;
    this.receive(frame);
  }
}

/** Options of {@link UdpSocketNetBackend.open}. */
export interface UdpOpenOptions {
  /** Where frames go (and the only source frames are accepted from). */
  remote: SocketNetAddress;
  /** Where to bind (default 127.0.0.1, any free port). */
  local?: Partial<SocketNetAddress>;
}

/** Frames as UDP datagrams to and from one remote address; see the module comment. */
export class UdpSocketNetBackend implements NetBackend {
  readonly stats: SocketNetStats = newStats();
  private receive: ((frame: Uint8Array) => void) | undefined;
  private closed = false;
  private bound: SocketNetAddress = { host: '', port: 0 };

  private constructor(
    private readonly socket: UdpSocket,
    private readonly remote: SocketNetAddress,
  ) {}

  /** Bind the local address; resolves once bound. Rejects if it cannot be bound. */
  static async open(options: UdpOpenOptions): Promise<UdpSocketNetBackend> {
    const family = options.remote.host.includes(':') ? 'udp6' : 'udp4';
    const socket = createSocket(family);
    const backend = new UdpSocketNetBackend(socket, options.remote);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(options.local?.port ?? 0, options.local?.host ?? '127.0.0.1', () => {
        socket.off('error', reject);
        const a = socket.address();
        backend.bound = { host: a.address, port: a.port };
        socket.unref();
        resolve();
      });
    });
    socket.on('error', () => backend.stats.errors++);
    socket.on('message', (msg, from) => backend.onMessage(msg, from));
    return backend;
  }

  /** The bound address (kept after close). */
  get localAddress(): SocketNetAddress {
    return this.bound;
  }

  attach(receive: (frame: Uint8Array) => void): void {
    this.receive = receive;
  }

  send(frame: Uint8Array): void {
    if (this.closed || frame.length > UDP_NET_MAX_FRAME) {
      this.stats.txDropped++;
      return;
    }
    // Copy: the device reuses nothing, but the send completes after this call returns.
    this.socket.send(Buffer.from(frame), this.remote.port, this.remote.host, (err) => {
      if (err) this.stats.errors++;
    });
    this.stats.framesSent++;
    this.stats.bytesSent += frame.length;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }

  private onMessage(msg: Buffer, from: { address: string; port: number }): void {
    const fromRemote = from.port === this.remote.port && (from.address === this.remote.host || this.remote.host === 'localhost');
    if (!fromRemote || this.receive === undefined || msg.length === 0) {
      this.stats.rxDropped++;
      return;
    }
    this.stats.framesReceived++;
    this.stats.bytesReceived += msg.length;
    this.receive(new Uint8Array(msg));
  }
}

/** A socket backend made from a spec string. */
export type SocketNetBackend = StreamSocketNetBackend | UdpSocketNetBackend;

/** A parsed socket backend spec; see {@link parseSocketNetSpec}. */
export type SocketNetSpec =
  | { kind: 'listen'; host: string; port: number }
  | { kind: 'connect'; host: string; port: number; reconnectMs: number }
  | { kind: 'udp'; remote: SocketNetAddress; local: SocketNetAddress };

const parseHostPort = (text: string, what: string, defaultHost: string): SocketNetAddress => {
  // "[::1]:1234", "127.0.0.1:1234", "host:1234", ":1234"
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new RangeError(`${what} "${text}" is not HOST:PORT`);
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? defaultHost : host, port };
};

/**
 * Parse a spec in QEMU's `-netdev socket` style: `listen=[HOST]:PORT` (HOST defaults to
 * 127.0.0.1, not every interface), `connect=HOST:PORT[,reconnect=SECONDS]` (default 1; 0 never
 * retries), or `udp=HOST:PORT[,localaddr=[HOST]:PORT]`. Throws RangeError with a message fit for
 * the command line.
 */
export function parseSocketNetSpec(spec: string): SocketNetSpec {
  const options = new Map<string, string>();
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new RangeError(`socket network option "${part}" is not KEY=VALUE`);
    const key = part.slice(0, eq);
    if (options.has(key)) throw new RangeError(`socket network option "${key}" is given twice`);
    options.set(key, part.slice(eq + 1));
  }
  const allow = (...keys: string[]): void => {
    for (const k of options.keys()) if (!keys.includes(k)) throw new RangeError(`socket network option "${k}" is not valid here (expected ${keys.join(', ')})`);
  };
  const listen = options.get('listen');
  const connect = options.get('connect');
  const udp = options.get('udp');
  if ([listen, connect, udp].filter((v) => v !== undefined).length !== 1) {
    throw new RangeError('a socket network needs exactly one of listen=, connect= or udp=');
  }
  if (listen !== undefined) {
    allow('listen');
    return { kind: 'listen', ...parseHostPort(listen, 'listen address', '127.0.0.1') };
  }
  if (connect !== undefined) {
    allow('connect', 'reconnect');
    const seconds = options.get('reconnect') ?? '1';
    if (!/^\d+(\.\d+)?$/.test(seconds)) throw new RangeError(`reconnect=${seconds} is not a number of seconds`);
    const address = parseHostPort(connect, 'connect address', '127.0.0.1');
    return { kind: 'connect', ...address, reconnectMs: Math.round(Number(seconds) * 1000) };
  }
  allow('udp', 'localaddr');
  const remote = parseHostPort(udp!, 'udp address', '127.0.0.1');
  const localText = options.get('localaddr');
  const local = localText === undefined ? { host: '127.0.0.1', port: 0 } : parseHostPort(localText, 'localaddr', '127.0.0.1');
  return { kind: 'udp', remote, local };
}

/** Open the backend a spec describes (see {@link parseSocketNetSpec}); listen and udp resolve once bound. */
export async function openSocketNetBackend(spec: string | SocketNetSpec): Promise<SocketNetBackend> {
  const s = typeof spec === 'string' ? parseSocketNetSpec(spec) : spec;
  switch (s.kind) {
    case 'listen':
      return StreamSocketNetBackend.listen({ host: s.host, port: s.port });
    case 'connect':
      return StreamSocketNetBackend.connect({ host: s.host, port: s.port, reconnectMs: s.reconnectMs });
    case 'udp':
      return UdpSocketNetBackend.open({ remote: s.remote, local: s.local });
  }
}
