import { describe, expect, it } from 'vitest';
import { reg, word } from '@kvmts/kvm-core/asm';
import { buildAcpiTables } from '../acpi/build.js';
import { E820Type, PCI_HOLE_START, e820RamBytes, pcE820 } from '../e820.js';
import { SMAP } from './system.js';
import { CF, testMachine } from './test-harness.js';

const { eax, ebx, ecx, edx, ax, bx, cx, dx, di, es } = reg;
const MIB = 1024 * 1024;

/** The PC's ACPI tables for `ramSize` bytes of RAM (PM block at 0x600, as the CLI's machine). */
const acpiTables = (ramSize: number) =>
  buildAcpiTables({
    ramSize, vcpus: 1, route: () => 10,
    pm: {
      pm1aEvt: { port: 0x600, width: 4 }, pm1aCnt: { port: 0x604, width: 2 }, pmTmr: { port: 0x608, width: 4 },
      gpe0: { port: 0x620, width: 4 }, resetReg: { port: 0xcf9, width: 1, value: 6 },
    },
  });

describe('INT 15h', () => {
  it('E820h walks the memory map with EBX continuation, including the ACPI tables', () => {
    const ramSize = 64 * MIB;
    const acpi = acpiTables(ramSize);
    const m = testMachine({ ramSize, acpi });
    try {
      const entries: { addr: number; size: number; type: number }[] = [];
      let cont = 0;
      for (let i = 0; i < 20; i++) {
        const r = m.runCode((a) => a.mov(eax, 0xe820).mov(edx, SMAP).mov(ecx, 24).mov(ebx, cont).mov(di, 0x500).int(0x15));
        expect(r.rflags & CF).toBe(0);
        expect(r.rax).toBe(SMAP);
        expect(r.rcx).toBe(24);
        const v = new DataView(m.readMemory(0x500, 24).buffer);
        entries.push({ addr: v.getUint32(0, true), size: v.getUint32(8, true), type: v.getUint32(16, true) });
        expect(v.getUint32(20, true)).toBe(1);
        cont = r.rbx;
        if (cont === 0) break;
      }
      expect(entries).toEqual(m.bios.e820);
      expect(entries[0]).toEqual({ addr: 0, size: 0x9fc00, type: E820Type.Ram });
      expect(entries.some((e) => e.type === E820Type.Acpi && e.addr === acpi.address)).toBe(true);
      // The RSDP is where OSes scan for it.
      expect(new TextDecoder().decode(m.readMemory(0xe0000, 8))).toBe('RSD PTR ');
      // A bad signature or continuation value fails.
      let r = m.runCode((a) => a.mov(eax, 0xe820).mov(edx, 0x1234).mov(ecx, 20).mov(ebx, 0).mov(di, 0x500).int(0x15));
      expect(r.rflags & CF).toBe(CF);
      r = m.runCode((a) => a.mov(eax, 0xe820).mov(edx, SMAP).mov(ecx, 20).mov(ebx, 99).mov(di, 0x500).int(0x15));
      expect(r.rflags & CF).toBe(CF);
      // 20-byte entries when the buffer is 20 bytes.
      r = m.runCode((a) => a.mov(eax, 0xe820).mov(edx, SMAP).mov(ecx, 20).mov(ebx, 0).mov(di, 0x500).int(0x15));
      expect(r.rcx).toBe(20);
    } finally {
      m.close();
    }
  });

  it('E820h reports the whole PC map: low RAM, EBDA, BIOS area, extended RAM, ACPI tables, APICs and the ROM alias', () => {
    const ramSize = 64 * MIB;
    const acpi = acpiTables(ramSize);
    const m = testMachine({ ramSize, acpi });
    try {
      const { Ram, Reserved, Acpi } = E820Type;
      expect(acpi.e820Reserved).toEqual({ addr: ramSize - acpi.e820Reserved.size, size: acpi.e820Reserved.size, type: Acpi });
      expect(m.bios.e820).toEqual([
        { addr: 0, size: 0x9fc00, type: Ram },
        { addr: 0x9fc00, size: 0x400, type: Reserved }, // EBDA
        { addr: 0xf0000, size: 0x10000, type: Reserved }, // BIOS ROM, MP and RSDP tables
        { addr: 0x100000, size: acpi.e820Reserved.addr - 0x100000, type: Ram },
        acpi.e820Reserved, // ACPI tables at the top of RAM
        { addr: 0xfec00000, size: 0x1000, type: Reserved }, // I/O APIC
        { addr: 0xfee00000, size: 0x1000, type: Reserved }, // local APIC
        { addr: 0xffff0000, size: 0x10000, type: Reserved }, // the ROM's alias under 4 GiB
      ]);
      // Usable RAM is everything but the EBDA, the 640 KiB–1 MiB hole and the ACPI tables.
      expect(e820RamBytes(m.bios.e820)).toBe(ramSize - 0x60000 - 0x400 - acpi.e820Reserved.size);
    } finally {
      m.close();
    }
    // With 3.5 GiB asked for, RAM stops at the PCI hole (3 GiB): nothing usable overlaps PCI space.
    const map = pcE820(0xe0000000);
    expect(map.filter((e) => e.type === E820Type.Ram).every((e) => e.addr + e.size <= PCI_HOLE_START)).toBe(true);
    expect(e820RamBytes(map)).toBe(PCI_HOLE_START - 0x60000 - 0x400);
  });

  it('E801h, 88h, C0h and C1h describe memory and the machine', () => {
    const m = testMachine({ ramSize: 64 * MIB });
    try {
      let r = m.runCode((a) => a.mov(ax, 0xe801).int(0x15));
      expect(r.rflags & CF).toBe(0);
      expect(r.rax & 0xffff).toBe(15 * 1024);
      expect(r.rbx & 0xffff).toBe((48 * MIB) / 65536);
      expect(r.rcx & 0xffff).toBe(15 * 1024);
      r = m.runCode((a) => a.mov(ax, 0x8800).int(0x15));
      expect(r.rax & 0xffff).toBe(63 * 1024);
      r = m.runCode((a) => a.mov(ax, 0xc000).int(0x15).mov(ax, es));
      expect(r.rflags & CF).toBe(0);
      expect(r.rax & 0xffff).toBe(0xf000);
      const table = m.readMemory(0xf0000 + (r.rbx & 0xffff), 3);
      expect([...table]).toEqual([8, 0, 0xfc]);
      r = m.runCode((a) => a.mov(ax, 0xc100).int(0x15).mov(ax, es));
      expect(r.rax & 0xffff).toBe(0x9fc0);
    } finally {
      m.close();
    }
  });

  it('controls A20 through port 0x92', () => {
    const m = testMachine();
    try {
      m.runCode((a) => a.mov(ax, 0x2401).int(0x15));
      expect(m.devices.port92 & 2).toBe(2);
      let r = m.runCode((a) => a.mov(ax, 0x2402).int(0x15));
      expect(r.rax & 0xffff).toBe(0x0001);
      m.runCode((a) => a.mov(ax, 0x2400).int(0x15));
      expect(m.devices.port92 & 3).toBe(0);
      r = m.runCode((a) => a.mov(ax, 0x2403).int(0x15));
      expect(r.rflags & CF).toBe(0);
      expect(r.rbx & 0xffff).toBe(3);
    } finally {
      m.close();
    }
  });

  it('reports APM and unknown functions as unsupported (CF=1, AH=86h)', () => {
    const m = testMachine();
    try {
      for (const fn of [0x5300, 0x8700, 0x4f00]) {
        const r = m.runCode((a) => a.mov(ax, fn).mov(bx, 0).int(0x15));
        expect(r.rflags & CF).toBe(CF);
        expect((r.rax >> 8) & 0xff).toBe(0x86);
      }
    } finally {
      m.close();
    }
  });

  it('AH=86h waits with interrupts enabled until the time has passed', () => {
    let now = 0;
    const m = testMachine({ nowNs: () => now });
    try {
      let halts = 0;
      const r = m.runCode((a) => a.mov(ax, 0x8600).mov(cx, 0).mov(dx, 1000).int(0x15).mov(word(0x500), 1), {
        onBiosHalt: () => {
          halts++;
          now += 400_000; // 0.4 ms per wake-up
        },
      });
      expect(r.rflags & CF).toBe(0);
      expect(halts).toBe(3);
    } finally {
      m.close();
    }
  });
});
