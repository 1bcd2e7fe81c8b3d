import { describe, it, expect } from 'vitest';
import { InstructionClock, TimerQueue } from '@kvmts/kvm-core';
import { IoBus } from '@kvmts/kvm-core';
import { RTC_BASE, RTC_PORT_LEN, Rtc, type RtcState } from './rtc.js';

// Register numbers, as in the MC146818A data sheet.
const SEC = 0x00, SEC_ALARM = 0x01, MIN = 0x02, MIN_ALARM = 0x03, HOUR = 0x04, HOUR_ALARM = 0x05;
const DOW = 0x06, DOM = 0x07, MONTH = 0x08, YEAR = 0x09, A = 0x0a, B = 0x0b, C = 0x0c, D = 0x0d, CENTURY = 0x32;
const S = 1_000_000_000;
const MIB = 1024 * 1024;

/** Thursday 29 February 2024, 13:45:30.000 UTC. */
const LEAP_DAY = Date.UTC(2024, 1, 29, 13, 45, 30);

function harness(start: number = LEAP_DAY) {
  let ns = 0;
  const clock = new InstructionClock(() => ns);
  const timers = new TimerQueue(clock);
  const irqs: { level: boolean; ns: number }[] = [];
  const rtc = new Rtc({ timers, startTime: start, irq8: (level) => irqs.push({ level, ns: clock.nowNs() }) });
  const bus = new IoBus();
  bus.insert(rtc, RTC_BASE, RTC_PORT_LEN);
  const one = new Uint8Array(1);
  const h = {
    rtc,
    timers,
    irqs,
    now: (): number => ns,
    /** Move guest time (forward only) without running timers. */
    setNs(to: number): void {
      if (to < ns) throw new Error('time runs forward');
      ns = to;
    },
    /** Fire timers at their deadlines up to `to`, calling `each` after every firing. */
    runTimersTo(to: number, each?: () => void): void {
      for (;;) {
        const d = timers.nextDeadlineNs();
        if (d < 0 || d > to) break;
        ns = Math.max(ns, d);
        timers.runDue();
        each?.();
      }
      ns = to;
      timers.runDue();
    },
    outb(port: number, v: number): void {
      one[0] = v;
      bus.write(port, one);
    },
    inb(port: number): number {
      bus.read(port, one);
      return one[0]!;
    },
    rd(reg: number): number {
      h.outb(0x70, reg);
      return h.inb(0x71);
    },
    wr(reg: number, v: number): void {
      h.outb(0x70, reg);
      h.outb(0x71, v);
    },
    clockRegs(): number[] {
      return [SEC, MIN, HOUR, DOW, DOM, MONTH, YEAR, CENTURY].map((r) => h.rd(r));
    },
  };
  return h;
}

describe('RTC (MC146818A)', () => {
  it('starts from the given instant in BCD, 24-hour mode, with PC status registers', () => {
    const h = harness();
    expect(h.clockRegs()).toEqual([0x30, 0x45, 0x13, 5, 0x29, 0x02, 0x24, 0x20]);
    expect(h.rd(A)).toBe(0x26); // 32.768 kHz divider, 1024 Hz rate
    expect(h.rd(B)).toBe(0x02); // 24-hour, BCD
    expect(h.rd(C)).toBe(0x00);
    expect(h.rd(D)).toBe(0x80); // valid RAM and time
    expect(h.rtc.time()).toEqual({ year: 2024, month: 2, day: 29, hour: 13, minute: 45, second: 30, dayOfWeek: 5 });
  });

  it('advances with guest time, once per second at the update', () => {
    const h = harness();
    h.setNs(S - 1);
    expect(h.rd(SEC)).toBe(0x30);
    h.setNs(S);
    expect(h.rd(SEC)).toBe(0x31);
    h.setNs(30 * S);
    expect(h.clockRegs().slice(0, 3)).toEqual([0x00, 0x46, 0x13]);
    // a day and an hour in one step, across the leap day into March
    h.setNs(30 * S + (86400 + 3600) * S);
    expect(h.clockRegs()).toEqual([0x00, 0x46, 0x14, 6, 0x01, 0x03, 0x24, 0x20]);
  });

  it('places the first update where the start instant ticks over', () => {
    const h = harness(LEAP_DAY + 250); // 13:45:30.250
    h.setNs(750_000_000 - 1);
    expect(h.rd(SEC)).toBe(0x30);
    h.setNs(750_000_000);
    expect(h.rd(SEC)).toBe(0x31);
  });

  it('rolls over year, century and day of week; 2000 is leap and 2100 is not', () => {
    const h = harness(Date.UTC(2023, 11, 31, 23, 59, 59)); // a Sunday
    expect(h.rd(DOW)).toBe(1);
    h.setNs(S);
    expect(h.clockRegs()).toEqual([0x00, 0x00, 0x00, 2, 0x01, 0x01, 0x24, 0x20]);
    const c = harness(Date.UTC(2099, 11, 31, 23, 59, 59));
    c.setNs(S);
    expect(c.clockRegs().slice(4)).toEqual([0x01, 0x01, 0x00, 0x21]);
    const y2k = harness(Date.UTC(2000, 1, 28, 23, 59, 59));
    y2k.setNs(S);
    expect([y2k.rd(DOM), y2k.rd(MONTH)]).toEqual([0x29, 0x02]);
    const y2100 = harness(Date.UTC(2100, 1, 28, 23, 59, 59));
    y2100.setNs(S);
    expect([y2100.rd(DOM), y2100.rd(MONTH)]).toEqual([0x01, 0x03]);
  });

  it('keeps the time in binary when register B says so', () => {
    const h = harness();
    h.wr(B, 0x86); // SET, binary, 24-hour
    h.wr(SEC, 59);
    h.wr(MIN, 59);
    h.wr(HOUR, 23);
    h.wr(DOW, 3);
    h.wr(DOM, 28);
    h.wr(MONTH, 2);
    h.wr(YEAR, 23);
    h.wr(CENTURY, 20);
    h.setNs(5 * S); // SET holds the clock
    expect(h.clockRegs()).toEqual([59, 59, 23, 3, 28, 2, 23, 20]);
    h.wr(B, 0x06);
    h.setNs(6 * S);
    expect(h.clockRegs()).toEqual([0, 0, 0, 4, 1, 3, 23, 20]); // 2023 is not a leap year
  });

  it('shows 12-hour time with the PM bit in bit 7', () => {
    const h = harness();
    h.wr(B, 0x00); // 12-hour, BCD
    h.rtc.setTime(LEAP_DAY); // 13:45:30
    expect(h.rd(HOUR)).toBe(0x81);
    h.rtc.setTime(Date.UTC(2024, 1, 29, 0, 0, 0));
    expect(h.rd(HOUR)).toBe(0x12); // 12 AM
    h.rtc.setTime(Date.UTC(2024, 1, 29, 12, 0, 0));
    expect(h.rd(HOUR)).toBe(0x92); // 12 PM
    h.rtc.setTime(Date.UTC(2024, 1, 29, 11, 59, 59));
    h.setNs(S);
    expect(h.rd(HOUR)).toBe(0x92); // 11:59:59 AM -> 12:00:00 PM
    h.wr(B, 0x04); // 12-hour, binary
    h.rtc.setTime(Date.UTC(2024, 1, 29, 23, 0, 0));
    expect(h.rd(HOUR)).toBe(0x8b);
    // a 12-hour value written by the guest decodes as such
    h.wr(B, 0x80);
    h.wr(HOUR, 0x89); // 9 PM
    expect(h.rtc.time().hour).toBe(21);
  });

  it('sets UIP 244 µs before each update and clears it with the update', () => {
    const h = harness();
    // UIP rises 8 cycles of 32.768 kHz before the second: ceil(32760 * 1e9 / 32768) ns
    h.setNs(999_755_859);
    expect(h.rd(A)).toBe(0x26);
    h.setNs(999_755_860);
    expect(h.rd(A)).toBe(0xa6);
    expect(S - 999_755_860).toBe(244_140);
    h.setNs(S - 1);
    expect(h.rd(A)).toBe(0xa6);
    expect(h.rd(SEC)).toBe(0x30); // not updated yet
    h.setNs(S);
    expect(h.rd(A)).toBe(0x26);
    expect(h.rd(SEC)).toBe(0x31);
    // UIP is not writable, and SET keeps it clear
    h.setNs(S + 999_800_000);
    h.wr(A, 0xa6);
    expect(h.rd(A)).toBe(0xa6);
    h.wr(B, 0x82);
    expect(h.rd(A)).toBe(0x26);
  });

  it('raises the periodic interrupt 1024 times a second at rate 6', () => {
    const h = harness();
    h.wr(B, 0x42); // PIE
    expect(h.timers.nextDeadlineNs()).toBe(976_563); // ceil(1e9 / 1024)
    let n = 0;
    h.runTimersTo(S, () => {
      if (h.rtc.irqLevel) {
        expect(h.rd(C) & 0xc0).toBe(0xc0); // IRQF | PF
        expect(h.rtc.irqLevel).toBe(false);
        n++;
      }
    });
    expect(n).toBe(1024);
  });

  it('maps the other rate selects (RS 1 and 2 alias 8 and 9 on a 32 kHz base)', () => {
    const count = (rs: number): number => {
      const h = harness();
      h.wr(A, 0x20 | rs);
      h.wr(B, 0x42);
      let n = 0;
      h.runTimersTo(S, () => {
        if (h.rtc.irqLevel) {
          h.rd(C);
          n++;
        }
      });
      return n;
    };
    expect([1, 2, 3, 8, 13, 15].map(count)).toEqual([256, 128, 8192, 256, 8, 2]);
    expect(count(0)).toBe(0);
  });

  it('sets PF without PIE but raises no interrupt', () => {
    const h = harness();
    h.runTimersTo(S / 2);
    expect(h.timers.nextDeadlineNs()).toBe(-1);
    expect(h.irqs).toEqual([]);
    expect(h.rd(C)).toBe(0x40);
    expect(h.rd(C)).toBe(0x00); // read clears
    // enabling PIE with PF already set raises IRQ8 at once
    h.setNs(S / 2 + 2_000_000);
    h.wr(B, 0x42);
    expect(h.irqs).toEqual([{ level: true, ns: S / 2 + 2_000_000 }]);
  });

  it('fires the alarm when the time matches, once per update', () => {
    const h = harness();
    h.wr(SEC_ALARM, 0x35);
    h.wr(MIN_ALARM, 0x45);
    h.wr(HOUR_ALARM, 0x13);
    h.wr(B, 0x22); // AIE
    h.runTimersTo(10 * S);
    expect(h.irqs).toEqual([{ level: true, ns: 5 * S }]);
    expect(h.rd(C)).toBe(0xf0); // IRQF | PF | AF | UF: the flags are set whether or not enabled
    expect(h.irqs.at(-1)).toEqual({ level: false, ns: 10 * S });
  });

  it('treats alarm bytes 0xc0-0xff as "don\'t care"', () => {
    const h = harness();
    h.wr(SEC_ALARM, 0x00);
    h.wr(MIN_ALARM, 0xff);
    h.wr(HOUR_ALARM, 0xc0); // once a minute, at :00
    h.wr(B, 0x22);
    const fired: number[] = [];
    h.runTimersTo(150 * S, () => {
      if (h.rtc.irqLevel) {
        fired.push(h.now() / S);
        h.rd(C);
      }
    });
    expect(fired).toEqual([30, 90, 150]); // 13:46:00, 13:47:00, 13:48:00
    const every = harness();
    every.wr(SEC_ALARM, 0xc0);
    every.wr(MIN_ALARM, 0xc0);
    every.wr(HOUR_ALARM, 0xc0);
    every.wr(B, 0x22);
    let n = 0;
    every.runTimersTo(5 * S, () => {
      if (every.rtc.irqLevel) {
        every.rd(C);
        n++;
      }
    });
    expect(n).toBe(5);
  });

  it('flags AF for a match in a stretch no timer covered', () => {
    const h = harness();
    h.wr(SEC_ALARM, 0x40);
    h.wr(MIN_ALARM, 0x45);
    h.wr(HOUR_ALARM, 0x13);
    h.setNs(20 * S); // 13:45:50; 13:45:40 passed unobserved
    expect(h.rd(C)).toBe(0x70); // PF | AF | UF, no IRQF
    h.setNs(21 * S);
    expect(h.rd(C)).toBe(0x50); // no new match
  });

  it('raises the update-ended interrupt every second; reading C lowers the line', () => {
    const h = harness();
    h.wr(B, 0x12); // UIE
    h.runTimersTo(3 * S + S / 2, () => {
      if (h.rtc.irqLevel) expect(h.rd(C)).toBe(0xd0); // IRQF | PF | UF
    });
    expect(h.irqs).toEqual([1, 2, 3].flatMap((k) => [
      { level: true, ns: k * S },
      { level: false, ns: k * S },
    ]));
  });

  it('clears UIE when SET is set and holds the clock while SET', () => {
    const h = harness();
    h.wr(B, 0x12);
    h.setNs(S / 2);
    h.wr(B, 0x92);
    expect(h.rd(B)).toBe(0x82);
    expect(h.timers.nextDeadlineNs()).toBe(-1);
    h.setNs(3 * S + S / 4);
    expect(h.rd(SEC)).toBe(0x30);
    h.wr(B, 0x02);
    // the divider kept running: the next update is at the next whole second
    h.setNs(4 * S - 1);
    expect(h.rd(SEC)).toBe(0x30);
    h.setNs(4 * S);
    expect(h.rd(SEC)).toBe(0x31);
  });

  it('restarts the divider half a second before the first update', () => {
    const h = harness();
    h.wr(A, 0x76); // DV = 111: divider held in reset
    h.setNs(10 * S + 123);
    expect(h.rd(SEC)).toBe(0x30);
    expect(h.rd(A) & 0x80).toBe(0);
    h.wr(A, 0x26);
    h.setNs(10 * S + 123 + S / 2 - 1);
    expect(h.rd(SEC)).toBe(0x30);
    h.setNs(10 * S + 123 + S / 2);
    expect(h.rd(SEC)).toBe(0x31);
  });

  it('applies the daylight-saving updates when DSE is set', () => {
    const h = harness();
    h.wr(B, 0x03); // 24-hour, BCD, DSE
    h.rtc.setTime(Date.UTC(2024, 3, 28, 1, 59, 59)); // last Sunday in April
    h.setNs(S);
    expect(h.clockRegs().slice(0, 3)).toEqual([0x00, 0x00, 0x03]);
    h.rtc.setTime(Date.UTC(2024, 9, 27, 1, 59, 59)); // last Sunday in October
    h.setNs(2 * S);
    expect(h.clockRegs().slice(0, 3)).toEqual([0x00, 0x00, 0x01]);
    h.setNs(2 * S + 3599 * S);
    expect(h.clockRegs().slice(0, 3)).toEqual([0x59, 0x59, 0x01]);
    h.setNs(2 * S + 3600 * S); // the second time through 1:59:59 goes on to 2:00
    expect(h.clockRegs().slice(0, 3)).toEqual([0x00, 0x00, 0x02]);
    // the same in one step
    const b = harness();
    b.wr(B, 0x03);
    b.rtc.setTime(Date.UTC(2024, 9, 27, 1, 59, 59));
    b.setNs(3601 * S);
    expect(b.clockRegs().slice(0, 3)).toEqual([0x00, 0x00, 0x02]);
    // not on other Sundays, nor without DSE
    const c = harness();
    c.rtc.setTime(Date.UTC(2024, 3, 28, 1, 59, 59));
    c.setNs(S);
    expect(c.rd(HOUR)).toBe(0x02);
  });

  it('stores the NMI-disable bit of the index and masks it off the register number', () => {
    const h = harness();
    h.outb(0x70, 0x8b);
    expect(h.rtc.nmiDisabled).toBe(true);
    expect(h.inb(0x71)).toBe(0x02); // register B
    h.outb(0x70, 0x0b);
    expect(h.rtc.nmiDisabled).toBe(false);
    expect(h.inb(0x70)).toBe(0xff); // write-only
  });

  it('keeps general CMOS RAM and ignores writes to C and D', () => {
    const h = harness();
    h.wr(0x40, 0x5a);
    h.wr(0x7f, 0xa5);
    expect([h.rd(0x40), h.rd(0x7f), h.rtc.getByte(0x40)]).toEqual([0x5a, 0xa5, 0x5a]);
    h.rtc.setByte(0x41, 0x12);
    expect(h.rd(0x41)).toBe(0x12);
    h.wr(C, 0xff);
    h.wr(D, 0x00);
    expect([h.rd(C), h.rd(D)]).toEqual([0x00, 0x80]);
    expect(() => h.rtc.setByte(0x0d, 1)).toThrow(RangeError);
    expect(() => h.rtc.setByte(0x80, 1)).toThrow(RangeError);
    expect(() => h.rtc.setByte(0x20, 256)).toThrow(RangeError);
  });

  it('fills in the memory-size bytes for 256 MiB', () => {
    const h = harness();
    h.rtc.setMemorySize(256 * MIB);
    const bytes = [0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35, 0x5b, 0x5c, 0x5d].map((i) => h.rd(i));
    // 640 KiB base; 255 MiB extended caps at 0xffff KiB; (256 - 16) MiB / 64 KiB = 0x0f00; nothing above 4 GiB
    expect(bytes).toEqual([0x80, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x0f, 0x00, 0x00, 0x00]);
    // checksum of 0x10..0x2d: 0x80 + 0x02 + 0xff + 0xff
    expect([h.rd(0x2e), h.rd(0x2f)]).toEqual([0x02, 0x80]);
  });

  it('fills in the memory-size bytes for 16 MiB and for 8 GiB', () => {
    const small = harness();
    small.rtc.setMemorySize(16 * MIB);
    expect([0x17, 0x18, 0x34, 0x35].map((i) => small.rd(i))).toEqual([0x00, 0x3c, 0x00, 0x00]); // 15 MiB = 0x3c00 KiB
    const big = harness();
    big.rtc.setMemorySize(8 * 1024 * MIB); // 3 GiB below 4 GiB, 5 GiB above
    // (3072 - 16) MiB / 64 KiB = 0xbf00; 5 GiB / 64 KiB = 0x014000
    expect([0x34, 0x35, 0x5b, 0x5c, 0x5d].map((i) => big.rd(i))).toEqual([0x00, 0xbf, 0x00, 0x40, 0x01]);
  });

  it('saves and restores through JSON, re-arming its timers', () => {
    const a = harness();
    a.wr(A, 0x2f); // 2 Hz
    a.wr(B, 0x52); // PIE | UIE
    a.wr(0x50, 0x77);
    a.outb(0x70, 0x80 | 0x50);
    a.runTimersTo(S / 2 + S / 4, () => {
      if (a.rtc.irqLevel) a.rd(C);
    });
    a.outb(0x70, 0x80 | 0x50);
    const state = JSON.parse(JSON.stringify(a.rtc.save())) as RtcState;
    const b = harness(Date.UTC(1999, 0, 1)); // a different start: the snapshot wins
    b.setNs(a.now());
    b.rtc.restore(state);
    expect(b.rtc.save()).toEqual(state);
    expect(b.timers.nextDeadlineNs()).toBe(S);
    expect(b.rtc.nmiDisabled).toBe(true);
    const seen = (h: ReturnType<typeof harness>): number[] => {
      const out: number[] = [];
      h.runTimersTo(4 * S, () => {
        if (h.rtc.irqLevel) out.push(h.now(), h.rd(C), h.rd(SEC));
      });
      return out;
    };
    const sa = seen(a);
    expect(seen(b)).toEqual(sa);
    expect(sa.slice(0, 3)).toEqual([S, 0xd0, 0x31]);
    expect(b.rd(0x50)).toBe(0x77);
  });

  it('rejects malformed state', () => {
    const good = harness().rtc.save();
    const rtc = harness().rtc;
    expect(() => rtc.restore({ ...good, cmos: good.cmos.slice(1) })).toThrow(/128 bytes/);
    expect(() => rtc.restore({ ...good, cmos: [...good.cmos.slice(1), 300] })).toThrow(/cmos byte 300/);
    expect(() => rtc.restore({ ...good, updateDeadlineNs: -2 })).toThrow(/updateDeadlineNs/);
    expect(() => rtc.restore({ ...good, syncedCycle: 0.5 })).toThrow(/syncedCycle/);
  });
});
