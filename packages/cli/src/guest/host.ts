/**
 * Running host tools (apt-get, dpkg, ...) and describing how they failed.
 * @module
 */

import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** How a command ended, with its output. `missing` is set when it could not be started at all. */
export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
  /** The command was not found (ENOENT) or could not be executed. */
  missing?: boolean;
  /** Why it could not be started, or the signal that ended it. */
  error?: string;
}

/** Runs `command args...` in `cwd`, capturing its output; never rejects. */
export type Runner = (command: string, args: readonly string[], options?: { cwd?: string }) => Promise<RunResult>;

/**
 * The real runner: the C locale (so apt's output can be parsed) and no apt questions. The
 * child's stdin is closed.
 */
export const runHostCommand: Runner = (command, args, options = {}) =>
  new Promise((resolve) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const child = spawn(command, [...args], {
      cwd: options.cwd,
      env: { ...process.env, LC_ALL: 'C', LANGUAGE: '', DEBIAN_FRONTEND: 'noninteractive' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      resolve({
        status: null,
        stdout: '',
        stderr: '',
        missing: e.code === 'ENOENT' || e.code === 'EACCES',
        error: e.code === 'ENOENT' ? 'command not found' : e.message,
      });
    });
    child.on('close', (status, signal) => {
      resolve({
        status,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ...(signal ? { error: `killed by ${signal}` } : {}),
      });
    });
  });

/** Full path of an executable `name` on `PATH`, or undefined. */
export function findOnPath(name: string, path: string | undefined = process.env.PATH): string | undefined {
  for (const dir of (path ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The line that best says why a command failed: a line saying the disk is full (the root
 * cause wherever it shows up, e.g. tar's error before dpkg-deb's summary), else its last `E:`
 * line (apt's errors), else its last non-empty stderr line, else its last stdout line, else
 * how it ended.
 */
export function lastLine(r: RunResult): string {
  const lines = (s: string): string[] =>
    s
      .split(/\r?\n|\r/)
      .map((l) => l.trim())
      .filter((l) => l !== '');
  const err = lines(r.stderr);
  const full = [...err, ...lines(r.stdout)].filter((l) => /no space left on device|disk quota exceeded/i.test(l));
  const apt = err.filter((l) => /^E: /.test(l));
  const line = full.at(-1) ?? apt.at(-1) ?? err.at(-1) ?? lines(r.stdout).at(-1);
  if (line !== undefined) return line;
  if (r.error !== undefined) return r.error;
  return r.status === null ? 'no exit status' : `exit status ${r.status}`;
}

/** True when running as root (uid 0). */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
