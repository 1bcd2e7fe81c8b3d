/**
 * A PCI host bridge modelled on the Intel 82441FX (440FX) PMC: PCI bus 0, its own function at
 * 00:00.0, and configuration mechanism #1 (PCI 3.0 section 3.2.2.3.2).
 *
 * Mechanism #1 is two registers. CONFIG_ADDRESS at 0xCF8 is claimed only by 32-bit accesses;
 * byte and word accesses to 0xCF8..0xCFB are ordinary I/O (0xCF9 is the PIIX's reset control),
 * so the address register is mapped as a single port and the bus hands it 4-byte accesses.
 * CONFIG_DATA at 0xCFC..0xCFF forwards byte, word and dword accesses to the register that
 * CONFIG_ADDRESS selects plus the port's offset within the dword.
 *
 * Only bus 0 exists (no PCI-to-PCI bridges), so type-1 cycles and absent functions end in a
 * master abort, which reads as all-ones.
 * @module
 */

import type { BusDevice, IoBus } from '@kvmts/kvm-core';
import { PciConfigSpace, type PciConfigState, type PciDevice } from './device.js';

/** CONFIG_ADDRESS (32-bit accesses only). */
export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
/** CONFIG_DATA, four ports wide. */
export const PCI_CONFIG_DATA_PORT = 0xcfc;
export const PCI_CONFIG_DATA_LEN = 4;
/** Devices per bus and functions per device. */
export const PCI_SLOTS = 32;
export const PCI_FUNCTIONS = 8;

/** CONFIG_ADDRESS bit 31: the next CONFIG_DATA access is a configuration cycle. */
const ENABLE = 0x80000000;
// Bits 30:24 are reserved and 1:0 are fixed 0 (dword register numbers): both read as 0.
const ADDRESS_MASK = 0x80fffffc;

/** 82441FX identity: vendor Intel, device 1237h, host bridge class, stepping revision 02h. */
const I440FX = { vendorId: 0x8086, deviceId: 0x1237, classCode: 0x060000, revision: 0x02 };

/** A function on the bus and where it sits. */
export interface PciSlot {
  slot: number;
  fn: number;
  device: PciDevice;
}

/** Plain, JSON-able snapshot of a {@link PciHostBridge}: CONFIG_ADDRESS and the 00:00.0 header (attached devices save themselves). */
export interface PciHostBridgeState {
  configAddress: number;
  config: PciConfigState;
}

const checkSlot = (slot: number, fn: number): void => {
  if (!Number.isInteger(slot) || slot < 0 || slot >= PCI_SLOTS) throw new RangeError(`PCI device number ${String(slot)} is not 0..31`);
  if (!Number.isInteger(fn) || fn < 0 || fn >= PCI_FUNCTIONS) throw new RangeError(`PCI function number ${String(fn)} is not 0..7`);
};

/**
 * PCI bus 0 behind an i440FX-like host bridge. Map {@link configAddressPort} and
 * {@link configDataPort} with {@link mapPorts}, then {@link attach} functions.
 */
export class PciHostBridge {
  /** The bridge's own function, 00:00.0 (8086:1237, class 060000h). */
  readonly config: PciConfigSpace;
  /** CONFIG_ADDRESS: map at {@link PCI_CONFIG_ADDRESS_PORT}, length 1. */
  readonly configAddressPort: BusDevice;
  /** CONFIG_DATA: map at {@link PCI_CONFIG_DATA_PORT}, length {@link PCI_CONFIG_DATA_LEN}. */
  readonly configDataPort: BusDevice;

  private readonly functions = new Map<number, PciDevice>();
  private address = 0;

  constructor() {
    // Command: memory enable and bus master, as the 82441FX powers up; status: DEVSEL medium, fast back-to-back.
    this.config = new PciConfigSpace({ ...I440FX, command: 0x0006, status: 0x0280 });
    this.attach(this.config, 0, 0);
    this.configAddressPort = {
      read: (_offset, data) => {
        if (data.length !== 4) return void data.fill(0xff);
        const a = this.address;
        data[0] = a;
        data[1] = a >>> 8;
        data[2] = a >>> 16;
        data[3] = a >>> 24;
      },
      write: (_offset, data) => {
        if (data.length !== 4) return;
        this.address = ((data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) & ADDRESS_MASK) >>> 0;
      },
    };
    this.configDataPort = {
      read: (offset, data) => this.dataAccess(offset, data, false),
      write: (offset, data) => this.dataAccess(offset, data, true),
    };
  }

  /** Map CONFIG_ADDRESS and CONFIG_DATA on `io` (0xCF9..0xCFB stay free for other devices). */
  mapPorts(io: IoBus): void {
    io.insert(this.configAddressPort, PCI_CONFIG_ADDRESS_PORT, 1);
    io.insert(this.configDataPort, PCI_CONFIG_DATA_PORT, PCI_CONFIG_DATA_LEN);
  }

  /**
   * Put `device` at bus 0, device `slot`, function `fn`. A guest only looks for functions 1..7
   * when function 0 says it is multi-function (header type bit 7).
   */
  attach(device: PciDevice, slot: number, fn = 0): void {
    checkSlot(slot, fn);
    const key = slot * PCI_FUNCTIONS + fn;
    if (this.functions.has(key)) throw new RangeError(`PCI function 00:${slot.toString(16).padStart(2, '0')}.${fn} is already occupied`);
    this.functions.set(key, device);
  }

  /** Remove the function at `slot`.`fn` and return it. */
  detach(slot: number, fn = 0): PciDevice {
    checkSlot(slot, fn);
    const key = slot * PCI_FUNCTIONS + fn;
    const d = this.functions.get(key);
    if (d === undefined) throw new RangeError(`no PCI function at 00:${slot.toString(16).padStart(2, '0')}.${fn}`);
    this.functions.delete(key);
    return d;
  }

  /** The function at `slot`.`fn`, if any. */
  device(slot: number, fn = 0): PciDevice | undefined {
    return this.functions.get(slot * PCI_FUNCTIONS + fn);
  }

  /** Every attached function, by slot then function (for firmware tables such as _PRT). */
  list(): PciSlot[] {
    return [...this.functions.entries()]
      .sort(([a], [b]) => a - b)
      .map(([key, device]) => ({ slot: key >> 3, fn: key & 7, device }));
  }

  /** A configuration read of `size` bytes at `offset`, as the VMM or firmware code would issue it; all-ones if absent. */
  configRead(slot: number, fn: number, offset: number, size: 1 | 2 | 4): number {
    const data = new Uint8Array(size);
    const dev = this.functions.get(slot * PCI_FUNCTIONS + fn);
    if (dev === undefined) return 2 ** (8 * size) - 1;
    dev.readConfig(offset, data);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + data[i]!;
    return v;
  }

  /** A configuration write of `size` bytes at `offset`; dropped if the function is absent. */
  configWrite(slot: number, fn: number, offset: number, size: 1 | 2 | 4, value: number): void {
    const dev = this.functions.get(slot * PCI_FUNCTIONS + fn);
    if (dev === undefined) return;
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = Math.floor(value / 2 ** (8 * i)) & 0xff;
    dev.writeConfig(offset, data);
  }

  /** Power-on state: CONFIG_ADDRESS cleared and the bridge's header reset (attached devices reset themselves). */
  reset(): void {
    this.address = 0;
    this.config.reset();
  }

  save(): PciHostBridgeState {
    return { configAddress: this.address, config: this.config.save() };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. */
  restore(state: PciHostBridgeState): void {
    const a = state.configAddress;
    if (!Number.isInteger(a) || a < 0 || a > 0xffffffff || (a & ~ADDRESS_MASK) !== 0) {
      throw new RangeError(`PCI host bridge state: configAddress ${String(a)} is not a CONFIG_ADDRESS value`);
    }
    this.config.restore(state.config);
    this.address = a;
  }

  private dataAccess(offset: number, data: Uint8Array, write: boolean): void {
    const a = this.address;
    // Bytes of an unaligned access that run past 0xCFF are not configuration data.
    const n = Math.max(0, Math.min(data.length, PCI_CONFIG_DATA_LEN - offset));
    const dev = a & ENABLE && ((a >>> 16) & 0xff) === 0 ? this.functions.get((a >>> 8) & 0xff) : undefined;
    if (write) {
      if (dev !== undefined && n > 0) dev.writeConfig((a & 0xfc) + offset, data.subarray(0, n));
      return;
    }
    data.fill(0xff);
    if (dev !== undefined && n > 0) dev.readConfig((a & 0xfc) + offset, data.subarray(0, n));
  }
}
