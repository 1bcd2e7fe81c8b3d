import { describe, expect, it } from 'vitest';
import { BootError } from '../errors.js';
import { MULTIBOOT_HEADER_MAGIC, MbHdr, findMultibootHeader, isMultiboot, parseMultiboot } from './image.js';
import { buildMultibootTestKernel } from './test-kernel.js';

const elfKernel = () => buildMultibootTestKernel({ format: 'elf', expectedCmdline: '' });
const aoutKernel = () => buildMultibootTestKernel({ format: 'aout-kludge', expectedCmdline: '', loadAddress: 0x200000 });

/** A bare image with a header at `at` (flags and fields as given, checksum right unless told). */
function withHeader(o: { at?: number; size?: number; flags?: number; fields?: number[]; checksum?: number }): Uint8Array {
  const img = new Uint8Array(o.size ?? 4096);
  const dv = new DataView(img.buffer);
  const at = o.at ?? 0;
  const flags = o.flags ?? 0;
  dv.setUint32(at, MULTIBOOT_HEADER_MAGIC, true);
  dv.setUint32(at + 4, flags, true);
  dv.setUint32(at + 8, o.checksum ?? (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0, true);
  (o.fields ?? []).forEach((v, i) => dv.setUint32(at + 12 + 4 * i, v, true));
  return img;
}

const AOUT = 1 << 16;

describe('findMultibootHeader', () => {
  it('finds a 4-byte-aligned header in the first 8 KiB only', () => {
    expect(findMultibootHeader(withHeader({ at: 8180, size: 9000 }))).toEqual({ offset: 8180, checksumOk: true });
    expect(findMultibootHeader(withHeader({ at: 8192, size: 9000 }))).toBeUndefined();
    expect(findMultibootHeader(withHeader({ at: 18 }))).toBeUndefined();
    expect(isMultiboot(new Uint8Array(4096))).toBe(false);
  });

  it('prefers a header with a right checksum, but reports a lone wrong one', () => {
    const img = withHeader({ at: 0, checksum: 1 });
    img.set(withHeader({}).subarray(0, 12), 64);
    expect(findMultibootHeader(img)).toEqual({ offset: 64, checksumOk: true });
    expect(findMultibootHeader(withHeader({ checksum: 1 }))).toEqual({ offset: 0, checksumOk: false });
  });
});

describe('parseMultiboot', () => {
  it('reads the ELF program headers of the test kernel', () => {
    const k = elfKernel();
    const img = parseMultiboot(k);
    expect(img.format).toBe('elf');
    expect(img.headerOffset).toBe(84); // after the ELF header and one program header
    expect(img.segments).toHaveLength(1);
    expect(img.segments[0]!.addr).toBe(0x100000);
    expect(img.segments[0]!.data.length).toBe(k.length);
    expect(img.end - img.start).toBe(k.length + 0x1000);
    expect(img.warnings).toEqual([]);
  });

  it('reads the a.out-kludge address fields', () => {
    const k = aoutKernel();
    const img = parseMultiboot(k);
    expect(img.format).toBe('aout-kludge');
    expect(img.segments[0]).toMatchObject({ addr: 0x200000, memSize: k.length + 0x1000 });
    expect(img.entry).toBeGreaterThan(0x200000);
    // The text begins (header_addr - load_addr) bytes before the header in the file.
    const hdr = withHeader({ at: 32, flags: AOUT, fields: [0x100010, 0x100000, 0x100100, 0x100200, 0x100020] });
    const p = parseMultiboot(hdr);
    expect(p.segments[0]!.data.byteOffset - hdr.byteOffset).toBe(16);
    expect(p.segments[0]).toMatchObject({ addr: 0x100000, memSize: 0x200 });
    expect(p.segments[0]!.data.length).toBe(0x100);
    // load_end_addr 0: the rest of the file; bss_end_addr 0: no bss.
    const rest = parseMultiboot(withHeader({ at: 0, flags: AOUT, fields: [0x100000, 0x100000, 0, 0, 0x100000] }));
    expect(rest.segments[0]).toMatchObject({ memSize: 4096 });
  });

  it('honours page alignment and memory info, ignores a video mode request with a warning, and refuses unknown requirements', () => {
    const fields = [0x100000, 0x100000, 0, 0, 0x100000];
    expect(parseMultiboot(withHeader({ flags: AOUT | 3, fields })).warnings).toEqual([]);
    expect(parseMultiboot(withHeader({ flags: AOUT | 4, fields }), "'k'").warnings).toEqual(["'k' asks for a video mode; kvmts has no graphics and leaves the video fields out"]);
    expect(() => parseMultiboot(withHeader({ flags: AOUT | 0x8, fields }))).toThrow(/flag bits 0x8\b/);
    expect(() => parseMultiboot(withHeader({ flags: AOUT | 0x8000, fields }))).toThrow(BootError);
    // Unknown optional bits (17-31) are fine.
    expect(parseMultiboot(withHeader({ flags: AOUT | (1 << 20), fields })).format).toBe('aout-kludge');
  });

  it('explains what is wrong with broken images', () => {
    expect(() => parseMultiboot(new Uint8Array(100), "'x.bin'")).toThrow("'x.bin' is not a Multiboot kernel: no header magic 0x1badb002 in its first 8192 bytes");
    expect(() => parseMultiboot(withHeader({ checksum: 0x12345678 }))).toThrow(/header at offset 0x0 has a wrong checksum \(0x12345678, expected 0xe4524ffe\)/);
    // Truncated: address fields cut off, a.out text longer than the file, ELF cut short.
    expect(() => parseMultiboot(withHeader({ size: 20, flags: AOUT }))).toThrow(/truncated: the Multiboot header's address fields/);
    expect(() => parseMultiboot(withHeader({ flags: AOUT, fields: [0x100000, 0x100000, 0x200000, 0, 0x100000] }))).toThrow(/truncated: the Multiboot header asks for 1048576 bytes/);
    const elf = elfKernel();
    expect(() => parseMultiboot(elf.subarray(0, 500))).toThrow(/truncated: ELF segment 0 needs bytes up to offset/);
    // Not an ELF and no address fields.
    expect(() => parseMultiboot(withHeader({}))).toThrow(/neither an ELF file nor a Multiboot kernel with load addresses/);
    // ELF, but 64-bit or not i386.
    const elf64 = elf.slice();
    elf64[4] = 2;
    expect(() => parseMultiboot(elf64)).toThrow(/is a 64-bit ELF file; Multiboot loads 32-bit/);
    const arm = elf.slice();
    arm[18] = 40;
    expect(() => parseMultiboot(arm)).toThrow(/ELF file for machine 40, not i386/);
    // a.out fields that contradict each other.
    expect(() => parseMultiboot(withHeader({ at: 8, flags: AOUT, fields: [0x100000, 0x100100, 0, 0, 0x100100] }))).toThrow(/does not fit load_addr/);
    expect(() => parseMultiboot(withHeader({ flags: AOUT, fields: [0x100000, 0x100000, 0x100100, 0x100080, 0x100000] }))).toThrow(/bss_end_addr 0x100080 is below/);
    expect(() => parseMultiboot(withHeader({ flags: AOUT, fields: [0x100000, 0x100000, 0x100100, 0, 0x200000] }))).toThrow(/entry point 0x200000 is outside/);
  });

  it('puts the header fields where the spec says', () => {
    expect(MbHdr).toMatchObject({ FLAGS: 4, CHECKSUM: 8, HEADER_ADDR: 12, LOAD_ADDR: 16, LOAD_END_ADDR: 20, BSS_END_ADDR: 24, ENTRY_ADDR: 28 });
  });
});
