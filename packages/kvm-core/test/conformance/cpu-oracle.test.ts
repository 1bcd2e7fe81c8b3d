import { describe, expect, it } from 'vitest';
import {
  CpuOracleRunner, describeFailure, implementedCount, loadVectors, passRate, sharedVectorsPresent,
  type Failure, type GroupStats, type Mode, type OracleVector,
} from './cpu-oracle.js';

// The vectors live in ../shared beside the repository (CI has them). Elsewhere the suite is
// skipped with a notice rather than silently passing; CI=true makes their absence a failure.
const present = sharedVectorsPresent();
if (!present && process.env.CI) throw new Error('shared/cpu-oracle/vectors is missing: CI must run with ../shared beside the repo');
if (!present) console.warn('cpu-oracle: ../shared/cpu-oracle not found beside the repository; skipping the oracle vectors');

/**
 * Per mode: how many cases there are, how many of them are x87, and the least number of cases
 * that must run (not unimplemented, not unsupported `count`), so that a regression to
 * KVM_EXIT_INTERNAL_ERROR cannot pass the rate check unnoticed. Every case of these files runs
 * today: all `count` cases can be stepped with breakpoints (see cpu-oracle.ts), and the x87 cases
 * go through KVM_SET_FPU / KVM_GET_FPU.
 */
const EXPECT: Record<Mode, { total: number; x87: number; minImplemented: number }> = {
  16: { total: 10_000, x87: 766, minImplemented: 10_000 },
  32: { total: 50_000, x87: 3_919, minImplemented: 50_000 },
};

/** The failing instruction forms, each with its count and one example. */
function failing(failures: Failure[]): string {
  const names = [...new Set(failures.map((f) => f.name))];
  return names.slice(0, 12)
    .map((n) => `${n}: ${failures.filter((f) => f.name === n).length} failing, e.g.\n${describeFailure(failures.find((f) => f.name === n)!)}`)
    .join('\n');
}

const rate = (s: GroupStats) => `${s.passed}/${implementedCount(s)} (${(100 * passRate(s)).toFixed(2)}%)`;

describe.skipIf(!present)('cpu-oracle vectors (recorded on AMD Zen 4)', () => {
  const runner = present ? new CpuOracleRunner() : undefined!;

  for (const mode of [16, 32] as const) {
    it(`${mode}-bit: at least 99.9% of all cases, and of the x87 cases, match the CPU`, () => {
      const r = runner.runVectors(mode, loadVectors(mode));
      const e = EXPECT[mode];
      const kinds = [...r.byX87Kind].sort(([a], [b]) => a.localeCompare(b)).map(([k, s]) => `${k} ${rate(s)}`);
      console.log(`public-${mode}: ${rate(r)} of all cases pass; x87 ${rate(r.x87)}: ${kinds.join(', ')}`);
      expect(r.total).toBe(e.total);
      expect(r.x87.total).toBe(e.x87);
      expect(implementedCount(r)).toBeGreaterThanOrEqual(e.minImplemented);
      expect(implementedCount(r.x87)).toBe(e.x87);
      expect(passRate(r), failing(r.failures)).toBeGreaterThanOrEqual(0.999);
      expect(passRate(r.x87), failing(r.failures.filter((f) => f.template === 'x87'))).toBeGreaterThanOrEqual(0.999);
    });
  }
});

/**
 * Cases without `fpu` start from the FNINIT state too, not from the vCPU's power-on (RESET) state
 * (FCW 0x40, all tags valid-zero) nor from what the previous case left. Recorded with the oracle
 * (`make`, then the inputs piped through `./oracle`) on an Intel family 6 model 167:
 * - on a fresh vCPU, FNSTCW, FNSTSW and FNSTENV (the whole environment: FCW, FSW, the full tag
 *   word, zero pointers; FFFFh in the reserved halves);
 * - after an x87 case that leaves FCW 0x7F and three registers, FNSTCW and FNSTSW, with the FPU
 *   state read back as well (recorded with `"fpu": true`, the same starting state). FNSTENV is
 *   not used there: KVM_SET_FPU does not reach FCS/FDS in kvm-core (Linux carries them in bits 32-47
 *   of last_ip/last_dp), so FNSTENV would store the FCS the previous case left.
 */
describe('cpu-oracle runner: x87 starting state', () => {
  const regs = (esp: number) => ({ eax: 0, ebx: 0, ecx: 0, edx: 0, esi: 0, edi: 0, ebp: 0, esp, eflags: 0x202 });
  const fninitFpu = { fcw: 0x37f, fsw: 0, ftw: 0xffff, st: [] };
  const env32: OracleVector = {
    id: 'fninit-env-32', name: 'fnstcw [0x18000]; fnstsw [0x18002]; fnstenv [0x18008] (no fpu input)', flagsMask: 0,
    input: { mode: 32, code: 'd93d00800100dd3d02800100d93508800100', regs: regs(0x18000) },
    expected: {
      regs: regs(0x18000), eip: 0x31012,
      mem: [{ addr: 0x18000, hex: '7f03' }, { addr: 0x18008, hex: '7f03ffff' }, { addr: 0x1800e, hex: 'ffffffffffff' }, { addr: 0x18022, hex: 'ffff' }],
    },
  };
  const env16: OracleVector = {
    id: 'fninit-env-16', name: 'fnstcw [0x8000]; fnstsw [0x8002]; fnstenv [0x8008] (no fpu input)', flagsMask: 0,
    input: { mode: 16, code: 'd93e0080dd3e0280d9360880', regs: regs(0x8000) },
    expected: {
      regs: regs(0x8000), eip: 0x100c,
      mem: [{ addr: 0x18000, hex: '7f03' }, { addr: 0x18008, hex: '7f03' }, { addr: 0x1800c, hex: 'ffff' }],
    },
  };
  const cw32: OracleVector = {
    id: 'fninit-32', name: 'fnstcw [0x18000]; fnstsw [0x18002] (no fpu input)', flagsMask: 0, fswMask: 0,
    input: { mode: 32, code: 'd93d00800100dd3d02800100', regs: regs(0x18000) },
    expected: { regs: regs(0x18000), eip: 0x3100c, mem: [{ addr: 0x18000, hex: '7f03' }], fpu: fninitFpu },
  };
  const cw16: OracleVector = {
    id: 'fninit-16', name: 'fnstcw [0x8000]; fnstsw [0x8002] (no fpu input)', flagsMask: 0, fswMask: 0,
    input: { mode: 16, code: 'd93e0080dd3e0280', regs: regs(0x8000) },
    expected: { regs: regs(0x8000), eip: 0x1008, mem: [{ addr: 0x18000, hex: '7f03' }], fpu: fninitFpu },
  };
  const dirty: OracleVector = {
    id: 'dirty', name: 'fld1; fldz; fld1 (fcw 0x7f)', flagsMask: 0, fswMask: 0,
    input: { mode: 32, code: 'd9e8d9eed9e8', regs: regs(0x18000), fpu: { fcw: 0x7f } },
    expected: {
      regs: regs(0x18000), eip: 0x31006, mem: [],
      fpu: { fcw: 0x7f, fsw: 0x2800, ftw: 0x13ff, st: ['3fff8000000000000000', '00000000000000000000', '3fff8000000000000000'] },
    },
  };

  it('FNINIT state on a fresh vCPU, and after a case that changed the FPU', () => {
    const runner = new CpuOracleRunner();
    for (const v of [env32, env16, cw32, dirty, cw32, dirty, cw16, dirty, dirty]) {
      expect(runner.runCase(v), v.id).toEqual({ outcome: 'pass', detail: '', stepped: false });
    }
  });
});
