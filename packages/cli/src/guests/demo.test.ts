import { describe, it, expect } from 'vitest';
import { DEMO_GUEST_OUTPUT, buildDemoGuest } from './demo.js';
import { Vmm } from '../vmm.js';

function run(image: Uint8Array, loadAddr: number): { out: string; outcome: ReturnType<Vmm['run']> } {
  let out = '';
  const vmm = new Vmm({ memSize: 1 << 20, image, loadAddr, serialOutput: (b) => (out += String.fromCharCode(b)) });
  try {
    return { outcome: vmm.run(), out };
  } finally {
    vmm.close();
  }
}

describe('demo guest', () => {
  it('assembles deterministically to a small image', () => {
    const a = buildDemoGuest();
    expect(a).toEqual(buildDemoGuest());
    expect(a.length).toBeGreaterThan(100);
    expect(a.length).toBeLessThan(1024);
    // starts with cli; cld
    expect(Array.from(a.subarray(0, 2))).toEqual([0xfa, 0xfc]);
    expect(Buffer.from(a).includes('Hello from kvmts!\n')).toBe(true);
  });

  it('depends on its origin only through absolute addresses', () => {
    expect(buildDemoGuest({ origin: 0x7c00 })).not.toEqual(buildDemoGuest({ origin: 0x500 }));
    expect(buildDemoGuest({ origin: 0x500 }).length).toBe(buildDemoGuest().length);
  });

  // Needs kvm-core's real-mode CPU.
  it('prints its report and exits with 0 through the debug-exit port', () => {
    const { out, outcome } = run(buildDemoGuest(), 0x7c00);
    expect(out).toBe(DEMO_GUEST_OUTPUT);
    expect(outcome).toEqual({ kind: 'debug-exit', value: 0 });
  });

  it('runs the same when loaded above 64K', () => {
    const { out, outcome } = run(buildDemoGuest({ origin: 0x5 }), 0x20005);
    expect(out).toBe(DEMO_GUEST_OUTPUT);
    expect(outcome).toEqual({ kind: 'debug-exit', value: 0 });
  });

  it('notices a failed self-check and exits non-zero', () => {
    // Corrupt the expected string in the image: the copy check still passes but the
    // length check fails because the NUL moves.
    const image = buildDemoGuest();
    const at = Buffer.from(image).indexOf('string ops work');
    image[at + 6] = 0;
    const { out, outcome } = run(image, 0x7c00);
    expect(out).toContain('copied "string" (length 6)\n');
    expect(out).toContain('demo: FAILED checks: 1\n');
    expect(out).not.toContain('all checks passed');
    expect(outcome).toEqual({ kind: 'debug-exit', value: 1 });
  });
});
