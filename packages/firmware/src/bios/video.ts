/**
 * INT 10h, video: an 80×25 colour text console in VGA text memory at 0xB8000, with its state
 * (mode, cursor, active page) in the BDA where programs look for it. What is written on the
 * active page is also sent to the serial console, so a headless VM shows what a bootloader
 * prints: teletype output byte for byte, and characters written at the cursor with AH=09h/0Ah
 * (GRUB's console writes every printable character that way) as they are placed. The mirror
 * keeps to plain text while output moves forwards (gaps become the characters on the screen,
 * later rows become CR LF) and uses ANSI cursor positioning only when it moves back up.
 * @module
 */
import { GuestRam, type BiosCall } from './guest.js';
import { Bda, TEXT_COLUMNS, TEXT_PAGE_BYTES, TEXT_PAGES, TEXT_ROWS, VGA_TEXT_BASE } from './layout.js';

/** The grey-on-black attribute of a cleared screen. */
export const DEFAULT_ATTRIBUTE = 0x07;
const TEXT_MODES = new Set([0x02, 0x03, 0x07]);

const BEL = 0x07;
const BS = 0x08;
const LF = 0x0a;
const CR = 0x0d;

/** A character for the serial console: code page 437 beyond ASCII becomes plain ASCII. */
function serialChar(ch: number): number {
  if (ch >= 0x20 && ch < 0x7f) return ch;
  if (ch >= 0x18 && ch <= 0x1b) return '^v><'.charCodeAt(ch - 0x18); // arrows, as in menus
  if (ch === 0xb3 || ch === 0xba) return 0x7c; // │ ║
  if (ch === 0xc4 || ch === 0xcd) return 0x2d; // ─ ═
  if (ch >= 0xb4 && ch <= 0xda) return 0x2b; // corners and tees
  return 0x20;
}

export class Video {
  /** Where the serial console's cursor is: the screen position the next mirrored byte lands on (col 80: after the last column). */
  private serialRow = 0;
  private serialCol = 0;
  /** Whether anything was sent since the serial console was (presumably) blank. */
  private serialTouched = false;

  constructor(
    private readonly ram: GuestRam,
    /** Receives the serial console's bytes: what is shown on the active page (see the module comment). */
    private readonly mirror: (byte: number) => void = () => {},
  ) {}

  /** Power-on state: mode 3, cursor at the top left, a cleared screen. */
  reset(): void {
    const ram = this.ram;
    ram.setU8(Bda.videoMode, 0x03);
    ram.setU16(Bda.textColumns, TEXT_COLUMNS);
    ram.setU16(Bda.videoPageSize, TEXT_PAGE_BYTES);
    ram.setU16(Bda.videoPageStart, 0);
    for (let p = 0; p < TEXT_PAGES; p++) ram.setU16(Bda.cursorPositions + 2 * p, 0);
    ram.setU16(Bda.cursorShape, 0x0607);
    ram.setU8(Bda.activePage, 0);
    ram.setU16(Bda.crtcBase, 0x3d4);
    ram.setU8(Bda.videoModeControl, 0x29);
    ram.setU8(Bda.textRowsMinusOne, TEXT_ROWS - 1);
    ram.setU16(Bda.charHeight, 16);
    this.clearAll();
    this.serialRow = 0;
    this.serialCol = 0;
    this.serialTouched = false;
  }

  private emit(text: string): void {
    for (let i = 0; i < text.length; i++) this.mirror(text.charCodeAt(i));
    if (text.length > 0) this.serialTouched = true;
  }

  /** The characters of `row` on `page` from `from` up to (not including) `to`, for the serial console. */
  private screenText(page: number, row: number, from: number, to: number): string {
    let text = '';
    for (let col = from; col < to; col++) text += String.fromCharCode(serialChar(this.ram.u8(this.cell(page, row, col))));
    return text;
  }

  /** Moves the serial console's cursor to (row, col) of the active page `page`. */
  private syncSerial(page: number, row: number, col: number): void {
    const fromRow = this.serialRow;
    const fromCol = this.serialCol;
    if (row === fromRow && col === fromCol) return;
    if (row === fromRow && col > fromCol) this.emit(this.screenText(page, row, fromCol, col));
    else if (row === fromRow) this.emit('\r' + this.screenText(page, row, 0, col));
    else if (row > fromRow) this.emit('\r\n'.repeat(row - fromRow) + this.screenText(page, row, 0, col));
    else this.emit(`\x1b[${row + 1};${col + 1}H`);
    this.serialRow = row;
    this.serialCol = col;
  }

  /** Mirrors a teletype byte written at (row, col) of `page`. */
  private mirrorTeletype(page: number, row: number, col: number, ch: number): void {
    if ((page & 7) !== this.ram.u8(Bda.activePage)) return;
    this.syncSerial(page, row, col);
    this.mirror(ch);
    this.serialTouched = true;
    switch (ch) {
      case BEL:
        break;
      case BS:
        if (this.serialCol > 0) this.serialCol--;
        break;
      case LF:
        this.serialRow = Math.min(this.serialRow + 1, TEXT_ROWS - 1);
        break;
      case CR:
        this.serialCol = 0;
        break;
      default:
        this.serialCol++;
        if (this.serialCol >= TEXT_COLUMNS) {
          // The terminal wraps as the screen does.
          this.serialCol = 0;
          this.serialRow = Math.min(this.serialRow + 1, TEXT_ROWS - 1);
        }
    }
  }

  /** Mirrors `count` copies of `ch` written at the cursor by AH=09h/0Ah (only the rest of the row). */
  private mirrorWrite(page: number, ch: number, count: number): void {
    if ((page & 7) !== this.ram.u8(Bda.activePage)) return;
    const { row, col } = this.cursor(page);
    if (row >= TEXT_ROWS || col >= TEXT_COLUMNS) return;
    if (row === 0 && col === 0 && count >= TEXT_ROWS * TEXT_COLUMNS) {
      // The whole screen overwritten at once: GRUB's way of clearing it.
      if (ch === 0x20) this.clearSerial();
      return;
    }
    const n = Math.min(count, TEXT_COLUMNS - col);
    if (n <= 0) return;
    this.syncSerial(page, row, col);
    this.emit(String.fromCharCode(serialChar(ch)).repeat(n));
    this.serialCol = col + n;
  }

  /**
   * The screen's bottom rows scrolled up by `lines` (AH=06h over whole rows, as some loaders
   * make a new line): at the terminal's bottom row it scrolls too; above it, the rows it has
   * shown move up under the cursor.
   */
  private scrollSerialUp(lines: number): void {
    if (this.serialRow === TEXT_ROWS - 1) {
      this.emit('\r\n'.repeat(lines));
      this.serialCol = 0;
    } else {
      this.serialRow = Math.max(0, this.serialRow - lines);
    }
  }

  /** A whole-screen clear (mode set, AH=06h/07h with AL=0): the serial console is cleared too. */
  private clearSerial(): void {
    if (!this.serialTouched) return;
    this.emit('\x1b[2J\x1b[H');
    this.serialRow = 0;
    this.serialCol = 0;
    this.serialTouched = false;
  }

  private clearAll(): void {
    const blank = new Uint8Array(TEXT_PAGE_BYTES * TEXT_PAGES);
    for (let i = 0; i < blank.length; i += 2) {
      blank[i] = 0x20;
      blank[i + 1] = DEFAULT_ATTRIBUTE;
    }
    this.ram.write(VGA_TEXT_BASE, blank);
  }

  private cell(page: number, row: number, col: number): number {
    return VGA_TEXT_BASE + (page & 7) * TEXT_PAGE_BYTES + (row * TEXT_COLUMNS + col) * 2;
  }

  cursor(page: number): { row: number; col: number } {
    const v = this.ram.u16(Bda.cursorPositions + 2 * (page & 7));
    return { row: v >>> 8, col: v & 0xff };
  }

  setCursor(page: number, row: number, col: number): void {
    this.ram.setU16(Bda.cursorPositions + 2 * (page & 7), ((row & 0xff) << 8) | (col & 0xff));
  }

  /** Scrolls the window rows top..bottom, cols left..right up (lines > 0) or down, blanking with `attr`; 0 lines clears it. */
  scroll(page: number, lines: number, attr: number, top: number, left: number, bottom: number, right: number, up: boolean): void {
    bottom = Math.min(bottom, TEXT_ROWS - 1);
    right = Math.min(right, TEXT_COLUMNS - 1);
    if (top > bottom || left > right) return;
    const height = bottom - top + 1;
    if (lines === 0 || lines > height) lines = height;
    const width = (right - left + 1) * 2;
    for (let i = 0; i < height; i++) {
      const row = up ? top + i : bottom - i;
      const from = up ? row + lines : row - lines;
      const dst = this.cell(page, row, left);
      if (i < height - lines) this.ram.write(dst, this.ram.read(this.cell(page, from, left), width));
      else {
        const blank = new Uint8Array(width);
        for (let j = 0; j < width; j += 2) {
          blank[j] = 0x20;
          blank[j + 1] = attr;
        }
        this.ram.write(dst, blank);
      }
    }
  }

  /** Teletype output of one character on `page` (BEL, BS, LF and CR act as on a terminal). */
  teletype(ch: number, page = this.ram.u8(Bda.activePage), attr?: number): void {
    ch &= 0xff;
    let { row, col } = this.cursor(page);
    this.mirrorTeletype(page, row, col, ch);
    switch (ch) {
      case 0x07:
        return;
      case 0x08:
        if (col > 0) col--;
        break;
      case 0x0a:
        row++;
        break;
      case 0x0d:
        col = 0;
        break;
      default: {
        const at = this.cell(page, row, col);
        if (attr === undefined) this.ram.setU8(at, ch);
        else this.ram.write(at, Uint8Array.of(ch, attr));
        col++;
        if (col >= TEXT_COLUMNS) {
          col = 0;
          row++;
        }
      }
    }
    if (row >= TEXT_ROWS) {
      // Scroll, keeping the attribute of the cell under the cursor, as the PC BIOS does.
      const keep = this.ram.u8(this.cell(page, TEXT_ROWS - 1, 0) + 1);
      this.scroll(page, 1, keep, 0, 0, TEXT_ROWS - 1, TEXT_COLUMNS - 1, true);
      row = TEXT_ROWS - 1;
    }
    this.setCursor(page, row, col);
  }

  /** Writes `text` by teletype on the active page (used for the BIOS's own messages). */
  print(text: string): void {
    for (const c of text) this.teletype(c.charCodeAt(0) & 0xff);
  }

  /** Writes `ch` `count` times from the cursor without moving it (AH=09h with an attribute, 0Ah without). */
  private writeRepeated(page: number, ch: number, attr: number | undefined, count: number): void {
    const { row, col } = this.cursor(page);
    const start = row * TEXT_COLUMNS + col;
    const n = Math.min(count, TEXT_COLUMNS * TEXT_ROWS - start);
    for (let i = 0; i < n; i++) {
      const at = VGA_TEXT_BASE + (page & 7) * TEXT_PAGE_BYTES + (start + i) * 2;
      if (attr === undefined) this.ram.setU8(at, ch);
      else this.ram.write(at, Uint8Array.of(ch, attr));
    }
  }

  /** INT 10h. */
  int10(call: BiosCall): void {
    const ram = this.ram;
    switch (call.ah) {
      case 0x00: {
        // Set mode: every text mode becomes 80×25 colour text; the screen is cleared unless AL bit 7.
        const mode = call.al & 0x7f;
        ram.setU8(Bda.videoMode, TEXT_MODES.has(mode) ? mode : 0x03);
        for (let p = 0; p < TEXT_PAGES; p++) this.setCursor(p, 0, 0);
        ram.setU8(Bda.activePage, 0);
        if ((call.al & 0x80) === 0) {
          this.clearAll();
          this.clearSerial();
        }
        call.al = 0x30;
        break;
      }
      case 0x01:
        ram.setU16(Bda.cursorShape, call.cx);
        break;
      case 0x02:
        this.setCursor(call.bh, call.dh, call.dl);
        break;
      case 0x03: {
        const { row, col } = this.cursor(call.bh);
        call.dh = row;
        call.dl = col;
        call.cx = ram.u16(Bda.cursorShape);
        call.ax = 0;
        break;
      }
      case 0x05:
        ram.setU8(Bda.activePage, call.al & 7);
        ram.setU16(Bda.videoPageStart, (call.al & 7) * TEXT_PAGE_BYTES);
        break;
      case 0x06:
      case 0x07:
        this.scroll(ram.u8(Bda.activePage), call.al, call.bh, call.ch, call.cl, call.dh, call.dl, call.ah === 0x06);
        if (call.cl === 0 && call.dh >= TEXT_ROWS - 1 && call.dl >= TEXT_COLUMNS - 1) {
          if (call.al === 0 && call.ch === 0) this.clearSerial();
          else if (call.ah === 0x06 && call.al > 0) this.scrollSerialUp(call.al);
        }
        break;
      case 0x08: {
        const { row, col } = this.cursor(call.bh);
        const at = this.cell(call.bh, Math.min(row, TEXT_ROWS - 1), Math.min(col, TEXT_COLUMNS - 1));
        call.al = ram.u8(at);
        call.ah = ram.u8(at + 1);
        break;
      }
      case 0x09:
        this.writeRepeated(call.bh, call.al, call.bl, call.cx);
        this.mirrorWrite(call.bh, call.al, call.cx);
        break;
      case 0x0a:
        this.writeRepeated(call.bh, call.al, undefined, call.cx);
        this.mirrorWrite(call.bh, call.al, call.cx);
        break;
      case 0x0e:
        this.teletype(call.al, call.bh);
        break;
      case 0x0f:
        call.ah = ram.u16(Bda.textColumns);
        call.al = ram.u8(Bda.videoMode);
        call.bh = ram.u8(Bda.activePage);
        break;
      case 0x12:
        if (call.bl === 0x10) {
          // EGA/VGA information: colour, 256 KiB.
          call.bh = 0x00;
          call.bl = 0x03;
          call.cx = 0;
        }
        break;
      case 0x13: {
        // Write string ES:BP, CX characters (AL bit 1: character/attribute pairs), at DH,DL.
        const page = call.bh;
        const pairs = (call.al & 2) !== 0;
        const saved = this.cursor(page);
        this.setCursor(page, call.dh, call.dl);
        const src = call.linear('es', call.bp);
        const bytes = ram.read(src, call.cx * (pairs ? 2 : 1));
        for (let i = 0; i < call.cx; i++) {
          const ch = bytes[pairs ? 2 * i : i]!;
          this.teletype(ch, page, pairs ? bytes[2 * i + 1]! : call.bl);
        }
        if ((call.al & 1) === 0) this.setCursor(page, saved.row, saved.col);
        break;
      }
      case 0x1a:
        if (call.al === 0x00) {
          // Display combination: VGA with colour display.
          call.al = 0x1a;
          call.bx = 0x0008;
        }
        break;
      case 0x4f:
        // VESA BIOS extensions: not present (AL=4Fh "supported", AH=01h "failed").
        call.ax = 0x014f;
        break;
      default:
        break;
    }
  }
}
