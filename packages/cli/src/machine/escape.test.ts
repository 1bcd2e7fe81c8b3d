import { describe, it, expect } from 'vitest';
import { EscapeFilter } from './escape.js';

const feed = (f: EscapeFilter, ...bytes: number[]) => f.feed(Uint8Array.from(bytes));

describe('EscapeFilter (Ctrl-A)', () => {
  it('passes plain input through', () => {
    expect(feed(new EscapeFilter(), 0x6c, 0x73, 0x0d)).toEqual({ data: Uint8Array.of(0x6c, 0x73, 0x0d), quit: false, help: false });
  });

  it('quits on Ctrl-A x or X, dropping what follows', () => {
    expect(feed(new EscapeFilter(), 0x61, 0x01, 0x78, 0x62)).toEqual({ data: Uint8Array.of(0x61), quit: true, help: false });
    expect(feed(new EscapeFilter(), 0x01, 0x58).quit).toBe(true);
  });

  it('keeps the escape state across chunks', () => {
    const f = new EscapeFilter();
    expect(feed(f, 0x01)).toEqual({ data: new Uint8Array(), quit: false, help: false });
    expect(feed(f, 0x78).quit).toBe(true);
  });

  it('sends one Ctrl-A for Ctrl-A Ctrl-A, asks for help on Ctrl-A h, and drops other escapes', () => {
    const f = new EscapeFilter();
    expect(feed(f, 0x01, 0x01, 0x01, 0x68, 0x01, 0x7a, 0x63)).toEqual({ data: Uint8Array.of(0x01, 0x63), quit: false, help: true });
  });
});
