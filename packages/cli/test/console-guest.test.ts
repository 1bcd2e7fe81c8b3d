// End-to-end: a person at the serial console of the reference guest. The CLI runs under
// util-linux `script`, so its stdin is a real terminal (raw mode, Ctrl-A X) as when a user
// types into it. The test types a shell command and checks its output, makes the guest
// `reboot -f` (the machine resets and boots again), then quits with Ctrl-A X.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bin, guestInitrd as initrd, guestKernel as kernel, guestMissing, inCi, skipWithoutGuest } from './e2e.js';

const haveScript = existsSync('/usr/bin/script');
const TIMEOUT = 15 * 60_000;

/** Quote one word for `sh -c`. */
const sq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

describe('the serial console of the reference guest', () => {
  const skip = skipWithoutGuest('the console e2e test') || (!inCi && !haveScript && (console.log('skipping the console e2e test: util-linux script is missing'), true));

  it.skipIf(skip)(
    'takes typed commands, resets on reboot -f and boots again, and quits on Ctrl-A X',
    async () => {
      expect(guestMissing()).toBe('');
      expect(haveScript, '/usr/bin/script (util-linux) is needed to give the CLI a terminal').toBe(true);
      const command = [process.execPath, bin, 'run', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0 guest.shell=1', '--mem', '256M']
        .map(sq)
        .join(' ');
      const child = spawn('/usr/bin/script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
      const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
      const killer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT - 20_000);
      const context = (): string => `--- last output\n${out.split(/\r?\n/).slice(-30).join('\n')}`;
      /** Resolves once `text` has appeared after position `from` of the output. */
      const waitFor = async (text: string | RegExp, from = 0): Promise<number> => {
        for (;;) {
          const rest = out.slice(from);
          const i = typeof text === 'string' ? rest.indexOf(text) : rest.search(text);
          if (i >= 0) return from + i;
          if (child.exitCode !== null) throw new Error(`the CLI exited (${child.exitCode}) before '${String(text)}'\n${context()}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      };
      try {
        let at = await waitFor('GUEST-SHELL ready');
        // Give the shell a moment to print its prompt, then type as a person would.
        await new Promise((r) => setTimeout(r, 1000));
        child.stdin.write('echo kvmts-$((6*7))-typed\r');
        at = await waitFor('kvmts-42-typed', at);
        expect(out.slice(at), context()).toMatch(/^kvmts-42-typed/);
        child.stdin.write('reboot -f\r');
        at = await waitFor('guest reset', at);
        expect(out.slice(at), context()).toMatch(/guest reset \([^)]+\); rebooting/);
        // The second boot is under way (its firmware-less kernel prints early): quit with Ctrl-A X.
        await waitFor('Linux version', at);
        child.stdin.write('\x01x');
        const status = await exited;
        expect(out, context()).toContain('terminated by the user (Ctrl-A X)');
        expect(out, context()).toMatch(/kvmts: exit: quit by the user; ran [\d.]+ s, [\d.]+ [GM] instructions/);
        expect(status, context()).toBe(0);
      } finally {
        clearTimeout(killer);
        child.kill('SIGKILL');
      }
    },
    TIMEOUT,
  );
});
