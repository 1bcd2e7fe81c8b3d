import { describe, it, expect } from 'vitest';
import { TimerQueue, type GuestClock } from '@kvmts/kvm-core';
import { IoBus } from '@kvmts/kvm-core';
import {
  ACPI_SLP_TYP_S5,
  AcpiPm,
  PM1_PWRBTN_EN,
  PM1_GBL_EN,
  PM1_RTC_EN,
  PM1_PWRBTN_STS,
  PM1_SLP_EN,
  PM1_TMR_EN,
  PM1_TMR_STS,
  PM1_WAK_STS,
  PM_BASE_DEFAULT,
  PM_TIMER_HZ,
  pmLayout,
  pmTimerTicks,
  type AcpiPmState,
} from './pm.js';

/** A guest clock the test moves by hand. */
class FakeClock implements GuestClock {
  readonly mode = 'instructions' as const;
  ns = 0;
  nowNs(): number {
    return this.ns;
  }
  pause(): void {}
  resume(): void {}
  setNs(ns: number): void {
    this.ns = ns;
  }
}

const SEC = 1_000_000_000;
/** The first nanosecond at which the timer has counted `ticks` (exact, in BigInt). */
const nsAt = (ticks: number): number => Number((BigInt(ticks) * 1_000_000_000n + BigInt(PM_TIMER_HZ) - 1n) / BigInt(PM_TIMER_HZ));
// The timer's bit 23 flips every 2^23 ticks: 8388608 / 3579545 Hz = 2.3435... s.
const TOGGLE_NS = nsAt(2 ** 23);

function harness(base = PM_BASE_DEFAULT) {
  const clock = new FakeClock();
  const timers = new TimerQueue(clock);
  const sci: boolean[] = [];
  const sleeps: number[] = [];
  let resets = 0;
  const pm = new AcpiPm({ clock, timers, base, sci: (l) => sci.push(l), onSleep: (t) => sleeps.push(t), reset: () => resets++ });
  const io = new IoBus();
  io.insert(pm, pm.layout.base, pm.layout.length);
  const L = pm.layout;
  const inp = (port: number, size: 1 | 2 | 4): number => {
    const d = new Uint8Array(size);
    io.read(port, d);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + d[i]!;
    return v;
  };
  const out = (port: number, size: 1 | 2 | 4, v: number): void => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
    io.write(port, d);
  };
  return { pm, clock, timers, sci, sleeps, resets: () => resets, L, inp, out };
}

describe('AcpiPm layout', () => {
  it('places every register at a fixed offset from the base', () => {
    const L = pmLayout();
    expect(L.base).toBe(0x600);
    expect(L.length).toBe(0x20);
    expect(L.pm1aEvt).toEqual({ port: 0x600, width: 4 });
    expect(L.pm1Sts).toEqual({ port: 0x600, width: 2 });
    expect(L.pm1En).toEqual({ port: 0x602, width: 2 });
    expect(L.pm1aCnt).toEqual({ port: 0x604, width: 2 });
    expect(L.pmTmr).toEqual({ port: 0x608, width: 4 });
    expect(L.pmTmrBits).toBe(24);
    expect(L.gpe0).toEqual({ port: 0x60c, width: 4 });
    expect(L.gpe0Sts).toEqual({ port: 0x60c, width: 2 });
    expect(L.gpe0En).toEqual({ port: 0x60e, width: 2 });
    expect(L.resetReg).toEqual({ port: 0x610, width: 1, value: 0x01 });
    expect(L.slpTypS5).toBe(5);
    expect(pmLayout(0xb000).pmTmr.port).toBe(0xb008);
    expect(() => pmLayout(0xfff0)).toThrow(RangeError);
  });
});

describe('AcpiPm timer', () => {
  it('counts 3579545 ticks per simulated second', () => {
    const { clock, inp, L } = harness();
    expect(inp(L.pmTmr.port, 4)).toBe(0);
    clock.ns = SEC / 4;
    const t0 = inp(L.pmTmr.port, 4);
    expect(t0).toBe(894886); // floor(3579545 / 4)
    clock.ns += SEC;
    expect(inp(L.pmTmr.port, 4) - t0).toBe(PM_TIMER_HZ);
    clock.ns = SEC;
    expect(inp(L.pmTmr.port, 4)).toBe(3579545);
    clock.ns = 1; // 1 ns is under one tick (279.4 ns)
    expect(inp(L.pmTmr.port, 4)).toBe(0);
    clock.ns = 280;
    expect(inp(L.pmTmr.port, 4)).toBe(1);
  });

  it('is 24 bits wide and wraps', () => {
    const { clock, inp, L } = harness();
    clock.ns = 5 * SEC;
    expect(inp(L.pmTmr.port, 4)).toBe((5 * PM_TIMER_HZ) % 2 ** 24); // 1120509
    expect(inp(L.pmTmr.port, 4)).toBe(1120509);
    // Bytes of the same value; the top byte is always 0.
    expect(inp(L.pmTmr.port, 1)).toBe(1120509 & 0xff);
    expect(inp(L.pmTmr.port + 2, 2)).toBe(1120509 >>> 16);
    // After about 104 days of guest time the arithmetic is still exact.
    const ns = 2 ** 53 - 1;
    clock.ns = ns;
    const ticks = (BigInt(ns) * BigInt(PM_TIMER_HZ)) / 1_000_000_000n;
    expect(pmTimerTicks(ns)).toBe(Number(ticks));
    expect(inp(L.pmTmr.port, 4)).toBe(Number(ticks % 2n ** 24n));
  });

  it('sets TMR_STS when bit 23 changes, and raises an SCI on time when TMR_EN', () => {
    const { clock, timers, sci, inp, out, L } = harness();
    clock.ns = TOGGLE_NS - 1;
    expect(inp(L.pm1Sts.port, 2) & PM1_TMR_STS).toBe(0);
    expect(inp(L.pmTmr.port, 4)).toBe(2 ** 23 - 1);
    clock.ns = TOGGLE_NS;
    expect(inp(L.pmTmr.port, 4)).toBe(2 ** 23);
    expect(inp(L.pm1Sts.port, 2) & PM1_TMR_STS).toBe(PM1_TMR_STS); // polled, no SCI: TMR_EN is clear
    expect(sci).toEqual([]);
    out(L.pm1Sts.port, 2, PM1_TMR_STS); // W1C
    expect(inp(L.pm1Sts.port, 2)).toBe(0);

    out(L.pm1En.port, 2, PM1_TMR_EN);
    expect(inp(L.pm1En.port, 2)).toBe(PM1_TMR_EN);
    // The next change is the 1 -> 0 wrap of bit 23 at 2^24 ticks.
    const wrapNs = nsAt(2 ** 24);
    expect(timers.nextDeadlineNs()).toBe(wrapNs);
    clock.ns = wrapNs - 1;
    expect(timers.runDue()).toBe(0);
    clock.ns = wrapNs;
    expect(timers.runDue()).toBe(1);
    expect(sci).toEqual([true]);
    expect(inp(L.pmTmr.port, 4)).toBe(0);
    out(L.pm1Sts.port, 2, PM1_TMR_STS);
    expect(sci).toEqual([true, false]);
    // Re-armed for the following change.
    expect(timers.nextDeadlineNs()).toBe(nsAt(3 * 2 ** 23));
    out(L.pm1En.port, 2, 0);
    expect(timers.nextDeadlineNs()).toBe(-1);
  });

  it('counts TMR_STS transitions over a simulated 10 s', () => {
    const { clock, timers, sci, inp, out, L } = harness();
    out(L.pm1En.port, 2, PM1_TMR_EN);
    let raised = 0;
    for (let ms = 1; ms <= 10_000; ms++) {
      clock.ns = ms * 1_000_000;
      timers.runDue();
      if (sci.at(-1) === true) {
        raised++;
        out(L.pm1Sts.port, 2, PM1_TMR_STS);
      }
    }
    // 10 s * 3579545 / 2^23 = 4.27 changes.
    expect(raised).toBe(4);
    expect(inp(L.pm1Sts.port, 2)).toBe(0);
  });
});

describe('AcpiPm events and control', () => {
  it('raises the SCI for an enabled power button and clears it by W1C', () => {
    const { pm, sci, inp, out, L } = harness();
    pm.pressPowerButton();
    expect(inp(L.pm1Sts.port, 2)).toBe(PM1_PWRBTN_STS);
    expect(sci).toEqual([]);
    out(L.pm1En.port, 2, 0xffff);
    // Only the enables this block defines stick (Linux sets GBL_EN and RTC_EN and reads them back).
    expect(inp(L.pm1En.port, 2)).toBe(PM1_TMR_EN | PM1_PWRBTN_EN | PM1_GBL_EN | PM1_RTC_EN);
    expect(sci).toEqual([true]);
    expect(pm.sciLevel).toBe(true);
    out(L.pm1Sts.port, 2, 0x00ff); // writing 0 to PWRBTN_STS leaves it
    expect(inp(L.pm1Sts.port, 2)).toBe(PM1_PWRBTN_STS);
    out(L.pm1Sts.port + 1, 1, PM1_PWRBTN_STS >> 8);
    expect(inp(L.pm1Sts.port, 2)).toBe(0);
    expect(sci).toEqual([true, false]);
  });

  it('reads PM1_STS and PM1_EN as one dword of PM1a_EVT_BLK', () => {
    const { pm, inp, out, L } = harness();
    pm.pressPowerButton();
    out(L.pm1En.port, 2, PM1_PWRBTN_EN);
    expect(inp(L.pm1aEvt.port, 4)).toBe(((PM1_PWRBTN_EN << 16) | PM1_PWRBTN_STS) >>> 0);
  });

  it('enters S5 when SLP_EN is written with SLP_TYP = 5', () => {
    const { sleeps, inp, out, L } = harness();
    expect(inp(L.pm1aCnt.port, 2)).toBe(0x0001); // SCI_EN: always in ACPI mode
    out(L.pm1aCnt.port, 2, ACPI_SLP_TYP_S5 << 10);
    expect(sleeps).toEqual([]);
    expect(inp(L.pm1aCnt.port, 2)).toBe(0x1401);
    out(L.pm1aCnt.port, 2, (ACPI_SLP_TYP_S5 << 10) | PM1_SLP_EN);
    expect(sleeps).toEqual([5]);
    expect(inp(L.pm1aCnt.port, 2)).toBe(0x1401); // SLP_EN reads 0
    // A byte write of the high half (SLP_TYP in bits 4:2, SLP_EN bit 5), as an AML Field would do.
    out(L.pm1aCnt.port + 1, 1, (ACPI_SLP_TYP_S5 << 2) | 0x20);
    expect(sleeps).toEqual([5, 5]);
    expect(inp(L.pm1Sts.port, 2) & PM1_WAK_STS).toBe(0);
  });

  it('wakes at once from sleep types it does not implement', () => {
    const { sleeps, inp, out, L } = harness();
    out(L.pm1aCnt.port, 2, (1 << 10) | PM1_SLP_EN);
    expect(sleeps).toEqual([1]);
    expect(inp(L.pm1Sts.port, 2)).toBe(PM1_WAK_STS);
    out(L.pm1Sts.port, 2, PM1_WAK_STS);
    expect(inp(L.pm1Sts.port, 2)).toBe(0);
  });

  it('has 16 GPEs with W1C status', () => {
    const { pm, sci, inp, out, L } = harness();
    pm.raiseGpe(3);
    expect(inp(L.gpe0Sts.port, 2)).toBe(0x0008);
    expect(sci).toEqual([]);
    out(L.gpe0En.port, 2, 0x0008);
    expect(sci).toEqual([true]);
    expect(inp(L.gpe0.port, 4)).toBe(0x00080008);
    out(L.gpe0Sts.port, 2, 0x0001); // other bit: no effect
    expect(inp(L.gpe0Sts.port, 2)).toBe(0x0008);
    out(L.gpe0Sts.port, 2, 0x0008);
    expect(inp(L.gpe0Sts.port, 2)).toBe(0);
    expect(sci).toEqual([true, false]);
    expect(() => pm.raiseGpe(16)).toThrow(RangeError);
  });

  it('resets the machine when RESET_VALUE is written to RESET_REG', () => {
    const { resets, out, inp, L } = harness();
    out(L.resetReg.port, 1, 0x02);
    expect(resets()).toBe(0);
    out(L.resetReg.port, 1, L.resetReg.value);
    expect(resets()).toBe(1);
    expect(inp(L.pmTmr.port, 4)).toBe(0); // the PM timer is read-only
    out(L.pmTmr.port, 4, 0x123456);
    expect(inp(L.pmTmr.port, 4)).toBe(0);
    expect(inp(L.base + 0x06, 2)).toBe(0xffff); // unused
  });

  it('saves and restores through JSON', () => {
    const a = harness();
    a.pm.pressPowerButton();
    a.out(a.L.pm1En.port, 2, PM1_PWRBTN_EN | PM1_TMR_EN);
    a.out(a.L.pm1aCnt.port, 2, 3 << 10);
    a.pm.raiseGpe(15);
    a.out(a.L.gpe0En.port, 2, 0x8001);
    a.clock.ns = 3 * SEC;
    const state = JSON.parse(JSON.stringify(a.pm.save())) as AcpiPmState;
    expect(state).toEqual({ pm1Sts: PM1_PWRBTN_STS | PM1_TMR_STS, pm1En: PM1_PWRBTN_EN | PM1_TMR_EN, pm1Cnt: 3 << 10, gpe0Sts: 0x8000, gpe0En: 0x8001, tmrEpoch: 1 });

    const b = harness();
    b.clock.ns = 3 * SEC;
    b.pm.restore(state);
    expect(b.sci).toEqual([true]);
    expect(b.pm.save()).toEqual(state);
    expect(b.inp(b.L.pm1aCnt.port, 2)).toBe((3 << 10) | 1);
    expect(b.timers.nextDeadlineNs()).toBe(nsAt(2 ** 24));
    expect(() => b.pm.restore({ ...state, pm1En: 0x10000 })).toThrow(/pm1En = 65536/);
    expect(() => b.pm.restore({ ...state, tmrEpoch: -1 })).toThrow(/tmrEpoch/);

    b.pm.reset();
    expect(b.sci).toEqual([true, false]);
    expect(b.inp(b.L.pm1aEvt.port, 4)).toBe(0);
    expect(b.timers.nextDeadlineNs()).toBe(-1);
  });
});
