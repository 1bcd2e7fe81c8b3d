// End-to-end: Debian's memtest86+ (a program nobody here wrote) started as a user would,
// `kvmts run --kernel memtest86+ia32.bin --append console=ttyS0`: the 32-bit image is loaded
// through its Linux boot protocol, draws its status screen on the serial console (VT100 cursor
// addressing), and runs its tests. The test watches the screen until the tests have moved on a
// few times without an error, then stops kvmts with SIGTERM as a user's `kill` would. memtest86+
// comes from `apt-get download memtest86+` (cached beside GRUB, see grub/fetch.ts); when CI is
// set, a package that cannot be had fails the test, otherwise it is skipped with the reason.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bin, inCi } from './e2e.js';
import { GuestVm } from './guest-vm.js';
import { PackageUnavailable, fetchMemtest } from './grub/fetch.js';

const memtest = await fetchMemtest({ log: (line) => console.log(`memtest: ${line}`) }).then(
  (value) => ({ value, reason: undefined }),
  (err: unknown) => {
    if (!(err instanceof PackageUnavailable)) throw err;
    return { value: undefined, reason: err.message };
  },
);
const skipReason = inCi ? undefined : memtest.reason !== undefined ? `memtest86+ is unavailable: ${memtest.reason}` : !existsSync(bin) ? `${bin} is missing: run 'pnpm turbo run build --filter=@kvmts/cli...'` : undefined;
if (skipReason !== undefined) console.log(`memtest: skipped: ${skipReason}`);

/** The test number and name in memtest's "Test #" field, each time it is drawn: `#3  [Moving inversions, 1s & 0s]`. */
const testsShown = (screen: string): { n: number; name: string }[] => [...screen.matchAll(/#(\d+) {1,2}\[([^\]]+)\]/g)].map((m) => ({ n: Number(m[1]), name: m[2]! }));
/** Every value drawn in the "Pass %" field (row 2, column 35). */
const passPercents = (screen: string): number[] => [...screen.matchAll(/\x1b\[2;35H(?:\x1b\[[0-9;]*m)*\s*(\d+)%/g)].map((m) => Number(m[1]));

describe.skipIf(skipReason !== undefined)('memtest86+ 6.10 (Debian, 32-bit image, Linux boot protocol)', () => {
  it('shows its banner and status screen on the serial console and runs test after test without errors', async () => {
    expect(memtest.reason, 'memtest86+ could not be fetched with apt-get').toBeUndefined();
    expect(existsSync(bin), `${bin} is missing: run 'pnpm turbo run build --filter=@kvmts/cli...' first`).toBe(true);
    const vm = new GuestVm('memtest', ['run', '--kernel', memtest.value!.image, '--append', 'console=ttyS0']);
    try {
      await vm.waitOut(/Memtest86\+ v6\.10/, 60_000);
      await vm.waitOut(/Status: Testing/, 60_000);
      await vm.waitOut(/Memory {2}: {2}256MB/, 60_000);
      // Progress: the first pass's tests in order from #0 to #3 at least (memtest redraws the
      // serial screen every few seconds, so a short test may never be shown), with the pass
      // percentage moving.
      await vm.until('memtest test #3 and 1% of the pass', () => testsShown(vm.stdout).some((t) => t.n >= 3) && Math.max(...passPercents(vm.stdout)) > 0, 300_000);
      const shown = testsShown(vm.stdout);
      const order = shown.map((t) => t.n).filter((n, i, all) => i === 0 || n !== all[i - 1]);
      expect(order[0], vm.stdout.slice(-3000)).toBe(0);
      expect(order.every((n, i) => i === 0 || n > order[i - 1]!), `tests shown out of order: ${order.join(', ')}`).toBe(true);
      expect(shown.find((t) => t.n === 0)?.name).toMatch(/^Address test, walking ones/);
      expect(vm.stdout).toMatch(/Errors: 0 /);
      expect(vm.stdout).not.toMatch(/Errors: [1-9]/);
      // memtest86+'s exception screen (an unhandled CPU exception in the program).
      expect(vm.stdout).not.toMatch(/Unexpected interrupt/);

      vm.child.kill('SIGTERM');
      const exit = await vm.exited;
      expect(vm.stderr).toContain('kvmts: terminating on signal SIGTERM');
      expect(vm.stderr).toMatch(/kvmts: exit: terminated by a signal; ran [\d.]+ s/);
      expect(exit).toEqual({ status: 0, signal: null });
    } finally {
      vm.kill();
    }
  }, 420_000);
});
