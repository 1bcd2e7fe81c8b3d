import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BootError } from '../errors.js';
import { Hdr, parseBzImage } from './bzimage.js';

/** A minimal bzImage: boot sector + `setupSects` setup sectors with a header, then a kernel. */
export function fakeBzImage(o: { version?: number; setupSects?: number; kernel?: number; loadflags?: number; cmdlineSize?: number; initrdMax?: number; initSize?: number } = {}): Uint8Array {
  const setupSects = o.setupSects ?? 4;
  const kernelLen = o.kernel ?? 0x4000;
  const img = new Uint8Array((setupSects + 1) * 512 + kernelLen);
  const dv = new DataView(img.buffer);
  img[Hdr.SETUP_SECTS] = setupSects;
  dv.setUint32(Hdr.SYSSIZE, Math.ceil(kernelLen / 16), true);
  dv.setUint16(Hdr.BOOT_FLAG, 0xaa55, true);
  img[0x200] = 0xeb; img[0x201] = 0x66; // jmp over a 0x66-byte header
  dv.setUint32(Hdr.HEADER, 0x53726448, true);
  dv.setUint16(Hdr.VERSION, o.version ?? 0x020f, true);
  dv.setUint16(Hdr.KERNEL_VERSION, 0x300 - 0x200, true);
  img.set(new TextEncoder().encode('6.1.0-test (kvmts) #1\0'), 0x300);
  img[Hdr.LOADFLAGS] = o.loadflags ?? 0x01;
  dv.setUint32(Hdr.CODE32_START, 0x100000, true);
  dv.setUint32(Hdr.INITRD_ADDR_MAX, o.initrdMax ?? 0x7fffffff, true);
  dv.setUint32(Hdr.CMDLINE_SIZE, o.cmdlineSize ?? 2047, true);
  dv.setUint32(Hdr.INIT_SIZE, o.initSize ?? 0x20000, true);
  for (let i = 0; i < kernelLen; i++) img[(setupSects + 1) * 512 + i] = i & 0xff;
  return img;
}

describe('parseBzImage', () => {
  it('reads the setup header: protocol, setup sectors, kernel bytes, limits and version string', () => {
    const bz = parseBzImage(fakeBzImage({ setupSects: 6, kernel: 0x1234 }));
    expect(bz.version).toBe(0x020f);
    expect(bz.setupSects).toBe(6);
    expect(bz.kernel.length).toBe(0x1234);
    expect(bz.kernel[0x10]).toBe(0x10);
    expect(bz.code32Start).toBe(0x100000);
    expect(bz.cmdlineSize).toBe(2047);
    expect(bz.initSize).toBe(0x20000);
    expect(bz.kernelVersion).toBe('6.1.0-test (kvmts) #1');
    expect(bz.header.length).toBe(0x202 + 0x66 - 0x1f1);
    expect(bz.header[0]).toBe(6); // header starts at setup_sects
  });

  it('treats setup_sects = 0 as 4, as the protocol says', () => {
    const img = fakeBzImage({ setupSects: 4 });
    img[Hdr.SETUP_SECTS] = 0;
    expect(parseBzImage(img).setupSects).toBe(4);
  });

  it.each([
    ['a short file', new Uint8Array(100), /only 100 bytes/],
    ['no boot flag', (() => { const i = fakeBzImage(); i[Hdr.BOOT_FLAG] = 0; return i; })(), /0xAA55 boot flag/],
    ['no HdrS', (() => { const i = fakeBzImage(); i[Hdr.HEADER] = 0; return i; })(), /"HdrS"/],
    ['an old protocol', fakeBzImage({ version: 0x0202 }), /protocol 2\.02; kvmts needs 2\.04/],
    ['a zImage', fakeBzImage({ loadflags: 0 }), /zImage/],
    ['a truncated kernel', fakeBzImage({ kernel: 0x4000 }).subarray(0, 0x1400), /truncated/],
  ])('rejects %s with a clear BootError', (_name, image, message) => {
    expect(() => parseBzImage(image, 'vmlinuz')).toThrow(BootError);
    expect(() => parseBzImage(image, 'vmlinuz')).toThrow(message);
  });

  const real = '/tmp/refguest/bzImage';
  it.skipIf(!existsSync(real))("parses Debian's 686 kernel", () => {
    const bz = parseBzImage(readFileSync(real));
    expect(bz.version).toBeGreaterThanOrEqual(0x020f);
    expect(bz.kernelVersion).toMatch(/^6\.1\.0-\d+-686 /);
    expect(bz.relocatable).toBe(true);
  });
});
