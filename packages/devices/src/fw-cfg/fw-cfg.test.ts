import { describe, expect, it } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { FW_CFG_PORT, FW_CFG_PORT_LEN, FwCfg, FwCfgKey, fwCfgE820, fwCfgU32 } from './fw-cfg.js';

function harness(fwCfg = new FwCfg({ ramSize: 0x1234_5678_9000, cpus: 2 })) {
  const bus = new IoBus();
  bus.insert(fwCfg, FW_CFG_PORT, FW_CFG_PORT_LEN);
  return {
    fwCfg,
    select(key: number): void {
      bus.write(FW_CFG_PORT, Uint8Array.of(key & 0xff, key >>> 8));
    },
    /** `n` bytes from the data port, one `inb` each, as SeaBIOS's `insb` reads them. */
    read(n: number): Uint8Array {
      const out = new Uint8Array(n);
      const one = new Uint8Array(1);
      for (let i = 0; i < n; i++) {
        bus.read(FW_CFG_PORT + 1, one);
        out[i] = one[0]!;
      }
      return out;
    },
    writeData(v: number): void {
      bus.write(FW_CFG_PORT + 1, Uint8Array.of(v));
    },
  };
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

describe('fw_cfg (port interface)', () => {
  it('has the QEMU signature, the traditional-interface ID, CPU counts and RAM size', () => {
    const h = harness();
    h.select(FwCfgKey.signature);
    expect(text(h.read(4))).toBe('QEMU');
    h.select(FwCfgKey.id);
    expect(view(h.read(4)).getUint32(0, true)).toBe(1); // no DMA bit
    h.select(FwCfgKey.nbCpus);
    expect(view(h.read(2)).getUint16(0, true)).toBe(2);
    h.select(FwCfgKey.maxCpus);
    expect(view(h.read(2)).getUint16(0, true)).toBe(2);
    h.select(FwCfgKey.ramSize);
    expect(view(h.read(8)).getBigUint64(0, true)).toBe(0x1234_5678_9000n);
  });

  it('reads zeros past the end and for unknown keys, restarts on each select, and ignores data writes', () => {
    const h = harness();
    h.select(FwCfgKey.signature);
    expect(text(h.read(2))).toBe('QE');
    h.writeData(0x41);
    expect([...h.read(4)]).toEqual([0x4d, 0x55, 0, 0]);
    h.select(FwCfgKey.signature);
    expect(text(h.read(4))).toBe('QEMU');
    h.select(0x7ff);
    expect([...h.read(3)]).toEqual([0, 0, 0]);
    // The write-channel bit selects the same item (writes still ignored).
    h.select(0x4000 | FwCfgKey.signature);
    expect(text(h.read(4))).toBe('QEMU');
  });

  it('lists files in a big-endian directory sorted by name, each readable by its key', () => {
    const h = harness();
    const e820 = fwCfgE820([
      { addr: 0, size: 0x9fc00, type: 1 },
      { addr: 0x100000, size: 0x7f00000, type: 1 },
    ]);
    const waitKey = h.fwCfg.addFile('etc/boot-fail-wait', fwCfgU32(5000));
    const e820Key = h.fwCfg.addFile('etc/e820', e820);
    expect(waitKey).toBe(FwCfgKey.fileFirst);
    expect(e820Key).toBe(FwCfgKey.fileFirst + 1);
    // Replacing keeps the key and updates the size in the directory.
    expect(h.fwCfg.addFile('etc/boot-fail-wait', fwCfgU32(0xffffffff))).toBe(waitKey);

    h.select(FwCfgKey.fileDir);
    const count = view(h.read(4)).getUint32(0, false);
    expect(count).toBe(2);
    const entries = Array.from({ length: count }, () => {
      const e = h.read(64);
      return { size: view(e).getUint32(0, false), key: view(e).getUint16(4, false), name: text(e.subarray(8)).replace(/\0+$/, '') };
    });
    expect(entries).toEqual([
      { size: 4, key: waitKey, name: 'etc/boot-fail-wait' },
      { size: 40, key: e820Key, name: 'etc/e820' },
    ]);
    h.select(e820Key);
    const table = h.read(40);
    expect(view(table).getBigUint64(20, true)).toBe(0x100000n);
    expect(view(table).getBigUint64(28, true)).toBe(0x7f00000n);
    expect(view(table).getUint32(36, true)).toBe(1);
    h.select(waitKey);
    expect(view(h.read(4)).getUint32(0, true)).toBe(0xffffffff);
  });

  it('rejects file names that do not fit a directory entry, and saves/restores its position', () => {
    const h = harness();
    expect(() => h.fwCfg.addFile('x'.repeat(56), new Uint8Array(1))).toThrow(RangeError);
    expect(() => h.fwCfg.addFile('', new Uint8Array(1))).toThrow(RangeError);
    h.select(FwCfgKey.signature);
    h.read(1);
    const state = h.fwCfg.save();
    expect(state).toEqual({ selector: 0, offset: 1 });
    const copy = harness(new FwCfg());
    copy.fwCfg.restore(state);
    expect(text(copy.read(3))).toBe('EMU');
    expect(() => copy.fwCfg.restore({ selector: 0x10000, offset: 0 })).toThrow(RangeError);
  });
});
