import { describe, it, expect } from 'vitest';
import { InstructionClock } from '../time/clock.js';
import { TimerQueue } from '../time/timers.js';
import { LAPIC_REGS_SIZE, LAPIC_VERSION, Lapic, LapicReg } from './lapic.js';
import { Pic } from './pic.js';

/** A local APIC on a hand-moved instruction clock (1 ns per "instruction"), recording what it drives. */
function harness(options: { pic?: Pic } = {}) {
  let now = 0;
  const clock = new InstructionClock(() => now);
  const timers = new TimerQueue(clock);
  const log = { kicks: 0, nmis: 0, eoiLevel: [] as number[] };
  const lapic = new Lapic({
    id: 0,
    clock,
    timers,
    ...(options.pic ? { pic: options.pic } : {}),
    kick: () => log.kicks++,
    nmi: () => log.nmis++,
    eoiLevel: (v) => log.eoiLevel.push(v),
  });
  const d = new Uint8Array(4);
  return {
    lapic,
    log,
    timers,
    read(reg: number): number {
      lapic.read(reg, d);
      return (d[0]! | (d[1]! << 8) | (d[2]! << 16) | (d[3]! << 24)) >>> 0;
    },
    write(reg: number, v: number): void {
      d[0] = v & 0xff; d[1] = (v >>> 8) & 0xff; d[2] = (v >>> 16) & 0xff; d[3] = v >>> 24;
      lapic.write(reg, d);
    },
    /** Moves guest time to `ns` and fires due timers. */
    runTo(ns: number): void {
      now = ns;
      timers.runDue();
    },
  };
}

/** Software-enable the APIC (SVR bit 8) with spurious vector 0xFF. */
function enable(h: ReturnType<typeof harness>): void {
  h.write(LapicReg.SVR, 0x1ff);
}

describe('local APIC registers', () => {
  it('has the SDM reset state: ID, version, DFR all ones, SVR 0xFF, every LVT masked', () => {
    const h = harness();
    expect(h.read(LapicReg.ID)).toBe(0);
    expect(h.read(LapicReg.VERSION)).toBe(LAPIC_VERSION);
    expect(h.read(LapicReg.DFR)).toBe(0xffffffff);
    expect(h.read(LapicReg.SVR)).toBe(0xff);
    for (const r of [LapicReg.LVT_TIMER, LapicReg.LVT_THERMAL, LapicReg.LVT_PERF, LapicReg.LVT_LINT0, LapicReg.LVT_LINT1, LapicReg.LVT_ERROR]) {
      expect(h.read(r) & 0x10000, `LVT at 0x${r.toString(16)}`).toBe(0x10000);
    }
  });

  it('keeps read-only registers and reserved bits as they are', () => {
    const h = harness();
    h.write(LapicReg.VERSION, 0x12345678);
    expect(h.read(LapicReg.VERSION)).toBe(LAPIC_VERSION);
    h.write(LapicReg.TPR, 0x1ff);
    expect(h.read(LapicReg.TPR)).toBe(0xff);
    h.write(LapicReg.LDR, 0x12345678);
    expect(h.read(LapicReg.LDR)).toBe(0x12000000);
  });

  it('forces the LVT mask while software-disabled, and lets it go once enabled', () => {
    const h = harness();
    h.write(LapicReg.LVT_LINT0, 0x700);
    expect(h.read(LapicReg.LVT_LINT0)).toBe(0x10700);
    enable(h);
    h.write(LapicReg.LVT_LINT0, 0x700);
    expect(h.read(LapicReg.LVT_LINT0)).toBe(0x700);
    // Disabling again masks every entry.
    h.write(LapicReg.SVR, 0xff);
    expect(h.read(LapicReg.LVT_LINT0)).toBe(0x10700);
  });
});

describe('local APIC interrupt acceptance', () => {
  it('delivers the highest vector first, holds lower classes while one is in service, and EOI releases them', () => {
    const h = harness();
    enable(h);
    h.lapic.acceptFixed(0x31, false);
    h.lapic.acceptFixed(0x52, false);
    expect(h.lapic.hasInterrupt()).toBe(true);
    expect(h.lapic.acknowledge()).toBe(0x52);
    // 0x31 is of a lower class than 0x52, which is in service.
    expect(h.lapic.hasInterrupt()).toBe(false);
    expect(h.read(LapicReg.PPR)).toBe(0x50);
    expect(h.read(LapicReg.ISR + 0x20) >>> 0).toBe(1 << (0x52 - 64));
    h.write(LapicReg.EOI, 0);
    expect(h.lapic.hasInterrupt()).toBe(true);
    expect(h.lapic.acknowledge()).toBe(0x31);
    h.write(LapicReg.EOI, 0);
    expect(h.lapic.hasInterrupt()).toBe(false);
  });

  it('masks classes at or below the task priority', () => {
    const h = harness();
    enable(h);
    h.write(LapicReg.TPR, 0x40);
    h.lapic.acceptFixed(0x45, false);
    expect(h.lapic.hasInterrupt()).toBe(false);
    h.lapic.acceptFixed(0x51, false);
    expect(h.lapic.acknowledge()).toBe(0x51);
    h.write(LapicReg.EOI, 0);
    h.write(LapicReg.TPR, 0);
    expect(h.lapic.acknowledge()).toBe(0x45);
  });

  it('reports the EOI of a level-triggered vector to the I/O APIC, and not of an edge one', () => {
    const h = harness();
    enable(h);
    h.lapic.acceptFixed(0x61, true);
    h.lapic.acceptFixed(0x40, false);
    expect(h.lapic.acknowledge()).toBe(0x61);
    h.write(LapicReg.EOI, 0);
    expect(h.lapic.acknowledge()).toBe(0x40);
    h.write(LapicReg.EOI, 0);
    expect(h.log.eoiLevel).toEqual([0x61]);
  });

  it('discards interrupts while disabled and flags illegal vectors in the ESR', () => {
    const h = harness();
    h.lapic.acceptFixed(0x80, false);
    expect(h.lapic.hasInterrupt()).toBe(false);
    enable(h);
    h.lapic.acceptFixed(0x05, false);
    expect(h.lapic.hasInterrupt()).toBe(false);
    expect(h.read(LapicReg.ESR) & 0x40).toBe(0x40);
  });

  it('takes the 8259A vector through LINT0 in ExtINT mode only, or always with the APIC off', () => {
    const pic = new Pic();
    const h = harness({ pic });
    // ICW1–ICW4: vectors 0x20–0x27 on the master.
    const out = (a0: number, v: number) => pic.master.write(a0, Uint8Array.of(v));
    out(0, 0x11); out(1, 0x20); out(1, 0x04); out(1, 0x01); out(1, 0x00);
    pic.setIrq(1, true);
    expect(pic.hasInterrupt()).toBe(true);
    expect(h.lapic.hasInterrupt()).toBe(false); // LINT0 masked after reset
    enable(h);
    h.write(LapicReg.LVT_LINT0, 0x700);
    expect(h.lapic.hasInterrupt()).toBe(true);
    expect(h.lapic.acknowledge()).toBe(0x21);
    out(0, 0x20); // non-specific EOI to the 8259A
    // With the APIC disabled in IA32_APIC_BASE the PIC goes straight to the CPU.
    h.write(LapicReg.LVT_LINT0, 0x10700);
    pic.setIrq(3, true);
    expect(h.lapic.hasInterrupt()).toBe(false);
    h.lapic.hwEnabled = false;
    expect(h.lapic.hasInterrupt()).toBe(true);
  });

  it('sends self-IPIs through the ICR (fixed and NMI) and ignores IPIs for other APICs', () => {
    const h = harness();
    enable(h);
    h.write(LapicReg.ICR_LOW, (1 << 18) | 0x66); // shorthand self
    expect(h.lapic.acknowledge()).toBe(0x66);
    h.write(LapicReg.EOI, 0);
    h.write(LapicReg.ICR_HIGH, 5 << 24);
    h.write(LapicReg.ICR_LOW, 0x67); // physical destination 5: not us
    expect(h.lapic.hasInterrupt()).toBe(false);
    h.write(LapicReg.ICR_HIGH, 0);
    h.write(LapicReg.ICR_LOW, 0x400 | (1 << 14)); // NMI to APIC 0
    expect(h.log.nmis).toBe(1);
    expect(h.read(LapicReg.ICR_LOW) & (1 << 12)).toBe(0); // never busy
  });

  it('matches physical, flat logical and cluster logical destinations', () => {
    const h = harness();
    h.write(LapicReg.LDR, 0x04000000);
    expect(h.lapic.matchesDestination(false, 0)).toBe(true);
    expect(h.lapic.matchesDestination(false, 0xff)).toBe(true);
    expect(h.lapic.matchesDestination(false, 1)).toBe(false);
    expect(h.lapic.matchesDestination(true, 0x05)).toBe(true);
    expect(h.lapic.matchesDestination(true, 0x02)).toBe(false);
    h.write(LapicReg.DFR, 0x0fffffff); // cluster model: LDR 0x04 = cluster 0, member bit 2
    expect(h.lapic.matchesDestination(true, 0x04)).toBe(true);
    expect(h.lapic.matchesDestination(true, 0x14)).toBe(false);
    expect(h.lapic.matchesDestination(true, 0xf4)).toBe(true);
  });
});

describe('local APIC timer', () => {
  it('counts down at the bus clock divided by the divide configuration, and fires once in one-shot mode', () => {
    const h = harness();
    enable(h);
    h.write(LapicReg.TIMER_DIVIDE, 0x3); // divide by 16
    h.write(LapicReg.LVT_TIMER, 0x30);
    h.write(LapicReg.TIMER_INITIAL, 1000); // 16 µs at 1 GHz / 16
    h.runTo(8000);
    expect(h.read(LapicReg.TIMER_CURRENT)).toBe(500);
    expect(h.lapic.hasInterrupt()).toBe(false);
    h.runTo(16_000);
    expect(h.read(LapicReg.TIMER_CURRENT)).toBe(0);
    expect(h.lapic.acknowledge()).toBe(0x30);
    h.write(LapicReg.EOI, 0);
    h.runTo(100_000);
    expect(h.lapic.hasInterrupt()).toBe(false);
    expect(h.timers.nextDeadlineNs()).toBe(-1);
  });

  it('reloads in periodic mode, keeping the phase', () => {
    const h = harness();
    enable(h);
    h.write(LapicReg.TIMER_DIVIDE, 0xb); // divide by 1
    h.write(LapicReg.LVT_TIMER, (1 << 17) | 0x31);
    h.write(LapicReg.TIMER_INITIAL, 10_000);
    let fired = 0;
    for (let t = 1000; t <= 100_000; t += 1000) {
      h.runTo(t);
      if (h.lapic.hasInterrupt()) {
        expect(h.lapic.acknowledge()).toBe(0x31);
        h.write(LapicReg.EOI, 0);
        fired++;
      }
    }
    expect(fired).toBe(10);
    expect(h.timers.nextDeadlineNs()).toBe(110_000);
    expect(h.read(LapicReg.TIMER_CURRENT)).toBe(10_000);
  });

  it('sets IRR but does not deliver while the timer LVT is masked; writing 0 stops it', () => {
    const h = harness();
    enable(h);
    h.write(LapicReg.TIMER_DIVIDE, 0xb);
    h.write(LapicReg.LVT_TIMER, 0x10032);
    h.write(LapicReg.TIMER_INITIAL, 100);
    h.runTo(200);
    expect(h.lapic.hasInterrupt()).toBe(false);
    h.write(LapicReg.LVT_TIMER, (1 << 17) | 0x32);
    h.write(LapicReg.TIMER_INITIAL, 100);
    h.write(LapicReg.TIMER_INITIAL, 0);
    h.runTo(1000);
    expect(h.lapic.hasInterrupt()).toBe(false);
    expect(h.timers.nextDeadlineNs()).toBe(-1);
  });

  it('round-trips through the KVM_GET_LAPIC image, the timer resuming with its remaining count', () => {
    const a = harness();
    enable(a);
    a.write(LapicReg.TPR, 0x20);
    a.write(LapicReg.TIMER_DIVIDE, 0xb);
    a.write(LapicReg.LVT_TIMER, 0x33);
    a.write(LapicReg.TIMER_INITIAL, 5000);
    a.lapic.acceptFixed(0x90, true);
    a.runTo(2000);
    const image = new Uint8Array(LAPIC_REGS_SIZE);
    a.lapic.getRegisters(image);

    const b = harness();
    b.runTo(10_000);
    b.lapic.setRegisters(image);
    expect(b.read(LapicReg.TPR)).toBe(0x20);
    expect(b.read(LapicReg.TIMER_CURRENT)).toBe(3000);
    expect(b.lapic.acknowledge()).toBe(0x90);
    b.write(LapicReg.EOI, 0);
    expect(b.log.eoiLevel).toEqual([0x90]);
    b.runTo(12_999);
    expect(b.lapic.hasInterrupt()).toBe(false);
    b.runTo(13_000);
    expect(b.lapic.acknowledge()).toBe(0x33);
    expect(() => b.lapic.setRegisters(new Uint8Array(16))).toThrow(/1024/);
  });
});
