import { describe, expect, it } from 'vitest';
import { reg } from '@kvmts/kvm-core/asm';
import { Bda, TICKS_PER_DAY } from './layout.js';
import { PCI_SIGNATURE, PciStatus } from './pci.js';
import { CF, testMachine } from './test-harness.js';
import { ticksForSeconds } from './time.js';

const { ax, bx, cx, dx, si, di, eax, ecx } = reg;

/** CMOS at 12:34:56 on 2025-03-07, BCD, 24-hour. */
function setClock(cmos: Uint8Array): void {
  cmos.set([0x56, 0, 0x34, 0, 0x12], 0);
  cmos[7] = 0x07;
  cmos[8] = 0x03;
  cmos[9] = 0x25;
  cmos[0x32] = 0x20;
}

describe('INT 1Ah time and INT 08h', () => {
  it('reads the RTC time and date in BCD, and starts the tick count from it', () => {
    const m = testMachine({}, (d) => setClock(d.cmos));
    try {
      let r = m.runCode((a) => a.mov(ax, 0x0200).int(0x1a));
      expect(r.rflags & CF).toBe(0);
      expect(r.rcx & 0xffff).toBe(0x1234);
      expect((r.rdx >> 8) & 0xff).toBe(0x56);
      r = m.runCode((a) => a.mov(ax, 0x0400).int(0x1a));
      expect(r.rcx & 0xffff).toBe(0x2025);
      expect(r.rdx & 0xffff).toBe(0x0307);
      r = m.runCode((a) => a.mov(ax, 0x0000).int(0x1a));
      expect(((r.rcx & 0xffff) << 16) | (r.rdx & 0xffff)).toBe(ticksForSeconds(12 * 3600 + 34 * 60 + 56));
    } finally {
      m.close();
    }
  });

  it('converts a binary-mode RTC to BCD', () => {
    const m = testMachine({}, (d) => {
      d.cmos.set([56, 0, 34, 0, 12], 0);
      d.cmos[0x0b] = 0x06;
    });
    try {
      const r = m.runCode((a) => a.mov(ax, 0x0200).int(0x1a));
      expect(r.rcx & 0xffff).toBe(0x1234);
    } finally {
      m.close();
    }
  });

  it('INT 08h counts ticks, wraps at midnight with the flag, and sends EOI', () => {
    const m = testMachine();
    try {
      m.runCode((a) => a.mov(ax, 0x0100).mov(cx, (TICKS_PER_DAY - 1) >>> 16).mov(dx, (TICKS_PER_DAY - 1) & 0xffff).int(0x1a));
      m.devices.picWrites.length = 0;
      m.runCode((a) => a.int(0x08));
      expect(m.devices.picWrites).toEqual([[0x20, 0x20]]);
      const r = m.runCode((a) => a.int(0x08).mov(ax, 0x0000).int(0x1a));
      expect(r.rax & 0xff).toBe(1);
      expect(r.rdx & 0xffff).toBe(1);
      expect(m.readMemory(Bda.midnightFlag, 1)[0]).toBe(0);
    } finally {
      m.close();
    }
  });
});

describe('INT 1Ah B1xxh, the PCI BIOS', () => {
  const setup = (d: { pciFunctions: Map<number, Uint8Array> }): void => {
    const fn = (vendor: number, device: number, cls: number, headerType = 0): Uint8Array => {
      const c = new Uint8Array(256);
      const v = new DataView(c.buffer);
      v.setUint16(0, vendor, true);
      v.setUint16(2, device, true);
      v.setUint32(8, cls << 8, true);
      c[0x0e] = headerType;
      return c;
    };
    d.pciFunctions.set(0x00, fn(0x8086, 0x1237, 0x060000));
    d.pciFunctions.set(0x08, fn(0x8086, 0x7000, 0x060100, 0x80));
    d.pciFunctions.set(0x09, fn(0x8086, 0x7010, 0x010180));
  };

  it('answers the installation check', () => {
    const m = testMachine({}, setup);
    try {
      const r = m.runCode((a) => a.mov(ax, 0xb101).int(0x1a));
      expect(r.rflags & CF).toBe(0);
      expect(r.rdx).toBe(PCI_SIGNATURE);
      expect(r.rbx & 0xffff).toBe(0x0210);
      expect(r.rax & 0xffff).toBe(0x0001);
    } finally {
      m.close();
    }
  });

  it('finds devices by ID and class, including functions of multi-function devices', () => {
    const m = testMachine({}, setup);
    try {
      let r = m.runCode((a) => a.mov(ax, 0xb102).mov(cx, 0x7010).mov(dx, 0x8086).mov(si, 0).int(0x1a));
      expect(r.rflags & CF).toBe(0);
      expect(r.rbx & 0xffff).toBe(0x0009);
      r = m.runCode((a) => a.mov(ax, 0xb102).mov(cx, 0x7010).mov(dx, 0x8086).mov(si, 1).int(0x1a));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(PciStatus.DeviceNotFound);
      r = m.runCode((a) => a.mov(ax, 0xb103).mov(ecx, 0x060100).mov(si, 0).int(0x1a));
      expect(r.rbx & 0xffff).toBe(0x0008);
      r = m.runCode((a) => a.mov(ax, 0xb102).mov(cx, 0).mov(dx, 0xffff).mov(si, 0).int(0x1a));
      expect((r.rax >> 8) & 0xff).toBe(PciStatus.BadVendorId);
    } finally {
      m.close();
    }
  });

  it('reads and writes configuration space by byte, word and dword', () => {
    const m = testMachine({}, setup);
    try {
      let r = m.runCode((a) => a.mov(ax, 0xb10a).mov(bx, 0x0009).mov(di, 0).int(0x1a));
      expect(r.rcx).toBe(0x70108086);
      r = m.runCode((a) => a.mov(ax, 0xb109).mov(bx, 0x0009).mov(di, 2).int(0x1a));
      expect(r.rcx & 0xffff).toBe(0x7010);
      m.runCode((a) => a.mov(ax, 0xb10b).mov(bx, 0x0009).mov(di, 0x3c).mov(cx, 0x0b).int(0x1a));
      expect(m.devices.pciFunctions.get(0x09)![0x3c]).toBe(0x0b);
      m.runCode((a) => a.mov(ax, 0xb10d).mov(bx, 0x0009).mov(di, 0x10).mov(ecx, 0xc001).int(0x1a));
      r = m.runCode((a) => a.mov(ax, 0xb108).mov(bx, 0x0009).mov(di, 0x11).int(0x1a));
      expect(r.rcx & 0xff).toBe(0xc0);
      r = m.runCode((a) => a.mov(ax, 0xb10a).mov(bx, 0x0009).mov(di, 2).int(0x1a));
      expect(r.rflags & CF).toBe(CF);
      expect((r.rax >> 8) & 0xff).toBe(PciStatus.BadRegisterNumber);
      r = m.runCode((a) => a.mov(eax, 0xb1ee).int(0x1a));
      expect((r.rax >> 8) & 0xff).toBe(PciStatus.FunctionNotSupported);
    } finally {
      m.close();
    }
  });
});

describe('INT 11h and 12h', () => {
  it('return the equipment word and 639 KiB', () => {
    const m = testMachine();
    try {
      expect(m.runCode((a) => a.int(0x11)).rax & 0xffff).toBe(0x0222);
      expect(m.runCode((a) => a.int(0x12)).rax & 0xffff).toBe(639);
    } finally {
      m.close();
    }
  });
});
