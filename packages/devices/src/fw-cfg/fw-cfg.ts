/**
 * QEMU's firmware configuration device (fw_cfg), port interface, as third-party firmware such
 * as SeaBIOS expects it on a PC: a 16-bit selector at 0x510 picks an item, and each read of the
 * data port 0x511 returns its next byte (0 past the end). Items are blobs under a 16-bit key:
 * the well-known ones (signature "QEMU", the feature ID, RAM size, CPU counts, ...) and named
 * files listed in the file directory (key 0x19), e.g. `etc/e820` and `etc/boot-fail-wait`.
 *
 * Only the traditional interface is offered (the ID's DMA bit is clear, so there is no DMA
 * register at 0x514), and the data port ignores writes, as QEMU does since 2.4 for items it
 * does not mark writable.
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';

/** The selector port; the data port follows it. */
export const FW_CFG_PORT = 0x510;
/** Selector (2 bytes wide, at FW_CFG_PORT) and data (1 byte, at FW_CFG_PORT + 1). */
export const FW_CFG_PORT_LEN = 2;

/** Keys of the well-known items. */
export const FwCfgKey = {
  signature: 0x00,
  id: 0x01,
  uuid: 0x02,
  ramSize: 0x03,
  noGraphic: 0x04,
  nbCpus: 0x05,
  machineId: 0x06,
  bootMenu: 0x0e,
  maxCpus: 0x0f,
  fileDir: 0x19,
  /** The first key handed to a file. */
  fileFirst: 0x20,
  /** x86 (arch-local): 1 when ISA IRQ 0 reaches the I/O APIC on pin 2, as firmware's MP table must then say. */
  irq0Override: 0x8002,
} as const;

/** FW_CFG_ID bit: the traditional (port) interface. */
export const FW_CFG_FEATURE_TRADITIONAL = 0x01;
/** Selector bit 14: the guest asks to write the item (not supported: writes are ignored). */
const WRITE_CHANNEL = 0x4000;
/** Bit 15 marks architecture-specific keys (e.g. 0x8000 ACPI tables): they are items like any other. */
const KEY_MASK = 0xffff & ~WRITE_CHANNEL;
/** A file name, NUL included, fits in 56 bytes of a directory entry. */
export const FW_CFG_MAX_FILE_PATH = 56;
const DIR_ENTRY_SIZE = 4 + 2 + 2 + FW_CFG_MAX_FILE_PATH;

/** Plain, JSON-able snapshot of the guest-visible state (the items are configuration, not state). */
export interface FwCfgState {
  selector: number;
  offset: number;
}

/** Options for {@link FwCfg}. */
export interface FwCfgOptions {
  /** Bytes of guest RAM (FW_CFG_RAM_SIZE, a little-endian u64). */
  ramSize?: number;
  /** vCPUs (FW_CFG_NB_CPUS and FW_CFG_MAX_CPUS, u16). Default 1. */
  cpus?: number;
}

/** Map on an {@link IoBus} at {@link FW_CFG_PORT}, length {@link FW_CFG_PORT_LEN}. */
export class FwCfg implements BusDevice {
  private readonly items = new Map<number, Uint8Array>();
  private readonly files: { name: string; key: number }[] = [];
  private selector = 0;
  private offset = 0;

  constructor(options: FwCfgOptions = {}) {
    this.setItem(FwCfgKey.signature, new TextEncoder().encode('QEMU'));
    this.setItem(FwCfgKey.id, le32(FW_CFG_FEATURE_TRADITIONAL));
    const cpus = options.cpus ?? 1;
    this.setItem(FwCfgKey.nbCpus, le16(cpus));
    this.setItem(FwCfgKey.maxCpus, le16(cpus));
    if (options.ramSize !== undefined) this.setItem(FwCfgKey.ramSize, le64(options.ramSize));
    this.setItem(FwCfgKey.fileDir, this.directory());
  }

  /** Sets (or replaces) the item under `key`. */
  setItem(key: number, data: Uint8Array): void {
    if (!Number.isInteger(key) || key < 0 || key > 0xffff || (key & WRITE_CHANNEL) !== 0) throw new RangeError(`fw_cfg: invalid key 0x${key.toString(16)}`);
    this.items.set(key, data);
  }

  /** Adds (or replaces) the file `name` and lists it in the directory; returns its key. */
  addFile(name: string, data: Uint8Array): number {
    const encoded = new TextEncoder().encode(name);
    if (encoded.length === 0 || encoded.length >= FW_CFG_MAX_FILE_PATH) throw new RangeError(`fw_cfg: file name '${name}' must be 1..${FW_CFG_MAX_FILE_PATH - 1} bytes`);
    let file = this.files.find((f) => f.name === name);
    if (!file) {
      file = { name, key: FwCfgKey.fileFirst + this.files.length };
      if (file.key >= WRITE_CHANNEL) throw new RangeError('fw_cfg: too many files');
      this.files.push(file);
    }
    this.setItem(file.key, data);
    this.setItem(FwCfgKey.fileDir, this.directory());
    return file.key;
  }

  /** The data of the item under `key`, if any. */
  item(key: number): Uint8Array | undefined {
    return this.items.get(key);
  }

  /** The file directory: a big-endian count, then {size, select, reserved, name[56]} entries sorted by name (big-endian too). */
  private directory(): Uint8Array {
    const sorted = [...this.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const out = new Uint8Array(4 + sorted.length * DIR_ENTRY_SIZE);
    const view = new DataView(out.buffer);
    view.setUint32(0, sorted.length, false);
    sorted.forEach((f, i) => {
      const at = 4 + i * DIR_ENTRY_SIZE;
      view.setUint32(at, this.items.get(f.key)?.length ?? 0, false);
      view.setUint16(at + 4, f.key, false);
      out.set(new TextEncoder().encode(f.name), at + 8);
    });
    return out;
  }

  read(offset: number, data: Uint8Array): void {
    if (offset !== 1) {
      // The selector is write-only.
      data.fill(0);
      return;
    }
    const item = this.items.get(this.selector & KEY_MASK);
    for (let i = 0; i < data.length; i++) {
      data[i] = item !== undefined && this.offset < item.length ? item[this.offset]! : 0;
      if (item !== undefined && this.offset < item.length) this.offset++;
    }
  }

  write(offset: number, data: Uint8Array): void {
    if (offset !== 0 || data.length === 0) return; // data-port writes are ignored
    this.selector = data.length >= 2 ? data[0]! | (data[1]! << 8) : data[0]!;
    this.offset = 0;
  }

  save(): FwCfgState {
    return { selector: this.selector, offset: this.offset };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. */
  restore(state: FwCfgState): void {
    const { selector, offset } = state;
    if (!Number.isInteger(selector) || selector < 0 || selector > 0xffff) throw new RangeError(`fw_cfg state: selector = ${String(selector)}`);
    if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`fw_cfg state: offset = ${String(offset)}`);
    this.selector = selector;
    this.offset = offset;
  }
}

/** One `etc/e820` entry: type 1 RAM, 2 reserved, 3 ACPI, 4 NVS. */
export interface FwCfgE820Entry {
  addr: number;
  size: number;
  type: number;
}

/** The `etc/e820` file: packed {u64 address, u64 length, u32 type} entries, little-endian. */
export function fwCfgE820(entries: readonly FwCfgE820Entry[]): Uint8Array {
  const out = new Uint8Array(entries.length * 20);
  const view = new DataView(out.buffer);
  entries.forEach((e, i) => {
    view.setBigUint64(i * 20, BigInt(e.addr), true);
    view.setBigUint64(i * 20 + 8, BigInt(e.size), true);
    view.setUint32(i * 20 + 16, e.type, true);
  });
  return out;
}

function le16(v: number): Uint8Array {
  return Uint8Array.of(v & 0xff, (v >>> 8) & 0xff);
}

function le32(v: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v >>> 0, true);
  return out;
}

/** A little-endian u32, e.g. for `etc/boot-fail-wait` (milliseconds). */
export const fwCfgU32 = le32;

function le64(v: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(v), true);
  return out;
}
