import { describe, expect, it } from 'vitest';
import { reg } from '@kvmts/kvm-core/asm';
import { Bda, VGA_TEXT_BASE } from './layout.js';
import { testMachine } from './test-harness.js';

const { ax, bx, cx, dx } = reg;
const cell = (row: number, col: number): number => VGA_TEXT_BASE + (row * 80 + col) * 2;

describe('INT 10h', () => {
  it('teletype writes VGA text memory, moves the cursor and mirrors to the serial port', () => {
    const m = testMachine();
    try {
      m.runCode((a) => {
        for (const c of 'ab\r\nc') a.mov(ax, 0x0e00 | c.charCodeAt(0)).mov(bx, 0).int(0x10);
      });
      expect(String.fromCharCode(...m.devices.serialOut)).toBe('ab\r\nc');
      expect([...m.readMemory(cell(0, 0), 4)]).toEqual([0x61, 0x07, 0x62, 0x07]);
      expect(m.readMemory(cell(1, 0), 1)[0]).toBe(0x63);
      const r = m.runCode((a) => a.mov(ax, 0x0300).mov(bx, 0).int(0x10));
      expect(r.rdx & 0xffff).toBe(0x0101);
      expect(r.rcx & 0xffff).toBe(0x0607);
    } finally {
      m.close();
    }
  });

  it('sets the cursor, writes characters with attributes, and reports the mode', () => {
    const m = testMachine();
    try {
      const r = m.runCode((a) =>
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x0510).int(0x10) // row 5, col 16
          .mov(ax, 0x0941).mov(bx, 0x001e).mov(cx, 3).int(0x10) // 'AAA' yellow on blue
          .mov(ax, 0x0a42).mov(bx, 0).mov(cx, 1).int(0x10) // 'B' over the first, attribute kept
          .mov(ax, 0x0f00).int(0x10));
      expect(r.rax & 0xffff).toBe(0x5003);
      expect((r.rbx >> 8) & 0xff).toBe(0);
      expect([...m.readMemory(cell(5, 16), 6)]).toEqual([0x42, 0x1e, 0x41, 0x1e, 0x41, 0x1e]);
      // 09h does not move the cursor.
      expect(m.readMemory(Bda.cursorPositions, 2)).toEqual(Uint8Array.of(0x10, 0x05));
      // 08h reads back the character and attribute at the cursor.
      const r2 = m.runCode((a) => a.mov(ax, 0x0800).mov(bx, 0).int(0x10));
      expect(r2.rax & 0xffff).toBe(0x1e42);
    } finally {
      m.close();
    }
  });

  it('scrolls the screen when teletype passes the last row, and AH=06h scrolls a window', () => {
    const m = testMachine();
    try {
      m.runCode((a) => {
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x1800).int(0x10); // last row
        a.mov(ax, 0x0e5a).int(0x10).mov(ax, 0x0e0a).int(0x10); // 'Z' then LF
      });
      expect(m.readMemory(cell(23, 0), 1)[0]).toBe(0x5a);
      expect(m.readMemory(cell(24, 0), 1)[0]).toBe(0x20);
      m.runCode((a) => a.mov(ax, 0x0601).mov(bx, 0x1700).mov(cx, 0x0000).mov(dx, 0x184f).int(0x10));
      expect(m.readMemory(cell(22, 0), 1)[0]).toBe(0x5a);
      expect([...m.readMemory(cell(24, 0), 2)]).toEqual([0x20, 0x17]);
    } finally {
      m.close();
    }
  });
});

describe('INT 10h serial mirror', () => {
  it('mirrors characters written with AH=09h at the cursor, as GRUB writes them', () => {
    const m = testMachine();
    try {
      m.runCode((a) => {
        a.mov(ax, 0x0e0d).mov(bx, 0).int(0x10).mov(ax, 0x0e0a).int(0x10); // CR LF: row 1
        // GRUB's way: write with attribute at the cursor, then move the cursor one right.
        for (const [i, c] of [...'OK'].entries()) {
          a.mov(ax, 0x0900 | c.charCodeAt(0)).mov(bx, 0x0007).mov(cx, 1).int(0x10);
          a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x0101 + i).int(0x10);
        }
        // A gap on the same row shows what the screen holds there (blanks), a later row CR LF.
        a.mov(ax, 0x0200).mov(dx, 0x0105).int(0x10).mov(ax, 0x0921).mov(bx, 0x0007).mov(cx, 1).int(0x10);
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x0300).int(0x10).mov(ax, 0x0e78).int(0x10);
      });
      expect(String.fromCharCode(...m.devices.serialOut)).toBe('\r\nOK   !\r\n\r\nx');
    } finally {
      m.close();
    }
  });

  it('positions the serial cursor with ANSI only when output moves back up, and mirrors only the active page', () => {
    const m = testMachine();
    try {
      m.runCode((a) => {
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x0200).int(0x10).mov(ax, 0x0e61).int(0x10); // 'a' at row 2
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x0003).int(0x10).mov(ax, 0x0e62).int(0x10); // 'b' at row 0 col 3
        a.mov(ax, 0x0200).mov(bx, 0x0100).mov(dx, 0x0000).int(0x10).mov(ax, 0x0a63).mov(cx, 1).int(0x10); // page 1: hidden
      });
      expect(String.fromCharCode(...m.devices.serialOut)).toBe('\r\n\r\na\x1b[1;4Hb');
    } finally {
      m.close();
    }
  });

  it('clears the serial console when the whole screen is cleared, once something was shown', () => {
    const m = testMachine();
    try {
      m.runCode((a) => {
        a.mov(ax, 0x0600).mov(bx, 0x0700).mov(cx, 0).mov(dx, 0x184f).int(0x10); // nothing shown yet: no escape
        a.mov(ax, 0x0e41).mov(bx, 0).int(0x10);
        a.mov(ax, 0x0600).mov(bx, 0x0700).mov(cx, 0).mov(dx, 0x184f).int(0x10);
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0).int(0x10).mov(ax, 0x0e42).int(0x10);
        // GRUB's clear: 2000 blanks written at the top left with AH=09h.
        a.mov(ax, 0x0200).mov(dx, 0).int(0x10).mov(ax, 0x0920).mov(bx, 0x0007).mov(cx, 80 * 25).int(0x10);
        a.mov(ax, 0x0918).mov(cx, 1).int(0x10); // an up arrow in code page 437
      });
      expect(String.fromCharCode(...m.devices.serialOut)).toBe('A\x1b[2J\x1b[HB\x1b[2J\x1b[H^');
    } finally {
      m.close();
    }
  });

  it('starts a new line on the serial console when a loader scrolls the screen up with AH=06h', () => {
    const m = testMachine();
    try {
      m.runCode((a) => {
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x1800).int(0x10); // the bottom row
        a.mov(ax, 0x0e61).int(0x10); // 'a'
        a.mov(ax, 0x0601).mov(bx, 0x0700).mov(cx, 0x0000).mov(dx, 0x184f).int(0x10); // scroll up one line
        a.mov(ax, 0x0200).mov(bx, 0).mov(dx, 0x1800).int(0x10).mov(ax, 0x0e62).int(0x10); // 'b' on the new bottom row
      });
      const out = String.fromCharCode(...m.devices.serialOut);
      expect(out.endsWith('a\r\nb'), JSON.stringify(out)).toBe(true);
    } finally {
      m.close();
    }
  });
});
