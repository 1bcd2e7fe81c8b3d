// Prints the per-opcode pass rate of the 80286 real-mode vectors: `node --import tsx report-80286.ts [FILES…]`.
import { SingleStepRunner, listFiles } from './singlestep-80286.js';

const runner = new SingleStepRunner();
const files = process.argv.length > 2 ? process.argv.slice(2).map((f) => (f.endsWith('.gz') ? f : `${f}.jsonl.gz`)) : listFiles();
let total = 0, passed = 0, known = 0, unimpl = 0;
for (const f of files) {
  const r = runner.runFile(f);
  total += r.total; passed += r.passed; known += r.known286; unimpl += r.unimplemented;
  const implemented = r.total - r.unimplemented;
  const rate = implemented ? ((100 * r.passed) / implemented).toFixed(1) : '-';
  const flag = r.failures.length ? ' <<<' : '';
  console.log(`${f.replace('.jsonl.gz', '').padEnd(6)} ${String(r.passed).padStart(4)}/${r.total} pass ${rate}%  known286=${r.known286} unimpl=${r.unimplemented}${flag}`);
  for (const x of r.failures.slice(0, Number(process.env.SHOW ?? 2))) console.log(`   #${x.idx} ${x.name}: ${x.detail}`);
}
const implemented = total - unimpl;
console.log(`TOTAL ${passed}/${implemented} implemented cases pass (${((100 * passed) / implemented).toFixed(2)}%), ${known} known 286 differences, ${unimpl} unimplemented of ${total}`);
