import { describe, expect, it } from 'vitest';
import {
  CpuOracleRunner, describeFailure, implementedCount, loadVectors, passRate, sharedVectorsPresent, type Mode,
} from './cpu-oracle.js';

// The vectors live in ../shared beside the repository (CI has them). Elsewhere the suite is
// skipped with a notice rather than silently passing; CI=true makes their absence a failure.
const present = sharedVectorsPresent();
if (!present && process.env.CI) throw new Error('shared/cpu-oracle/vectors is missing: CI must run with ../shared beside the repo');
if (!present) console.warn('cpu-oracle: ../shared/cpu-oracle not found beside the repository; skipping the oracle vectors');

/**
 * Per mode: how many cases there are, how many are x87 (skipped until the FPU exists), and the
 * least number of cases that must run (not x87, not unimplemented, not unsupported `count`), so
 * that a regression to KVM_EXIT_INTERNAL_ERROR cannot pass the rate check unnoticed. All `count`
 * cases of these files can be stepped with breakpoints (see cpu-oracle.ts).
 */
const EXPECT: Record<Mode, { total: number; x87: number; minImplemented: number }> = {
  16: { total: 10_000, x87: 766, minImplemented: 9_234 },
  32: { total: 50_000, x87: 3_919, minImplemented: 46_081 },
};

describe.skipIf(!present)('cpu-oracle vectors (recorded on AMD Zen 4)', () => {
  const runner = present ? new CpuOracleRunner() : undefined!;

  for (const mode of [16, 32] as const) {
    it(`${mode}-bit: at least 99.9% of implemented non-x87 cases match the CPU`, () => {
      const r = runner.runVectors(mode, loadVectors(mode));
      const e = EXPECT[mode];
      expect(r.total).toBe(e.total);
      expect(r.x87).toBe(e.x87);
      expect(implementedCount(r)).toBeGreaterThanOrEqual(e.minImplemented);
      const failing = [...new Set(r.failures.map((f) => f.name))]
        .map((n) => `${n}: ${r.failures.filter((f) => f.name === n).length} failing, e.g.\n${describeFailure(r.failures.find((f) => f.name === n)!)}`);
      expect(passRate(r), failing.slice(0, 12).join('\n')).toBeGreaterThanOrEqual(0.999);
    });
  }
});
