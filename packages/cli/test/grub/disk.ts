// Disk images that boot GRUB 2 (i386-pc), built in memory the way grub-install lays a disk out,
// with no loop mounts and no grub-bios-setup: the MBR is GRUB's boot.img with the fields
// grub-bios-setup patches, core.img (from grub-mkimage) follows in the gap before the first
// partition, and the partition holds a ustar archive, which GRUB's `tar` module reads as a
// filesystem. Offsets are those of GRUB's boot.S/diskboot.S for i386-pc.

export const SECTOR_SIZE = 512;
/** Where the first partition starts, as partitioning tools align it (1 MiB). */
export const FIRST_PARTITION_LBA = 2048;
/** The sector that holds the first sector of core.img (diskboot.img), as grub-install puts it. */
export const CORE_LBA = 1;

/** Fields of GRUB's boot.img (boot.S). */
const BootImg = {
  /** 64-bit LBA of core.img's first sector. */
  kernelSector: 0x5c,
  /** Drive to load core.img from; 0xFF means "the drive the BIOS passed in DL". */
  bootDrive: 0x64,
  /** A 2-byte `jmp` over the check that forces a floppy number in DL to 0x80. */
  driveCheck: 0x66,
  /** Disk signature (4 bytes) and 2 reserved bytes, kept from the disk, as Windows NT wants. */
  ntMagic: 0x1b8,
  partitionTable: 0x1be,
  signature: 0x1fe,
} as const;

/** diskboot.img's last blocklist entry (12 bytes before the end of its sector): where the rest of core.img is. */
const DiskbootBlocklist = {
  start: SECTOR_SIZE - 12, // 64-bit LBA
  length: SECTOR_SIZE - 4, // sectors, 16-bit
  segment: SECTOR_SIZE - 2, // load segment, 16-bit
} as const;
/** diskboot.img loads the rest of core.img at 0820:0000 (just after itself at 0x8000). */
const CORE_LOAD_SEGMENT = 0x0820;

export interface MbrPartition {
  /** Partition type byte (0x83: Linux). */
  type: number;
  startLba: number;
  sectors: number;
  bootable?: boolean;
}

/**
 * The CHS address of `lba` for an MBR entry, in the geometry kvmts's BIOS reports (16 heads,
 * 63 sectors while that reaches the disk, else 255 heads); past cylinder 1023 the conventional
 * "use LBA" value FE FF FF.
 */
export function chsBytes(lba: number, diskSectors: number): [number, number, number] {
  const sectorsPerTrack = 63;
  const heads = diskSectors <= 1024 * 16 * 63 ? 16 : 255;
  const cylinder = Math.floor(lba / (heads * sectorsPerTrack));
  if (cylinder > 1023) return [0xfe, 0xff, 0xff];
  const head = Math.floor(lba / sectorsPerTrack) % heads;
  const sector = (lba % sectorsPerTrack) + 1;
  return [head, ((cylinder >> 2) & 0xc0) | sector, cylinder & 0xff];
}

/**
 * GRUB's MBR: boot.img's code with the fields grub-bios-setup patches for a hard disk (core.img
 * at `coreLba`, the BIOS's boot drive, the floppy check disabled), the partition table and the
 * 55 AA signature.
 */
export function grubBootSector(bootImg: Uint8Array, partitions: readonly MbrPartition[], diskSectors: number, coreLba = CORE_LBA): Uint8Array {
  if (bootImg.length !== SECTOR_SIZE) throw new Error(`boot.img is ${bootImg.length} bytes, not ${SECTOR_SIZE}`);
  if (partitions.length > 4) throw new Error(`an MBR holds 4 partitions, not ${partitions.length}`);
  const mbr = new Uint8Array(SECTOR_SIZE);
  mbr.set(bootImg.subarray(0, BootImg.ntMagic));
  const view = new DataView(mbr.buffer);
  view.setBigUint64(BootImg.kernelSector, BigInt(coreLba), true);
  mbr[BootImg.bootDrive] = 0xff;
  // grub-bios-setup replaces the jump with two NOPs on hard disks: then a DL without bit 7 (a
  // BIOS passing a floppy number for a hard disk) is taken as 0x80.
  mbr[BootImg.driveCheck] = 0x90;
  mbr[BootImg.driveCheck + 1] = 0x90;
  partitions.forEach((p, i) => {
    const entry = BootImg.partitionTable + 16 * i;
    const end = p.startLba + p.sectors - 1;
    mbr[entry] = p.bootable ? 0x80 : 0x00;
    mbr.set(chsBytes(p.startLba, diskSectors), entry + 1);
    mbr[entry + 4] = p.type;
    mbr.set(chsBytes(end, diskSectors), entry + 5);
    view.setUint32(entry + 8, p.startLba, true);
    view.setUint32(entry + 12, p.sectors, true);
  });
  mbr[BootImg.signature] = 0x55;
  mbr[BootImg.signature + 1] = 0xaa;
  return mbr;
}

/** A copy of core.img whose diskboot blocklist says the rest of it follows at `coreLba + 1`. */
export function placeCoreImage(coreImg: Uint8Array, coreLba = CORE_LBA): Uint8Array {
  const sectors = Math.ceil(coreImg.length / SECTOR_SIZE);
  if (sectors < 2) throw new Error(`core.img is ${coreImg.length} bytes: too small to be one`);
  const core = new Uint8Array(sectors * SECTOR_SIZE);
  core.set(coreImg);
  const view = new DataView(core.buffer);
  view.setBigUint64(DiskbootBlocklist.start, BigInt(coreLba + 1), true);
  view.setUint16(DiskbootBlocklist.length, sectors - 1, true);
  view.setUint16(DiskbootBlocklist.segment, CORE_LOAD_SEGMENT, true);
  return core;
}

export interface GrubDiskInput {
  bootImg: Uint8Array;
  coreImg: Uint8Array;
  /** The first (and only) partition's contents; it starts at FIRST_PARTITION_LBA. */
  partition: Uint8Array;
  partitionType?: number;
}

/** A whole disk image: GRUB's MBR, core.img from sector 1, one partition at 1 MiB. */
export function grubDisk({ bootImg, coreImg, partition, partitionType = 0x83 }: GrubDiskInput): Uint8Array {
  const core = placeCoreImage(coreImg);
  if (CORE_LBA + core.length / SECTOR_SIZE > FIRST_PARTITION_LBA) {
    throw new Error(`core.img (${core.length} bytes) does not fit before the first partition at sector ${FIRST_PARTITION_LBA}`);
  }
  const partitionSectors = Math.max(1, Math.ceil(partition.length / SECTOR_SIZE));
  const diskSectors = FIRST_PARTITION_LBA + partitionSectors;
  const disk = new Uint8Array(diskSectors * SECTOR_SIZE);
  disk.set(grubBootSector(bootImg, [{ type: partitionType, startLba: FIRST_PARTITION_LBA, sectors: partitionSectors, bootable: true }], diskSectors));
  disk.set(core, CORE_LBA * SECTOR_SIZE);
  disk.set(partition, FIRST_PARTITION_LBA * SECTOR_SIZE);
  return disk;
}

export interface UstarFile {
  /** Up to 100 bytes, no directories needed (GRUB finds "/name" in the archive's root). */
  name: string;
  data: Uint8Array;
}

const octal = (value: number, digits: number): string => value.toString(8).padStart(digits, '0');

/** A POSIX ustar archive of regular files (mode 0644, owner root, time 0), ended by two zero blocks. */
export function ustar(files: readonly UstarFile[]): Uint8Array {
  const enc = new TextEncoder();
  const size = files.reduce((n, f) => n + SECTOR_SIZE + Math.ceil(f.data.length / SECTOR_SIZE) * SECTOR_SIZE, 2 * SECTOR_SIZE);
  const out = new Uint8Array(size);
  let at = 0;
  for (const f of files) {
    const name = enc.encode(f.name);
    if (name.length === 0 || name.length > 100) throw new Error(`tar member name '${f.name}' must be 1..100 bytes`);
    if (f.data.length >= 8 ** 11) throw new Error(`tar member '${f.name}' is too large for a ustar header`);
    const header = out.subarray(at, at + SECTOR_SIZE);
    const put = (text: string, offset: number): void => header.set(enc.encode(text), offset);
    header.set(name, 0);
    put(`${octal(0o644, 7)}\0`, 100);
    put(`${octal(0, 7)}\0`, 108); // uid
    put(`${octal(0, 7)}\0`, 116); // gid
    put(`${octal(f.data.length, 11)}\0`, 124);
    put(`${octal(0, 11)}\0`, 136); // mtime
    put('        ', 148); // checksum, counted as spaces
    put('0', 156); // regular file
    put('ustar\x0000', 257);
    put('root', 265);
    put('root', 297);
    const sum = header.reduce((a, b) => a + b, 0);
    put(`${octal(sum, 6)}\0 `, 148);
    out.set(f.data, at + SECTOR_SIZE);
    at += SECTOR_SIZE + Math.ceil(f.data.length / SECTOR_SIZE) * SECTOR_SIZE;
  }
  return out;
}
