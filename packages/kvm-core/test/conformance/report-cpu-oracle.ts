// Prints the pass rate of the cpu-oracle vectors per template and per failing instruction form:
//   node --import tsx report-cpu-oracle.ts [16|32|FILE.jsonl[.gz] ...]
// Without arguments: the shared public-16 and public-32 files. A FILE is any vector file gen.mjs
// wrote (e.g. a fresh seed: `node gen.mjs --seed S --mode 32 --count N --out FILE.jsonl.gz`); its
// cases are grouped by `input.mode`. CPU_ORACLE_VECTORS=FILE[,FILE...] does the same as arguments.
// SHOW=n examples per failing form (default 2); NAMES=1 lists every form, not only the failing ones.
import { basename } from 'node:path';
import {
  CpuOracleRunner, describeFailure, implementedCount, loadVectorFile, loadVectors, modeOf, passRate, vectorFile,
  type GroupStats, type Mode, type OracleVector,
} from './cpu-oracle.js';

const args = process.argv.length > 2 ? process.argv.slice(2) : (process.env.CPU_ORACLE_VECTORS?.split(',').filter(Boolean) ?? ['16', '32']);
const show = Number(process.env.SHOW ?? 2);
const allNames = process.env.NAMES === '1';
const runner = new CpuOracleRunner();

/** Each argument as (label, mode, cases): a mode picks the public file; a file is split by mode. */
const sets: { label: string; mode: Mode; vectors: () => OracleVector[] }[] = [];
for (const a of args) {
  if (a === '16' || a === '32') {
    const mode: Mode = a === '16' ? 16 : 32;
    sets.push({ label: basename(vectorFile(mode)), mode, vectors: () => loadVectors(mode) });
    continue;
  }
  const all = loadVectorFile(a);
  for (const mode of [16, 32] as const) {
    const vs = all.filter((v) => modeOf(v) === mode);
    if (vs.length) sets.push({ label: basename(a), mode, vectors: () => vs });
  }
}

const pct = (s: GroupStats) => (implementedCount(s) ? `${(100 * passRate(s)).toFixed(2)}%` : '-');
const line = (label: string, s: GroupStats, width: number) =>
  `${label.padEnd(width)} ${String(s.passed).padStart(5)}/${String(implementedCount(s)).padEnd(5)} ${pct(s).padStart(7)}` +
  `  fail=${s.failed} unimpl=${s.unimplemented} count=${s.count} (of ${s.total})${s.failed || s.unimplemented ? ' <<<' : ''}`;

for (const { label, mode, vectors } of sets) {
  const t0 = performance.now();
  const r = runner.runVectors(mode, vectors());
  const ms = performance.now() - t0;
  console.log(`=== ${mode}-bit (${label}), ${(ms / 1000).toFixed(1)} s`);
  for (const [t, s] of [...r.byTemplate].sort(([a], [b]) => a.localeCompare(b))) console.log(line(t, s, 10));
  if (r.x87.total) {
    console.log('--- x87 by sub-template');
    for (const [k, s] of [...r.byX87Kind].sort(([a], [b]) => a.localeCompare(b))) console.log(line(`  ${k}`, s, 12));
  }

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
    `TOTAL ${mode}-bit (${label}): ${r.passed}/${implementedCount(r)} implemented cases pass (${pct(r)}); ` +
    `x87 ${r.x87.passed}/${implementedCount(r.x87)} (${pct(r.x87)}); ` +
    `${r.failed} fail, ${r.unimplemented} unimplemented${r.threw ? ` (${r.threw} threw from run())` : ''}, ` +
    `${r.count} count cases unsupported; ${r.stepped} count cases stepped by breakpoints (${r.steppedPassed} pass); ` +
    `${r.faulted} faulting cases (${r.faultedPassed} pass); ${r.total} in all`,
  );
}
