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
