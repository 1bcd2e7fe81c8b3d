import { describe, expect, it } from 'vitest';
import { buildProtectedModeGuest } from './guests/protected-mode.js';
import { runGuest } from './guests/pm-kit.js';

describe('protected mode and paging (self-checking guest)', () => {
  it('passes every check: far jump to 32-bit, #PF fix-up, PSE, ring 3, INT 0x80, user #PF, A/D bits', () => {
    const result = runGuest(buildProtectedModeGuest(), { maxRuns: 10_000 });
    expect(result.message).toBe('');
    expect(result.serial).toBe('PK');
    expect(result.exitCode).toBe(0);
  });
});
