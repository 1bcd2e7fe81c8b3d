import { describe, it, expect } from 'vitest';
import {
  PCI_BAR0,
  PCI_CAPABILITY_LIST,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_INTA,
  PCI_INTERRUPT_LINE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PciConfigSpace,
  type PciConfigState,
} from './device.js';

// A virtio-net-like function (1af4:1000, class 020000h) to exercise the header.
const NET = { vendorId: 0x1af4, deviceId: 0x1000, classCode: 0x020000, revision: 0x01, subsystemVendorId: 0x1af4, subsystemId: 0x0001, interruptPin: PCI_INTA };

function rd(cfg: PciConfigSpace, off: number, size: 1 | 2 | 4): number {
  const d = new Uint8Array(size);
  cfg.readConfig(off, d);
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + d[i]!;
  return v;
}

function wr(cfg: PciConfigSpace, off: number, size: 1 | 2 | 4, v: number): void {
  const d = new Uint8Array(size);
  for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
  cfg.writeConfig(off, d);
}

describe('PciConfigSpace header', () => {
  it('builds a type-0 header', () => {
    const cfg = new PciConfigSpace(NET);
    expect(rd(cfg, 0x00, 4)).toBe(0x10001af4);
    expect(rd(cfg, 0x08, 4)).toBe(0x02000001); // class 02 00 00, revision 01
    expect(rd(cfg, 0x0e, 1)).toBe(0x00);
    expect(rd(cfg, 0x2c, 4)).toBe(0x00011af4);
    expect(rd(cfg, 0x3c, 4)).toBe(0x00000100); // pin INTA, line 0
    expect(rd(cfg, PCI_COMMAND, 2)).toBe(0);
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0);
    expect(new PciConfigSpace({ ...NET, multiFunction: true }).get8(0x0e)).toBe(0x80);
  });

  it('keeps the IDs, class code, header type and pin read-only', () => {
    const cfg = new PciConfigSpace(NET);
    wr(cfg, 0x00, 4, 0xffffffff);
    wr(cfg, 0x08, 4, 0xffffffff);
    wr(cfg, 0x0c, 4, 0xffffffff);
    wr(cfg, 0x2c, 4, 0xffffffff);
    wr(cfg, 0x3c, 4, 0xffffffff);
    expect(rd(cfg, 0x00, 2)).toBe(0x1af4);
    expect(rd(cfg, 0x02, 2)).toBe(0x1000);
    expect(rd(cfg, 0x08, 4)).toBe(0x02000001);
    // Cache line size and latency timer are writable; header type and BIST are not.
    expect(rd(cfg, 0x0c, 4)).toBe(0x0000ffff);
    expect(rd(cfg, 0x2c, 4)).toBe(0x00011af4);
    // Interrupt line is writable, pin and Min_Gnt/Max_Lat are not.
    expect(rd(cfg, 0x3c, 4)).toBe(0x000001ff);
  });

  it('lets only the defined command bits be written', () => {
    const cfg = new PciConfigSpace(NET);
    wr(cfg, PCI_COMMAND, 2, 0xffff);
    // I/O, memory, bus master, parity error response, SERR# enable, interrupt disable.
    expect(rd(cfg, PCI_COMMAND, 2)).toBe(0x0547);
    expect(cfg.busMaster).toBe(true);
    expect(cfg.intxDisabled).toBe(true);
    wr(cfg, PCI_COMMAND, 2, 0);
    expect(cfg.busMaster).toBe(false);
    expect(cfg.intxDisabled).toBe(false);
  });

  it('clears status error bits written with 1 and ignores the rest', () => {
    const cfg = new PciConfigSpace({ ...NET, status: 0x0200 });
    cfg.set16(PCI_STATUS, 0xf900 | 0x0200);
    cfg.setInterruptStatus(true);
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0xfb08);
    wr(cfg, PCI_STATUS, 2, 0x2000); // received master abort
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0xdb08);
    wr(cfg, PCI_STATUS + 1, 1, 0x01); // byte write: master data parity error
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0xda08);
    wr(cfg, PCI_STATUS, 2, 0x06ff); // no W1C bits in it: DEVSEL and interrupt status stay
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0xda08);
    wr(cfg, PCI_STATUS, 2, 0xffff);
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0x0208);
    cfg.setInterruptStatus(false);
    expect(rd(cfg, PCI_STATUS, 2)).toBe(0x0200);
  });
});

describe('PciConfigSpace BARs', () => {
  it('reads back the size mask after all-ones is written', () => {
    const cfg = new PciConfigSpace(NET);
    cfg.addBar(0, { kind: 'io', size: 32 });
    cfg.addBar(1, { kind: 'mem32', size: 0x1000 });
    cfg.addBar(2, { kind: 'mem64', size: 0x4000, prefetchable: true });
    cfg.addBar(4, { kind: 'mem32', size: 0x100000, prefetchable: true });
    expect([0, 1, 2, 3, 4, 5].map((i) => rd(cfg, PCI_BAR0 + 4 * i, 4))).toEqual([0x1, 0x0, 0xc, 0x0, 0x8, 0x0]);
    for (let i = 0; i < 6; i++) wr(cfg, PCI_BAR0 + 4 * i, 4, 0xffffffff);
    expect(rd(cfg, 0x10, 4)).toBe(0xffffffe1); // 32 I/O ports
    expect(rd(cfg, 0x14, 4)).toBe(0xfffff000); // 4 KiB
    expect(rd(cfg, 0x18, 4)).toBe(0xffffc00c); // 16 KiB, 64-bit, prefetchable
    expect(rd(cfg, 0x1c, 4)).toBe(0xffffffff); // its upper half
    expect(rd(cfg, 0x20, 4)).toBe(0xfff00008); // 1 MiB prefetchable
    expect(rd(cfg, 0x24, 4)).toBe(0x00000000); // not implemented
    // Size = ~(mask & ~flags) + 1
    expect((~(0xffffffe1 & ~0x3) >>> 0) + 1).toBe(32);
  });

  it('sizes a 64-bit BAR larger than 4 GiB across both dwords', () => {
    const cfg = new PciConfigSpace(NET);
    cfg.addBar(0, { kind: 'mem64', size: 2 ** 33, prefetchable: true });
    wr(cfg, 0x10, 4, 0xffffffff);
    wr(cfg, 0x14, 4, 0xffffffff);
    expect(rd(cfg, 0x10, 4)).toBe(0x0000000c);
    expect(rd(cfg, 0x14, 4)).toBe(0xfffffffe);
  });

  it('rejects bad BARs', () => {
    const cfg = new PciConfigSpace(NET);
    expect(() => cfg.addBar(0, { kind: 'mem32', size: 3000 })).toThrow(/not a power of two/);
    expect(() => cfg.addBar(0, { kind: 'io', size: 512 })).toThrow(RangeError);
    expect(() => cfg.addBar(0, { kind: 'mem32', size: 8 })).toThrow(RangeError);
    expect(() => cfg.addBar(5, { kind: 'mem64', size: 0x1000 })).toThrow(/out of range/);
    cfg.addBar(2, { kind: 'mem64', size: 0x1000 });
    expect(() => cfg.addBar(3, { kind: 'io', size: 4 })).toThrow(/already implemented/);
    expect(() => cfg.addBar(2, { kind: 'io', size: 4 })).toThrow(/already implemented/);
    expect(cfg.bar(3)).toBeUndefined();
  });

  it('reports mapping changes from BAR and command writes', () => {
    const seen: [number, number | null][] = [];
    const cfg = new PciConfigSpace(NET, (i, a) => seen.push([i, a]));
    cfg.addBar(0, { kind: 'io', size: 32 });
    cfg.addBar(1, { kind: 'mem32', size: 0x1000 });
    cfg.addBar(2, { kind: 'mem64', size: 0x4000 });

    // Programmed while decoding is off: nothing maps yet.
    wr(cfg, 0x10, 4, 0xc001);
    wr(cfg, 0x14, 4, 0xfebf1000);
    wr(cfg, 0x18, 4, 0x0000c000);
    wr(cfg, 0x1c, 4, 0x00000008);
    expect(seen).toEqual([]);
    expect(cfg.barAddress(0)).toBeNull();

    wr(cfg, PCI_COMMAND, 2, PCI_COMMAND_IO);
    expect(seen).toEqual([[0, 0xc000]]);
    wr(cfg, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    expect(seen.slice(1)).toEqual([[1, 0xfebf1000], [2, 0x8_0000_c000]]);
    expect(cfg.bar(2)).toEqual({ kind: 'mem64', size: 0x4000, prefetchable: false, address: 0x8_0000_c000 });

    seen.length = 0;
    wr(cfg, 0x14, 4, 0xfebf2000); // move
    wr(cfg, 0x14, 4, 0xfebf2000); // same again: no report
    expect(seen).toEqual([[1, 0xfebf2000]]);

    // A size probe with decoding left on unmaps for the probe's duration.
    seen.length = 0;
    wr(cfg, 0x14, 4, 0xffffffff);
    wr(cfg, 0x14, 4, 0xfebf2000);
    wr(cfg, 0x10, 4, 0xffffffff); // I/O probe lands past 0xffff
    wr(cfg, 0x10, 4, 0xc001);
    expect(seen).toEqual([[1, null], [1, 0xfebf2000], [0, null], [0, 0xc000]]);

    // Address 0 means unassigned.
    seen.length = 0;
    wr(cfg, 0x14, 4, 0);
    expect(seen).toEqual([[1, null]]);

    seen.length = 0;
    wr(cfg, PCI_COMMAND, 2, 0);
    expect(seen).toEqual([[0, null], [2, null]]);
  });
});

describe('PciConfigSpace capabilities', () => {
  it('links capabilities from 0x34 and sets status bit 4', () => {
    const cfg = new PciConfigSpace(NET);
    expect(rd(cfg, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST).toBe(0);
    // A device register at 0x40 that capabilities must skip.
    cfg.defineRegister(0x40, 2, 0xbeef);
    const a = cfg.addCapability(0x09, [14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]); // vendor-specific, 16 bytes
    const b = cfg.addCapability(0x05, [0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // MSI, 14 bytes
    const c = cfg.addCapability(0x11, [0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00]); // MSI-X, 12 bytes
    expect([a, b, c]).toEqual([0x44, 0x54, 0x64]);
    expect(rd(cfg, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST).toBe(PCI_STATUS_CAP_LIST);
    expect(rd(cfg, PCI_CAPABILITY_LIST, 1)).toBe(0x44);

    // Walk the list the way a guest does.
    const walk: [number, number][] = [];
    for (let off = rd(cfg, PCI_CAPABILITY_LIST, 1); off !== 0; off = rd(cfg, off + 1, 1) & 0xfc) walk.push([off, rd(cfg, off, 1)]);
    expect(walk).toEqual([[0x44, 0x09], [0x54, 0x05], [0x64, 0x11]]);
    expect(rd(cfg, 0x46, 1)).toBe(14);
    expect(cfg.findCapability(0x11)).toBe(0x64);
    expect(cfg.findCapability(0x10)).toBeUndefined();
    expect(rd(cfg, 0x40, 2)).toBe(0xbeef);
  });

  it('applies a capability write mask and keeps ID and Next read-only', () => {
    const cfg = new PciConfigSpace(NET);
    const off = cfg.addCapability(0x05, [0x80, 0x00, 0, 0], [0x71, 0x00, 0xfc, 0xff]);
    cfg.addCapability(0x09, [4, 0]);
    wr(cfg, off, 4, 0xffffffff);
    expect(rd(cfg, off, 4)).toBe(0x00f14805); // ID 05, next 48h, control 0x80 | 0x71
    wr(cfg, off + 4, 2, 0xffff);
    expect(rd(cfg, off + 4, 2)).toBe(0xfffc);
  });

  it('throws when the capability area is full', () => {
    const cfg = new PciConfigSpace(NET);
    cfg.addCapability(0x09, new Array<number>(190).fill(0));
    expect(() => cfg.addCapability(0x09, new Array<number>(10).fill(0))).toThrow(/no room/);
    expect(() => cfg.defineRegister(0x30, 1, 0)).toThrow(/device-specific/);
  });
});

describe('PciConfigSpace state', () => {
  it('saves and restores through JSON, re-reporting BAR mappings', () => {
    const a = new PciConfigSpace(NET);
    a.addBar(1, { kind: 'mem32', size: 0x1000 });
    wr(a, 0x14, 4, 0xfebf1000);
    wr(a, PCI_COMMAND, 2, 0x0006);
    wr(a, PCI_INTERRUPT_LINE, 1, 11);
    const state = JSON.parse(JSON.stringify(a.save())) as PciConfigState;

    const seen: [number, number | null][] = [];
    const b = new PciConfigSpace(NET, (i, addr) => seen.push([i, addr]));
    b.addBar(1, { kind: 'mem32', size: 0x1000 });
    b.restore(state);
    expect(seen).toEqual([[1, 0xfebf1000]]);
    expect(rd(b, PCI_INTERRUPT_LINE, 1)).toBe(11);
    expect(b.save()).toEqual(state);

    b.reset();
    expect(seen).toEqual([[1, 0xfebf1000], [1, null]]);
    expect(rd(b, 0x14, 4)).toBe(0);
    expect(rd(b, PCI_INTERRUPT_LINE, 1)).toBe(0);
  });

  it('rejects malformed snapshots and snapshots of other functions', () => {
    const cfg = new PciConfigSpace(NET);
    const good = cfg.save();
    expect(() => cfg.restore({ bytes: good.bytes.slice(0, 255) })).toThrow(/256 bytes/);
    expect(() => cfg.restore({ bytes: good.bytes.map((v, i) => (i === 0x3c ? 256 : v)) })).toThrow(/byte 256/);
    const other = new PciConfigSpace({ ...NET, deviceId: 0x1001 }).save();
    expect(() => cfg.restore(other)).toThrow(/1af4:0x1001 does not match/);
  });
});
