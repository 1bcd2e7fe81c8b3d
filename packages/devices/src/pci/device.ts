/**
 * PCI functions and their 256-byte configuration space (PCI Local Bus Specification 3.0,
 * chapter 6: the type-0 header, Base Address Registers and the capability list).
 *
 * {@link PciConfigSpace} keeps, next to the bytes, a per-byte write mask and a per-byte
 * write-1-to-clear mask, so a guest write can only change what the spec lets it change:
 * vendor and device IDs, class code and header type stay put, status error bits clear when
 * written with 1, and a BAR only takes the address bits its size allows (which is what makes
 * the size probe work: write all-ones, read back the mask).
 * @module
 */

/** A function on a PCI bus, as the host bridge sees it: configuration reads and writes. */
export interface PciDevice {
  /** Fill `data` from configuration space at `offset` (0..255); `data.length` is 1, 2 or 4, little-endian. */
  readConfig(offset: number, data: Uint8Array): void;
  /** Write `data` to configuration space at `offset` (0..255). */
  writeConfig(offset: number, data: Uint8Array): void;
}

/** Size of a conventional PCI function's configuration space. */
export const PCI_CONFIG_SPACE_SIZE = 256;

// Type-0 header offsets (PCI 3.0, figure 6-1).
/** Vendor ID (16 bits, read-only). */
export const PCI_VENDOR_ID = 0x00;
/** Device ID (16 bits, read-only). */
export const PCI_DEVICE_ID = 0x02;
/** Command register (16 bits). */
export const PCI_COMMAND = 0x04;
/** Status register (16 bits). */
export const PCI_STATUS = 0x06;
/** Revision ID (8 bits). */
export const PCI_REVISION_ID = 0x08;
/** Class code: prog-if at 0x09, subclass at 0x0a, base class at 0x0b. */
export const PCI_CLASS_CODE = 0x09;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
/** Header type (bit 7: multi-function). */
export const PCI_HEADER_TYPE = 0x0e;
/** First of the six 32-bit BARs. */
export const PCI_BAR0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
/** Capabilities pointer (8 bits; valid when status bit 4 is set). */
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
/** Interrupt pin: 0 none, 1..4 = INTA#..INTD#. */
export const PCI_INTERRUPT_PIN = 0x3d;

// Command register bits.
/** Command bit 0: respond to I/O space accesses (I/O BARs decode). */
export const PCI_COMMAND_IO = 0x0001;
/** Command bit 1: respond to memory space accesses (memory BARs decode). */
export const PCI_COMMAND_MEMORY = 0x0002;
/** Command bit 2: the function may master the bus (DMA). */
export const PCI_COMMAND_BUS_MASTER = 0x0004;
/** Command bit 10: the function must not assert INTx#. */
export const PCI_COMMAND_INTX_DISABLE = 0x0400;
// Writable command bits: I/O, memory, bus master, parity error response (6), SERR# enable (8),
// interrupt disable (10). Special cycles, MWI, VGA snoop and fast back-to-back stay 0.
const COMMAND_WRITABLE = 0x0547;

// Status register bits.
/** Status bit 3: the function is asserting INTx# (read-only, set by the device). */
export const PCI_STATUS_INTERRUPT = 0x0008;
/** Status bit 4: a capability list starts at {@link PCI_CAPABILITY_LIST}. */
export const PCI_STATUS_CAP_LIST = 0x0010;
// Error bits the guest clears by writing 1 (bits 8, 11..15).
const STATUS_W1C = 0xf900;

/** Interrupt pin values (the {@link PCI_INTERRUPT_PIN} register; 0 means no INTx). */
export const PCI_INTA = 1;
export const PCI_INTB = 2;
export const PCI_INTC = 3;
export const PCI_INTD = 4;

/** Where the device-specific area, and so the capability list, begins. */
const DEVICE_SPECIFIC = 0x40;

/** Identity and power-on values of a type-0 header. */
export interface PciHeader {
  vendorId: number;
  deviceId: number;
  /** 24-bit class code: base class << 16 | subclass << 8 | programming interface. */
  classCode: number;
  revision?: number;
  subsystemVendorId?: number;
  subsystemId?: number;
  /** 0 (default) for no interrupt, or {@link PCI_INTA}..{@link PCI_INTD}. */
  interruptPin?: number;
  /** Sets header type bit 7: the device has functions besides 0. */
  multiFunction?: boolean;
  /** Power-on command register (default 0: decoding off until firmware enables it). */
  command?: number;
  /** Power-on read-only status bits, e.g. DEVSEL timing (bits 10:9); default 0. */
  status?: number;
}

/** What a BAR decodes: I/O ports, or 32- or 64-bit memory (a 64-bit BAR takes two slots). */
export type PciBarKind = 'io' | 'mem32' | 'mem64';

/** A BAR to implement; `size` is a power of two. */
export interface PciBarOptions {
  kind: PciBarKind;
  /** Bytes decoded: I/O 4..256 (the spec's per-BAR limit), memory at least 16. */
  size: number;
  /** Memory BARs only: reads have no side effects (BAR bit 3). */
  prefetchable?: boolean;
}

/** A BAR as currently programmed; `address` is null while it does not decode. */
export interface PciBarInfo extends Required<PciBarOptions> {
  address: number | null;
}

/** Plain, JSON-able snapshot of a {@link PciConfigSpace}: all 256 bytes. */
export interface PciConfigState {
  bytes: number[];
}

const hex = (v: number, w = 0): string => `0x${v.toString(16).padStart(w, '0')}`;
const isPow2 = (v: number): boolean => Number.isSafeInteger(v) && v > 0 && 2 ** Math.round(Math.log2(v)) === v;

/** x86 I/O space ends at 64 KiB; an I/O BAR programmed above it decodes nothing the CPU can reach. */
const IO_LIMIT = 0x10000;
/** Keep memory BARs inside the 52-bit physical space the MMIO bus accepts. */
const MEM_LIMIT = 2 ** 52;

/**
 * A function's configuration space with the type-0 header rules built in. A device model
 * either is one (it implements {@link PciDevice}) or wraps one and adds side effects around
 * {@link writeConfig}.
 *
 * BAR decoding: a BAR decodes when its command enable bit (I/O or memory) is set and it holds
 * an address. Address 0 counts as unassigned, as do I/O ranges past 0xffff and a BAR that
 * still holds its size-probe pattern (all address bits set), so a guest sizing BARs with
 * decoding on does not map the device over the firmware at the top of 4 GiB.
 * {@link onBarChange} reports each change of a BAR's decoded address.
 */
export class PciConfigSpace implements PciDevice {
  /** Called when BAR `index` starts decoding at `address`, moves, or stops decoding (null). */
  onBarChange: ((index: number, address: number | null) => void) | undefined;

  private readonly bytes = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly wmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly w1c = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  // Power-on image, for reset(): the builder methods write here as well as to `bytes`.
  private readonly initial = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  // Bytes claimed by the header, capabilities or defineRegister, so capabilities go elsewhere.
  private readonly used = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly bars: (Required<PciBarOptions> | undefined)[] = [];
  private readonly mapped: (number | null)[] = [];
  private lastCap = 0;

  constructor(header: PciHeader, onBarChange?: (index: number, address: number | null) => void) {
    this.onBarChange = onBarChange;
    const pin = header.interruptPin ?? 0;
    if (!Number.isInteger(pin) || pin < 0 || pin > 4) throw new RangeError(`PCI interrupt pin ${String(pin)} is not 0..4`);
    this.used.fill(1, 0, DEVICE_SPECIFIC);
    this.init(PCI_VENDOR_ID, 2, header.vendorId);
    this.init(PCI_DEVICE_ID, 2, header.deviceId);
    this.init(PCI_COMMAND, 2, header.command ?? 0, COMMAND_WRITABLE);
    this.init(PCI_STATUS, 2, header.status ?? 0, 0, STATUS_W1C);
    this.init(PCI_REVISION_ID, 1, header.revision ?? 0);
    this.init(PCI_CLASS_CODE, 3, header.classCode);
    this.init(PCI_CACHE_LINE_SIZE, 1, 0, 0xff);
    this.init(PCI_LATENCY_TIMER, 1, 0, 0xff);
    this.init(PCI_HEADER_TYPE, 1, header.multiFunction ? 0x80 : 0x00);
    this.init(PCI_SUBSYSTEM_VENDOR_ID, 2, header.subsystemVendorId ?? 0);
    this.init(PCI_SUBSYSTEM_ID, 2, header.subsystemId ?? 0);
    this.init(PCI_INTERRUPT_LINE, 1, 0, 0xff);
    this.init(PCI_INTERRUPT_PIN, 1, pin);
    // Unimplemented BARs, the expansion ROM BAR, CardBus CIS, Min_Gnt/Max_Lat and BIST read 0.
  }

  /**
   * Implement BAR `index` (0..5; a 64-bit BAR also takes `index + 1`). Call while building the
   * device, before the guest sees it.
   */
  addBar(index: number, options: PciBarOptions): void {
    const { kind, size } = options;
    const prefetchable = kind !== 'io' && Boolean(options.prefetchable);
    const slots = kind === 'mem64' ? 2 : 1;
    if (!Number.isInteger(index) || index < 0 || index + slots > 6) throw new RangeError(`PCI BAR index ${String(index)} is out of range for a ${kind} BAR`);
    for (let i = index; i < index + slots; i++) if (this.taken(i)) throw new RangeError(`PCI BAR ${i} is already implemented`);
    if (!isPow2(size)) throw new RangeError(`PCI BAR size ${String(size)} is not a power of two`);
    const min = kind === 'io' ? 4 : 16;
    const max = kind === 'io' ? 256 : kind === 'mem32' ? 2 ** 31 : 2 ** 51;
    if (size < min || size > max) throw new RangeError(`PCI ${kind} BAR size ${hex(size)} is outside ${hex(min)}..${hex(max)}`);
    const off = PCI_BAR0 + index * 4;
    // Low bits: I/O = 01; memory = type (00 32-bit, 10 64-bit) and prefetchable (bit 3).
    const flags = kind === 'io' ? 0x1 : (kind === 'mem64' ? 0x4 : 0) | (prefetchable ? 0x8 : 0);
    const flagBits = kind === 'io' ? 0x3 : 0xf;
    const lowMask = (size >= 2 ** 32 ? 0 : ~(size - 1) & ~flagBits) >>> 0;
    this.init(off, 4, flags, lowMask);
    if (kind === 'mem64') {
      const highMask = size > 2 ** 32 ? ~(size / 2 ** 32 - 1) >>> 0 : 0xffffffff;
      this.init(off + 4, 4, 0, highMask);
    }
    this.bars[index] = { kind, size, prefetchable };
    this.mapped[index] = null;
  }

  /** BAR `index` as programmed now, or undefined if not implemented (or the high half of a 64-bit BAR). */
  bar(index: number): PciBarInfo | undefined {
    const b = this.bars[index];
    return b && { ...b, address: this.decode(index) };
  }

  /** Where BAR `index` decodes now, or null (not implemented, not enabled or not assigned). */
  barAddress(index: number): number | null {
    return this.decode(index);
  }

  /**
   * Append a capability to the list and return its offset (dword-aligned, from 0x40). `bytes`
   * is its body after the ID and Next bytes; `writeMask` (one mask per body byte, default all
   * read-only) says which bits the guest may change.
   */
  addCapability(id: number, bytes: ArrayLike<number>, writeMask?: ArrayLike<number>): number {
    if (!Number.isInteger(id) || id < 0 || id > 0xff) throw new RangeError(`PCI capability ID ${String(id)} is not a byte`);
    const len = 2 + bytes.length;
    let off = DEVICE_SPECIFIC;
    while (off + len <= PCI_CONFIG_SPACE_SIZE && this.used.subarray(off, off + len).some((u) => u !== 0)) off += 4;
    if (off + len > PCI_CONFIG_SPACE_SIZE) throw new RangeError(`no room for a ${len}-byte PCI capability (ID ${hex(id, 2)})`);
    this.init(off, 1, id);
    this.init(off + 1, 1, 0);
    for (let i = 0; i < bytes.length; i++) this.init(off + 2 + i, 1, bytes[i]!, writeMask?.[i] ?? 0);
    this.used.fill(1, off, off + len);
    if (this.lastCap === 0) {
      this.init(PCI_CAPABILITY_LIST, 1, off);
      this.init(PCI_STATUS, 2, this.get16(PCI_STATUS) | PCI_STATUS_CAP_LIST, 0, STATUS_W1C);
    } else {
      this.init(this.lastCap + 1, 1, off);
    }
    this.lastCap = off;
    return off;
  }

  /** Offset of the first capability with `id`, walking the list as a guest would. */
  findCapability(id: number): number | undefined {
    if (!(this.get16(PCI_STATUS) & PCI_STATUS_CAP_LIST)) return undefined;
    // Each capability takes at least 4 bytes, so 48 steps cover the device-specific area; this also stops loops.
    for (let off = this.get8(PCI_CAPABILITY_LIST) & 0xfc, n = 0; off !== 0 && n < 48; off = this.get8(off + 1) & 0xfc, n++) {
      if (this.get8(off) === id) return off;
    }
    return undefined;
  }

  /**
   * Declare a device-specific register at `offset` (0x40 and up): its power-on `value`, which
   * bits the guest may write, and which it clears by writing 1. Capabilities avoid it.
   */
  defineRegister(offset: number, size: 1 | 2 | 4, value: number, writeMask = 2 ** (size * 8) - 1, w1cMask = 0): void {
    if (!Number.isInteger(offset) || offset < DEVICE_SPECIFIC || offset + size > PCI_CONFIG_SPACE_SIZE) {
      throw new RangeError(`PCI register at ${String(offset)} is outside the device-specific area 0x40..0xff`);
    }
    if (this.used.subarray(offset, offset + size).some((u) => u !== 0)) throw new RangeError(`PCI register at ${hex(offset, 2)} overlaps another`);
    this.init(offset, size, value, writeMask, w1cMask);
    this.used.fill(1, offset, offset + size);
  }

  // Device-side access: no masks, no side effects.
  get8(offset: number): number {
    return this.bytes[offset & 0xff]!;
  }
  get16(offset: number): number {
    return this.get8(offset) | (this.get8(offset + 1) << 8);
  }
  get32(offset: number): number {
    return (this.get16(offset) | (this.get16(offset + 2) << 16)) >>> 0;
  }
  set8(offset: number, v: number): void {
    this.bytes[offset & 0xff] = v;
  }
  set16(offset: number, v: number): void {
    this.set8(offset, v);
    this.set8(offset + 1, v >>> 8);
  }
  set32(offset: number, v: number): void {
    this.set16(offset, v);
    this.set16(offset + 2, v >>> 16);
  }

  /** Command bit 10: the guest has forbidden INTx; the device must keep its line low. */
  get intxDisabled(): boolean {
    return (this.get16(PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** Command bit 2: the device may do DMA. */
  get busMaster(): boolean {
    return (this.get16(PCI_COMMAND) & PCI_COMMAND_BUS_MASTER) !== 0;
  }

  /** Mirror the device's INTx# state in status bit 3, as the spec asks of functions that have a pin. */
  setInterruptStatus(asserted: boolean): void {
    const s = this.get16(PCI_STATUS);
    this.set16(PCI_STATUS, asserted ? s | PCI_STATUS_INTERRUPT : s & ~PCI_STATUS_INTERRUPT);
  }

  readConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      data[i] = o >= 0 && o < PCI_CONFIG_SPACE_SIZE ? this.bytes[o]! : 0xff;
    }
  }

  writeConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      if (o < 0 || o >= PCI_CONFIG_SPACE_SIZE) continue;
      const v = data[i]!;
      const m = this.wmask[o]!;
      this.bytes[o] = ((this.bytes[o]! & ~m) | (v & m)) & ~(v & this.w1c[o]!);
    }
    // Only the command register and the BARs move mappings.
    const end = offset + data.length;
    if (offset < PCI_BAR0 + 24 && end > PCI_COMMAND) this.updateMappings();
  }

  /** Back to power-on values (a PCI reset); BARs stop decoding. */
  reset(): void {
    this.bytes.set(this.initial);
    this.updateMappings();
  }

  /** Snapshot all 256 bytes. */
  save(): PciConfigState {
    return { bytes: Array.from(this.bytes) };
  }

  /**
   * Load a snapshot from {@link save}; throws RangeError if it is malformed or was taken of a
   * different kind of function (vendor, device, class or header type differ). Reports BARs
   * whose decoded address changes through {@link onBarChange}.
   */
  restore(state: PciConfigState): void {
    const b = state.bytes;
    if (!Array.isArray(b) || b.length !== PCI_CONFIG_SPACE_SIZE) throw new RangeError(`PCI config state: bytes must hold ${PCI_CONFIG_SPACE_SIZE} bytes`);
    for (const v of b) if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`PCI config state: byte ${String(v)}`);
    const id = (src: ArrayLike<number>): string =>
      [0, 1, 2, 3, 9, 10, 11, PCI_HEADER_TYPE].map((o) => hex(src[o]!, 2).slice(2)).join('');
    if (id(b) !== id(this.bytes)) {
      const desc = (src: ArrayLike<number>): string => `${hex(src[0]! | (src[1]! << 8), 4)}:${hex(src[2]! | (src[3]! << 8), 4)}`;
      throw new RangeError(`PCI config state: identity ${desc(b)} does not match this function ${desc(this.bytes)}`);
    }
    this.bytes.set(b);
    this.updateMappings();
  }

  private init(offset: number, size: number, value: number, writeMask = 0, w1cMask = 0): void {
    for (let i = 0; i < size; i++) {
      const sh = 8 * i;
      const o = offset + i;
      this.bytes[o] = this.initial[o] = Math.floor(value / 2 ** sh) & 0xff;
      this.wmask[o] = Math.floor(writeMask / 2 ** sh) & 0xff;
      this.w1c[o] = Math.floor(w1cMask / 2 ** sh) & 0xff;
    }
  }

  private taken(index: number): boolean {
    return this.bars[index] !== undefined || (index > 0 && this.bars[index - 1]?.kind === 'mem64');
  }

  private decode(index: number): number | null {
    const b = this.bars[index];
    if (b === undefined) return null;
    const cmd = this.get16(PCI_COMMAND);
    const off = PCI_BAR0 + index * 4;
    const low = this.get32(off);
    const lowMask = (this.wmask[off]! | (this.wmask[off + 1]! << 8) | (this.wmask[off + 2]! << 16) | (this.wmask[off + 3]! << 24)) >>> 0;
    if (b.kind === 'io') {
      if (!(cmd & PCI_COMMAND_IO)) return null;
      const addr = (low & ~0x3) >>> 0;
      return addr === 0 || addr + b.size > IO_LIMIT ? null : addr;
    }
    if (!(cmd & PCI_COMMAND_MEMORY)) return null;
    // Mid-probe: every address bit of the low dword set.
    if (lowMask !== 0 && (low & lowMask) >>> 0 === lowMask) return null;
    let addr = (low & ~0xf) >>> 0;
    if (b.kind === 'mem64') addr += this.get32(off + 4) * 2 ** 32;
    return addr === 0 || addr + b.size > MEM_LIMIT ? null : addr;
  }

  private updateMappings(): void {
    for (let i = 0; i < this.bars.length; i++) {
      if (this.bars[i] === undefined) continue;
      const addr = this.decode(i);
      if (addr !== this.mapped[i]) {
        this.mapped[i] = addr;
        this.onBarChange?.(i, addr);
      }
    }
  }
}
