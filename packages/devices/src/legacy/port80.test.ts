import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { PORT80_PORT, Port80, type Port80State } from './port80.js';

describe('Port80 (POST diagnostic port)', () => {
  it('keeps the last code, reports each write and reads it back', () => {
    const codes: number[] = [];
    const port = new Port80({ onCode: (c) => codes.push(c) });
    const bus = new IoBus();
    bus.insert(port, PORT80_PORT, 1);
    const one = new Uint8Array(1);
    bus.read(0x80, one);
    expect(one[0]).toBe(0);
    for (const c of [0x11, 0x55, 0xaa]) bus.write(0x80, new Uint8Array([c]));
    expect(codes).toEqual([0x11, 0x55, 0xaa]);
    expect(port.lastCode).toBe(0xaa);
    bus.read(0x80, one);
    expect(one[0]).toBe(0xaa);
    // a word write: only the low byte is the POST code
    bus.write(0x80, new Uint8Array([0x42, 0x99]));
    expect(port.lastCode).toBe(0x42);
    const two = new Uint8Array(2);
    bus.read(0x80, two);
    expect(Array.from(two)).toEqual([0x42, 0xff]);
  });

  it('saves and restores through JSON', () => {
    const a = new Port80();
    a.write(0, new Uint8Array([0x7e]));
    const state = JSON.parse(JSON.stringify(a.save())) as Port80State;
    const b = new Port80();
    b.restore(state);
    expect(b.lastCode).toBe(0x7e);
    expect(() => b.restore({ lastCode: -1 })).toThrow(RangeError);
  });
});
