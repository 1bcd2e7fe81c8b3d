import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { PCI_INTA, PCI_INTB, PCI_INTC, PCI_INTD } from './device.js';
import { PciHostBridge } from './host-bridge.js';
import { PIIX_PIRQRC, PIIX_RESET_CONTROL_PORT, PIIX_SLOT, Piix3, pirqForIntx, type Piix3State } from './piix.js';

function harness(): { piix: Piix3; pci: PciHostBridge; io: IoBus; irqs: [number, boolean][]; resets: string[] } {
  const irqs: [number, boolean][] = [];
  const resets: string[] = [];
  const piix = new Piix3({ isaIrq: (irq, level) => irqs.push([irq, level]), reset: (kind) => resets.push(kind) });
  const pci = new PciHostBridge();
  const io = new IoBus();
  pci.mapPorts(io);
  piix.mapPorts(io);
  pci.attach(piix, PIIX_SLOT);
  return { piix, pci, io, irqs, resets };
}

/** Route PIRQA..D (one byte each; 0x80 = disabled) with a dword write, as firmware does. */
function route(pci: PciHostBridge, a: number, b: number, c: number, d: number): void {
  pci.configWrite(PIIX_SLOT, 0, PIIX_PIRQRC, 4, (a | (b << 8) | (c << 16) | (d << 24)) >>> 0);
}

describe('Piix3 PCI-to-ISA bridge', () => {
  it('identifies as a multi-function PIIX3 at 00:01.0', () => {
    const { pci } = harness();
    expect(pci.configRead(1, 0, 0x00, 4)).toBe(0x70008086);
    expect(pci.configRead(1, 0, 0x08, 4) >>> 8).toBe(0x060100);
    expect(pci.configRead(1, 0, 0x0e, 1)).toBe(0x80);
  });

  it('has PIRQ route control registers at 60h..63h, reset 80h', () => {
    const { pci, piix } = harness();
    expect(pci.configRead(1, 0, 0x60, 4)).toBe(0x80808080);
    pci.configWrite(1, 0, 0x61, 1, 0xff); // bits 6:4 are reserved
    expect(pci.configRead(1, 0, 0x61, 1)).toBe(0x8f);
    route(pci, 10, 11, 10, 11);
    expect(pci.configRead(1, 0, 0x60, 4)).toBe(0x0b0a0b0a);
    expect(piix.routeIntx(1, PCI_INTA)).toBe(10);
    piix.reset();
    expect(pci.configRead(1, 0, 0x60, 4)).toBe(0x80808080);
    expect(piix.routeIntx(1, PCI_INTA)).toBeNull();
  });

  it('swizzles INTx onto PIRQ[(slot + pin - 2) & 3]', () => {
    // INTA# of slots 1..4 lands on PIRQA..D, then wraps.
    expect([1, 2, 3, 4, 5].map((s) => pirqForIntx(s, PCI_INTA))).toEqual([0, 1, 2, 3, 0]);
    expect([PCI_INTA, PCI_INTB, PCI_INTC, PCI_INTD].map((p) => pirqForIntx(1, p))).toEqual([0, 1, 2, 3]);
    expect([PCI_INTA, PCI_INTB, PCI_INTC, PCI_INTD].map((p) => pirqForIntx(2, p))).toEqual([1, 2, 3, 0]);
    expect(pirqForIntx(4, PCI_INTD)).toBe(2);
    expect(pirqForIntx(0, PCI_INTA)).toBe(3);
    expect(() => pirqForIntx(1, 0)).toThrow(/not 1 \(INTA#\)/);
    expect(() => pirqForIntx(32, 1)).toThrow(RangeError);
  });

  it('routes slots 1..4 through the PIRQ registers', () => {
    const { pci, piix } = harness();
    route(pci, 5, 9, 10, 11);
    expect([1, 2, 3, 4].map((s) => piix.routeIntx(s, PCI_INTA))).toEqual([5, 9, 10, 11]);
    expect([1, 2, 3, 4].map((s) => piix.routeIntx(s, PCI_INTB))).toEqual([9, 10, 11, 5]);
    // A disabled PIRQ and the reserved IRQ codes (0-2, 8, 13) route nowhere.
    route(pci, 0x80 | 5, 2, 8, 13);
    expect([1, 2, 3, 4].map((s) => piix.routeIntx(s, PCI_INTA))).toEqual([null, null, null, null]);
  });

  it('ORs the sources that share an ISA IRQ', () => {
    const { pci, piix, irqs } = harness();
    route(pci, 10, 11, 10, 11); // slots 1 and 3 share IRQ 10
    piix.setIntx(1, PCI_INTA, true);
    expect(irqs).toEqual([[10, true]]);
    piix.setIntx(3, PCI_INTA, true);
    piix.setIntx(1, PCI_INTA, true); // repeated: no change
    expect(irqs).toEqual([[10, true]]);
    piix.setIntx(1, PCI_INTA, false);
    expect(irqs).toEqual([[10, true]]); // slot 3 still holds it
    piix.setIntx(3, PCI_INTA, false);
    expect(irqs).toEqual([[10, true], [10, false]]);

    // Two functions of one slot on INTA# are separate sources.
    irqs.length = 0;
    piix.setIntx(2, PCI_INTA, true, 0);
    piix.setIntx(2, PCI_INTA, true, 1);
    piix.setIntx(2, PCI_INTA, false, 0);
    expect(irqs).toEqual([[11, true]]);
    piix.setIntx(2, PCI_INTA, false, 1);
    expect(irqs).toEqual([[11, true], [11, false]]);
  });

  it('moves an asserted level when its PIRQ is re-routed or disabled', () => {
    const { pci, piix, irqs } = harness();
    piix.setIntx(1, PCI_INTA, true);
    expect(irqs).toEqual([]); // PIRQA not routed yet
    pci.configWrite(1, 0, 0x60, 1, 10);
    expect(irqs).toEqual([[10, true]]);
    pci.configWrite(1, 0, 0x60, 1, 5);
    expect(irqs).toEqual([[10, true], [10, false], [5, true]]);
    pci.configWrite(1, 0, 0x60, 1, 0x85);
    expect(irqs.at(-1)).toEqual([5, false]);
  });

  it('resets the machine on a 0->1 write of RCPU at 0xCF9', () => {
    const { io, resets } = harness();
    const out = (v: number): void => void io.write(PIIX_RESET_CONTROL_PORT, new Uint8Array([v]));
    const inb = (): number => {
      const d = new Uint8Array(1);
      io.read(PIIX_RESET_CONTROL_PORT, d);
      return d[0]!;
    };
    out(0x02); // SRST alone: no reset yet
    expect(resets).toEqual([]);
    expect(inb()).toBe(0x02);
    out(0x06);
    expect(resets).toEqual(['hard']);
    out(0x04);
    expect(resets).toEqual(['hard', 'soft']);
    expect(inb()).toBe(0x00);
  });

  it('saves and restores through JSON', () => {
    const a = harness();
    route(a.pci, 10, 11, 10, 11);
    a.piix.setIntx(2, PCI_INTB, true, 3);
    a.io.write(PIIX_RESET_CONTROL_PORT, new Uint8Array([0x02]));
    const state = JSON.parse(JSON.stringify(a.piix.save())) as Piix3State;
    expect(state.intx).toEqual([{ slot: 2, fn: 3, pin: PCI_INTB }]);
    expect(state.resetControl).toBe(0x02);

    const b = harness();
    b.piix.restore(state);
    expect(b.irqs).toEqual([[10, true]]); // PIRQC
    expect(b.piix.save()).toEqual(state);
    expect(() => b.piix.restore({ ...state, resetControl: 0x04 })).toThrow(/resetControl/);
    expect(() => b.piix.restore({ ...state, intx: [{ slot: 1, fn: 0, pin: 5 }] })).toThrow(/bad INTx source/);
  });
});
