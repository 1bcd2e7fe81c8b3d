/**
 * Where a virtio-net device's frames go: the {@link NetBackend} interface, a backend that
 * drops everything ({@link NullNetBackend}), and an in-process Ethernet switch
 * ({@link NetSwitch}) that connects the devices of one or more VMs in the same process.
 * @module
 */

/**
 * The host side of a network device. The device calls {@link attach} once with the function
 * that hands frames to the guest, then {@link send} for every frame the guest transmits.
 * Frames are whole Ethernet frames without the virtio header or FCS. A backend may call
 * `receive` at any time, synchronously or later; the device queues or drops frames when the
 * guest has no receive buffers, as a NIC would.
 */
export interface NetBackend {
  attach(receive: (frame: Uint8Array) => void): void;
  /** A frame from the guest; the backend must copy it if it keeps it past the call. */
  send(frame: Uint8Array): void;
}

/** A cable to nowhere: counts what the guest sends and never delivers anything. */
export class NullNetBackend implements NetBackend {
  framesSent = 0;
  bytesSent = 0;
  attach(): void {}
  send(frame: Uint8Array): void {
    this.framesSent++;
    this.bytesSent += frame.length;
  }
}

const macKey = (frame: Uint8Array, at: number): number =>
  // 48 bits fit a double exactly.
  frame[at]! * 2 ** 40 + frame[at + 1]! * 2 ** 32 + ((frame[at + 2]! << 24) >>> 0) + (frame[at + 3]! << 16) + (frame[at + 4]! << 8) + frame[at + 5]!;

/**
 * A learning Ethernet switch in this process. {@link createPort} gives one backend per
 * device; a frame goes to the port its destination MAC was last seen on, or to every other
 * port for broadcast, multicast and unknown destinations. Delivery is synchronous.
 */
export class NetSwitch {
  private readonly ports = new Set<SwitchPort>();
  private readonly table = new Map<number, SwitchPort>();

  /** A new port; give it to a device as its backend. */
  createPort(): NetBackend {
    const port = new SwitchPort(this);
    this.ports.add(port);
    return port;
  }

  /** Number of MAC addresses learnt. */
  get learnt(): number {
    return this.table.size;
  }

  /** @internal */
  forward(from: SwitchPort, frame: Uint8Array): void {
    if (frame.length < 14) return; // not even an Ethernet header
    const src = macKey(frame, 6);
    if (!(frame[6]! & 1)) this.table.set(src, from); // multicast sources are bogus: do not learn them
    const multicast = (frame[0]! & 1) !== 0;
    const to = multicast ? undefined : this.table.get(macKey(frame, 0));
    if (to !== undefined) {
      if (to !== from) to.deliver(frame.slice());
      return;
    }
    for (const p of this.ports) if (p !== from) p.deliver(frame.slice());
  }
}

class SwitchPort implements NetBackend {
  private receive: ((frame: Uint8Array) => void) | undefined;
  constructor(private readonly sw: NetSwitch) {}
  attach(receive: (frame: Uint8Array) => void): void {
    this.receive = receive;
  }
  send(frame: Uint8Array): void {
    this.sw.forward(this, frame);
  }
  deliver(frame: Uint8Array): void {
    this.receive?.(frame);
  }
}
