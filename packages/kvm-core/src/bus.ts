/**
 * Port I/O and MMIO buses: map address ranges to devices and dispatch guest accesses.
 * @module
 */

/**
 * A device on a bus. `offset` is relative to the base the device was inserted at;
 * `data.length` is the access size. `read` fills `data`; `write` consumes it (little-endian).
 */
export interface BusDevice {
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

/** Why a bus rejected an insertion or removal. */
export type BusErrorKind = 'Overlap' | 'InvalidRange' | 'NotFound';

/** A bus operation failed; `kind` says why and the message names the ranges involved. */
export class BusError extends Error {
  readonly kind: BusErrorKind;
  constructor(kind: BusErrorKind, message: string) {
    super(message);
    this.name = 'BusError';
    this.kind = kind;
  }
}

/** One device mapping, as listed by `ranges()`. */
export interface BusRange {
  readonly base: number;
  readonly len: number;
  readonly device: BusDevice;
}

const hex = (v: number): string => `0x${v.toString(16)}`;
const span = (base: number, len: number): string => `${hex(base)}..${hex(base + len - 1)}`;

function overlapError(base: number, len: number, other: BusRange): BusError {
  return new BusError(
    'Overlap',
    `cannot insert device at ${span(base, len)} (len ${len}): overlaps the device at ${span(other.base, other.len)}`,
  );
}

/** Number of I/O ports on x86. */
export const IO_PORT_COUNT = 0x10000;

/**
 * The x86 port I/O space. A preallocated table maps each of the 64K ports to a slot, so a
 * lookup is one typed-array read; slot 0 means no device.
 */
export class IoBus {
  // slot per port; 0 = unclaimed, n = entries[n]
  private readonly slots = new Uint16Array(IO_PORT_COUNT);
  private readonly entries: BusRange[] = [{ base: 0, len: 0, device: { read() {}, write() {} } }];

  /** Map `device` at ports `base..base+len-1`; throws {@link BusError} on overlap or a bad range. */
  insert(device: BusDevice, base: number, len: number): void {
    if (!Number.isInteger(base) || !Number.isInteger(len) || base < 0 || len < 1 || base + len > IO_PORT_COUNT) {
      throw new BusError('InvalidRange', `invalid port range: base ${String(base)}, len ${String(len)} (ports are 0..0xffff)`);
    }
    for (let p = base; p < base + len; p++) {
      const s = this.slots[p]!;
      if (s !== 0) throw overlapError(base, len, this.entries[s]!);
    }
    if (this.entries.length > 0xffff) throw new BusError('InvalidRange', 'too many devices on the I/O bus');
    const slot = this.entries.length;
    this.entries.push({ base, len, device });
    this.slots.fill(slot, base, base + len);
  }

  /** Unmap the device inserted at `base`; returns it. */
  remove(base: number): BusDevice {
    const s = base >= 0 && base < IO_PORT_COUNT ? this.slots[base]! : 0;
    const e = this.entries[s]!;
    if (s === 0 || e.base !== base) throw new BusError('NotFound', `no device inserted at port ${hex(base)}`);
    this.slots.fill(0, e.base, e.base + e.len);
    // Keep slot numbers stable: leave a dead entry rather than renumbering the table.
    this.entries[s] = this.entries[0]!;
    return e.device;
  }

  /** The device mapped at `port`, if any, with its base. */
  find(port: number): BusRange | undefined {
    const s = this.slots[port & 0xffff]!;
    return s === 0 ? undefined : this.entries[s];
  }

  /** Every mapping, by base. */
  ranges(): BusRange[] {
    const seen = new Set<BusRange>();
    for (let p = 0; p < IO_PORT_COUNT; p++) {
      const s = this.slots[p]!;
      if (s !== 0) seen.add(this.entries[s]!);
    }
    return [...seen];
  }

  /** Read `data.length` bytes at `port`. Returns false, leaving `data` alone, if no device claims it. */
  read(port: number, data: Uint8Array): boolean {
    port &= 0xffff;
    const s = this.slots[port]!;
    if (s === 0) return false;
    const e = this.entries[s]!;
    e.device.read(port - e.base, data);
    return true;
  }

  /** Write `data` at `port`. Returns false if no device claims it. */
  write(port: number, data: Uint8Array): boolean {
    port &= 0xffff;
    const s = this.slots[port]!;
    if (s === 0) return false;
    const e = this.entries[s]!;
    e.device.write(port - e.base, data);
    return true;
  }
}

/** Highest guest-physical address + 1 that the MMIO bus accepts (52-bit physical space). */
export const MMIO_ADDR_LIMIT = 2 ** 52;

/**
 * Guest-physical MMIO space: a sorted list of ranges with binary search, and a one-entry
 * cache of the last hit because device drivers touch the same registers repeatedly.
 */
export class MmioBus {
  private readonly list: BusRange[] = [];
  private last: BusRange | undefined;

  /** Map `device` at `base..base+len-1`; throws {@link BusError} on overlap or a bad range. */
  insert(device: BusDevice, base: number, len: number): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(len) || base < 0 || len < 1 || base + len > MMIO_ADDR_LIMIT) {
      throw new BusError('InvalidRange', `invalid MMIO range: base ${String(base)}, len ${String(len)}`);
    }
    let i = 0;
    while (i < this.list.length && this.list[i]!.base < base) i++;
    const prev = this.list[i - 1];
    const next = this.list[i];
    if (prev && prev.base + prev.len > base) throw overlapError(base, len, prev);
    if (next && base + len > next.base) throw overlapError(base, len, next);
    this.list.splice(i, 0, { base, len, device });
  }

  /** Unmap the device inserted at `base`; returns it. */
  remove(base: number): BusDevice {
    const i = this.list.findIndex((r) => r.base === base);
    const r = this.list[i];
    if (r === undefined) throw new BusError('NotFound', `no device inserted at MMIO address ${hex(base)}`);
    this.list.splice(i, 1);
    this.last = undefined;
    return r.device;
  }

  /** The mapping that contains `addr`, if any. */
  find(addr: number): BusRange | undefined {
    const l = this.last;
    if (l !== undefined && addr >= l.base && addr < l.base + l.len) return l;
    const list = this.list;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = list[mid]!;
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.len) lo = mid + 1;
      else {
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** Every mapping, by base. */
  ranges(): BusRange[] {
    return [...this.list];
  }

  /** Read `data.length` bytes at `addr`. Returns false, leaving `data` alone, if no device claims it. */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined) return false;
    r.device.read(addr - r.base, data);
    return true;
  }

  /** Write `data` at `addr`. Returns false if no device claims it. */
  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined) return false;
    r.device.write(addr - r.base, data);
    return true;
  }
}
