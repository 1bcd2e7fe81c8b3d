/**
 * The PCI-to-ISA bridge function of an Intel 82371SB (PIIX3), as far as a VM needs it: PCI
 * interrupt routing and the reset control register.
 *
 * PCI INTx# lines are wired to four PIRQ inputs with the usual board swizzle (each slot's
 * INTA# lands on the next PIRQ), and the PIRQ route control registers (60h..63h) steer each
 * PIRQ to an ISA IRQ or disconnect it. Lines are level-triggered and shareable: an ISA IRQ is
 * high while any source routed to it is asserted. (The 8259's ELCR must mark those IRQs
 * level-triggered; that is the PIC's business, not this bridge's.)
 *
 * The reset control register (I/O 0xCF9) resets the machine when bit 2 (RCPU) goes from 0 to
 * 1; bit 1 (SRST) chooses a hard (system) or soft (CPU INIT) reset.
 * @module
 */

import type { BusDevice, IoBus } from '@kvmts/kvm-core';
import { PCI_INTA, PCI_INTD, PciConfigSpace, type PciConfigState, type PciDevice } from './device.js';

/** Where boards conventionally put the PIIX: device 1, function 0 (00:01.0). */
export const PIIX_SLOT = 1;
/** PIRQRC[A]; PIRQRC[B..D] follow at 61h..63h. */
export const PIIX_PIRQRC = 0x60;
/** Reset control register port. */
export const PIIX_RESET_CONTROL_PORT = 0xcf9;

// PIRQRC bit 7 (IRQROUTEN): 1 = PIRQ not routed. Bits 6:4 are reserved (read 0).
const PIRQ_DISABLED = 0x80;
const PIRQ_WRITABLE = 0x8f;
// ISA IRQs a PIRQ can be steered to (PIIX3 datasheet, PIRQRC bits 3:0); 0-2, 8 and 13 are reserved.
const ROUTABLE = new Set([3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15]);

// Reset control bits.
const RC_SRST = 0x02;
const RC_RCPU = 0x04;

/** 82371SB function 0: vendor Intel, device 7000h, PCI-to-ISA bridge, multi-function. */
const PIIX3 = { vendorId: 0x8086, deviceId: 0x7000, classCode: 0x060100, revision: 0x00, multiFunction: true };

const checkIntx = (slot: number, pin: number): void => {
  if (!Number.isInteger(slot) || slot < 0 || slot > 31) throw new RangeError(`PCI device number ${String(slot)} is not 0..31`);
  if (!Number.isInteger(pin) || pin < PCI_INTA || pin > PCI_INTD) throw new RangeError(`PCI interrupt pin ${String(pin)} is not 1 (INTA#)..4 (INTD#)`);
};

/**
 * Which PIRQ (0 = PIRQA .. 3 = PIRQD) the INTx# `pin` (1 = INTA# .. 4 = INTD#, as in the
 * Interrupt Pin register) of device `slot` is wired to: PIRQ[(slot + pin - 2) & 3], i.e.
 * PIRQ[(slot + n - 1) & 3] with n = 0 for INTA#. Slots 1, 2, 3, 4 put INTA# on PIRQA, B, C, D.
 * Firmware generating the ACPI _PRT should use this same function.
 */
export function pirqForIntx(slot: number, pin: number): number {
  checkIntx(slot, pin);
  return (slot + pin - 2) & 3;
}

/** Options for {@link Piix3}. */
export interface Piix3Options {
  /** Called with an ISA IRQ number and its new level whenever a routed PCI interrupt changes it. */
  isaIrq?: (irq: number, level: boolean) => void;
  /** Called when the guest resets the machine through 0xCF9 (`hard` when SRST was set). */
  reset?: (kind: 'hard' | 'soft') => void;
}

/** An asserted INTx# source. */
export interface PiixIntxSource {
  slot: number;
  fn: number;
  pin: number;
}

/** Plain, JSON-able snapshot of a {@link Piix3}. */
export interface Piix3State {
  config: PciConfigState;
  /** Reset control register. */
  resetControl: number;
  /** INTx# sources currently asserted. */
  intx: PiixIntxSource[];
}

/** PIIX3 function 0; attach at 00:01.0 and map {@link resetControl} with {@link mapPorts}. */
export class Piix3 implements PciDevice {
  readonly config: PciConfigSpace;
  /** The reset control register: map at {@link PIIX_RESET_CONTROL_PORT}, length 1. */
  readonly resetControl: BusDevice;

  private readonly isaIrq: ((irq: number, level: boolean) => void) | undefined;
  private readonly onReset: ((kind: 'hard' | 'soft') => void) | undefined;
  private rc = 0;
  // Asserted sources, keyed (slot * 8 + fn) * 4 + pin - 1.
  private readonly asserted = new Set<number>();
  // ISA IRQs this bridge is holding high.
  private readonly high = new Set<number>();

  constructor(options: Piix3Options = {}) {
    this.isaIrq = options.isaIrq;
    this.onReset = options.reset;
    // Command: I/O, memory and bus master; status: DEVSEL medium (datasheet power-on values).
    this.config = new PciConfigSpace({ ...PIIX3, command: 0x0007, status: 0x0200 });
    for (let i = 0; i < 4; i++) this.config.defineRegister(PIIX_PIRQRC + i, 1, PIRQ_DISABLED, PIRQ_WRITABLE);
    this.resetControl = {
      read: (_offset, data) => {
        data.fill(0xff);
        data[0] = this.rc;
      },
      write: (_offset, data) => this.writeResetControl(data[0] ?? 0),
    };
  }

  /** Map the reset control register on `io`. */
  mapPorts(io: IoBus): void {
    io.insert(this.resetControl, PIIX_RESET_CONTROL_PORT, 1);
  }

  /** The ISA IRQ that INTx# `pin` of device `slot` reaches now, or null if its PIRQ is not routed. */
  routeIntx(slot: number, pin: number): number | null {
    const r = this.config.get8(PIIX_PIRQRC + pirqForIntx(slot, pin));
    if (r & PIRQ_DISABLED) return null;
    const irq = r & 0x0f;
    return ROUTABLE.has(irq) ? irq : null;
  }

  /**
   * Drive INTx# `pin` of function `fn` of device `slot` to `level`. The routed ISA IRQ is the
   * OR of every asserted source on it, and is reported through `isaIrq` when it changes.
   */
  setIntx(slot: number, pin: number, level: boolean, fn = 0): void {
    checkIntx(slot, pin);
    if (!Number.isInteger(fn) || fn < 0 || fn > 7) throw new RangeError(`PCI function number ${String(fn)} is not 0..7`);
    const key = (slot * 8 + fn) * 4 + pin - 1;
    if (level) this.asserted.add(key);
    else this.asserted.delete(key);
    this.updateLines();
  }

  readConfig(offset: number, data: Uint8Array): void {
    this.config.readConfig(offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    this.config.writeConfig(offset, data);
    // Re-steering a PIRQ moves any level already on it.
    if (offset < PIIX_PIRQRC + 4 && offset + data.length > PIIX_PIRQRC) this.updateLines();
  }

  /** Power-on state (PIRQs disconnected, reset control 0); asserted sources stay until their devices drop them. */
  reset(): void {
    this.config.reset();
    this.rc = 0;
    this.updateLines();
  }

  save(): Piix3State {
    const intx = [...this.asserted].sort((a, b) => a - b).map((k) => ({ slot: k >> 5, fn: (k >> 2) & 7, pin: (k & 3) + 1 }));
    return { config: this.config.save(), resetControl: this.rc, intx };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. Reports ISA IRQ levels that change. */
  restore(state: Piix3State): void {
    const rc = state.resetControl;
    if (!Number.isInteger(rc) || (rc & ~RC_SRST) !== 0) throw new RangeError(`PIIX state: resetControl ${String(rc)} is not a reset control value`);
    if (!Array.isArray(state.intx)) throw new RangeError('PIIX state: intx must be a list');
    const keys: number[] = [];
    for (const s of state.intx) {
      const ok = Number.isInteger(s.slot) && s.slot >= 0 && s.slot < 32 && Number.isInteger(s.fn) && s.fn >= 0 && s.fn < 8 && Number.isInteger(s.pin) && s.pin >= 1 && s.pin <= 4;
      if (!ok) throw new RangeError(`PIIX state: bad INTx source ${JSON.stringify(s)}`);
      keys.push((s.slot * 8 + s.fn) * 4 + s.pin - 1);
    }
    this.config.restore(state.config);
    this.rc = rc;
    this.asserted.clear();
    for (const k of keys) this.asserted.add(k);
    this.updateLines();
  }

  private writeResetControl(v: number): void {
    // RCPU reads back 0 once the reset is under way, so every write with it set is a 0->1 edge.
    this.rc = v & RC_SRST;
    if (v & RC_RCPU) this.onReset?.(v & RC_SRST ? 'hard' : 'soft');
  }

  private updateLines(): void {
    const now = new Set<number>();
    for (const k of this.asserted) {
      const irq = this.routeIntx(k >> 5, (k & 3) + 1);
      if (irq !== null) now.add(irq);
    }
    for (const irq of [...this.high]) {
      if (!now.has(irq)) {
        this.high.delete(irq);
        this.isaIrq?.(irq, false);
      }
    }
    for (const irq of now) {
      if (!this.high.has(irq)) {
        this.high.add(irq);
        this.isaIrq?.(irq, true);
      }
    }
  }
}
