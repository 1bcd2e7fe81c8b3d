import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { COM1_BASE, SERIAL_FIFO_SIZE, SERIAL_PORT_LEN, Serial, type SerialState } from './serial.js';

// Register offsets, named as in the 16550 data sheet.
const THR = 0, RBR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

function harness(): { uart: Serial; out: number[]; irqs: boolean[]; rd: (off: number) => number; wr: (off: number, v: number) => void } {
  const out: number[] = [];
  const irqs: boolean[] = [];
  const uart = new Serial({ output: (b) => out.push(b), irq: (l) => irqs.push(l) });
  const one = new Uint8Array(1);
  return {
    uart,
    out,
    irqs,
    rd: (off) => {
      uart.read(off, one);
      return one[0]!;
    },
    wr: (off, v) => {
      one[0] = v;
      uart.write(off, one);
    },
  };
}

describe('Serial (16550A)', () => {
  it('has power-on register values', () => {
    const { rd } = harness();
    expect(rd(IER)).toBe(0);
    expect(rd(IIR)).toBe(0x01);
    expect(rd(LCR)).toBe(0);
    expect(rd(MCR)).toBe(0);
    expect(rd(LSR)).toBe(0x60); // THRE | TEMT
    expect(rd(MSR)).toBe(0xb0); // CTS | DSR | DCD
    expect(rd(SCR)).toBe(0);
  });

  it('sends THR writes to the output sink', () => {
    const { out, wr, rd, irqs } = harness();
    for (const c of 'Hi\n') wr(THR, c.charCodeAt(0));
    expect(String.fromCharCode(...out)).toBe('Hi\n');
    expect(rd(LSR) & 0x60).toBe(0x60);
    expect(irqs).toEqual([]);
  });

  it('routes offsets 0 and 1 to the divisor latch while DLAB is set', () => {
    const { out, wr, rd } = harness();
    wr(IER, 0x05);
    wr(LCR, 0x83);
    wr(DLL, 0x01);
    wr(DLM, 0x02);
    expect(rd(DLL)).toBe(0x01);
    expect(rd(DLM)).toBe(0x02);
    expect(rd(LCR)).toBe(0x83);
    expect(out).toEqual([]);
    wr(LCR, 0x03);
    expect(rd(IER)).toBe(0x05);
    expect(rd(LCR)).toBe(0x03);
    const s = new Serial().save();
    expect([s.dll, s.dlm]).toEqual([0x0c, 0]);
  });

  it('keeps only the four defined IER bits', () => {
    const { wr, rd } = harness();
    wr(IER, 0xff);
    expect(rd(IER)).toBe(0x0f);
  });

  it('raises THRE when enabled, clears it on IIR read, and re-raises after a THR write', () => {
    const { wr, rd, irqs, uart } = harness();
    wr(IER, 0x02);
    expect(irqs).toEqual([true]);
    expect(rd(IIR)).toBe(0x02);
    expect(irqs).toEqual([true, false]);
    expect(rd(IIR)).toBe(0x01);
    wr(THR, 0x41);
    expect(uart.irqLevel).toBe(true);
    // a THR write acknowledges and re-arms; only the IIR read lowers the line
    wr(THR, 0x42);
    expect(irqs).toEqual([true, false, true]);
    wr(IER, 0);
    expect(irqs).toEqual([true, false, true, false]);
    // re-enabling while THR is empty raises it again
    wr(IER, 0x02);
    expect(uart.irqLevel).toBe(true);
  });

  it('receives bytes: 1 without FIFOs, 16 with', () => {
    const { uart, wr, rd } = harness();
    expect(uart.enqueueInput([1, 2, 3])).toBe(1);
    expect(rd(LSR) & 0x01).toBe(1);
    expect(rd(RBR)).toBe(1);
    expect(rd(LSR) & 0x01).toBe(0);
    expect(rd(RBR)).toBe(0);
    wr(FCR, 0x07);
    expect(rd(IIR) & 0xc0).toBe(0xc0);
    expect(uart.rxFree).toBe(SERIAL_FIFO_SIZE);
    const bytes = Array.from({ length: 20 }, (_, i) => 0x30 + i);
    expect(uart.enqueueInput(bytes)).toBe(16);
    expect(uart.enqueueInput(bytes)).toBe(0);
    const got: number[] = [];
    while (rd(LSR) & 0x01) got.push(rd(RBR));
    expect(got).toEqual(bytes.slice(0, 16));
    // the ring wraps around
    expect(uart.enqueueInput(bytes.slice(16))).toBe(4);
    expect([rd(RBR), rd(RBR), rd(RBR), rd(RBR)]).toEqual(bytes.slice(16));
  });

  it('clears the RX FIFO on FCR bit 1 and when FIFO mode changes', () => {
    const { uart, wr, rd } = harness();
    wr(FCR, 0x01);
    uart.enqueueInput([1, 2, 3]);
    wr(FCR, 0x03);
    expect(rd(LSR) & 0x01).toBe(0);
    uart.enqueueInput([4]);
    wr(FCR, 0x00);
    expect(rd(LSR) & 0x01).toBe(0);
    expect(rd(IIR) & 0xc0).toBe(0);
  });

  it('prioritises received data over THRE in IIR', () => {
    const { uart, wr, rd, irqs } = harness();
    wr(FCR, 0x01);
    wr(IER, 0x03);
    expect(rd(IIR)).toBe(0xc2);
    expect(irqs).toEqual([true, false]);
    uart.enqueueInput([0x61, 0x62]);
    expect(irqs).toEqual([true, false, true]);
    wr(THR, 0x20);
    expect(rd(IIR)).toBe(0xc4);
    expect(rd(RBR)).toBe(0x61);
    expect(rd(IIR)).toBe(0xc4);
    expect(rd(RBR)).toBe(0x62);
    // data gone: THRE (armed by the THR write) shows through, and reading it clears it
    expect(rd(IIR)).toBe(0xc2);
    expect(rd(IIR)).toBe(0xc1);
    expect(irqs.at(-1)).toBe(false);
  });

  it('does not raise RX interrupts while they are disabled', () => {
    const { uart, irqs } = harness();
    uart.enqueueInput([1]);
    expect(irqs).toEqual([]);
  });

  it('loops THR back to RBR and modem outputs to inputs in loopback mode', () => {
    const { uart, out, wr, rd } = harness();
    wr(FCR, 0x01);
    wr(MCR, 0x10 | 0x0a); // LOOP | RTS | OUT2, as Linux probes it
    expect(rd(MSR) & 0xf0).toBe(0x90); // CTS | DCD
    wr(THR, 0x55);
    expect(out).toEqual([]);
    expect(rd(LSR) & 0x01).toBe(1);
    expect(rd(RBR)).toBe(0x55);
    wr(MCR, 0x10 | 0x05); // LOOP | DTR | OUT1
    expect(rd(MSR)).toBe(0x60 | 0x0b); // DSR | RI, with DCTS, DDSR, DDCD
    expect(rd(MSR)).toBe(0x60); // deltas clear on read
    wr(MCR, 0x10 | 0x01); // RI falls: trailing-edge indicator
    expect(rd(MSR)).toBe(0x20 | 0x04);
    wr(MCR, 0x0b);
    expect(rd(MSR) & 0xf0).toBe(0xb0);
    wr(THR, 0x41);
    expect(out).toEqual([0x41]);
    expect(uart.save().rx).toEqual([]);
  });

  it('signals overrun in loopback and raises a line-status interrupt', () => {
    const { wr, rd, uart } = harness();
    wr(MCR, 0x10);
    wr(IER, 0x04);
    wr(THR, 1);
    wr(THR, 2); // the 1-byte holding register is full
    expect(uart.irqLevel).toBe(true);
    expect(rd(IIR)).toBe(0x06);
    expect(rd(LSR)).toBe(0x63);
    expect(rd(LSR)).toBe(0x61);
    expect(uart.irqLevel).toBe(false);
    expect(rd(RBR)).toBe(1);
  });

  it('raises a modem-status interrupt on MSR deltas', () => {
    const { wr, rd, uart } = harness();
    wr(IER, 0x08);
    expect(uart.irqLevel).toBe(false);
    wr(MCR, 0x10); // entering loopback drops CTS/DSR/DCD
    expect(uart.irqLevel).toBe(true);
    expect(rd(IIR)).toBe(0x00);
    expect(rd(MSR)).toBe(0x0b);
    expect(uart.irqLevel).toBe(false);
  });

  it('has a scratch register', () => {
    const { wr, rd } = harness();
    wr(SCR, 0x5a);
    expect(rd(SCR)).toBe(0x5a);
  });

  it('handles multi-byte accesses as consecutive registers', () => {
    const { uart, wr } = harness();
    wr(LCR, 0x03);
    wr(MCR, 0x0b);
    const buf = new Uint8Array(2);
    uart.read(LCR, buf);
    expect(Array.from(buf)).toEqual([0x03, 0x0b]);
    uart.read(7, buf);
    expect(Array.from(buf)).toEqual([0, 0xff]);
  });

  it('works through an IoBus at COM1', () => {
    const out: number[] = [];
    const bus = new IoBus();
    bus.insert(new Serial({ output: (b) => out.push(b) }), COM1_BASE, SERIAL_PORT_LEN);
    const lsr = new Uint8Array(1);
    expect(bus.read(0x3fd, lsr)).toBe(true);
    expect(lsr[0]! & 0x20).toBe(0x20);
    expect(bus.write(0x3f8, new Uint8Array([0x4b]))).toBe(true);
    expect(out).toEqual([0x4b]);
  });

  it('saves and restores through JSON', () => {
    const a = harness();
    a.wr(LCR, 0x80);
    a.wr(DLL, 0x03);
    a.wr(LCR, 0x1b);
    a.wr(FCR, 0xc1);
    a.wr(IER, 0x03);
    a.wr(MCR, 0x0b);
    a.wr(SCR, 0x77);
    a.uart.enqueueInput([7, 8, 9]);
    a.rd(RBR);
    const state = JSON.parse(JSON.stringify(a.uart.save())) as SerialState;
    expect(state).toEqual({
      dll: 3, dlm: 0, ier: 3, lcr: 0x1b, mcr: 0x0b, fcr: 0xc1, scr: 0x77, msr: 0xb0, lsrErrors: 0, threPending: true, rx: [8, 9],
    });

    const b = harness();
    b.uart.restore(state);
    expect(b.irqs).toEqual([true]);
    expect(b.uart.save()).toEqual(state);
    expect(b.rd(IIR)).toBe(0xc4);
    expect(b.rd(RBR)).toBe(8);
    expect(b.rd(RBR)).toBe(9);
    expect(b.rd(IIR)).toBe(0xc2);
    expect(b.rd(SCR)).toBe(0x77);
  });

  it('rejects malformed state', () => {
    const good = new Serial().save();
    const uart = new Serial();
    expect(() => uart.restore({ ...good, lcr: 256 })).toThrow(/lcr = 256 is not a byte/);
    expect(() => uart.restore({ ...good, rx: [1, 2] })).toThrow(/at most 1 bytes/);
    expect(() => uart.restore({ ...good, fcr: 1, rx: [1, 300] })).toThrow(/rx byte 300/);
    expect(() => uart.restore({ ...good, fcr: 1, rx: new Array<number>(17).fill(0) })).toThrow(RangeError);
  });
});
