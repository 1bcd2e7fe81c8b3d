import { describe, expect, it } from 'vitest';
import { KVM_MEM_READONLY } from '@kvmts/kvm-core';
import { Assembler, byte, reg } from '@kvmts/kvm-core/asm';
import { MemoryDisk } from './disk-image.js';
import { Bda, BIOS_ROM_ALIAS, BIOS_ROM_BASE, RomEntry, VGA_TEXT_BASE } from './layout.js';
import { testMachine } from './test-harness.js';
import { buildBiosRom } from './rom.js';

/** A boot sector that prints `text` with INT 10h teletype and writes DL to port 0xF4. */
function printingMbr(text: string): Uint8Array {
  const { al, ah, bx, si } = reg;
  const a = new Assembler({ bits: 16, origin: 0x7c00 });
  a.mov(si, 'msg').label('next').mov(al, byte({ base: si })).inc(si).cmp(al, 0).je('done');
  a.mov(ah, 0x0e).mov(bx, 0).int(0x10).jmp('next');
  a.label('done').mov(al, reg.dl).out(0xf4, al).hlt();
  a.label('msg').asciz(text);
  a.org(0x7dfe).db(0x55, 0xaa);
  return a.bytes();
}

describe('the BIOS ROM', () => {
  it('has the reset vector jump and the fixed entry points', () => {
    const rom = buildBiosRom();
    expect(rom.bytes.length).toBe(0x10000);
    // FFF0: jmp far F000:E05B
    expect([...rom.bytes.subarray(0xfff0, 0xfff5)]).toEqual([0xea, 0x5b, 0xe0, 0x00, 0xf0]);
    expect(rom.bytes[0xfffe]).toBe(0xfc);
    expect(rom.bytes[RomEntry.dummyIret]).toBe(0xcf);
    expect(rom.vectors.get(0x13)).toBe(RomEntry.int13);
    expect(rom.bytes[RomEntry.int13]).toBe(0xe9); // jmp near to the stub
    // Every stub starts with `out 0xE2, al`.
    for (const off of rom.stubs.keys()) expect([...rom.bytes.subarray(off, off + 2)]).toEqual([0xe6, 0xe2]);
  });

  it('is mapped read-only at 0xF0000 and 0xFFFF0000, with RAM around it', () => {
    const m = testMachine({ ramSize: 4 * 1024 * 1024 });
    try {
      const rom = m.vm.memory.findSlot(BIOS_ROM_BASE)!;
      expect(rom.flags & KVM_MEM_READONLY).toBe(KVM_MEM_READONLY);
      expect(m.vm.memory.findSlot(BIOS_ROM_ALIAS)!.bytes.buffer).toBe(rom.bytes.buffer);
      expect(m.vm.memory.findSlot(0xeffff)!.flags & KVM_MEM_READONLY).toBe(0);
      expect(m.vm.memory.findSlot(0x100000)!.flags & KVM_MEM_READONLY).toBe(0);
      // The guest cannot write the ROM.
      m.runCode((a) => a.mov(reg.ax, 0xf000).mov(reg.ds, reg.ax).mov(byte(0xfffe), 0x12));
      expect(m.readMemory(0xffffe, 1)[0]).toBe(0xfc);
    } finally {
      m.close();
    }
  });
});

describe('POST', () => {
  it('fills the IVT and the BDA', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(new Uint8Array(512 * 100))] });
    try {
      const ivt = new DataView(m.readMemory(0, 0x400).buffer);
      expect(ivt.getUint16(0x13 * 4, true)).toBe(RomEntry.int13);
      expect(ivt.getUint16(0x13 * 4 + 2, true)).toBe(0xf000);
      expect(ivt.getUint16(0x08 * 4, true)).toBe(RomEntry.int08);
      expect(ivt.getUint16(0x03 * 4, true)).toBe(RomEntry.dummyIret);
      const bda = new DataView(m.readMemory(0x400, 0x100).buffer);
      expect(bda.getUint16(Bda.com1 - 0x400, true)).toBe(0x3f8);
      expect(bda.getUint16(Bda.ebdaSegment - 0x400, true)).toBe(0x9fc0);
      expect(bda.getUint16(Bda.memoryKb - 0x400, true)).toBe(639);
      expect(bda.getUint16(Bda.equipment - 0x400, true)).toBe(0x0222);
      expect(bda.getUint8(Bda.hardDiskCount - 0x400)).toBe(1);
      expect(bda.getUint16(Bda.kbdHead - 0x400, true)).toBe(0x1e);
      expect(bda.getUint16(Bda.kbdBufferEnd - 0x400, true)).toBe(0x3e);
      expect(m.readMemory(0x9fc00, 1)[0]).toBe(1);
      // The PICs are programmed by the ROM's POST code, not before the CPU runs.
      expect(m.devices.picWrites).toEqual([]);
      expect([...m.readMemory(VGA_TEXT_BASE, 2)]).toEqual([0x20, 0x07]);
    } finally {
      m.close();
    }
  });
});

describe('the BIOS data area after POST', () => {
  it('holds every field a DOS-era program or bootloader reads', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(new Uint8Array(512 * 100)), new MemoryDisk(new Uint8Array(512 * 100))], floppies: [new MemoryDisk(new Uint8Array(512 * 2880))] });
    try {
      const bda = new DataView(m.readMemory(Bda.base, 0x100).buffer);
      const u8 = (at: number) => bda.getUint8(at - Bda.base);
      const u16 = (at: number) => bda.getUint16(at - Bda.base, true);
      expect({
        com1: u16(Bda.com1), lpt1: u16(Bda.lpt1), ebdaSegment: u16(Bda.ebdaSegment), memoryKb: u16(Bda.memoryKb),
        hardDiskCount: u8(Bda.hardDiskCount), diskStatus: u8(Bda.diskStatus), floppyStatus: u8(Bda.floppyStatus),
        videoMode: u8(Bda.videoMode), textColumns: u16(Bda.textColumns), videoPageSize: u16(Bda.videoPageSize),
        videoPageStart: u16(Bda.videoPageStart), cursor0: u16(Bda.cursorPositions), cursorShape: u16(Bda.cursorShape),
        activePage: u8(Bda.activePage), crtcBase: u16(Bda.crtcBase), textRowsMinusOne: u8(Bda.textRowsMinusOne), charHeight: u16(Bda.charHeight),
        kbdHead: u16(Bda.kbdHead), kbdTail: u16(Bda.kbdTail), kbdBufferStart: u16(Bda.kbdBufferStart), kbdBufferEnd: u16(Bda.kbdBufferEnd),
        shiftFlags: u8(Bda.shiftFlags), kbdFlags3: u8(Bda.kbdFlags3), midnightFlag: u8(Bda.midnightFlag),
      }).toEqual({
        com1: 0x3f8, lpt1: 0, ebdaSegment: 0x9fc0, memoryKb: 639,
        hardDiskCount: 2, diskStatus: 0, floppyStatus: 0,
        videoMode: 0x03, textColumns: 80, videoPageSize: 4096,
        videoPageStart: 0, cursor0: 0, cursorShape: 0x0607,
        activePage: 0, crtcBase: 0x3d4, textRowsMinusOne: 24, charHeight: 16,
        kbdHead: 0x1e, kbdTail: 0x1e, kbdBufferStart: 0x1e, kbdBufferEnd: 0x3e,
        shiftFlags: 0, kbdFlags3: 0x10, midnightFlag: 0,
      });
      // Equipment word: one diskette drive (bit 0, count-1 in bits 7:6 = 0), 80x25 colour (bits 5:4 = 10b), one serial port (bits 11:9).
      expect(u16(Bda.equipment)).toBe(0x0223);
      // The tick count starts from the RTC's time of day (18.2 Hz), below the midnight value.
      const ticks = bda.getUint32(Bda.tickCount - Bda.base, true);
      expect(ticks).toBeLessThan(0x1800b0);
      // INT 11h and INT 12h answer from the BDA.
      const r = m.runCode((a) => a.int(0x11).mov(reg.bx, reg.ax).int(0x12));
      expect([r.rbx & 0xffff, r.rax & 0xffff]).toEqual([0x0223, 639]);
    } finally {
      m.close();
    }
  });
});

describe('booting', () => {
  it('boots a disk from the reset vector: MBR at 0x7C00, DL = 0x80', () => {
    const disk = new Uint8Array(512 * 64);
    disk.set(printingMbr('hi from the MBR'));
    const m = testMachine({ hardDisks: [new MemoryDisk(disk)] });
    try {
      m.run();
      expect(m.devices.exitValue).toBe(0x80);
      // The ROM's POST code gave the PICs ICW1–4 with vectors 08h and 70h, through guest port writes.
      expect(m.devices.picWrites).toContainEqual([0x21, 0x08]);
      expect(m.devices.picWrites).toContainEqual([0xa1, 0x70]);
      const text = String.fromCharCode(...m.devices.serialOut);
      expect(text).toBe('Booting from Hard Disk 0x80...\r\nhi from the MBR');
      expect(m.bios.bootResult).toEqual({ kind: 'booted', drive: 0x80 });
      // Teletype also wrote VGA text memory (row 1, after the boot message).
      expect(m.readMemory(VGA_TEXT_BASE + 160, 4)).toEqual(Uint8Array.of(0x68, 0x07, 0x69, 0x07));
    } finally {
      m.close();
    }
  });

  it('follows the boot order and skips disks without the 55 AA signature', () => {
    const good = new Uint8Array(512 * 4);
    good.set(printingMbr('second'));
    const m = testMachine({ hardDisks: [new MemoryDisk(new Uint8Array(512 * 4)), new MemoryDisk(good)] });
    try {
      m.run();
      expect(m.devices.exitValue).toBe(0x81);
      expect(String.fromCharCode(...m.devices.serialOut)).toContain('not a bootable disk');
    } finally {
      m.close();
    }
  });

  it('reports no bootable device through INT 18h and halts', () => {
    const m = testMachine({ hardDisks: [new MemoryDisk(new Uint8Array(512))] });
    try {
      const regs = m.run();
      expect(regs.rflags & 0x200).toBe(0);
      expect(String.fromCharCode(...m.devices.serialOut)).toContain('No bootable device.');
      expect(m.bios.bootResult?.kind).toBe('no-bootable-device');
    } finally {
      m.close();
    }
  });

  it('ignores writes to the call port from outside the ROM', () => {
    const m = testMachine();
    try {
      const regs = m.runCode((a) => a.mov(reg.ax, 0x1234).out(0xe2, reg.al));
      expect(regs.rax & 0xffff).toBe(0x1234);
      expect(m.bios.strayCalls).toBe(1);
    } finally {
      m.close();
    }
  });
});
