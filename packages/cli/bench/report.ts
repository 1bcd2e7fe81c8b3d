// Shared by the CLI's benchmarks (boot.ts, virtio.ts): the command line's `--out FILE` and the
// JSON report that packages/kvm-core/bench/run.ts starts and each later benchmark adds to.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

/** The value after `--NAME` on the command line, or `fallback`. */
export function option(name: string, fallback: string, args: readonly string[] = process.argv.slice(2)): string {
  const at = args.indexOf(`--${name}`);
  return at >= 0 && at + 1 < args.length ? args[at + 1]! : fallback;
}

/** The report file: `--out FILE`, default bench-report.json in the working directory. */
export function reportPath(args: readonly string[] = process.argv.slice(2)): string {
  return resolve(option('out', 'bench-report.json', args));
}

/** Appends `results` to the report's `results` (a new report if the file is missing). */
export function appendResults(out: string, results: readonly object[]): void {
  const report = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as { results?: unknown[] }) : { results: [] };
  report.results = [...(report.results ?? []), ...results];
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`report: ${out}`);
}
