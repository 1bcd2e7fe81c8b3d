/**
 * INT 19h (bootstrap loader) and INT 18h (no bootable device), plus the two one-line services
 * INT 11h (equipment list) and INT 12h (conventional memory size).
 * @module
 */
import { SECTOR_SIZE } from './disk-image.js';
import type { DiskServices } from './disk.js';
import type { BiosCall, GuestRam } from './guest.js';
import { Bda, BOOT_SECTOR_ADDRESS } from './layout.js';
import type { Video } from './video.js';

/** The boot signature at the end of a boot sector. */
export const BOOT_SIGNATURE = 0xaa55;

/** What happened at the last boot attempt (for the VMM's summary). */
export type BootResult =
  | { kind: 'booted'; drive: number }
  | { kind: 'no-bootable-device'; tried: { drive: number; reason: string }[] };

export class BootServices {
  /** The last INT 19h outcome; undefined before the first. */
  result: BootResult | undefined;

  constructor(
    private readonly ram: GuestRam,
    private readonly disks: DiskServices,
    private readonly video: Video,
    /** BIOS drive numbers in the order to try. */
    private readonly bootOrder: readonly number[],
  ) {}

  /** INT 19h: load the first bootable drive's sector 0 at 0000:7C00; DL = drive. Returns false if none boots. */
  int19(call: BiosCall): boolean {
    const tried: { drive: number; reason: string }[] = [];
    for (const num of this.bootOrder) {
      const drive = this.disks.drive(num);
      const name = num >= 0x80 ? `Hard Disk 0x${num.toString(16)}` : `Floppy 0x${num.toString(16)}`;
      if (!drive) {
        tried.push({ drive: num, reason: 'no such drive' });
        continue;
      }
      this.video.print(`Booting from ${name}...\r\n`);
      const sector = new Uint8Array(SECTOR_SIZE);
      try {
        if (drive.image.sectors < 1) throw new Error('the disk is empty');
        drive.image.read(0, 1, sector);
      } catch (err) {
        const reason = `cannot read sector 0: ${err instanceof Error ? err.message : String(err)}`;
        this.video.print(`Boot failed: ${reason}\r\n`);
        tried.push({ drive: num, reason });
        continue;
      }
      if ((sector[510]! | (sector[511]! << 8)) !== BOOT_SIGNATURE) {
        this.video.print('Boot failed: not a bootable disk\r\n\r\n');
        tried.push({ drive: num, reason: 'no boot signature (55 AA) at the end of sector 0' });
        continue;
      }
      this.ram.write(BOOT_SECTOR_ADDRESS, sector);
      call.dl = num;
      this.result = { kind: 'booted', drive: num };
      return true;
    }
    this.result = { kind: 'no-bootable-device', tried };
    return false;
  }

  /** INT 18h: nothing to boot; the ROM stub halts after this. */
  int18(): void {
    this.video.print('No bootable device.\r\n');
    if (this.result?.kind !== 'no-bootable-device') this.result = { kind: 'no-bootable-device', tried: [] };
  }

  /** INT 11h: the equipment word. */
  int11(call: BiosCall): void {
    call.ax = this.ram.u16(Bda.equipment);
  }

  /** INT 12h: KiB of conventional memory. */
  int12(call: BiosCall): void {
    call.ax = this.ram.u16(Bda.memoryKb);
  }
}
