import { describe, expect, it } from 'vitest';
import { SingleStepRunner, listFiles, sharedVectorsPresent } from './singlestep-80286.js';

// The vectors live in ../shared beside the repository (CI has them). Elsewhere the suite is
// skipped with a notice rather than silently passing; CI=true makes their absence a failure.
const present = sharedVectorsPresent();
if (!present && process.env.CI) throw new Error('shared/cpu-tests/singlestep-80286 is missing: CI must run with ../shared beside the repo');

/** Files whose instructions are not implemented yet. */
const NOT_YET_IMPLEMENTED = new Set<string>();

describe.skipIf(!present)('80286 real-mode vectors (hardware-captured)', () => {
  const runner = present ? new SingleStepRunner() : undefined!;
  const files = present ? listFiles() : [];
  let passed = 0, implemented = 0;

  for (const file of files) {
    it(file.replace('.jsonl.gz', ''), () => {
      const r = runner.runFile(file);
      if (NOT_YET_IMPLEMENTED.has(file)) {
        // An x87 escape must report itself as not implemented, never run wrongly.
        expect(r.unimplemented).toBe(r.total);
        return;
      }
      passed += r.passed;
      implemented += r.total - r.unimplemented - r.known286;
      // Every case either matches the hardware or is one of the documented 286-only behaviours.
      expect(r.failures, JSON.stringify(r.failures.slice(0, 3))).toEqual([]);
      expect(r.unimplemented).toBeLessThanOrEqual(1);
      expect(r.passed / (r.total - r.unimplemented - r.known286)).toBeGreaterThanOrEqual(0.999);
    });
  }

  it('overall pass rate is at least 99.9% of implemented cases', () => {
    expect(implemented).toBeGreaterThan(90_000);
    expect(passed / implemented).toBeGreaterThanOrEqual(0.999);
  });
});
