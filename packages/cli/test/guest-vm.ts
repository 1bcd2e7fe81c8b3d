// A running `kvmts run` process for the e2e tests that type into the guest's shell
// (guest.shell=1): its console output, stderr, typed input and exit.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { bin } from './e2e.js';

export interface VmExit {
  status: number | null;
  signal: NodeJS.Signals | null;
}

/** See the file comment. */
export class GuestVm {
  stdout = '';
  stderr = '';
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<VmExit>;
  exit: VmExit | null = null;
  private waiters: (() => void)[] = [];

  constructor(
    readonly name: string,
    args: readonly string[],
  ) {
    this.child = spawn(process.execPath, [bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s;
      this.notify();
    });
    this.child.stderr.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
      this.notify();
    });
    this.child.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('close', (status, signal) => {
        this.exit = { status, signal };
        this.notify();
        resolve(this.exit);
      });
    });
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `test` returns a value (checked on every output chunk), or fails after `timeoutMs`. */
  async until<T>(what: string, test: () => T | undefined | null | false, timeoutMs: number): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const v = test();
      if (v !== undefined && v !== null && v !== false) return v;
      if (this.exit) throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}) while waiting for ${what}\n--- stdout tail:\n${this.stdout.slice(-2000)}\n--- stderr:\n${this.stderr.slice(-3000)}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms\n--- stdout tail:\n${this.stdout.slice(-2000)}\n--- stderr:\n${this.stderr.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for `pattern` in stdout at or after `from`; returns the match. */
  waitOut(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    return this.until(`${pattern} on the console`, () => new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(this.stdout.slice(from)), timeoutMs);
  }

  waitErr(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    return this.until(`${pattern} on stderr`, () => pattern.exec(this.stderr), timeoutMs);
  }

  /** Types a line into the guest's shell. */
  type(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }

  /**
   * Runs a shell command whose output is tagged: prints `TAG-n <output>`; returns the output
   * (the typed line's echo does not match because the tag is split by quotes).
   */
  private seq = 0;
  async sh(command: string, timeoutMs = 60_000): Promise<string> {
    const tag = `R${++this.seq}X`;
    const from = this.stdout.length;
    this.type(`echo "${tag.slice(0, 1)}""${tag.slice(1)}:$(${command})"`);
    const m = await this.waitOut(new RegExp(`${tag}:(.*)\\r?\\n`), timeoutMs, from);
    return m[1]!.replace(/\r$/, '');
  }

  /** All numbers `NAME n` printed so far (after `from`). */
  counts(name: string, from = 0): number[] {
    return [...this.stdout.slice(from).matchAll(new RegExp(`${name} (\\d+)`, 'g'))].map((m) => Number(m[1]));
  }

  kill(): void {
    if (!this.exit) this.child.kill('SIGKILL');
  }
}
