/**
 * INT 16h keyboard services and the INT 09h (IRQ 1) handler, sharing the BDA's keyboard ring
 * buffer. Keys come from the serial console (bytes typed on the host: ASCII, with the usual
 * terminal escape sequences for arrows and the like) and from the i8042's scancodes.
 * @module
 */
import type { BiosCall, GuestRam, Ports } from './guest.js';
import { Bda, KBD_BUFFER_END, KBD_BUFFER_START } from './layout.js';

/** Set 1 make codes of the US layout, by ASCII character (lowercase and unshifted symbols). */
const SCANCODES: Record<string, number> = {};
const rows: [string, number][] = [
  ['1234567890-=', 0x02],
  ['qwertyuiop[]', 0x10],
  ["asdfghjkl;'`", 0x1e],
  ['\\zxcvbnm,./', 0x2b],
];
for (const [chars, first] of rows) [...chars].forEach((c, i) => (SCANCODES[c] = first + i));
const SHIFTED = '!@#$%^&*()_+QWERTYUIOP{}ASDFGHJKL:"~|ZXCVBNM<>?';
const UNSHIFTED = "1234567890-=qwertyuiop[]asdfghjkl;'`\\zxcvbnm,./";
const SCAN_ENTER = 0x1c;
const SCAN_BACKSPACE = 0x0e;
const SCAN_TAB = 0x0f;
const SCAN_ESC = 0x01;
const SCAN_SPACE = 0x39;

/** The INT 16h key word (scan code << 8 | ASCII) of a byte typed on a terminal. */
export function keyFromAscii(byte: number): number {
  switch (byte) {
    case 0x0d:
    case 0x0a:
      return (SCAN_ENTER << 8) | 0x0d;
    case 0x08:
    case 0x7f:
      return (SCAN_BACKSPACE << 8) | 0x08;
    case 0x09:
      return (SCAN_TAB << 8) | 0x09;
    case 0x1b:
      return (SCAN_ESC << 8) | 0x1b;
    case 0x20:
      return (SCAN_SPACE << 8) | 0x20;
    default:
      break;
  }
  const c = String.fromCharCode(byte);
  const shifted = SHIFTED.indexOf(c);
  const base = shifted >= 0 ? UNSHIFTED[shifted]! : c.toLowerCase();
  let scan = SCANCODES[base];
  if (scan === undefined && byte >= 1 && byte <= 26) scan = SCANCODES[String.fromCharCode(byte + 0x60)]; // Ctrl-letter
  return ((scan ?? 0) << 8) | byte;
}

/** Extended keys (ASCII 0) behind ANSI escape sequences: ESC [ x or ESC [ n ~. */
const ESCAPE_KEYS: Record<string, number> = {
  A: 0x48, B: 0x50, C: 0x4d, D: 0x4b, H: 0x47, F: 0x4f, // arrows, Home, End
  '1~': 0x47, '2~': 0x52, '3~': 0x53, '4~': 0x4f, '5~': 0x49, '6~': 0x51, // Home Ins Del End PgUp PgDn
};

/** Set 1 make code → ASCII for INT 09h (unshifted; enough for a bootloader menu). */
const SCAN_TO_ASCII = new Map<number, number>();
for (const [c, s] of Object.entries(SCANCODES)) SCAN_TO_ASCII.set(s, c.charCodeAt(0));
SCAN_TO_ASCII.set(SCAN_ENTER, 0x0d).set(SCAN_BACKSPACE, 0x08).set(SCAN_TAB, 0x09).set(SCAN_ESC, 0x1b).set(SCAN_SPACE, 0x20);
const EXTENDED_SCANS = new Set(Object.values(ESCAPE_KEYS));

const I8042_DATA = 0x60;
const PIC_MASTER_COMMAND = 0x20;
const EOI = 0x20;

export class Keyboard {
  /** Bytes taken from the console but not yet turned into keys (a partial escape sequence). */
  private pending: number[] = [];

  constructor(
    private readonly ram: GuestRam,
    /** The next byte typed on the console, or undefined when there is none. */
    private readonly consoleInput: () => number | undefined = () => undefined,
  ) {}

  /** Power-on state of the BDA's keyboard fields. */
  reset(): void {
    const ram = this.ram;
    ram.setU16(Bda.kbdHead, KBD_BUFFER_START);
    ram.setU16(Bda.kbdTail, KBD_BUFFER_START);
    ram.setU16(Bda.kbdBufferStart, KBD_BUFFER_START);
    ram.setU16(Bda.kbdBufferEnd, KBD_BUFFER_END);
    ram.setU8(Bda.shiftFlags, 0);
    ram.setU8(Bda.shiftFlags2, 0);
    ram.setU8(Bda.kbdFlags3, 0x10); // enhanced (101-key) keyboard
  }

  /** Appends a key to the ring buffer; false when it is full. */
  pushKey(key: number): boolean {
    const ram = this.ram;
    const start = ram.u16(Bda.kbdBufferStart);
    const end = ram.u16(Bda.kbdBufferEnd);
    const tail = ram.u16(Bda.kbdTail);
    let next = tail + 2;
    if (next >= end) next = start;
    if (next === ram.u16(Bda.kbdHead)) return false;
    ram.setU16(Bda.base + tail, key);
    ram.setU16(Bda.kbdTail, next);
    return true;
  }

  /** The first key in the buffer, removing it when `take`. */
  private peekKey(take: boolean): number | undefined {
    const ram = this.ram;
    const head = ram.u16(Bda.kbdHead);
    if (head === ram.u16(Bda.kbdTail)) return undefined;
    const key = ram.u16(Bda.base + head);
    if (take) {
      let next = head + 2;
      if (next >= ram.u16(Bda.kbdBufferEnd)) next = ram.u16(Bda.kbdBufferStart);
      ram.setU16(Bda.kbdHead, next);
    }
    return key;
  }

  /** Moves what was typed on the console into the ring buffer. */
  drainConsole(): void {
    for (let b = this.consoleInput(); b !== undefined; b = this.consoleInput()) this.pending.push(b & 0xff);
    while (this.pending.length > 0) {
      const p = this.pending;
      if (p[0] === 0x1b && p.length >= 2 && p[1] === 0x5b) {
        // ESC [ ...: wait for the final byte; an unknown sequence is dropped.
        const final = p.findIndex((b, i) => i >= 2 && b >= 0x40 && b <= 0x7e);
        if (final < 0) {
          if (p.length < 6) return;
          p.splice(0, 1);
          this.pushKey(keyFromAscii(0x1b));
          continue;
        }
        const body = String.fromCharCode(...p.slice(2, final + 1));
        p.splice(0, final + 1);
        const scan = ESCAPE_KEYS[body];
        if (scan !== undefined) this.pushKey(scan << 8);
        continue;
      }
      this.pushKey(keyFromAscii(p.shift()!));
    }
  }

  /** INT 16h. */
  int16(call: BiosCall): void {
    this.drainConsole();
    switch (call.ah) {
      case 0x00:
      case 0x10: {
        const key = this.peekKey(true);
        if (key === undefined) {
          call.stubCarry = true;
          return;
        }
        call.ax = call.ah === 0x00 ? basicKey(key) : key;
        return;
      }
      case 0x01:
      case 0x11: {
        const key = this.peekKey(false);
        call.zero = key === undefined;
        if (key !== undefined) call.ax = call.ah === 0x01 ? basicKey(key) : key;
        return;
      }
      case 0x02:
        call.al = this.ram.u8(Bda.shiftFlags);
        return;
      case 0x12:
        call.ax = this.ram.u16(Bda.shiftFlags);
        return;
      case 0x05:
        call.al = this.pushKey(call.cx) ? 0 : 1;
        return;
      default:
        return;
    }
  }

  /** INT 09h (IRQ 1): a scancode from the i8042 becomes a key (make codes only), then EOI. */
  int09(ports: Ports): void {
    const scan = ports.inb(I8042_DATA);
    if ((scan & 0x80) === 0) {
      const ascii = SCAN_TO_ASCII.get(scan) ?? 0;
      if (ascii !== 0 || EXTENDED_SCANS.has(scan)) this.pushKey((scan << 8) | ascii);
    }
    ports.outb(PIC_MASTER_COMMAND, EOI);
  }
}

/** AH=00h/01h return extended keys with the classic codes (E0h in AL becomes 00h). */
function basicKey(key: number): number {
  return (key & 0xff) === 0xe0 ? key & 0xff00 : key;
}
