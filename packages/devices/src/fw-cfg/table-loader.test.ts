import { describe, expect, it } from 'vitest';
import { LoaderZone, TableLoader } from './table-loader.js';

const text = (b: Uint8Array): string => new TextDecoder().decode(b).replace(/\0+$/, '');

describe('etc/table-loader script', () => {
  it('encodes ALLOCATE, ADD_POINTER and ADD_CHECKSUM as 128-byte little-endian commands', () => {
    const bytes = new TableLoader()
      .allocate('etc/acpi/rsdp', 16, LoaderZone.fseg)
      .addPointer('etc/acpi/rsdp', 'etc/acpi/tables', 24, 8)
      .addChecksum('etc/acpi/rsdp', 8, 0, 20)
      .bytes();
    expect(bytes.length).toBe(3 * 128);
    const v = new DataView(bytes.buffer);
    expect(v.getUint32(0, true)).toBe(1);
    expect(text(bytes.subarray(4, 60))).toBe('etc/acpi/rsdp');
    expect(v.getUint32(60, true)).toBe(16);
    expect(bytes[64]).toBe(2);
    expect(v.getUint32(128, true)).toBe(2);
    expect(text(bytes.subarray(132, 188))).toBe('etc/acpi/rsdp');
    expect(text(bytes.subarray(188, 244))).toBe('etc/acpi/tables');
    expect(v.getUint32(244, true)).toBe(24);
    expect(bytes[248]).toBe(8);
    expect(v.getUint32(256, true)).toBe(3);
    expect([v.getUint32(316, true), v.getUint32(320, true), v.getUint32(324, true)]).toEqual([8, 0, 20]);
    expect([...bytes.subarray(328, 384)].every((b) => b === 0)).toBe(true);
  });

  it('rejects alignments that are not powers of two and names that do not fit', () => {
    expect(() => new TableLoader().allocate('x', 12, LoaderZone.high)).toThrow(RangeError);
    expect(() => new TableLoader().addChecksum('y'.repeat(56), 0, 0, 1)).toThrow(RangeError);
  });
});
