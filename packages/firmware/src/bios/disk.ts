/**
 * INT 13h, disk services for hard disks (0x80, 0x81, ...) and diskettes (0x00, 0x01), backed
 * by {@link DiskImage}s: CHS reads and writes with a geometry derived from the size as SeaBIOS
 * does (LBA translation), and the IBM/Phoenix EDD extensions (41h–44h, 48h). Errors set CF and
 * AH to the classic status codes; the last hard-disk status is kept in the BDA at 0x474.
 * @module
 */
import { GuestFault, type BiosCall, type GuestRam } from './guest.js';
import { SECTOR_SIZE, type DiskImage } from './disk-image.js';
import { Bda, BIOS_ROM_SEGMENT, RomEntry } from './layout.js';

/** INT 13h status codes (AH). */
export const DiskStatus = {
  Ok: 0x00,
  InvalidFunction: 0x01,
  WriteProtected: 0x03,
  SectorNotFound: 0x04,
  ControllerFailure: 0x20,
  Timeout: 0x80,
  NotReady: 0xaa,
} as const;

/** A logical (BIOS) geometry. */
export interface DiskGeometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The 1024-cylinder limit of the INT 13h CHS interface. */
const MAX_CHS_CYLINDERS = 1024;

/**
 * The BIOS geometry of a hard disk of `sectors` sectors: 16 heads × 63 sectors while that
 * reaches the whole disk within 1024 cylinders, else 255 × 63 (LBA-assisted translation).
 */
export function hardDiskGeometry(sectors: number): DiskGeometry {
  const sectorsPerTrack = 63;
  const heads = sectors <= MAX_CHS_CYLINDERS * 16 * sectorsPerTrack ? 16 : 255;
  const cylinders = Math.max(1, Math.min(MAX_CHS_CYLINDERS, Math.ceil(sectors / (heads * sectorsPerTrack))));
  return { cylinders, heads, sectorsPerTrack };
}

/** Standard diskette geometries by size in sectors, and their CMOS drive type. */
const FLOPPY_FORMATS: readonly { sectors: number; geometry: DiskGeometry; type: number }[] = [
  { sectors: 720, geometry: { cylinders: 40, heads: 2, sectorsPerTrack: 9 }, type: 1 },
  { sectors: 1440, geometry: { cylinders: 80, heads: 2, sectorsPerTrack: 9 }, type: 3 },
  { sectors: 2400, geometry: { cylinders: 80, heads: 2, sectorsPerTrack: 15 }, type: 2 },
  { sectors: 2880, geometry: { cylinders: 80, heads: 2, sectorsPerTrack: 18 }, type: 4 },
  { sectors: 5760, geometry: { cylinders: 80, heads: 2, sectorsPerTrack: 36 }, type: 5 },
];

function floppyFormat(sectors: number): { geometry: DiskGeometry; type: number } {
  return FLOPPY_FORMATS.find((f) => sectors <= f.sectors) ?? FLOPPY_FORMATS[FLOPPY_FORMATS.length - 1]!;
}

/** A disk as INT 13h serves it. */
export interface BiosDrive {
  image: DiskImage;
  geometry: DiskGeometry;
}

const isHardDisk = (drive: number): boolean => drive >= 0x80;

export class DiskServices {
  private readonly drives = new Map<number, BiosDrive>();
  private floppyStatus = 0;

  /** `disks`: BIOS drive number (0x00.., 0x80..) → image. */
  constructor(private readonly ram: GuestRam, disks: ReadonlyMap<number, DiskImage>) {
    for (const [num, image] of disks) {
      const geometry = isHardDisk(num) ? hardDiskGeometry(image.sectors) : floppyFormat(image.sectors).geometry;
      this.drives.set(num, { image, geometry });
    }
  }

  drive(num: number): BiosDrive | undefined {
    return this.drives.get(num);
  }

  get hardDiskCount(): number {
    return [...this.drives.keys()].filter(isHardDisk).length;
  }

  get floppyCount(): number {
    return [...this.drives.keys()].filter((d) => !isHardDisk(d)).length;
  }

  /** Reads `count` sectors from `lba` of a drive into guest memory at `gpa`; returns a status. */
  transfer(drive: BiosDrive, write: boolean, lba: number, count: number, gpa: number): number {
    if (count === 0) return DiskStatus.Ok;
    if (lba < 0 || lba + count > drive.image.sectors) return DiskStatus.SectorNotFound;
    if (write && drive.image.readOnly) return DiskStatus.WriteProtected;
    const len = count * SECTOR_SIZE;
    if (write) {
      const data = this.ram.read(gpa, len);
      drive.image.write(lba, count, data);
    } else {
      if (!this.ram.isWritable(gpa, len)) throw new GuestFault(`buffer 0x${gpa.toString(16)}+${len} is not writable RAM`);
      const data = new Uint8Array(len);
      drive.image.read(lba, count, data);
      this.ram.write(gpa, data);
    }
    return DiskStatus.Ok;
  }

  private setStatus(drive: number, status: number): void {
    if (isHardDisk(drive)) {
      this.ram.setU8(Bda.diskStatus, status);
    } else {
      this.floppyStatus = status;
      this.ram.setU8(Bda.floppyStatus, status);
    }
  }

  private lastStatus(drive: number): number {
    return isHardDisk(drive) ? this.ram.u8(Bda.diskStatus) : this.floppyStatus;
  }

  /** Ends the call with `status`: CF and AH, and the BDA's last status. */
  private finish(call: BiosCall, status: number): void {
    this.setStatus(call.dl, status);
    call.ah = status;
    call.carry = status !== DiskStatus.Ok;
  }

  /** INT 13h (and INT 40h). */
  int13(call: BiosCall): void {
    try {
      this.dispatch(call);
    } catch (err) {
      // A bad buffer address, or the host file failing: report it, never crash the VMM.
      if (err instanceof GuestFault) this.finish(call, DiskStatus.InvalidFunction);
      else if (err instanceof Error && 'code' in err) this.finish(call, DiskStatus.ControllerFailure);
      else throw err;
    }
  }

  private dispatch(call: BiosCall): void {
    const fn = call.ah;
    const num = call.dl;
    if (fn === 0x01) {
      // Status of the last operation: AH = that status; this call itself succeeds.
      const last = this.lastStatus(num);
      this.setStatus(num, 0);
      call.ah = last;
      call.carry = last !== 0;
      return;
    }
    const drive = this.drives.get(num);
    if (fn === 0x15 && !drive) {
      // "No such drive" is an answer, not an error.
      call.ah = 0;
      call.carry = false;
      return;
    }
    if (!drive) {
      // No such drive: a diskette drive times out, a hard disk is "not ready".
      this.finish(call, isHardDisk(num) ? DiskStatus.NotReady : DiskStatus.Timeout);
      return;
    }
    const g = drive.geometry;
    switch (fn) {
      case 0x00: // reset
      case 0x0d: // alternate reset
      case 0x10: // test drive ready
      case 0x11: // recalibrate
        this.finish(call, DiskStatus.Ok);
        return;
      case 0x02:
      case 0x03:
      case 0x04: {
        const count = call.al;
        const sector = call.cl & 0x3f;
        const cylinder = call.ch | ((call.cl & 0xc0) << 2);
        const head = call.dh;
        if (count === 0 || count > 128 || sector === 0 || sector > g.sectorsPerTrack || head >= g.heads || cylinder >= g.cylinders) {
          call.al = 0;
          this.finish(call, DiskStatus.InvalidFunction);
          return;
        }
        const lba = (cylinder * g.heads + head) * g.sectorsPerTrack + sector - 1;
        let status: number;
        if (fn === 0x04) status = lba + count <= drive.image.sectors ? DiskStatus.Ok : DiskStatus.SectorNotFound;
        else status = this.transfer(drive, fn === 0x03, lba, count, call.linear('es', call.bx));
        call.al = status === DiskStatus.Ok ? count : 0;
        this.finish(call, status);
        return;
      }
      case 0x08: {
        const maxCyl = g.cylinders - 1;
        call.ch = maxCyl & 0xff;
        call.cl = (g.sectorsPerTrack & 0x3f) | ((maxCyl >> 2) & 0xc0);
        call.dh = g.heads - 1;
        if (isHardDisk(num)) {
          call.dl = this.hardDiskCount;
          call.ax = 0;
        } else {
          call.dl = this.floppyCount;
          call.bl = floppyFormat(drive.image.sectors).type;
          call.ax = 0;
          // ES:DI → the diskette parameter table in the ROM.
          call.setSegment('es', BIOS_ROM_SEGMENT);
          call.regs.rdi = ((call.regs.rdi & ~0xffff) | RomEntry.diskettePrams) >>> 0;
        }
        this.finish(call, DiskStatus.Ok);
        return;
      }
      case 0x15:
        if (isHardDisk(num)) {
          // Fixed disk: CX:DX = number of sectors.
          const n = Math.min(drive.image.sectors, 0xffffffff);
          call.cx = n >>> 16;
          call.dx = n & 0xffff;
          call.ah = 0x03;
        } else {
          call.ah = 0x01; // diskette, no change-line support
        }
        call.carry = false;
        this.setStatus(num, 0);
        return;
      case 0x41:
        if (call.bx !== 0x55aa) {
          this.finish(call, DiskStatus.InvalidFunction);
          return;
        }
        call.bx = 0xaa55;
        call.ah = 0x30; // EDD 3.0
        call.cx = 0x0005; // fixed-disk access (42h–44h, 47h, 48h) and EDD (48h)
        call.carry = false;
        return;
      case 0x42:
      case 0x43:
      case 0x44:
        this.extendedTransfer(call, drive, fn);
        return;
      case 0x48:
        this.driveParameters(call, drive);
        return;
      default:
        this.finish(call, DiskStatus.InvalidFunction);
    }
  }

  /** AH=42h/43h/44h: the disk address packet at DS:SI. */
  private extendedTransfer(call: BiosCall, drive: BiosDrive, fn: number): void {
    const dap = call.linear('ds', call.si);
    const size = this.ram.u8(dap);
    if (size < 0x10) {
      this.finish(call, DiskStatus.InvalidFunction);
      return;
    }
    const count = this.ram.u16(dap + 2);
    const offset = this.ram.u16(dap + 4);
    const segment = this.ram.u16(dap + 6);
    const lbaLow = this.ram.u32(dap + 8);
    const lbaHigh = this.ram.u32(dap + 12);
    let gpa = segment * 16 + offset;
    if (segment === 0xffff && offset === 0xffff) {
      // EDD 3.0: a 64-bit flat buffer address follows, in packets of 18h bytes.
      if (size < 0x18 || this.ram.u32(dap + 0x14) !== 0) {
        this.finish(call, DiskStatus.InvalidFunction);
        return;
      }
      gpa = this.ram.u32(dap + 0x10);
    }
    if (lbaHigh !== 0 || lbaLow + count > drive.image.sectors) {
      this.ram.setU16(dap + 2, 0);
      this.finish(call, DiskStatus.SectorNotFound);
      return;
    }
    const status = fn === 0x44 ? DiskStatus.Ok : this.transfer(drive, fn === 0x43, lbaLow, count, gpa);
    if (status !== DiskStatus.Ok) this.ram.setU16(dap + 2, 0);
    this.finish(call, status);
  }

  /** AH=48h: drive parameters at DS:SI (EDD 1.x, 2.x or 3.0 layout by the buffer size). */
  private driveParameters(call: BiosCall, drive: BiosDrive): void {
    const at = call.linear('ds', call.si);
    const size = this.ram.u16(at);
    if (size < 0x1a) {
      this.finish(call, DiskStatus.InvalidFunction);
      return;
    }
    const g = drive.geometry;
    const sectors = drive.image.sectors;
    const out = new Uint8Array(0x42);
    const v = new DataView(out.buffer);
    const chsValid = sectors <= 15_482_880;
    v.setUint16(0x02, chsValid ? 0x0002 : 0x0000, true);
    v.setUint32(0x04, g.cylinders, true);
    v.setUint32(0x08, g.heads, true);
    v.setUint32(0x0c, g.sectorsPerTrack, true);
    v.setUint32(0x10, sectors % 0x1_0000_0000, true);
    v.setUint32(0x14, Math.floor(sectors / 0x1_0000_0000), true);
    v.setUint16(0x18, SECTOR_SIZE, true);
    let length = 0x1a;
    if (size >= 0x1e) {
      v.setUint32(0x1a, 0xffffffff, true); // no device parameter table extension
      length = 0x1e;
    }
    if (size >= 0x42) {
      // EDD 3.0 device path: an ATA disk on the PIIX3's IDE function (00:01.1), primary channel.
      v.setUint16(0x1e, 0xbedd, true);
      out[0x20] = 0x24;
      out.set(new TextEncoder().encode('PCI '), 0x24);
      out.set(new TextEncoder().encode('ATA     '), 0x28);
      out[0x30] = 0; // bus
      out[0x31] = 1; // slot
      out[0x32] = 1; // function
      out[0x38] = (call.dl - 0x80) & 1; // master/slave
      let sum = 0;
      for (let i = 0x1e; i <= 0x40; i++) sum += out[i]!;
      out[0x41] = -sum & 0xff;
      length = 0x42;
    }
    v.setUint16(0, length, true);
    this.ram.write(at, out.subarray(0, length));
    this.finish(call, DiskStatus.Ok);
  }
}
