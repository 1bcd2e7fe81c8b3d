/**
 * The PC's pair of Intel 8259A programmable interrupt controllers, with the PIIX-style edge/level
 * control registers (ELCR).
 *
 * Wiring, as on the PC/AT: the master answers at 0x20/0x21 and drives the CPU's INTR; the slave
 * answers at 0xA0/0xA1 and its INT output feeds master IR2. The ELCR at 0x4D0 (IRQ 0–7) and 0x4D1
 * (IRQ 8–15) picks edge or level sensing per line; IRQ 0, 1, 2, 8 and 13 are hard-wired edge.
 *
 * The three port ranges are separate {@link BusDevice}s: {@link Pic.master}, {@link Pic.slave} and
 * {@link Pic.elcr}, each {@link PIC_PORT_LEN} ports long. Vectors are always formed 8086-style
 * (ICW2 base | level); the MCS-80/85 CALL sequence is not modelled.
 * @module
 */

import type { BusDevice } from '../bus.js';

/** Base port of the master 8259A (command at +0, data/mask at +1). */
export const PIC_MASTER_BASE = 0x20;
/** Base port of the slave 8259A. */
export const PIC_SLAVE_BASE = 0xa0;
/** Base port of the ELCR pair (0x4D0 master lines, 0x4D1 slave lines). */
export const PIC_ELCR_BASE = 0x4d0;
/** Each of the three port ranges is two ports wide. */
export const PIC_PORT_LEN = 2;
/** The master input the slave's INT output is wired to. */
export const PIC_CASCADE_IRQ = 2;

// ELCR bits that may be set: IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge.
const ELCR_MASTER_MASK = 0xf8;
const ELCR_SLAVE_MASK = 0xde;

// ICW1 bits.
const ICW1_IC4 = 0x01;
const ICW1_SNGL = 0x02;
const ICW1_LTIM = 0x08;
const ICW1_INIT = 0x10;
// ICW4 bits.
const ICW4_AEOI = 0x02;
const ICW4_SFNM = 0x10;
// OCW3 bits.
const OCW3_RIS = 0x01;
const OCW3_RR = 0x02;
const OCW3_P = 0x04;
const OCW3_SMM = 0x20;
const OCW3_ESMM = 0x40;

/** Which initialization word the chip expects next; 0 when it is operational. */
type InitStep = 0 | 2 | 3 | 4;

/** Plain, JSON-able snapshot of one 8259A. */
export interface PicChipState {
  /** Interrupt request register. */
  irr: number;
  /** In-service register. */
  isr: number;
  /** Interrupt mask register (OCW1). */
  imr: number;
  /** Current levels of the eight IR inputs (edge detection compares against these). */
  lines: number;
  /** ELCR byte: 1 bits are level-sensitive lines. */
  elcr: number;
  /** ICW1 LTIM: every line level-sensitive. */
  ltim: boolean;
  /** ICW1 SNGL: no cascade. */
  single: boolean;
  /** ICW1 IC4: an ICW4 follows. */
  icw4Needed: boolean;
  /** Vector base from ICW2 (low three bits zero). */
  vectorBase: number;
  /** ICW3: slave mask on the master, slave ID on the slave. */
  icw3: number;
  /** ICW4 AEOI. */
  autoEoi: boolean;
  /** ICW4 SFNM. */
  specialFullyNested: boolean;
  /** Next initialization word expected (2, 3, 4), or 0 when initialized. */
  initStep: number;
  /** The IR level with the lowest priority (7 unless rotated). */
  lowestPriority: number;
  /** OCW2 rotate-in-AEOI flag. */
  rotateOnAutoEoi: boolean;
  /** OCW3 RIS: reads of the command port return ISR rather than IRR. */
  readIsr: boolean;
  /** OCW3 P: the next command-port read is a poll. */
  poll: boolean;
  /** OCW3 special mask mode. */
  specialMask: boolean;
}

/** Plain, JSON-able snapshot of a {@link Pic}. */
export interface PicState {
  master: PicChipState;
  slave: PicChipState;
  /** Level of the external IRQ 2 input, which shares master IR2 with the slave's INT. */
  irq2: boolean;
}

/** Options for {@link Pic}. */
export interface PicOptions {
  /** Called with the new level of the master's INT output (the CPU's INTR) whenever it changes. */
  intr?: (level: boolean) => void;
}

/** One 8259A. Not exported: the pair's wiring lives in {@link Pic}. */
class Chip {
  irr = 0;
  isr = 0;
  imr = 0;
  lines = 0;
  elcr = 0;
  ltim = false;
  single = false;
  icw4Needed = false;
  vectorBase = 0;
  icw3: number;
  autoEoi = false;
  sfnm = false;
  initStep: InitStep = 0;
  lowest = 7;
  rotateOnAutoEoi = false;
  readIsr = false;
  poll = false;
  specialMask = false;

  constructor(readonly isMaster: boolean) {
    // Power-on state is undefined on the real part; start out wired as on a PC.
    this.icw3 = isMaster ? 1 << PIC_CASCADE_IRQ : PIC_CASCADE_IRQ;
  }

  private get levelMask(): number {
    return this.ltim ? 0xff : this.elcr;
  }

  /** IR inputs that have a slave behind them (master in cascade mode only). */
  get cascadeMask(): number {
    return this.isMaster && !this.single ? this.icw3 : 0;
  }

  setLine(n: number, level: boolean): void {
    const bit = 1 << n;
    if (level) {
      // Edge mode latches the rising edge; level mode follows the line.
      if (this.levelMask & bit || !(this.lines & bit)) this.irr |= bit;
      this.lines |= bit;
    } else {
      this.lines &= ~bit;
      if (this.levelMask & bit) this.irr &= ~bit;
    }
  }

  setElcr(v: number): void {
    const before = this.levelMask;
    this.elcr = v;
    const changed = before ^ this.levelMask;
    // Lines now level-sensitive report their level; lines now edge-sensitive need a fresh edge.
    this.irr = (this.irr & ~changed) | (this.lines & this.levelMask & changed);
  }

  /** Rank in the current priority order: 0 is highest. */
  private rank(level: number): number {
    return (level - this.lowest - 1) & 7;
  }

  /** The highest-priority level set in `bits`, or -1. */
  private highest(bits: number): number {
    for (let r = 0; r < 8; r++) {
      const l = (this.lowest + 1 + r) & 7;
      if (bits & (1 << l)) return l;
    }
    return -1;
  }

  /** The level the priority resolver would acknowledge now, or -1: this is the INT output. */
  pending(): number {
    if (this.initStep !== 0) return -1;
    const p = this.highest(this.irr & ~this.imr);
    if (p < 0) return -1;
    // In special mask mode, masked levels do not hold off lower priorities.
    const h = this.highest(this.specialMask ? this.isr & ~this.imr : this.isr);
    if (h < 0 || this.rank(p) < this.rank(h)) return p;
    // Special fully nested: a slave input in service still admits new requests from that slave.
    if (p === h && this.sfnm && this.cascadeMask & (1 << p)) return p;
    return -1;
  }

  /** The INTA (or poll) cycle: returns the level served, or -1 for a spurious request. */
  intAck(): number {
    const p = this.pending();
    if (p < 0) return -1;
    const bit = 1 << p;
    // In level mode the IRR bit is reset here but the still-high line sets it again at once.
    if (!(this.levelMask & bit)) this.irr &= ~bit;
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.lowest = p;
    } else {
      this.isr |= bit;
    }
    return p;
  }

  readPort(a0: number): number {
    if (a0 === 1) return this.imr;
    if (this.poll) {
      this.poll = false;
      const p = this.intAck();
      return p < 0 ? 0 : 0x80 | p;
    }
    return this.readIsr ? this.isr : this.irr;
  }

  writePort(a0: number, v: number): void {
    if (a0 === 0) {
      if (v & ICW1_INIT) this.icw1(v);
      else if (v & 0x08) this.ocw3(v);
      else this.ocw2(v);
      return;
    }
    switch (this.initStep) {
      case 0:
        this.imr = v;
        return;
      case 2:
        this.vectorBase = v & 0xf8;
        this.initStep = this.single ? (this.icw4Needed ? 4 : 0) : 3;
        return;
      case 3:
        this.icw3 = v;
        this.initStep = this.icw4Needed ? 4 : 0;
        return;
      case 4:
        this.autoEoi = (v & ICW4_AEOI) !== 0;
        this.sfnm = (v & ICW4_SFNM) !== 0;
        this.initStep = 0;
        return;
    }
  }

  private icw1(v: number): void {
    this.ltim = (v & ICW1_LTIM) !== 0;
    this.single = (v & ICW1_SNGL) !== 0;
    this.icw4Needed = (v & ICW1_IC4) !== 0;
    // The datasheet's ICW1 effects: mask cleared, IR7 lowest, special mask off, read IRR, and the
    // edge sense circuit reset so a line already high must go low and high again.
    this.imr = 0;
    this.lowest = 7;
    this.specialMask = false;
    this.readIsr = false;
    this.poll = false;
    this.irr = this.lines & this.levelMask;
    // Not in the datasheet's list, but an OS re-initializing will never EOI what was in service.
    this.isr = 0;
    this.rotateOnAutoEoi = false;
    // Without ICW4 its fields are all zero.
    if (!this.icw4Needed) {
      this.autoEoi = false;
      this.sfnm = false;
    }
    this.initStep = 2;
  }

  private ocw2(v: number): void {
    const level = v & 7;
    switch (v >> 5) {
      case 0b001: {
        // Non-specific EOI: retire the highest-priority level in service.
        const h = this.highest(this.isr);
        if (h >= 0) this.isr &= ~(1 << h);
        return;
      }
      case 0b011:
        this.isr &= ~(1 << level);
        return;
      case 0b101: {
        // Rotate on non-specific EOI: the retired level becomes the lowest priority.
        const h = this.highest(this.isr);
        if (h >= 0) {
          this.isr &= ~(1 << h);
          this.lowest = h;
        }
        return;
      }
      case 0b111:
        this.isr &= ~(1 << level);
        this.lowest = level;
        return;
      case 0b110:
        this.lowest = level;
        return;
      case 0b100:
        this.rotateOnAutoEoi = true;
        return;
      case 0b000:
        this.rotateOnAutoEoi = false;
        return;
      default:
        // 0b010: no operation.
        return;
    }
  }

  private ocw3(v: number): void {
    if (v & OCW3_RR) this.readIsr = (v & OCW3_RIS) !== 0;
    if (v & OCW3_ESMM) this.specialMask = (v & OCW3_SMM) !== 0;
    // Poll takes precedence over the register read for the next read only.
    if (v & OCW3_P) this.poll = true;
  }

  save(): PicChipState {
    return {
      irr: this.irr,
      isr: this.isr,
      imr: this.imr,
      lines: this.lines,
      elcr: this.elcr,
      ltim: this.ltim,
      single: this.single,
      icw4Needed: this.icw4Needed,
      vectorBase: this.vectorBase,
      icw3: this.icw3,
      autoEoi: this.autoEoi,
      specialFullyNested: this.sfnm,
      initStep: this.initStep,
      lowestPriority: this.lowest,
      rotateOnAutoEoi: this.rotateOnAutoEoi,
      readIsr: this.readIsr,
      poll: this.poll,
      specialMask: this.specialMask,
    };
  }

  restore(s: PicChipState, name: string, elcrMask: number): void {
    for (const k of ['irr', 'isr', 'imr', 'lines', 'elcr', 'vectorBase', 'icw3'] as const) {
      const v = s[k];
      if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`pic state: ${name}.${k} = ${String(v)} is not a byte`);
    }
    if (s.initStep !== 0 && s.initStep !== 2 && s.initStep !== 3 && s.initStep !== 4) {
      throw new RangeError(`pic state: ${name}.initStep = ${String(s.initStep)}`);
    }
    if (!Number.isInteger(s.lowestPriority) || s.lowestPriority < 0 || s.lowestPriority > 7) {
      throw new RangeError(`pic state: ${name}.lowestPriority = ${String(s.lowestPriority)}`);
    }
    this.irr = s.irr;
    this.isr = s.isr;
    this.imr = s.imr;
    this.lines = s.lines;
    this.elcr = s.elcr & elcrMask;
    this.ltim = Boolean(s.ltim);
    this.single = Boolean(s.single);
    this.icw4Needed = Boolean(s.icw4Needed);
    this.vectorBase = s.vectorBase & 0xf8;
    this.icw3 = s.icw3;
    this.autoEoi = Boolean(s.autoEoi);
    this.sfnm = Boolean(s.specialFullyNested);
    this.initStep = s.initStep;
    this.lowest = s.lowestPriority;
    this.rotateOnAutoEoi = Boolean(s.rotateOnAutoEoi);
    this.readIsr = Boolean(s.readIsr);
    this.poll = Boolean(s.poll);
    this.specialMask = Boolean(s.specialMask);
  }
}

/**
 * The cascaded 8259A pair. Devices drive `setIrq`; the VMM watches `intr` (or polls
 * `hasInterrupt`) and runs `acknowledge` when the CPU accepts the interrupt.
 *
 * Edge-sensitive requests stay latched in IRR until acknowledged even if the line falls first:
 * emulated devices often pulse their line, which real edge-mode hardware would turn into a
 * spurious IRQ 7. A level-sensitive request that vanishes (or is masked) before `acknowledge`
 * does yield the spurious vector: IR7 of the master, or IR7 of the slave with master IR2 put in
 * service, exactly as the hardware does.
 */
export class Pic {
  private readonly m = new Chip(true);
  private readonly s = new Chip(false);
  private readonly intr: ((level: boolean) => void) | undefined;
  private irq2 = false;
  private level = false;

  /** The master's two ports; map at {@link PIC_MASTER_BASE}, length {@link PIC_PORT_LEN}. */
  readonly master: BusDevice;
  /** The slave's two ports; map at {@link PIC_SLAVE_BASE}, length {@link PIC_PORT_LEN}. */
  readonly slave: BusDevice;
  /** The ELCR pair; map at {@link PIC_ELCR_BASE}, length {@link PIC_PORT_LEN}. */
  readonly elcr: BusDevice;

  constructor(options: PicOptions = {}) {
    this.intr = options.intr;
    this.master = this.chipPorts(this.m);
    this.slave = this.chipPorts(this.s);
    this.elcr = {
      read: (offset, data) => {
        for (let i = 0; i < data.length; i++) {
          const o = offset + i;
          data[i] = o === 0 ? this.m.elcr : o === 1 ? this.s.elcr : 0xff;
        }
      },
      write: (offset, data) => {
        for (let i = 0; i < data.length; i++) {
          const o = offset + i;
          if (o === 0) this.m.setElcr(data[i]! & ELCR_MASTER_MASK);
          else if (o === 1) this.s.setElcr(data[i]! & ELCR_SLAVE_MASK);
        }
        this.update();
      },
    };
  }

  /** The current level of the INTR output. */
  get intrLevel(): boolean {
    return this.level;
  }

  /**
   * Drive ISA line `line` (0–15) to `level`. Line 2 is master IR2, which the slave's INT also
   * drives; the two are ORed (on a real PC the bus's IRQ 2 pin is rerouted to IRQ 9 instead).
   */
  setIrq(line: number, level: boolean): void {
    if (!Number.isInteger(line) || line < 0 || line > 15) throw new RangeError(`pic: no IRQ line ${String(line)}`);
    if (line >= 8) this.s.setLine(line - 8, level);
    else if (line === PIC_CASCADE_IRQ) this.irq2 = level;
    else this.m.setLine(line, level);
    this.update();
  }

  /** Whether INTR is asserted: the master has a request the CPU should take. */
  hasInterrupt(): boolean {
    return this.m.pending() >= 0;
  }

  /**
   * The INTA cycle: returns the vector the CPU receives and moves the request from IRR to ISR
   * (on the slave too for a cascaded request). With nothing pending it returns the master's
   * IR7 vector without touching ISR: a spurious interrupt.
   */
  acknowledge(): number {
    const p = this.m.intAck();
    let vector: number;
    if (p < 0) {
      vector = this.m.vectorBase | 7;
    } else if (this.m.cascadeMask & (1 << p)) {
      const sp = this.s.intAck();
      vector = this.s.vectorBase | (sp < 0 ? 7 : sp);
      // INT drops during INTA, so a request still pending on the slave gives master IR2 a new edge.
      this.m.setLine(PIC_CASCADE_IRQ, this.irq2);
    } else {
      vector = this.m.vectorBase | p;
    }
    this.update();
    return vector;
  }

  /** Snapshot the device state. */
  save(): PicState {
    return { master: this.m.save(), slave: this.s.save(), irq2: this.irq2 };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. */
  restore(state: PicState): void {
    this.m.restore(state.master, 'master', ELCR_MASTER_MASK);
    this.s.restore(state.slave, 'slave', ELCR_SLAVE_MASK);
    this.irq2 = Boolean(state.irq2);
    this.update();
  }

  private chipPorts(chip: Chip): BusDevice {
    return {
      read: (offset, data) => {
        for (let i = 0; i < data.length; i++) data[i] = chip.readPort((offset + i) & 1);
        this.update();
      },
      write: (offset, data) => {
        for (let i = 0; i < data.length; i++) chip.writePort((offset + i) & 1, data[i]!);
        this.update();
      },
    };
  }

  /** Propagate the slave's INT to master IR2 and report INTR changes. */
  private update(): void {
    this.m.setLine(PIC_CASCADE_IRQ, this.irq2 || this.s.pending() >= 0);
    const level = this.m.pending() >= 0;
    if (level !== this.level) {
      this.level = level;
      this.intr?.(level);
    }
  }
}
