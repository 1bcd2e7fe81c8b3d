/**
 * The virtio part of `kvmts run`'s command line: `--disk FILE,if=virtio`, `--device NAME`,
 * `--net BACKEND[,mac=...]` and `--virtio-transport`, parsed into specs and opened into
 * `@kvmts/virtio` devices for a {@link PcMachine}.
 * @module
 */

import {
  DhcpServer,
  NetSwitch,
  StreamSocketNetBackend,
  VirtioBalloon,
  NullNetBackend,
  VirtioBlock,
  VirtioBlockError,
  VirtioConsole,
  VirtioNet,
  VirtioRng,
  type NetBackend,
  type VirtioDevice,
} from '@kvmts/virtio';
import { CliError } from '../errors.js';
import type { DiskSpec } from './bios.js';
import type { VirtioTransportKind } from './virtio.js';

/** The devices `--device` adds (named as QEMU's, without the transport suffix). */
export const VIRTIO_DEVICE_NAMES = ['virtio-rng', 'virtio-console', 'virtio-balloon'] as const;
export type VirtioDeviceName = (typeof VIRTIO_DEVICE_NAMES)[number];

/** One `--net`: a virtio-net NIC and what its cable is plugged into. */
export type NetSpec =
  /** Plugged into nothing: frames from the guest are dropped, none arrive. */
  | { readonly kind: 'none'; readonly mac?: string }
  /** A port of an in-process switch; NICs naming the same switch see each other; `dhcp`: a DHCP server (10.0.2.2, leases from 10.0.2.15) is on it. */
  | { readonly kind: 'switch'; readonly name: string; readonly dhcp?: boolean; readonly mac?: string }
  /** A stream socket to another kvmts (or anything speaking the framing), connecting or listening. */
  | { readonly kind: 'socket'; readonly host: string; readonly port: number; readonly listen: boolean; readonly mac?: string };

export const NET_SPEC_HELP = 'none|switch:NAME[,dhcp]|socket:HOST:PORT[,listen][,mac=52:54:00:xx:xx:xx]';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Parses `--virtio-transport`. */
export function parseVirtioTransport(value: string): VirtioTransportKind {
  if (value === 'pci' || value === 'mmio') return value;
  throw new CliError(`invalid --virtio-transport '${value}': expected 'pci' or 'mmio'`);
}

/** Parses one `--device NAME`. */
export function parseDeviceName(name: string): VirtioDeviceName {
  const found = VIRTIO_DEVICE_NAMES.find((n) => n === name);
  if (found === undefined) throw new CliError(`unknown --device '${name}': expected one of ${VIRTIO_DEVICE_NAMES.join(', ')}`);
  return found;
}

/** Parses one `--net` ({@link NET_SPEC_HELP}). */
export function parseNetSpec(spec: string): NetSpec {
  const [backend = '', ...opts] = spec.split(',');
  let mac: string | undefined;
  let listen = false;
  let dhcp = false;
  for (const opt of opts) {
    if (opt.startsWith('mac=')) {
      mac = opt.slice(4);
      if (!MAC_RE.test(mac)) throw new CliError(`invalid MAC address '${mac}' in --net '${spec}': expected six hex bytes like 52:54:00:12:34:56`);
      if ((parseInt(mac.slice(0, 2), 16) & 1) !== 0) throw new CliError(`invalid MAC address '${mac}' in --net '${spec}': a multicast address cannot be a NIC's`);
    } else if (opt === 'listen') {
      listen = true;
    } else if (opt === 'dhcp') {
      dhcp = true;
    } else {
      throw new CliError(`invalid --net option '${opt}' in '${spec}': expected ${NET_SPEC_HELP}`);
    }
  }
  const withMac = mac !== undefined ? { mac } : {};
  if (listen && !backend.startsWith('socket:')) throw new CliError(`invalid --net '${spec}': 'listen' is for socket:HOST:PORT`);
  if (dhcp && !backend.startsWith('switch:')) throw new CliError(`invalid --net '${spec}': 'dhcp' is for switch:NAME`);
  if (backend === 'none') return { kind: 'none', ...withMac };
  if (backend.startsWith('switch:')) {
    const name = backend.slice(7);
    if (!/^[\w.-]+$/.test(name)) throw new CliError(`invalid --net '${spec}': switch:NAME takes letters, digits, '.', '-' and '_'`);
    return { kind: 'switch', name, ...(dhcp ? { dhcp } : {}), ...withMac };
  }
  if (backend.startsWith('socket:')) {
    const m = /^socket:(.*):(\d+)$/.exec(backend);
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) throw new CliError(`invalid --net '${spec}': expected socket:HOST:PORT with a port from 1 to 65535`);
    return { kind: 'socket', host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port, listen, ...withMac };
  }
  throw new CliError(`invalid --net '${spec}': expected ${NET_SPEC_HELP}`);
}

/** The virtio devices of one `kvmts run`. */
export interface VirtioConfig {
  /** `--disk` entries with `if=virtio`. */
  disks: readonly DiskSpec[];
  nets: readonly NetSpec[];
  devices: readonly VirtioDeviceName[];
  /** Where virtio-console (hvc0) output goes. */
  consoleOutput: (data: Uint8Array) => void;
  /** Where messages about the devices' host side go (e.g. a socket peer that cannot be reached). */
  log?: (line: string) => void;
}

/** Opened devices, in the order the guest sees them (disks, NICs, then `--device`s). */
export interface OpenedVirtio {
  readonly devices: readonly VirtioDevice[];
  /** Waits for in-flight disk I/O and closes the files. */
  close(): Promise<void>;
}

/** First default MAC: QEMU's; the n-th NIC without `mac=` gets this plus n in the last byte. */
const DEFAULT_MAC_PREFIX = '52:54:00:12:34:';
const DEFAULT_MAC_LAST = 0x56;

/**
 * Opens the disks and builds the devices of `config`. Throws a one-line CliError for a disk
 * that cannot be opened or a backend that is not available (closing what was opened).
 */
export async function openVirtioDevices(config: VirtioConfig): Promise<OpenedVirtio> {
  const disks: VirtioBlock[] = [];
  // Backends that hold host resources (sockets) register how to release them here.
  const releases: (() => Promise<void> | void)[] = [];
  const close = async (): Promise<void> => {
    for (const d of disks) await d.close();
    for (const release of releases.splice(0)) await release();
  };
  try {
    for (const spec of config.disks) {
      try {
        disks.push(await VirtioBlock.open(spec.path, { readOnly: spec.readOnly }));
      } catch (err) {
        if (err instanceof VirtioBlockError) throw new CliError(`cannot open disk image '${spec.path}': ${describeBlockError(err)}`);
        throw err;
      }
    }
    const switches = new Map<string, NetSwitch>();
    const nets: VirtioNet[] = [];
    for (const [i, spec] of config.nets.entries()) {
      const mac = spec.mac ?? DEFAULT_MAC_PREFIX + ((DEFAULT_MAC_LAST + i) & 0xff).toString(16).padStart(2, '0');
      nets.push(new VirtioNet({ backend: await netBackend(spec, switches, releases, config.log), mac }));
    }
    const others = config.devices.map((name): VirtioDevice => {
      switch (name) {
        case 'virtio-rng':
          return new VirtioRng();
        case 'virtio-console':
          return new VirtioConsole({ output: config.consoleOutput });
        case 'virtio-balloon': {
          const balloon = new VirtioBalloon();
          releases.push(() => balloon.dispose());
          return balloon;
        }
      }
    });
    return { devices: [...disks, ...nets, ...others], close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * The backend behind a NIC. Other backends plug in here; one that holds host resources pushes
 * its release onto `releases`.
 */
const dhcpOn = new WeakSet<NetSwitch>();

async function netBackend(
  spec: NetSpec,
  switches: Map<string, NetSwitch>,
  releases: (() => Promise<void> | void)[],
  log: ((line: string) => void) | undefined,
): Promise<NetBackend> {
  switch (spec.kind) {
    case 'none':
      return new NullNetBackend();
    case 'switch': {
      let sw = switches.get(spec.name);
      if (sw === undefined) switches.set(spec.name, (sw = new NetSwitch()));
      // One DHCP server per switch, however many NICs ask for it.
      if (spec.dhcp && !dhcpOn.has(sw)) {
        dhcpOn.add(sw);
        new DhcpServer().connect(sw.createPort());
      }
      return sw.createPort();
    }
    case 'socket': {
      let backend: StreamSocketNetBackend;
      if (spec.listen) {
        try {
          backend = await StreamSocketNetBackend.listen({ host: spec.host, port: spec.port });
        } catch (err) {
          throw new CliError(`cannot listen on ${spec.host}:${spec.port} for --net: ${(err as Error).message}`);
        }
      } else {
        // Connects in the background and reconnects after a loss; frames are dropped meanwhile.
        // Say once that the peer cannot be reached, and again when it is.
        backend = StreamSocketNetBackend.connect({ host: spec.host, port: spec.port });
        const peer = `${spec.host}:${spec.port}`;
        let failing = false;
        backend.onConnectError = (err) => {
          if (failing) return;
          failing = true;
          log?.(`kvmts: --net socket:${peer}: cannot connect (${(err as NodeJS.ErrnoException).code ?? err.message}); retrying every second, the NIC has no link meanwhile\n`);
        };
        backend.onConnectionChange = (connected) => {
          if (connected && failing) log?.(`kvmts: --net socket:${peer}: connected\n`);
          if (connected) failing = false;
        };
      }
      releases.push(() => backend.close());
      return backend;
    }
  }
}

function describeBlockError(err: VirtioBlockError): string {
  switch (err.kind) {
    case 'NotFound':
      return 'no such file';
    case 'NotAFile':
      return 'not a regular file';
    case 'PermissionDenied':
      return 'permission denied (add ,ro to open it read-only)';
    default:
      return err.message;
  }
}
