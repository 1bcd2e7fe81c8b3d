/**
 * A 16550A UART register model, as on the PC's COM ports.
 *
 * Transmission is instantaneous: a byte written to THR goes straight to `output`, so THR and
 * the transmitter are always empty (LSR.THRE and LSR.TEMT stay set). The receive FIFO holds
 * 16 bytes with FIFOs enabled and 1 byte (the 16450 RBR) without. The interrupt line is
 * reported as a level through `irq` whenever it changes.
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';

/** I/O base ports of the four PC COM ports. */
export const COM1_BASE = 0x3f8;
export const COM2_BASE = 0x2f8;
export const COM3_BASE = 0x3e8;
export const COM4_BASE = 0x2e8;
/** ISA IRQ lines of COM1/COM3 and COM2/COM4. */
export const COM1_IRQ = 4;
export const COM2_IRQ = 3;
/** Number of ports a UART occupies. */
export const SERIAL_PORT_LEN = 8;
/** Depth of the receive FIFO with FIFOs enabled. */
export const SERIAL_FIFO_SIZE = 16;

// Register offsets.
const DATA = 0; // RBR (read) / THR (write); DLL with DLAB
const IER = 1; // DLM with DLAB
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

// IER bits.
const IER_RDA = 0x01;
const IER_THRE = 0x02;
const IER_RLS = 0x04;
const IER_MS = 0x08;

// IIR identification codes, highest priority first.
const IIR_NONE = 0x01;
const IIR_RLS = 0x06;
const IIR_RDA = 0x04;
const IIR_THRE = 0x02;
const IIR_MS = 0x00;
const IIR_FIFO_ENABLED = 0xc0;

// FCR bits.
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
// Bits FCR keeps (enable, DMA mode, trigger level); the clear bits are self-clearing.
const FCR_KEEP = 0xc9;

const LCR_DLAB = 0x80;

// MCR bits.
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

// LSR bits.
const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;

// MSR bits.
const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
/** The host side of the line: ready to send and carrier present. */
const MSR_CONNECTED = MSR_CTS | MSR_DSR | MSR_DCD;

/** Options for {@link Serial}. */
export interface SerialOptions {
  /** Called with each transmitted byte (not called in loopback mode). */
  output?: (byte: number) => void;
  /** Called with the new level of the interrupt line whenever it changes. */
  irq?: (level: boolean) => void;
}

/** Plain, JSON-able snapshot of a {@link Serial}. */
export interface SerialState {
  dll: number;
  dlm: number;
  ier: number;
  lcr: number;
  mcr: number;
  fcr: number;
  scr: number;
  /** MSR, including unread delta bits. */
  msr: number;
  /** LSR error bits not yet read (overrun). */
  lsrErrors: number;
  /** A THR-empty interrupt is pending (cleared by reading IIR or writing THR). */
  threPending: boolean;
  /** Received bytes not yet read, oldest first. */
  rx: number[];
}

/** A 16550A UART; map it on an {@link IoBus} at e.g. {@link COM1_BASE}, length {@link SERIAL_PORT_LEN}. */
export class Serial implements BusDevice {
  private readonly output: ((byte: number) => void) | undefined;
  private readonly irq: ((level: boolean) => void) | undefined;

  // Divisor 12 = 9600 baud, the value firmware commonly leaves.
  private dll = 0x0c;
  private dlm = 0;
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private fcr = 0;
  private scr = 0;
  private msr = MSR_CONNECTED;
  private lsrErrors = 0;
  private threPending = false;
  private level = false;

  // Receive FIFO: a ring buffer, so receiving allocates nothing.
  private readonly rxBuf = new Uint8Array(SERIAL_FIFO_SIZE);
  private rxHead = 0;
  private rxLen = 0;

  constructor(options: SerialOptions = {}) {
    this.output = options.output;
    this.irq = options.irq;
  }

  /** The current level of the interrupt line. */
  get irqLevel(): boolean {
    return this.level;
  }

  /** How many more bytes the receiver can take now (16 with FIFOs enabled, else 1). */
  get rxFree(): number {
    return this.rxCapacity() - this.rxLen;
  }

  /**
   * Deliver bytes from the outside world to the receiver. Returns how many were accepted:
   * at most {@link rxFree}; the caller keeps the rest and retries once the guest has read.
   */
  enqueueInput(bytes: ArrayLike<number>): number {
    const n = Math.min(bytes.length, this.rxFree);
    for (let i = 0; i < n; i++) this.rxPush(bytes[i]!);
    if (n > 0) this.updateIrq();
    return n;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = this.readReg(offset + i);
    this.updateIrq();
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.writeReg(offset + i, data[i]!);
    this.updateIrq();
  }

  /** Snapshot the device state. */
  save(): SerialState {
    const rx: number[] = [];
    for (let i = 0; i < this.rxLen; i++) rx.push(this.rxBuf[(this.rxHead + i) % SERIAL_FIFO_SIZE]!);
    return {
      dll: this.dll,
      dlm: this.dlm,
      ier: this.ier,
      lcr: this.lcr,
      mcr: this.mcr,
      fcr: this.fcr,
      scr: this.scr,
      msr: this.msr,
      lsrErrors: this.lsrErrors,
      threPending: this.threPending,
      rx,
    };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. */
  restore(state: SerialState): void {
    const regs = ['dll', 'dlm', 'ier', 'lcr', 'mcr', 'fcr', 'scr', 'msr', 'lsrErrors'] as const;
    for (const k of regs) {
      const v = state[k];
      if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`serial state: ${k} = ${String(v)} is not a byte`);
    }
    const capacity = state.fcr & FCR_ENABLE ? SERIAL_FIFO_SIZE : 1;
    if (!Array.isArray(state.rx) || state.rx.length > capacity) throw new RangeError(`serial state: rx must hold at most ${capacity} bytes`);
    for (const b of state.rx) if (!Number.isInteger(b) || b < 0 || b > 0xff) throw new RangeError(`serial state: rx byte ${String(b)}`);
    this.dll = state.dll;
    this.dlm = state.dlm;
    this.ier = state.ier & 0x0f;
    this.lcr = state.lcr;
    this.mcr = state.mcr & 0x1f;
    this.fcr = state.fcr & FCR_KEEP;
    this.scr = state.scr;
    this.msr = state.msr;
    this.lsrErrors = state.lsrErrors & LSR_OE;
    this.threPending = Boolean(state.threPending);
    this.rxHead = 0;
    this.rxLen = 0;
    for (const b of state.rx) this.rxPush(b);
    this.updateIrq();
  }

  private readReg(offset: number): number {
    switch (offset) {
      case DATA:
        if (this.lcr & LCR_DLAB) return this.dll;
        return this.rxPop();
      case IER:
        return this.lcr & LCR_DLAB ? this.dlm : this.ier;
      case IIR_FCR: {
        const id = this.interruptId();
        // Reading IIR while it reports THRE acknowledges that interrupt.
        if (id === IIR_THRE) this.threPending = false;
        return id | (this.fcr & FCR_ENABLE ? IIR_FIFO_ENABLED : 0);
      }
      case LCR:
        return this.lcr;
      case MCR:
        return this.mcr;
      case LSR: {
        const v = (this.rxLen > 0 ? LSR_DR : 0) | this.lsrErrors | LSR_THRE | LSR_TEMT;
        this.lsrErrors = 0;
        return v;
      }
      case MSR: {
        const v = this.msr;
        this.msr &= 0xf0;
        return v;
      }
      case SCR:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeReg(offset: number, v: number): void {
    switch (offset) {
      case DATA:
        if (this.lcr & LCR_DLAB) {
          this.dll = v;
          return;
        }
        if (this.mcr & MCR_LOOP) {
          if (this.rxFree > 0) this.rxPush(v);
          else this.lsrErrors |= LSR_OE;
        } else {
          this.output?.(v);
        }
        // The byte leaves THR at once, so THR is empty again and says so.
        this.threPending = true;
        return;
      case IER:
        if (this.lcr & LCR_DLAB) {
          this.dlm = v;
          return;
        }
        // Enabling the THRE interrupt while THR is empty raises it straight away.
        if (v & IER_THRE && !(this.ier & IER_THRE)) this.threPending = true;
        this.ier = v & 0x0f;
        return;
      case IIR_FCR: {
        const enable = v & FCR_ENABLE;
        // Switching FIFO mode on or off clears both FIFOs.
        if (enable !== (this.fcr & FCR_ENABLE) || v & FCR_CLEAR_RX) {
          this.rxHead = 0;
          this.rxLen = 0;
        }
        this.fcr = v & FCR_KEEP;
        return;
      }
      case LCR:
        this.lcr = v;
        return;
      case MCR:
        this.mcr = v & 0x1f;
        this.updateMsr();
        return;
      case SCR:
        this.scr = v;
        return;
      default:
        // LSR and MSR writes are factory-test only; ignore them.
        return;
    }
  }

  /** In loopback the modem inputs follow the MCR outputs; otherwise the line looks connected. */
  private updateMsr(): void {
    const m = this.mcr;
    const status =
      m & MCR_LOOP
        ? (m & MCR_RTS ? MSR_CTS : 0) | (m & MCR_DTR ? MSR_DSR : 0) | (m & MCR_OUT1 ? MSR_RI : 0) | (m & MCR_OUT2 ? MSR_DCD : 0)
        : MSR_CONNECTED;
    const old = this.msr & 0xf0;
    const changed = old ^ status;
    // DCTS, DDSR and DDCD flag any change; TERI only RI's trailing edge.
    let delta = (changed >> 4) & (MSR_DCTS | MSR_DDSR | MSR_DDCD);
    if (old & MSR_RI && !(status & MSR_RI)) delta |= MSR_TERI;
    this.msr = status | (this.msr & 0x0f) | delta;
  }

  private interruptId(): number {
    const ier = this.ier;
    if (ier & IER_RLS && this.lsrErrors) return IIR_RLS;
    if (ier & IER_RDA && this.rxLen > 0) return IIR_RDA;
    if (ier & IER_THRE && this.threPending) return IIR_THRE;
    if (ier & IER_MS && this.msr & 0x0f) return IIR_MS;
    return IIR_NONE;
  }

  private updateIrq(): void {
    const level = this.interruptId() !== IIR_NONE;
    if (level !== this.level) {
      this.level = level;
      this.irq?.(level);
    }
  }

  private rxCapacity(): number {
    return this.fcr & FCR_ENABLE ? SERIAL_FIFO_SIZE : 1;
  }

  private rxPush(b: number): void {
    this.rxBuf[(this.rxHead + this.rxLen) % SERIAL_FIFO_SIZE] = b;
    this.rxLen++;
  }

  private rxPop(): number {
    if (this.rxLen === 0) return 0;
    const b = this.rxBuf[this.rxHead]!;
    this.rxHead = (this.rxHead + 1) % SERIAL_FIFO_SIZE;
    this.rxLen--;
    return b;
  }
}
