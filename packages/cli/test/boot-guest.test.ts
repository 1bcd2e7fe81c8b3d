// End-to-end: boot the reference Debian i386 guest through the built CLI (see e2e.ts for where
// the guest comes from and when the test is skipped).
import { describe, it, expect } from 'vitest';
import { guestInitrd as initrd, guestKernel as kernel, guestMissing, runCli as run, skipWithoutGuest } from './e2e.js';

const TIMEOUT = 15 * 60_000;

describe('booting the reference guest', () => {
  it.skipIf(skipWithoutGuest('the reference guest boot'))(
    'runs /init to GUEST-DONE and ends with status 0 when the guest powers off',
    async () => {
      expect(guestMissing()).toBe('');
      const r = await run(
        ['run', '--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0', '--mem', '256M', '--no-reboot', '--stats'],
        TIMEOUT - 10_000,
      );
      const lines = r.stdout.split(/\r?\n/);
      const context = `status ${String(r.status)}\n--- stderr\n${r.stderr}\n--- last console lines\n${lines.slice(-30).join('\n')}`;
      expect(lines.some((l) => l.startsWith('GUEST-BOOT-OK ')), context).toBe(true);
      expect(lines.some((l) => /^model name\s*: kvmts software i686 CPU$/.test(l)), context).toBe(true);
      expect(lines.some((l) => l.startsWith('GUEST-INFO cpus=1 MemTotal:')), context).toBe(true);
      expect(lines, context).toContain('GUEST-VIRTIO-COUNT 0');
      expect(lines.some((l) => l.startsWith('GUEST-DONE ')), context).toBe(true);
      // poweroff -f went through the ACPI tables and the PM block's S5, not the halt fallback.
      expect(r.stdout, context).toContain('ACPI: PM: Preparing to enter system sleep state S5');
      expect(r.stdout, context).toContain('reboot: Power down');
      // APIC mode: the local APIC is enabled and interrupts are routed through the I/O APIC.
      expect(r.stdout, context).toMatch(/Enabling APIC mode/);
      expect(r.stdout, context).toContain('ACPI: Using IOAPIC for interrupt routing');
      expect(r.stderr, context).toMatch(/kvmts: exit: guest powered off \(ACPI S5\); ran [\d.]+ s, [\d.]+ G instructions \([\d.]+ MIPS\), GUEST-BOOT-OK after [\d.]+ s/);
      expect(r.status, context).toBe(0);
    },
    TIMEOUT,
  );
});
