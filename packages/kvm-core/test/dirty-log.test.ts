/**
 * Dirty-page logging: KVM_MEM_LOG_DIRTY_PAGES, KVM_GET_DIRTY_LOG (read and clear) and
 * KVM_CLEAR_DIRTY_LOG, for guest writes and host-side writes through `vm.memory`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  KvmError, KVM_CLEAR_DIRTY_LOG, KVM_EXIT_MMIO, KVM_GET_DIRTY_LOG, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, ioctl,
} from '../src/index.js';
import { closeGuests, createGuest, pagesOf, runExpect, runToHlt, kvmError } from './helpers.js';

afterEach(closeGuests);

const LOG = KVM_MEM_LOG_DIRTY_PAGES;
const MIB = 0x100000;


/**
 * A guest that writes to five chosen pages, halts, and jumps back to do it again.
 * DS = 0, ES = 0x2000; code at 1000:0100 (page 0x10, never written).
 */
const WRITER = [
  'c6 06 00 30 01', //             mov byte [0x3000], 1             -> page 0x03
  '66 c7 06 fe 6f 78 56 34 12', // mov dword [0x6ffe], 0x12345678   -> pages 0x06, 0x07 (straddles)
  '26 88 26 00 50', //             mov es:[0x5000], ah              -> page 0x25
  '26 c6 06 ff ff 07', //          mov byte es:[0xffff], 7          -> page 0x2f
  'f4', //                         hlt
  'eb e4', //                      jmp 0x100
].join(' ');
const WRITER_PAGES = [0x03, 0x06, 0x07, 0x25, 0x2f];

function writerGuest(flags = LOG) {
  return createGuest({ flags, seg: { ds: 0, es: 0x2000 }, code: WRITER });
}

describe('KVM_GET_DIRTY_LOG', () => {
  it('has a bit set for exactly the pages the guest wrote, then reads back empty', () => {
    const g = writerGuest();
    // Code loaded through the slot's own bytes is not a logged write.
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([]);
    runToHlt(g);
    const bitmap = g.vm.getDirtyLog(0, MIB);
    expect(bitmap.length).toBe(32); // 256 pages, in whole 64-bit words
    expect(pagesOf(bitmap)).toEqual(WRITER_PAGES);
    expect(bitmap[0]).toBe(0b1100_1000); // pages 3, 6, 7
    // Reading the log cleared it.
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([]);
    // The guest really wrote there.
    expect(g.ram[0x3000]).toBe(1);
    expect(g.ram[0x2ffff]).toBe(7);
  });

  it('logs pages re-dirtied after a read (the vCPU must drop its cached write translations)', () => {
    const g = writerGuest();
    runToHlt(g);
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual(WRITER_PAGES);
    runToHlt(g); // jmp back, same writes to the same pages
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual(WRITER_PAGES);
    runToHlt(g);
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual(WRITER_PAGES);
  });

  it('logs host-side writes through vm.memory, but not writes straight into the backing buffer', () => {
    const g = writerGuest();
    const m = g.vm.memory;
    m.writeU32(0x8ffe, 0xffffffff); // pages 8, 9
    m.write(0x40000, new Uint8Array(0x3001)); // pages 0x40..0x43
    m.writeU8(0xfffff, 1); // last page
    m.writeU16(0x12345, 1); // page 0x12
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([0x08, 0x09, 0x12, 0x40, 0x41, 0x42, 0x43, 0xff]);
    g.ram[0x5000] = 1;
    g.vm.slotMemory(0)[0x6000] = 1;
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([]);
  });

  it('logs every page a REP STOSB covers', () => {
    // es = 0x4000, di = 0x0ff0, cx = 0x2020: 0x40ff0..0x4300f
    const g = createGuest({ flags: LOG, seg: { es: 0x4000 }, code: 'f3 aa f4', regs: { rdi: 0x0ff0, rcx: 0x2020, rax: 0x5a } });
    runToHlt(g);
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([0x40, 0x41, 0x42, 0x43]);
    expect(g.ram[0x4300f]).toBe(0x5a);
    expect(g.ram[0x43010]).toBe(0);
  });

  it('numbers pages from the start of the slot', () => {
    // slot 1 at 1 MiB, reached through ES = 0xffff (base 0xffff0): es:[0x2010] = 0x102000.
    const g = createGuest({ seg: { es: 0xffff }, code: '26 c6 06 10 20 01 f4' });
    g.vm.setUserMemoryRegion({ slot: 1, flags: LOG, guestPhysAddr: MIB, memorySize: 0x10000, userspaceAddr: new ArrayBuffer(0x10000) });
    runToHlt(g);
    const bm = g.vm.getDirtyLog(1, 0x10000);
    expect(bm.length).toBe(8);
    expect(pagesOf(bm)).toEqual([2]);
    expect(g.vm.slotMemory(1)[0x2000]).toBe(1);
  });

  it('does not log guest writes to a read-only slot (they are MMIO exits)', () => {
    const g = createGuest({ seg: { es: 0xa000 }, ramSize: 0xa0000, code: '26 c6 06 00 10 01 f4' });
    g.vm.setUserMemoryRegion({ slot: 1, flags: LOG | KVM_MEM_READONLY, guestPhysAddr: 0xa0000, memorySize: 0x10000, userspaceAddr: new ArrayBuffer(0x10000) });
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio.physAddr).toBe(0xa1000);
    runToHlt(g, 1);
    expect(pagesOf(g.vm.getDirtyLog(1, 0x10000))).toEqual([]);
  });

  it('starts from a clean bitmap when logging is switched on for a live slot, and catches writes to pages cached before', () => {
    const g = writerGuest(0);
    runToHlt(g); // the vCPU now has write translations for the five pages
    let e = kvmError(() => g.vm.getDirtyLog(0, MIB));
    expect(e.errno).toBe('ENOENT');
    expect(e.message).toContain('KVM_MEM_LOG_DIRTY_PAGES');
    g.vm.setUserMemoryRegion({ slot: 0, flags: LOG, guestPhysAddr: 0, memorySize: MIB, userspaceAddr: g.ram.buffer });
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([]);
    runToHlt(g);
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual(WRITER_PAGES);
    // And off again.
    g.vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: MIB, userspaceAddr: g.ram.buffer });
    e = kvmError(() => g.vm.getDirtyLog(0, MIB));
    expect(e.errno).toBe('ENOENT');
  });

  it('fails with ENOENT for a slot without logging or without a slot, and EFAULT for a short bitmap', () => {
    const g = writerGuest();
    g.vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0x200000, memorySize: 0x1000, userspaceAddr: new ArrayBuffer(0x1000) });
    let e = kvmError(() => g.vm.getDirtyLog(1, 0x1000));
    expect(e.errno).toBe('ENOENT');
    expect(e.message).toContain('slot 1');
    e = kvmError(() => g.vm.getDirtyLog(5, 0x1000));
    expect(e.errno).toBe('ENOENT');
    expect(e.message).toContain('slot 5');
    e = kvmError(() => ioctl(g.vm.fd, KVM_GET_DIRTY_LOG, { slot: 0, dirtyBitmap: new Uint8Array(31) }));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('32');
  });
});

describe('KVM_CLEAR_DIRTY_LOG', () => {
  it('clears exactly the selected bits', () => {
    const g = writerGuest();
    for (const page of [1, 2, 3, 63, 64, 70]) g.vm.memory.writeU8(page * 4096, 1);
    const mask = new Uint8Array(8);
    mask[0] = 0b1010; // pages 1 and 3
    mask[7] = 0x80; // page 63
    g.vm.clearDirtyLog(0, 0, 64, mask);
    const mask2 = new Uint8Array(8);
    mask2[0] = 0x40; // page 64 + 6 = 70
    g.vm.clearDirtyLog(0, 64, 64, mask2);
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([2, 64]);
  });

  it('lets the guest re-dirty cleared pages (the vCPU drops its write translations)', () => {
    const g = writerGuest();
    runToHlt(g);
    g.vm.clearDirtyLog(0, 0, 256, new Uint8Array(32).fill(0xff));
    runToHlt(g);
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual(WRITER_PAGES);
  });

  it('rejects a firstPage that is not a multiple of 64, a range past the slot, and a short or non-Uint8Array bitmap', () => {
    const g = writerGuest();
    let e = kvmError(() => g.vm.clearDirtyLog(0, 70, 1, new Uint8Array(8)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('firstPage 70');
    e = kvmError(() => g.vm.clearDirtyLog(0, 192, 128, new Uint8Array(16)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('256 pages');
    g.vm.memory.writeU8(0x9000, 1);
    e = kvmError(() => g.vm.clearDirtyLog(0, 0, 64, new Uint8Array(1)));
    expect(e.errno).toBe('EFAULT');
    e = kvmError(() => ioctl(g.vm.fd, KVM_CLEAR_DIRTY_LOG, { slot: 0, firstPage: 0, numPages: 64, dirtyBitmap: [0xff] }));
    expect(e.errno).toBe('EFAULT');
    // Nothing was cleared by the failed calls.
    expect(pagesOf(g.vm.getDirtyLog(0, MIB))).toEqual([9]);
    expect(kvmError(() => g.vm.clearDirtyLog(3, 0, 1, new Uint8Array(8))).errno).toBe('ENOENT');
  });
});
