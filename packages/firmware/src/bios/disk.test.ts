import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reg, word, dword, byte } from '@kvmts/kvm-core/asm';
import { FileDisk, MemoryDisk } from './disk-image.js';
import { DiskStatus, hardDiskGeometry } from './disk.js';
import { Bda } from './layout.js';
import { CF, testMachine } from './test-harness.js';

const { ax, bx, cx, dx, si, di, es, ds } = reg;

/** A disk whose sector n is filled with the byte n & 0xff. */
function patternDisk(sectors: number): Uint8Array {
  const d = new Uint8Array(sectors * 512);
  for (let s = 0; s < sectors; s++) d.fill(s & 0xff, s * 512, s * 512 + 512);
  return d;
}

describe('hardDiskGeometry', () => {
  it('uses 16 heads × 63 sectors for small disks and 255 × 63 for large ones', () => {
    expect(hardDiskGeometry(2048)).toEqual({ cylinders: 3, heads: 16, sectorsPerTrack: 63 });
    expect(hardDiskGeometry(1024 * 16 * 63)).toEqual({ cylinders: 1024, heads: 16, sectorsPerTrack: 63 });
    expect(hardDiskGeometry(1024 * 16 * 63 + 1)).toEqual({ cylinders: 65, heads: 255, sectorsPerTrack: 63 });
    expect(hardDiskGeometry(100_000_000).cylinders).toBe(1024);
  });
});

describe('INT 13h', () => {
  it('AH=02h reads CHS sectors into ES:BX and AH=08h reports the geometry', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(2048))] });
    try {
      // Cylinder 1, head 2, sector 5 → LBA (1*16+2)*63+4 = 1138.
      let r = m.runCode((a) => a.mov(ax, 0x2000).mov(es, ax).mov(bx, 0x10).mov(ax, 0x0202).mov(cx, 0x0105).mov(dx, 0x0280).int(0x13));
      expect(r.rflags & CF).toBe(0);
      expect(r.rax & 0xffff).toBe(0x0002);
      expect(m.readMemory(0x20010, 1)[0]).toBe(1138 & 0xff);
      expect(m.readMemory(0x20010 + 512, 1)[0]).toBe(1139 & 0xff);
      r = m.runCode((a) => a.mov(ax, 0x0800).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
      expect((r.rcx >> 8) & 0xff).toBe(2); // max cylinder 2
      expect(r.rcx & 0x3f).toBe(63);
      expect((r.rdx >> 8) & 0xff).toBe(15);
      expect(r.rdx & 0xff).toBe(1);
    } finally {
      m.close();
    }
  });

  it('reports errors with CF=1, the AH code and the BDA status', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(100))] });
    try {
      // Sector 0 is invalid in CHS.
      let r = m.runCode((a) => a.mov(ax, 0x0201).mov(cx, 0x0000).mov(dx, 0x0080).mov(bx, 0x2000).int(0x13));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.InvalidFunction);
      // Beyond the end of the image (cylinder 0, head 2 = LBA 126 ≥ 100 sectors).
      r = m.runCode((a) => a.mov(ax, 0x0201).mov(cx, 0x0001).mov(dx, 0x0280).mov(bx, 0x2000).int(0x13));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.SectorNotFound);
      expect(m.readMemory(Bda.diskStatus, 1)[0]).toBe(DiskStatus.SectorNotFound);
      // AH=01h returns the last status.
      r = m.runCode((a) => a.mov(ax, 0x0100).mov(dx, 0x0080).int(0x13));
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.SectorNotFound);
      // An absent drive, and an unknown function.
      r = m.runCode((a) => a.mov(ax, 0x0201).mov(cx, 1).mov(dx, 0x0081).int(0x13));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.NotReady);
      r = m.runCode((a) => a.mov(ax, 0x0000).mov(dx, 0x0000).int(0x13));
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.Timeout);
      r = m.runCode((a) => a.mov(ax, 0x7700).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.InvalidFunction);
      // AH=00h reset succeeds and clears CF.
      r = m.runCode((a) => a.stc().mov(ax, 0x0000).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
    } finally {
      m.close();
    }
  });

  it('AH=15h gives the type and size; absent drives are "no such drive"', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(0x12345 & 0xfff))] });
    try {
      let r = m.runCode((a) => a.mov(ax, 0x1500).mov(dx, 0x0080).int(0x13));
      expect((r.rax >> 8) & 0xff).toBe(3);
      expect(((r.rcx & 0xffff) << 16) | (r.rdx & 0xffff)).toBe(0x345);
      r = m.runCode((a) => a.mov(ax, 0x1500).mov(dx, 0x0082).int(0x13));
      expect(r.rflags & CF).toBe(0);
      expect((r.rax >> 8) & 0xff).toBe(0);
    } finally {
      m.close();
    }
  });

  it('AH=41h/42h/43h/48h: the EDD extensions', () => {
    const data = patternDisk(300);
    const m = testMachine({ hardDisks: [new MemoryDisk(data)] });
    try {
      let r = m.runCode((a) => a.mov(ax, 0x4100).mov(bx, 0x55aa).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
      expect(r.rbx & 0xffff).toBe(0xaa55);
      expect((r.rax >> 8) & 0xff).toBe(0x30);
      expect(r.rcx & 1).toBe(1);
      // Read 3 sectors from LBA 257 to 3000:0000 through a packet at 0000:0600.
      const dap = (a: import('@kvmts/kvm-core/asm').Assembler, count: number, lba: number) =>
        a.mov(byte(0x600), 0x10).mov(byte(0x601), 0).mov(word(0x602), count).mov(word(0x604), 0).mov(word(0x606), 0x3000)
          .mov(dword(0x608), lba).mov(dword(0x60c), 0).mov(si, 0x600);
      r = m.runCode((a) => dap(a, 3, 257).mov(ax, 0x4200).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
      expect([...m.readMemory(0x30000, 1), ...m.readMemory(0x30000 + 1024, 1)]).toEqual([1, 3]);
      // Out of range: CF, AH=04h, and the packet's count says nothing was transferred.
      r = m.runCode((a) => dap(a, 2, 299).mov(ax, 0x4200).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(DiskStatus.SectorNotFound);
      expect(m.readMemory(0x602, 2)[0]).toBe(0);
      // Write 1 sector from 3000:0000 (holding LBA 257's bytes) to LBA 5.
      r = m.runCode((a) => dap(a, 1, 5).mov(ax, 0x4300).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
      expect(data[5 * 512]).toBe(1);
      // Drive parameters, EDD 3.0 size.
      r = m.runCode((a) => a.mov(word(0x700), 0x42).mov(si, 0x700).mov(ax, 0x4800).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
      const p = new DataView(m.readMemory(0x700, 0x42).buffer);
      expect(p.getUint16(0, true)).toBe(0x42);
      expect(p.getUint32(0x10, true)).toBe(300);
      expect(p.getUint16(0x18, true)).toBe(512);
      expect(p.getUint16(0x1e, true)).toBe(0xbedd);
      let sum = 0;
      for (let i = 0x1e; i <= 0x41; i++) sum += p.getUint8(i);
      expect(sum & 0xff).toBe(0);
    } finally {
      m.close();
    }
  });

  it('AH=00h/0Dh/10h/11h succeed and clear the status; AH=01h reports the last status once', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(100))] });
    try {
      for (const fn of [0x00, 0x0d, 0x10, 0x11]) {
        // A failed read first, so each call has a status to clear.
        m.runCode((a) => a.mov(ax, 0x0201).mov(cx, 0).mov(dx, 0x0080).int(0x13));
        expect(m.readMemory(Bda.diskStatus, 1)[0]).toBe(DiskStatus.InvalidFunction);
        const r = m.runCode((a) => a.stc().mov(ax, fn << 8).mov(dx, 0x0080).int(0x13));
        expect([fn, r.rflags & CF, (r.rax >> 8) & 0xff]).toEqual([fn, 0, 0]);
        expect(m.readMemory(Bda.diskStatus, 1)[0]).toBe(0);
      }
      // AH=01h after a success: AH=0, CF=0. After a failure: that code with CF=1, then 0 again.
      let r = m.runCode((a) => a.mov(ax, 0x0100).mov(dx, 0x0080).int(0x13));
      expect([(r.rax >> 8) & 0xff, r.rflags & CF]).toEqual([0, 0]);
      m.runCode((a) => a.mov(ax, 0x7700).mov(dx, 0x0080).int(0x13));
      r = m.runCode((a) => a.mov(ax, 0x0100).mov(dx, 0x0080).int(0x13));
      expect([(r.rax >> 8) & 0xff, r.rflags & CF]).toEqual([DiskStatus.InvalidFunction, CF]);
      r = m.runCode((a) => a.mov(ax, 0x0100).mov(dx, 0x0080).int(0x13));
      expect([(r.rax >> 8) & 0xff, r.rflags & CF]).toEqual([0, 0]);
    } finally {
      m.close();
    }
  });

  it('AH=02h/03h/04h refuse a zero or oversized count and out-of-geometry CHS; AH=04h verifies without transferring', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(2048))] });
    try {
      const chs = (ax_: number, cx_: number, dx_: number) => m.runCode((a) => a.mov(ax, 0x2000).mov(es, ax).mov(bx, 0).mov(ax, ax_).mov(cx, cx_).mov(dx, dx_).int(0x13));
      for (const [what, ax_, cx_, dx_] of [
        ['count 0', 0x0200, 0x0001, 0x0080],
        ['count 129', 0x0281, 0x0001, 0x0080],
        ['sector 64 > 63 per track', 0x0201, 0x0040, 0x0080],
        ['head 16 of 16', 0x0201, 0x0001, 0x1080],
        ['cylinder 3 of 3', 0x0201, 0x0301, 0x0080],
      ] as const) {
        const r = chs(ax_, cx_, dx_);
        expect([what, r.rflags & CF, (r.rax >> 8) & 0xff, r.rax & 0xff]).toEqual([what, CF, DiskStatus.InvalidFunction, 0]);
      }
      m.writeMemory(0x20000, new Uint8Array(512).fill(0xee));
      let r = chs(0x0402, 0x0001, 0x0080); // verify 2 sectors at LBA 0
      expect([r.rflags & CF, (r.rax >> 8) & 0xff, r.rax & 0xff]).toEqual([0, 0, 2]);
      expect(m.readMemory(0x20000, 1)[0]).toBe(0xee); // nothing was read into ES:BX
      r = chs(0x0402, 0x023f, 0x0f80); // the last sector (LBA 3023 > 2047): not found
      expect([r.rflags & CF, (r.rax >> 8) & 0xff, r.rax & 0xff]).toEqual([CF, DiskStatus.SectorNotFound, 0]);
      // AH=08h on an absent hard disk: not ready.
      r = m.runCode((a) => a.mov(ax, 0x0800).mov(dx, 0x0081).int(0x13));
      expect([r.rflags & CF, (r.rax >> 8) & 0xff]).toEqual([CF, DiskStatus.NotReady]);
    } finally {
      m.close();
    }
  });

  it('AH=41h/42h/44h/48h error paths: bad signature, short packets and tables, a 64-bit LBA; AH=44h verifies', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(300))] });
    try {
      let r = m.runCode((a) => a.mov(ax, 0x4100).mov(bx, 0x1234).mov(dx, 0x0080).int(0x13));
      expect([r.rflags & CF, (r.rax >> 8) & 0xff, r.rbx & 0xffff]).toEqual([CF, DiskStatus.InvalidFunction, 0x1234]);
      const packet = (size: number, count: number, lbaLow: number, lbaHigh: number) => (a: import('@kvmts/kvm-core/asm').Assembler) =>
        a.mov(ax, 0).mov(ds, ax).mov(byte(0x600), size).mov(byte(0x601), 0).mov(word(0x602), count).mov(word(0x604), 0).mov(word(0x606), 0x3000)
          .mov(dword(0x608), lbaLow).mov(dword(0x60c), lbaHigh).mov(si, 0x600);
      m.writeMemory(0x30000, new Uint8Array(512).fill(0xee));
      for (const [what, fill, status] of [
        ['packet of 0Fh bytes', packet(0x0f, 1, 0, 0), DiskStatus.InvalidFunction],
        ['LBA above 2^32', packet(0x10, 1, 0, 1), DiskStatus.SectorNotFound],
      ] as const) {
        r = m.runCode((a) => fill(a).mov(ax, 0x4200).mov(dx, 0x0080).int(0x13));
        expect([what, r.rflags & CF, (r.rax >> 8) & 0xff]).toEqual([what, CF, status]);
      }
      expect(m.readMemory(0x30000, 1)[0]).toBe(0xee);
      // AH=44h verify: in range succeeds without a transfer, out of range fails and zeroes the count.
      r = m.runCode((a) => packet(0x10, 4, 10, 0)(a).mov(ax, 0x4400).mov(dx, 0x0080).int(0x13));
      expect([r.rflags & CF, (r.rax >> 8) & 0xff]).toEqual([0, 0]);
      expect(m.readMemory(0x30000, 1)[0]).toBe(0xee);
      r = m.runCode((a) => packet(0x10, 4, 298, 0)(a).mov(ax, 0x4400).mov(dx, 0x0080).int(0x13));
      expect([r.rflags & CF, (r.rax >> 8) & 0xff, m.readMemory(0x602, 1)[0]]).toEqual([CF, DiskStatus.SectorNotFound, 0]);
      // AH=48h: a table under 1Ah bytes is refused; 1Ah bytes gets the EDD 1.x layout only.
      r = m.runCode((a) => a.mov(word(0x700), 0x19).mov(si, 0x700).mov(ax, 0x4800).mov(dx, 0x0080).int(0x13));
      expect([r.rflags & CF, (r.rax >> 8) & 0xff]).toEqual([CF, DiskStatus.InvalidFunction]);
      m.writeMemory(0x700, new Uint8Array(0x42).fill(0xee));
      r = m.runCode((a) => a.mov(word(0x700), 0x1a).mov(si, 0x700).mov(ax, 0x4800).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(0);
      const p = new DataView(m.readMemory(0x700, 0x42).buffer);
      expect(p.getUint16(0, true)).toBe(0x1a);
      expect(p.getUint32(0x10, true)).toBe(300);
      expect(p.getUint8(0x1a)).toBe(0xee); // nothing written past the caller's table
    } finally {
      m.close();
    }
  });

  it('a write to a read-only disk (AH=03h and AH=43h) is write-protected: CF, AH=03h, and the host file is unchanged', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmts-bios-ro-'));
    try {
      const path = join(dir, 'disk.img');
      const original = patternDisk(20);
      writeFileSync(path, original);
      const ro = new FileDisk(path, true);
      const m = testMachine({ hardDisks: [ro] });
      try {
        m.writeMemory(0x20000, new Uint8Array(1024).fill(0x5a));
        let r = m.runCode((a) => a.mov(ax, 0x2000).mov(es, ax).mov(bx, 0).mov(ax, 0x0302).mov(cx, 0x0001).mov(dx, 0x0080).int(0x13));
        expect([r.rflags & CF, (r.rax >> 8) & 0xff, r.rax & 0xff]).toEqual([CF, DiskStatus.WriteProtected, 0]);
        expect(m.readMemory(Bda.diskStatus, 1)[0]).toBe(DiskStatus.WriteProtected);
        r = m.runCode((a) =>
          a.mov(ax, 0).mov(ds, ax).mov(byte(0x600), 0x10).mov(byte(0x601), 0).mov(word(0x602), 2).mov(word(0x604), 0).mov(word(0x606), 0x2000)
            .mov(dword(0x608), 3).mov(dword(0x60c), 0).mov(si, 0x600).mov(ax, 0x4300).mov(dx, 0x0080).int(0x13));
        expect([r.rflags & CF, (r.rax >> 8) & 0xff, m.readMemory(0x602, 1)[0]]).toEqual([CF, DiskStatus.WriteProtected, 0]);
        // Reads still work.
        r = m.runCode((a) => a.mov(ax, 0x2000).mov(es, ax).mov(bx, 0).mov(ax, 0x0201).mov(cx, 0x0005).mov(dx, 0x0080).int(0x13));
        expect([r.rflags & CF, m.readMemory(0x20000, 1)[0]]).toEqual([0, 4]);
      } finally {
        m.close();
        ro.close();
      }
      expect(Buffer.compare(readFileSync(path), Buffer.from(original))).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses buffers outside RAM or in the ROM without crashing', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(patternDisk(10))] });
    try {
      const r = m.runCode((a) => a.mov(ax, 0xf000).mov(es, ax).mov(bx, 0).mov(ax, 0x0201).mov(cx, 1).mov(dx, 0x0080).int(0x13));
      expect(r.rflags & CF).toBe(CF);
      expect(m.readMemory(0xf0000, 1)[0]).not.toBe(0);
      // A flat 64-bit buffer address far outside RAM.
      const r2 = m.runCode((a) =>
        a.mov(ax, 0).mov(ds, ax).mov(byte(0x600), 0x18).mov(word(0x602), 1).mov(word(0x604), 0xffff).mov(word(0x606), 0xffff)
          .mov(dword(0x608), 0).mov(dword(0x60c), 0).mov(dword(0x610), 0xd0000000).mov(dword(0x614), 0)
          .mov(si, 0x600).mov(ax, 0x4200).mov(dx, 0x0080).int(0x13));
      expect(r2.rflags & CF).toBe(CF);
    } finally {
      m.close();
    }
  });

  it('serves disk images in host files, reading and writing them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmts-bios-'));
    try {
      const path = join(dir, 'disk.img');
      writeFileSync(path, patternDisk(20));
      const disk = new FileDisk(path);
      const m = testMachine({ hardDisks: [disk] });
      try {
        const r = m.runCode((a) =>
          a.mov(ax, 0x2000).mov(es, ax).mov(bx, 0).mov(ax, 0x0201).mov(cx, 0x0003).mov(dx, 0x0080).int(0x13) // read LBA 2
            .mov(ax, 0x0301).mov(cx, 0x000a).int(0x13)); // write it to LBA 9
        expect(r.rflags & CF).toBe(0);
      } finally {
        m.close();
        disk.close();
      }
      expect(readFileSync(path)[9 * 512]).toBe(2);
      const ro = new FileDisk(path, true);
      const m2 = testMachine({ hardDisks: [ro] });
      try {
        const r = m2.runCode((a) => a.mov(ax, 0x0301).mov(cx, 0x0001).mov(dx, 0x0080).mov(bx, 0).int(0x13));
        expect((r.rax >> 8) & 0xff).toBe(DiskStatus.WriteProtected);
      } finally {
        m2.close();
        ro.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serves a 1.44 MB diskette as drive 0 with its parameter table', () => {
    const m = testMachine({ floppies: [new MemoryDisk(patternDisk(2880))] });
    try {
      const r = m.runCode((a) => a.mov(ax, 0x0800).mov(dx, 0x0000).int(0x13).mov(ax, es));
      expect(r.rflags & CF).toBe(0);
      expect(r.rcx & 0xffff).toBe((79 << 8) | 18);
      expect(r.rbx & 0xff).toBe(4);
      expect(r.rax & 0xffff).toBe(0xf000);
      expect(r.rdi & 0xffff).toBe(0xefc7);
    } finally {
      m.close();
    }
  });
});
