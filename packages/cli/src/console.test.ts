import { describe, it, expect } from 'vitest';
import { ConsoleSink } from './console.js';

describe('ConsoleSink', () => {
  it('flushes per line, when full, and on demand, handing out copies', () => {
    const chunks: string[] = [];
    const sink = new ConsoleSink((c) => chunks.push(Buffer.from(c).toString('latin1')), 4);
    for (const c of 'ab\ncdefg') sink.push(c.charCodeAt(0));
    expect(chunks).toEqual(['ab\n', 'cdef']);
    sink.flush();
    sink.flush();
    expect(chunks).toEqual(['ab\n', 'cdef', 'g']);
  });
});
