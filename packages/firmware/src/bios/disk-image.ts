/**
 * Disk images for the BIOS: 512-byte sectors on a host file (synchronous reads and writes: the
 * vCPU waits for the BIOS anyway) or in memory (for tests).
 * @module
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';

export const SECTOR_SIZE = 512;

/** A block device the BIOS can boot from and serve through INT 13h. */
export interface DiskImage {
  /** Number of 512-byte sectors (a partial last sector counts, read back zero-padded). */
  readonly sectors: number;
  readonly readOnly: boolean;
  /** Reads sectors [lba, lba+count) into `dst` (count*512 bytes). */
  read(lba: number, count: number, dst: Uint8Array): void;
  /** Writes sectors [lba, lba+count) from `src`. */
  write(lba: number, count: number, src: Uint8Array): void;
  close?(): void;
}

/** A disk image held in memory. */
export class MemoryDisk implements DiskImage {
  readonly sectors: number;
  constructor(readonly data: Uint8Array, readonly readOnly = false) {
    this.sectors = Math.ceil(data.length / SECTOR_SIZE);
  }

  read(lba: number, count: number, dst: Uint8Array): void {
    const start = lba * SECTOR_SIZE;
    const len = count * SECTOR_SIZE;
    dst.fill(0, 0, len);
    dst.set(this.data.subarray(start, Math.min(start + len, this.data.length)));
  }

  write(lba: number, count: number, src: Uint8Array): void {
    const start = lba * SECTOR_SIZE;
    const len = Math.min(count * SECTOR_SIZE, this.data.length - start);
    if (len > 0) this.data.set(src.subarray(0, len), start);
  }
}

/** A disk image in a host file, opened read-write unless `readOnly`. */
export class FileDisk implements DiskImage {
  readonly sectors: number;
  private readonly fd: number;
  private readonly size: number;

  constructor(readonly path: string, readonly readOnly = false) {
    this.fd = openSync(path, readOnly ? 'r' : 'r+');
    try {
      const st = fstatSync(this.fd);
      if (!st.isFile()) throw new Error(`'${path}' is not a regular file`);
      this.size = st.size;
    } catch (err) {
      closeSync(this.fd);
      throw err;
    }
    this.sectors = Math.ceil(this.size / SECTOR_SIZE);
  }

  read(lba: number, count: number, dst: Uint8Array): void {
    const len = count * SECTOR_SIZE;
    dst.fill(0, 0, len);
    let done = 0;
    const start = lba * SECTOR_SIZE;
    while (done < len && start + done < this.size) {
      const n = readSync(this.fd, dst, done, len - done, start + done);
      if (n === 0) break;
      done += n;
    }
  }

  write(lba: number, count: number, src: Uint8Array): void {
    if (this.readOnly) throw new Error(`'${this.path}' is read-only`);
    const start = lba * SECTOR_SIZE;
    // Keep the file's size: a partial last sector is written only up to the end of the file.
    const len = Math.min(count * SECTOR_SIZE, this.size - start);
    let done = 0;
    while (done < len) done += writeSync(this.fd, src, done, len - done, start + done);
  }

  close(): void {
    closeSync(this.fd);
  }
}
