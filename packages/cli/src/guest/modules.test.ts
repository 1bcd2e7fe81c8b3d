import { describe, expect, it } from 'vitest';
import { FAKE_MODULE_DEPS, fakeModule } from '../../test/guest-fixtures.js';
import { modinfoDepends, moduleName, parseModulesDep, readModinfo, resolveLoadOrder } from './modules.js';

// As depmod writes it for Debian's 6.1 686 kernel (transitive deps, in load-reverse order).
const MODULES_DEP = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_balloon.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
`;

const WANT = ['virtio_pci', 'virtio_mmio', 'virtio_blk', 'virtio_net', 'virtio_balloon', 'virtio_console', 'virtio-rng'];

/** Every module comes after all of its dependencies. */
function expectDepsFirst(order: readonly string[], deps: ReadonlyMap<string, readonly string[]>): void {
  expect(new Set(order).size).toBe(order.length);
  for (const [i, m] of order.entries()) {
    for (const d of deps.get(m) ?? []) expect(order.indexOf(d), `${d} before ${m}`).toBeGreaterThanOrEqual(0);
    for (const d of deps.get(m) ?? []) expect(order.indexOf(d), `${d} before ${m}`).toBeLessThan(i);
  }
}

describe('module names', () => {
  it('drops the directory and .ko suffix and turns - into _', () => {
    expect(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko')).toBe('virtio_rng');
    expect(moduleName('virtio_pci.ko.xz')).toBe('virtio_pci');
    expect(moduleName('virtio_pci.ko.zst')).toBe('virtio_pci');
    expect(moduleName('virtio-rng')).toBe('virtio_rng');
  });
});

describe('modules.dep', () => {
  it('parses depmod lines into dependencies and file paths by module name', () => {
    const { deps, files } = parseModulesDep(MODULES_DEP);
    expect(deps.get('virtio_pci')).toEqual(['virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio', 'virtio_ring']);
    expect(deps.get('virtio_rng')).toEqual(['virtio', 'virtio_ring']);
    expect(deps.get('virtio')).toEqual([]);
    expect(files.get('virtio_rng')).toBe('kernel/drivers/char/hw_random/virtio-rng.ko');
    expect(deps.size).toBe(14);
  });

  it('rejects a line without a colon', () => {
    expect(() => parseModulesDep('kernel/foo.ko\n')).toThrow(SyntaxError);
  });

  it('orders the virtio drivers after everything they need, each once', () => {
    const { deps } = parseModulesDep(MODULES_DEP);
    const order = resolveLoadOrder(WANT, (m) => deps.get(m));
    expect(order).toEqual([
      'virtio_pci_legacy_dev',
      'virtio_pci_modern_dev',
      'virtio',
      'virtio_ring',
      'virtio_pci',
      'virtio_mmio',
      'virtio_blk',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio_balloon',
      'virtio_console',
      'virtio_rng',
    ]);
    expectDepsFirst(order, deps);
    expect(order).not.toContain('e1000');
  });

  it('gives the same order as the reference build for the .modinfo dependencies', () => {
    const deps = new Map(Object.entries(FAKE_MODULE_DEPS).map(([k, v]) => [moduleName(k), v.map(moduleName)]));
    const order = resolveLoadOrder(WANT, (m) => deps.get(m));
    expect(order.join(' ')).toBe(
      'virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci virtio_mmio virtio_blk failover net_failover virtio_net virtio_balloon virtio_console virtio_rng',
    );
    expectDepsFirst(order, deps);
  });

  it('names a missing module and who needs it, and a cycle', () => {
    const deps = new Map<string, string[]>([
      ['a', ['b']],
      ['b', ['c']],
      ['x', ['y']],
      ['y', ['x']],
    ]);
    expect(() => resolveLoadOrder(['a'], (m) => deps.get(m))).toThrow('module c (needed by b) not found');
    expect(() => resolveLoadOrder(['zzz'], (m) => deps.get(m))).toThrow('module zzz not found');
    expect(() => resolveLoadOrder(['x'], (m) => deps.get(m))).toThrow('module dependency cycle: x -> y -> x');
  });
});

describe('.modinfo', () => {
  for (const variant of [{ bits: 32 as const }, { bits: 64 as const }, { bits: 32 as const, bigEndian: true }]) {
    it(`reads name= and depends= from an ELF${variant.bits}${variant.bigEndian ? ' big-endian' : ''} module`, () => {
      const info = readModinfo(fakeModule('virtio_pci', ['virtio_ring', 'virtio_pci_modern_dev', 'virtio'], variant));
      expect(info.get('name')).toEqual(['virtio_pci']);
      expect(info.get('license')).toEqual(['GPL']);
      expect(modinfoDepends(info)).toEqual(['virtio_ring', 'virtio_pci_modern_dev', 'virtio']);
    });
  }

  it('treats an empty depends= as no dependencies', () => {
    expect(modinfoDepends(readModinfo(fakeModule('virtio', [])))).toEqual([]);
    expect(modinfoDepends(new Map())).toEqual([]);
  });

  it('rejects what is not an ELF module', () => {
    expect(() => readModinfo(new TextEncoder().encode('#!/bin/sh\n'.repeat(10)))).toThrow('not an ELF file');
    const noModinfo = fakeModule('m', []);
    // rename ".modinfo" in the section name table
    const at = Buffer.from(noModinfo).indexOf('.modinfo\0.shstrtab');
    noModinfo[at + 1] = 'x'.charCodeAt(0);
    expect(() => readModinfo(noModinfo)).toThrow('no .modinfo section');
  });
});
