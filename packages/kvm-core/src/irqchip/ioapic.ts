/**
 * An Intel 82093AA-style I/O APIC: 24 interrupt input pins, each routed by a 64-bit redirection
 * table entry to a message for the local APICs.
 *
 * Registers are reached indirectly: write an index to IOREGSEL (offset 0x00), then read or write
 * the 32-bit register through IOWIN (offset 0x10). Delivery is synchronous through the `deliver`
 * hook, so the delivery-status bit always reads idle. There is no EOI register (that arrived
 * with version 0x20); the local APIC side reports EOIs through {@link IoApic.eoi}.
 * @module
 */

import type { BusDevice } from '../bus.js';

/** Guest-physical base of the I/O APIC on PCs. */
export const IOAPIC_BASE = 0xfec00000;
/** Size of the MMIO window. */
export const IOAPIC_SIZE = 0x20;
/** Number of input pins (and redirection entries). */
export const IOAPIC_PINS = 24;
/** IOAPICVER: maximum redirection entry 0x17 in bits 23:16, version 0x11. */
export const IOAPIC_VERSION = 0x00170011;

// MMIO offsets.
const IOREGSEL = 0x00;
const IOWIN = 0x10;

// Register indexes.
const REG_ID = 0x00;
const REG_VER = 0x01;
const REG_ARB = 0x02;
const REG_REDIR = 0x10;

// Redirection entry, low dword.
const LO_VECTOR = 0xff;
const LO_DELIVERY_SHIFT = 8;
const LO_DEST_LOGICAL = 1 << 11;
const LO_DELIVERY_STATUS = 1 << 12;
// Bit 13 is the pin polarity: stored for read-back only (see IoApic.setIrq).
const LO_REMOTE_IRR = 1 << 14;
const LO_LEVEL = 1 << 15;
const LO_MASK = 1 << 16;
// Bits software may write: everything defined except delivery status and remote IRR.
const LO_WRITABLE = 0x1ffff & ~(LO_DELIVERY_STATUS | LO_REMOTE_IRR);
// High dword: only the destination field, bits 63:56.
const HI_WRITABLE = 0xff000000;

/** Delivery-mode field values (bits 10:8), the same encoding as the local APIC's ICR. */
export const IoApicDeliveryMode = {
  Fixed: 0,
  LowestPriority: 1,
  SMI: 2,
  NMI: 4,
  INIT: 5,
  ExtINT: 7,
} as const;
/** A defined delivery mode; 3 and 6 are reserved and never delivered. */
export type IoApicDeliveryMode = (typeof IoApicDeliveryMode)[keyof typeof IoApicDeliveryMode];

/** An interrupt message for the local APICs. */
export interface IoApicMessage {
  vector: number;
  deliveryMode: IoApicDeliveryMode;
  destMode: 'physical' | 'logical';
  /** Destination field (bits 63:56): an APIC ID, or a logical destination set. */
  dest: number;
  trigger: 'edge' | 'level';
}

/** Options for {@link IoApic}. */
export interface IoApicOptions {
  /** Initial I/O APIC ID (0–15), as firmware tables will describe it. Default 0. */
  id?: number;
  /** Receives each interrupt message; the platform connects this to the local APICs. */
  deliver?: (msg: IoApicMessage) => void;
}

/** One redirection entry: the two dwords as IOWIN shows them (remote IRR included). */
export interface IoApicRedirection {
  low: number;
  high: number;
}

/** Plain, JSON-able snapshot of an {@link IoApic}. */
export interface IoApicState {
  id: number;
  arbitrationId: number;
  ioregsel: number;
  /** Asserted input pins, bit n for pin n. */
  pins: number;
  redirection: IoApicRedirection[];
}

/** The I/O APIC; map it on an {@link MmioBus} at {@link IOAPIC_BASE}, length {@link IOAPIC_SIZE}. */
export class IoApic implements BusDevice {
  private readonly deliverHook: ((msg: IoApicMessage) => void) | undefined;
  private id: number;
  private arb: number;
  private ioregsel = 0;
  private pins = 0;
  private readonly lo = new Uint32Array(IOAPIC_PINS).fill(LO_MASK);
  private readonly hi = new Uint32Array(IOAPIC_PINS);

  constructor(options: IoApicOptions = {}) {
    const id = options.id ?? 0;
    if (!Number.isInteger(id) || id < 0 || id > 15) throw new RangeError(`ioapic: id ${String(id)} is not 0..15`);
    this.id = id;
    // The arbitration ID is loaded from the ID register.
    this.arb = id;
    this.deliverHook = options.deliver;
  }

  /**
   * Drive input pin `gsi` (0–23). `level` is the logical assertion of the line: the polarity
   * bit is kept for the guest to read back but not applied, so the platform passes true for
   * "asserted" whatever the wiring (as KVM's irq-line interface does).
   */
  setIrq(gsi: number, level: boolean): void {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi >= IOAPIC_PINS) throw new RangeError(`ioapic: no pin ${String(gsi)}`);
    const bit = 1 << gsi;
    const was = (this.pins & bit) !== 0;
    if (level) this.pins |= bit;
    else this.pins &= ~bit;
    const lo = this.lo[gsi]!;
    // Masked pins ignore edges entirely and level changes until unmasked.
    if (lo & LO_MASK || !level) return;
    if (this.isLevel(lo)) this.service(gsi);
    else if (!was) this.send(gsi);
  }

  /**
   * A local APIC's EOI for `vector`: clears remote IRR on the level-triggered entries with that
   * vector, and delivers again from any whose pin is still asserted.
   */
  eoi(vector: number): void {
    for (let i = 0; i < IOAPIC_PINS; i++) {
      const lo = this.lo[i]!;
      if ((lo & LO_VECTOR) !== vector || !(lo & LO_REMOTE_IRR)) continue;
      this.lo[i] = lo & ~LO_REMOTE_IRR;
      this.service(i);
    }
  }

  read(offset: number, data: Uint8Array): void {
    let win: number | undefined;
    for (let i = 0; i < data.length; i++) {
      const a = offset + i;
      if (a === IOREGSEL) data[i] = this.ioregsel;
      else if (a >= IOWIN && a < IOWIN + 4) {
        win ??= this.readRegister(this.ioregsel);
        data[i] = (win >>> ((a - IOWIN) * 8)) & 0xff;
      } else data[i] = 0;
    }
  }

  write(offset: number, data: Uint8Array): void {
    let win: number | undefined;
    for (let i = 0; i < data.length; i++) {
      const a = offset + i;
      if (a === IOREGSEL) this.ioregsel = data[i]!;
      else if (a >= IOWIN && a < IOWIN + 4) {
        // IOWIN is a dword register; narrower writes merge into its current value.
        win ??= this.readRegister(this.ioregsel);
        const sh = (a - IOWIN) * 8;
        win = ((win & ~(0xff << sh)) | (data[i]! << sh)) >>> 0;
      }
    }
    if (win !== undefined) this.writeRegister(this.ioregsel, win);
  }

  /** Snapshot the device state. */
  save(): IoApicState {
    const redirection: IoApicRedirection[] = [];
    for (let i = 0; i < IOAPIC_PINS; i++) redirection.push({ low: this.lo[i]!, high: this.hi[i]! });
    return { id: this.id, arbitrationId: this.arb, ioregsel: this.ioregsel, pins: this.pins, redirection };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. Delivers nothing. */
  restore(state: IoApicState): void {
    const nibble = (k: 'id' | 'arbitrationId'): number => {
      const v = state[k];
      if (!Number.isInteger(v) || v < 0 || v > 15) throw new RangeError(`ioapic state: ${k} = ${String(v)} is not 0..15`);
      return v;
    };
    const id = nibble('id');
    const arb = nibble('arbitrationId');
    if (!Number.isInteger(state.ioregsel) || state.ioregsel < 0 || state.ioregsel > 0xff) {
      throw new RangeError(`ioapic state: ioregsel = ${String(state.ioregsel)} is not a byte`);
    }
    if (!Number.isInteger(state.pins) || state.pins < 0 || state.pins >= 2 ** IOAPIC_PINS) {
      throw new RangeError(`ioapic state: pins = ${String(state.pins)}`);
    }
    if (!Array.isArray(state.redirection) || state.redirection.length !== IOAPIC_PINS) {
      throw new RangeError(`ioapic state: redirection must have ${IOAPIC_PINS} entries`);
    }
    for (const [i, e] of state.redirection.entries()) {
      for (const v of [e.low, e.high]) {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`ioapic state: redirection[${i}] = ${String(v)}`);
      }
    }
    this.id = id;
    this.arb = arb;
    this.ioregsel = state.ioregsel;
    this.pins = state.pins;
    for (const [i, e] of state.redirection.entries()) {
      this.lo[i] = e.low & (LO_WRITABLE | LO_REMOTE_IRR);
      this.hi[i] = e.high & HI_WRITABLE;
    }
  }

  private readRegister(index: number): number {
    switch (index) {
      case REG_ID:
        return (this.id << 24) >>> 0;
      case REG_VER:
        return IOAPIC_VERSION;
      case REG_ARB:
        return (this.arb << 24) >>> 0;
      default: {
        const n = index - REG_REDIR;
        if (n < 0 || n >= IOAPIC_PINS * 2) return 0;
        return n & 1 ? this.hi[n >> 1]! : this.lo[n >> 1]!;
      }
    }
  }

  private writeRegister(index: number, v: number): void {
    if (index === REG_ID) {
      this.id = (v >>> 24) & 0x0f;
      this.arb = this.id;
      return;
    }
    const n = index - REG_REDIR;
    // The version and arbitration registers are read-only; other indexes are reserved.
    if (n < 0 || n >= IOAPIC_PINS * 2) return;
    const pin = n >> 1;
    if (n & 1) {
      this.hi[pin] = v & HI_WRITABLE;
      return;
    }
    let lo = (v & LO_WRITABLE) | (this.lo[pin]! & LO_REMOTE_IRR);
    // Remote IRR means nothing for edge entries; Linux relies on a switch to edge clearing it.
    if (!this.isLevel(lo)) lo &= ~LO_REMOTE_IRR;
    this.lo[pin] = lo;
    // A level pin that is still asserted delivers as soon as it is unmasked.
    this.service(pin);
  }

  /**
   * Whether an entry behaves level-triggered. SMI, NMI, INIT and ExtINT are always edge, whatever
   * the trigger bit says.
   */
  private isLevel(lo: number): boolean {
    const mode = (lo >> LO_DELIVERY_SHIFT) & 7;
    return (lo & LO_LEVEL) !== 0 && (mode === IoApicDeliveryMode.Fixed || mode === IoApicDeliveryMode.LowestPriority);
  }

  /** Deliver from a level entry if it is unmasked, asserted and not awaiting EOI. */
  private service(pin: number): void {
    const lo = this.lo[pin]!;
    if (!this.isLevel(lo) || lo & (LO_MASK | LO_REMOTE_IRR) || !(this.pins & (1 << pin))) return;
    this.send(pin);
  }

  private send(pin: number): void {
    const lo = this.lo[pin]!;
    const mode = (lo >> LO_DELIVERY_SHIFT) & 7;
    // Reserved delivery modes (3, 6) go nowhere.
    if (mode === 3 || mode === 6) return;
    const level = this.isLevel(lo);
    // Remote IRR is set once a local APIC accepts a level interrupt; acceptance is immediate here.
    if (level) this.lo[pin] = lo | LO_REMOTE_IRR;
    this.deliverHook?.({
      vector: lo & LO_VECTOR,
      deliveryMode: mode as IoApicDeliveryMode,
      destMode: lo & LO_DEST_LOGICAL ? 'logical' : 'physical',
      dest: this.hi[pin]! >>> 24,
      trigger: level ? 'level' : 'edge',
    });
  }
}
