import { describe, expect, it } from 'vitest';
import { reg } from '@kvmts/kvm-core/asm';
import { keyFromAscii } from './keyboard.js';
import { ZF, testMachine } from './test-harness.js';

const { ax, cx } = reg;

describe('keyFromAscii', () => {
  it('gives the US-layout scan code with the character', () => {
    expect(keyFromAscii(0x61)).toBe(0x1e61); // a
    expect(keyFromAscii(0x41)).toBe(0x1e41); // A
    expect(keyFromAscii(0x0d)).toBe(0x1c0d);
    expect(keyFromAscii(0x21)).toBe(0x0221); // !
  });
});

describe('INT 16h', () => {
  it('peeks (ZF), reads and waits for keys typed on the serial console', () => {
    const input: number[] = [];
    const m = testMachine({ consoleInput: () => input.shift() });
    try {
      let r = m.runCode((a) => a.mov(ax, 0x0100).int(0x16));
      expect(r.rflags & ZF).toBe(ZF);
      input.push(0x78); // x
      r = m.runCode((a) => a.mov(ax, 0x0100).int(0x16));
      expect(r.rflags & ZF).toBe(0);
      expect(r.rax & 0xffff).toBe(0x2d78);
      r = m.runCode((a) => a.mov(ax, 0x0000).int(0x16));
      expect(r.rax & 0xffff).toBe(0x2d78);
      // Now empty: AH=00h waits (sti; hlt) until a key arrives.
      let halts = 0;
      r = m.runCode((a) => a.mov(ax, 0x1000).int(0x16), {
        onBiosHalt: () => {
          if (++halts === 2) input.push(0x1b, 0x5b, 0x41); // the up arrow, as a terminal sends it
        },
      });
      expect(halts).toBe(2);
      expect(r.rax & 0xffff).toBe(0x4800);
    } finally {
      m.close();
    }
  });

  it('reads from the UART by default, and AH=05h stores keys', () => {
    const m = testMachine();
    try {
      m.devices.serialIn.push(0x71);
      let r = m.runCode((a) => a.mov(ax, 0x0000).int(0x16));
      expect(r.rax & 0xffff).toBe(0x1071);
      r = m.runCode((a) => a.mov(ax, 0x0500).mov(cx, 0x3920).int(0x16).mov(ax, 0x1100).int(0x16));
      expect(r.rax & 0xffff).toBe(0x3920);
      r = m.runCode((a) => a.mov(ax, 0x0200).int(0x16));
      expect(r.rax & 0xff).toBe(0);
    } finally {
      m.close();
    }
  });
});
