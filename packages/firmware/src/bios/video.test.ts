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
