/**
 * INT 1Ah time services (the BDA tick count, the RTC's time and date) and the INT 08h timer
 * tick. The RTC is read and written through its CMOS ports, as ROM code would.
 * @module
 */
import type { BiosCall, GuestRam, Ports } from './guest.js';
import { Bda, TICKS_PER_DAY } from './layout.js';

const CMOS_INDEX = 0x70;
const CMOS_DATA = 0x71;
/** CMOS registers. */
export const Cmos = {
  seconds: 0x00,
  minutes: 0x02,
  hours: 0x04,
  day: 0x07,
  month: 0x08,
  year: 0x09,
  statusB: 0x0b,
  century: 0x32,
} as const;
const STATUS_B_BINARY = 0x04;
const STATUS_B_24H = 0x02;
const STATUS_B_DST = 0x01;

const toBcd = (v: number): number => ((Math.floor(v / 10) % 10) << 4) | (v % 10);
const fromBcd = (v: number): number => (v >> 4) * 10 + (v & 0xf);

/** The RTC through ports 0x70/0x71, always in BCD to the caller whatever mode it runs in. */
export class CmosClock {
  constructor(private readonly ports: Ports) {}

  read(index: number): number {
    this.ports.outb(CMOS_INDEX, index);
    return this.ports.inb(CMOS_DATA);
  }

  write(index: number, value: number): void {
    this.ports.outb(CMOS_INDEX, index);
    this.ports.outb(CMOS_DATA, value);
  }

  private get binary(): boolean {
    return (this.read(Cmos.statusB) & STATUS_B_BINARY) !== 0;
  }

  /** A time/date register as BCD. */
  readBcd(index: number): number {
    const v = this.read(index);
    if (index === Cmos.hours && (this.read(Cmos.statusB) & STATUS_B_24H) === 0) {
      // 12-hour mode: bit 7 is PM.
      const pm = (v & 0x80) !== 0;
      let h = this.binary ? v & 0x7f : fromBcd(v & 0x7f);
      h = (h % 12) + (pm ? 12 : 0);
      return toBcd(h);
    }
    return this.binary ? toBcd(v) : v;
  }

  /** Sets a time/date register from BCD. */
  writeBcd(index: number, bcd: number): void {
    this.write(index, this.binary ? fromBcd(bcd) : bcd);
  }

  /** Seconds since midnight by the RTC. */
  secondsOfDay(): number {
    return fromBcd(this.readBcd(Cmos.hours)) * 3600 + fromBcd(this.readBcd(Cmos.minutes)) * 60 + fromBcd(this.readBcd(Cmos.seconds));
  }

  dst(): boolean {
    return (this.read(Cmos.statusB) & STATUS_B_DST) !== 0;
  }
}

/** Ticks (18.2 Hz) since midnight for a time of day in seconds. */
export function ticksForSeconds(seconds: number): number {
  return Math.floor((seconds * TICKS_PER_DAY) / 86400);
}

export class TimeServices {
  readonly cmos: CmosClock;

  constructor(private readonly ram: GuestRam, ports: Ports) {
    this.cmos = new CmosClock(ports);
  }

  /** Power-on: the tick count starts from the RTC's time of day, as on a PC. */
  reset(): void {
    this.ram.setU32(Bda.tickCount, ticksForSeconds(this.cmos.secondsOfDay()));
    this.ram.setU8(Bda.midnightFlag, 0);
  }

  /** INT 08h: one more tick; at 24 hours wrap and set the midnight flag. */
  tick(): void {
    let ticks = this.ram.u32(Bda.tickCount) + 1;
    if (ticks >= TICKS_PER_DAY) {
      ticks = 0;
      this.ram.setU8(Bda.midnightFlag, 1);
    }
    this.ram.setU32(Bda.tickCount, ticks);
  }

  /** INT 1Ah functions 00h–05h; returns false for anything else. */
  int1a(call: BiosCall): boolean {
    const cmos = this.cmos;
    switch (call.ah) {
      case 0x00: {
        const ticks = this.ram.u32(Bda.tickCount);
        call.cx = ticks >>> 16;
        call.dx = ticks & 0xffff;
        call.al = this.ram.u8(Bda.midnightFlag);
        this.ram.setU8(Bda.midnightFlag, 0);
        call.carry = false;
        return true;
      }
      case 0x01:
        this.ram.setU32(Bda.tickCount, ((call.cx << 16) | call.dx) >>> 0);
        this.ram.setU8(Bda.midnightFlag, 0);
        call.ok();
        return true;
      case 0x02:
        call.ch = cmos.readBcd(Cmos.hours);
        call.cl = cmos.readBcd(Cmos.minutes);
        call.dh = cmos.readBcd(Cmos.seconds);
        call.dl = cmos.dst() ? 1 : 0;
        call.ok();
        return true;
      case 0x03:
        cmos.writeBcd(Cmos.hours, call.ch);
        cmos.writeBcd(Cmos.minutes, call.cl);
        cmos.writeBcd(Cmos.seconds, call.dh);
        call.ok();
        return true;
      case 0x04:
        call.ch = cmos.readBcd(Cmos.century);
        call.cl = cmos.readBcd(Cmos.year);
        call.dh = cmos.readBcd(Cmos.month);
        call.dl = cmos.readBcd(Cmos.day);
        call.ok();
        return true;
      case 0x05:
        cmos.writeBcd(Cmos.century, call.ch);
        cmos.writeBcd(Cmos.year, call.cl);
        cmos.writeBcd(Cmos.month, call.dh);
        cmos.writeBcd(Cmos.day, call.dl);
        call.ok();
        return true;
      default:
        return false;
    }
  }
}
