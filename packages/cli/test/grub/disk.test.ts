import { describe, expect, it } from 'vitest';
import { CORE_LBA, FIRST_PARTITION_LBA, SECTOR_SIZE, chsBytes, grubBootSector, grubDisk, placeCoreImage, ustar } from './disk.js';

/** A stand-in boot.img: every byte 0xCC, so the patched fields show. */
const fakeBootImg = (): Uint8Array => new Uint8Array(SECTOR_SIZE).fill(0xcc);
const u16 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint16(at, true);
const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at, true);

describe('GRUB disk layout', () => {
  it("patches boot.img's fields as grub-bios-setup does and writes the partition table", () => {
    const mbr = grubBootSector(fakeBootImg(), [{ type: 0x83, startLba: 2048, sectors: 4096, bootable: true }], 6144);
    expect(mbr[0]).toBe(0xcc); // the code is kept
    expect([...mbr.subarray(0x5c, 0x64)]).toEqual([1, 0, 0, 0, 0, 0, 0, 0]); // core.img at sector 1
    expect(mbr[0x64]).toBe(0xff); // boot drive from DL
    expect([...mbr.subarray(0x66, 0x68)]).toEqual([0x90, 0x90]);
    expect([...mbr.subarray(0x1b8, 0x1be)]).toEqual([0, 0, 0, 0, 0, 0]); // no disk signature
    const entry = mbr.subarray(0x1be, 0x1ce);
    expect(entry[0]).toBe(0x80);
    expect(entry[4]).toBe(0x83);
    expect(u32(entry, 8)).toBe(2048);
    expect(u32(entry, 12)).toBe(4096);
    // LBA 2048 with 16 heads x 63 sectors: cylinder 2, head 0, sector 33.
    expect([...entry.subarray(1, 4)]).toEqual([0, 33, 2]);
    expect([...mbr.subarray(0x1ce, 0x1fe)].every((b) => b === 0)).toBe(true);
    expect([mbr[510], mbr[511]]).toEqual([0x55, 0xaa]);
  });

  it('gives CHS in the BIOS geometry, and FE FF FF past cylinder 1023', () => {
    expect(chsBytes(0, 100)).toEqual([0, 1, 0]);
    expect(chsBytes(63, 100)).toEqual([1, 1, 0]);
    // Cylinder 300 puts its high bits in the sector byte's top two bits.
    expect(chsBytes(300 * 16 * 63 + 5, 1024 * 16 * 63)).toEqual([0, 0x40 | 6, 300 & 0xff]);
    expect(chsBytes(1024 * 255 * 63, 2 * 1024 * 255 * 63)).toEqual([0xfe, 0xff, 0xff]);
  });

  it("points diskboot's blocklist at the rest of core.img and pads it to whole sectors", () => {
    const core = placeCoreImage(new Uint8Array(3 * SECTOR_SIZE + 7), 5);
    expect(core.length).toBe(4 * SECTOR_SIZE);
    expect(u32(core, 0x1f4)).toBe(6);
    expect(u16(core, 0x1fc)).toBe(3);
    expect(u16(core, 0x1fe)).toBe(0x0820);
  });

  it('lays out MBR, core.img and the partition, and refuses a core.img that reaches the partition', () => {
    const core = new Uint8Array(2 * SECTOR_SIZE).fill(0x11);
    const disk = grubDisk({ bootImg: fakeBootImg(), coreImg: core, partition: new Uint8Array(1000).fill(0x22) });
    expect(disk.length).toBe((FIRST_PARTITION_LBA + 2) * SECTOR_SIZE);
    expect(disk[CORE_LBA * SECTOR_SIZE]).toBe(0x11);
    expect(disk[FIRST_PARTITION_LBA * SECTOR_SIZE]).toBe(0x22);
    expect(u32(disk, 0x1be + 12)).toBe(2);
    expect(() => grubDisk({ bootImg: fakeBootImg(), coreImg: new Uint8Array(FIRST_PARTITION_LBA * SECTOR_SIZE), partition: new Uint8Array(1) })).toThrow(
      /does not fit before the first partition/,
    );
  });

  it('writes ustar headers with valid checksums and data padded to blocks', () => {
    const data = new TextEncoder().encode('hello from the tar partition\n');
    const archive = ustar([{ name: 'greeting.txt', data }, { name: 'empty', data: new Uint8Array(0) }]);
    expect(archive.length).toBe(512 + 512 + 512 + 1024);
    const header = archive.subarray(0, 512);
    const text = (from: number, to: number): string => new TextDecoder().decode(header.subarray(from, to)).replace(/\0.*$/s, '');
    expect(text(0, 100)).toBe('greeting.txt');
    expect(parseInt(text(124, 136), 8)).toBe(data.length);
    expect(text(257, 263)).toBe('ustar');
    const stored = parseInt(text(148, 154), 8);
    const blanked = Uint8Array.from(header);
    blanked.fill(0x20, 148, 156);
    expect(stored).toBe(blanked.reduce((a, b) => a + b, 0));
    expect(new TextDecoder().decode(archive.subarray(512, 512 + data.length))).toBe('hello from the tar partition\n');
    expect(archive[1024]).toBe('e'.charCodeAt(0));
    expect([...archive.subarray(archive.length - 1024)].every((b) => b === 0)).toBe(true);
  });
});
