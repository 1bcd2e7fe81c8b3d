import { afterEach, describe, expect, it } from 'vitest';
import { TestMachine, closeAll } from './guest.js';

afterEach(closeAll);

describe('the test guest', () => {
  it('counts, reports on port 0xE9 and writes its working set', () => {
    const m = new TestMachine({ memSize: 4 << 20 });
    m.run({ untilCount: 5 });
    expect(m.outlog.count).toBe(5);
    expect(m.counter()).toBe(5 * 1024);
    expect(m.outlog.last).toBe(0);
  });
});
