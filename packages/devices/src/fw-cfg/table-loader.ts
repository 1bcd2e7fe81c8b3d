/**
 * The fw_cfg "linker/loader" script (`etc/table-loader`), by which QEMU hands firmware ACPI
 * tables that the firmware places itself: each 128-byte command tells it to allocate a fw_cfg
 * file in a memory zone, to add the address where one file landed to a pointer field inside
 * another (the field holds an offset into the target file), or to fix up a checksum byte.
 * SeaBIOS and OVMF run it at POST.
 * @module
 */

import { FW_CFG_MAX_FILE_PATH } from './fw-cfg.js';

/** Where ALLOCATE puts a file: anywhere in high memory, or in the 0xE0000–0xFFFFF segment (for the RSDP). */
export const LoaderZone = { high: 1, fseg: 2 } as const;
export type LoaderZone = (typeof LoaderZone)[keyof typeof LoaderZone];

const COMMAND_SIZE = 128;
const Command = { allocate: 1, addPointer: 2, addChecksum: 3 } as const;

/** Builds an `etc/table-loader` script. */
export class TableLoader {
  private readonly commands: Uint8Array[] = [];

  private command(kind: number): { bytes: Uint8Array; view: DataView; name: (at: number, file: string) => void } {
    const bytes = new Uint8Array(COMMAND_SIZE);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, kind, true);
    this.commands.push(bytes);
    const name = (at: number, file: string): void => {
      const encoded = new TextEncoder().encode(file);
      if (encoded.length === 0 || encoded.length >= FW_CFG_MAX_FILE_PATH) throw new RangeError(`table-loader: file name '${file}' must be 1..${FW_CFG_MAX_FILE_PATH - 1} bytes`);
      bytes.set(encoded, at);
    };
    return { bytes, view, name };
  }

  /** Load `file` into memory of `zone`, aligned to `align` bytes (a power of two). */
  allocate(file: string, align: number, zone: LoaderZone): this {
    if (!Number.isInteger(align) || align <= 0 || (align & (align - 1)) !== 0) throw new RangeError(`table-loader: alignment ${align} is not a power of two`);
    const c = this.command(Command.allocate);
    c.name(4, file);
    c.view.setUint32(4 + FW_CFG_MAX_FILE_PATH, align, true);
    c.bytes[4 + FW_CFG_MAX_FILE_PATH + 4] = zone;
    return this;
  }

  /** Add the address where `srcFile` was loaded to the `size`-byte little-endian field at `offset` in `destFile`. */
  addPointer(destFile: string, srcFile: string, offset: number, size: 1 | 2 | 4 | 8): this {
    const c = this.command(Command.addPointer);
    c.name(4, destFile);
    c.name(4 + FW_CFG_MAX_FILE_PATH, srcFile);
    c.view.setUint32(4 + 2 * FW_CFG_MAX_FILE_PATH, offset, true);
    c.bytes[4 + 2 * FW_CFG_MAX_FILE_PATH + 4] = size;
    return this;
  }

  /** Adjust the byte at `offset` in `file` so that the bytes [start, start + length) sum to 0 (mod 256). */
  addChecksum(file: string, offset: number, start: number, length: number): this {
    const c = this.command(Command.addChecksum);
    c.name(4, file);
    c.view.setUint32(4 + FW_CFG_MAX_FILE_PATH, offset, true);
    c.view.setUint32(4 + FW_CFG_MAX_FILE_PATH + 4, start, true);
    c.view.setUint32(4 + FW_CFG_MAX_FILE_PATH + 8, length, true);
    return this;
  }

  /** The script: the commands in the order they were given. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.commands.length * COMMAND_SIZE);
    this.commands.forEach((c, i) => out.set(c, i * COMMAND_SIZE));
    return out;
  }
}
