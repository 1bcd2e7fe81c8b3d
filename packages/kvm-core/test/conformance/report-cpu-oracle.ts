// Prints the pass rate of the cpu-oracle vectors per template and per failing instruction form:
// `node --import tsx report-cpu-oracle.ts [16|32]` (both modes by default).
// SHOW=n examples per failing form (default 2); NAMES=1 lists every form, not only the failing ones.
import {
  CpuOracleRunner, describeFailure, implementedCount, loadVectors, passRate, type GroupStats, type Mode,
} from './cpu-oracle.js';

const modes: Mode[] = process.argv.length > 2 ? process.argv.slice(2).map((a) => (a === '16' ? 16 : 32)) : [16, 32];
const show = Number(process.env.SHOW ?? 2);
const allNames = process.env.NAMES === '1';
const runner = new CpuOracleRunner();

const pct = (s: GroupStats) => (implementedCount(s) ? `${(100 * passRate(s)).toFixed(2)}%` : '-');
const line = (label: string, s: GroupStats, width: number) =>
  `${label.padEnd(width)} ${String(s.passed).padStart(5)}/${String(implementedCount(s)).padEnd(5)} ${pct(s).padStart(7)}` +
  `  fail=${s.failed} unimpl=${s.unimplemented} x87=${s.x87} count=${s.count} (of ${s.total})${s.failed || s.unimplemented ? ' <<<' : ''}`;

for (const mode of modes) {
  const t0 = performance.now();
  const r = runner.runVectors(mode, loadVectors(mode));
  const ms = performance.now() - t0;
  console.log(`=== ${mode}-bit (public-${mode}.jsonl.gz), ${(ms / 1000).toFixed(1)} s`);
  for (const [t, s] of [...r.byTemplate].sort(([a], [b]) => a.localeCompare(b))) console.log(line(t, s, 10));

  const names = [...r.byName].filter(([, s]) => allNames || s.failed || s.unimplemented).sort(([a], [b]) => a.localeCompare(b));
  if (names.length) console.log(`--- ${allNames ? 'all' : 'failing'} instruction forms`);
  for (const [n, s] of names) {
    console.log(line(n, s, 40));
    for (const f of r.failures.filter((x) => x.name === n).slice(0, show)) console.log(`   ${describeFailure(f).replace(/\n/g, '\n   ')}`);
  }
  if (r.unimplementedReasons.size) {
    console.log('--- not implemented (KVM_EXIT_INTERNAL_ERROR)');
    for (const [why, n] of [...r.unimplementedReasons].sort((a, b) => b[1] - a[1])) console.log(`  ${String(n).padStart(5)}  ${why}`);
  }
  console.log(
    `TOTAL ${mode}-bit: ${r.passed}/${implementedCount(r)} implemented non-x87 cases pass (${pct(r)}); ` +
    `${r.failed} fail, ${r.unimplemented} unimplemented${r.threw ? ` (${r.threw} threw from run())` : ''}, ${r.x87} x87 skipped, ` +
    `${r.count} count cases unsupported; ${r.stepped} count cases stepped by breakpoints (${r.steppedPassed} pass); ` +
    `${r.faulted} faulting cases (${r.faultedPassed} pass); ${r.total} in all`,
  );
}
