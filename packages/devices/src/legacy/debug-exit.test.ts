import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit } from './debug-exit.js';

describe('DebugExit', () => {
  it('reports the raw value written, at any width', () => {
    const seen: number[] = [];
    const dev = new DebugExit((v) => seen.push(v));
    const bus = new IoBus();
    bus.insert(dev, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE);
    expect(bus.write(0xf4, new Uint8Array([0]))).toBe(true);
    expect(bus.write(0xf4, new Uint8Array([0x2a]))).toBe(true);
    expect(bus.write(0xf4, new Uint8Array([0x34, 0x12]))).toBe(true);
    expect(bus.write(0xf4, new Uint8Array([0xff, 0xff, 0xff, 0xff]))).toBe(true);
    expect(seen).toEqual([0, 42, 0x1234, 0xffffffff]);
    expect(bus.write(0xf5, new Uint8Array([1]))).toBe(false);
  });

  it('reads all-ones and has empty state', () => {
    const dev = new DebugExit(() => {
      throw new Error('no exit on read');
    });
    const buf = new Uint8Array(2);
    dev.read(0, buf);
    expect(Array.from(buf)).toEqual([0xff, 0xff]);
    expect(JSON.parse(JSON.stringify(dev.save()))).toEqual({});
    dev.restore({});
  });
});
