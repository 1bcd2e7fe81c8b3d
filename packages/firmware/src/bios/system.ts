/**
 * INT 15h, system services: the memory map (E820h, E801h, 88h), the A20 gate (2400h–2403h,
 * through port 0x92), waits (86h), the configuration table (C0h), the EBDA segment (C1h). APM
 * and everything else is reported as unsupported (CF=1, AH=86h).
 * @module
 */
import { E820Type, HIGH_MEMORY_START, type E820Entry } from '../e820.js';
import type { BiosCall, Ports } from './guest.js';
import { BIOS_ROM_SEGMENT, EBDA_SEGMENT, RomEntry } from './layout.js';

/** 'SMAP', the E820 signature in EDX and EAX. */
export const SMAP = 0x534d4150;
/** INT 15h "function not supported". */
export const UNSUPPORTED = 0x86;
const PORT92 = 0x92;
const PORT92_A20 = 0x02;
const MIB = 1024 * 1024;
const MIB16 = 16 * MIB;

export interface SystemServicesOptions {
  e820: readonly E820Entry[];
  ports: Ports;
  /** Guest time in ns, for AH=86h waits (without it, waits return at once). */
  nowNs?: () => number;
}

/** Bytes of RAM contiguous from `start` in an E820 map. */
function contiguousRam(map: readonly E820Entry[], start: number): number {
  let end = start;
  for (;;) {
    const next = map.find((e) => e.type === E820Type.Ram && e.addr <= end && e.addr + e.size > end);
    if (!next) return end - start;
    end = next.addr + next.size;
  }
}

export class SystemServices {
  /** Deadline of the AH=86h wait in progress, keyed by the caller's stack (one wait at a time). */
  private wait: { stack: number; deadlineNs: number } | null = null;

  constructor(private readonly o: SystemServicesOptions) {}

  int15(call: BiosCall): void {
    const ax = call.ax;
    if (call.eax === 0xe820) return this.e820(call);
    switch (ax) {
      case 0xe801: {
        const extended = contiguousRam(this.o.e820, HIGH_MEMORY_START);
        const below16 = Math.min(extended, MIB16 - HIGH_MEMORY_START) / 1024;
        const above16 = Math.min(Math.max(0, extended - (MIB16 - HIGH_MEMORY_START)) / 65536, 0xffff);
        call.ax = call.cx = Math.floor(below16);
        call.bx = call.dx = Math.floor(above16);
        call.carry = false;
        return;
      }
      case 0x2400:
      case 0x2401: {
        const v = this.o.ports.inb(PORT92);
        // Bit 0 is the fast reset: never write it back as 1.
        this.o.ports.outb(PORT92, (ax === 0x2401 ? v | PORT92_A20 : v & ~PORT92_A20) & 0xfe);
        call.ok();
        return;
      }
      case 0x2402:
        call.ah = 0;
        call.al = (this.o.ports.inb(PORT92) & PORT92_A20) !== 0 ? 1 : 0;
        call.carry = false;
        return;
      case 0x2403:
        call.ah = 0;
        call.bx = 0x0003; // keyboard controller and port 0x92
        call.carry = false;
        return;
      default:
        break;
    }
    switch (call.ah) {
      case 0x88: {
        // KiB above 1 MiB; capped at 63 MiB as SeaBIOS does, for programs that assume less.
        const kb = Math.floor(contiguousRam(this.o.e820, HIGH_MEMORY_START) / 1024);
        call.ax = Math.min(kb, 63 * 1024);
        call.carry = false;
        return;
      }
      case 0x86:
        this.delay(call);
        return;
      case 0xc0:
        call.setSegment('es', BIOS_ROM_SEGMENT);
        call.bx = RomEntry.configTable;
        call.ok();
        return;
      case 0xc1:
        call.setSegment('es', EBDA_SEGMENT);
        call.carry = false;
        return;
      default:
        // APM (53h), keyboard intercept (4Fh), block move (87h) and the rest: not supported.
        call.fail(UNSUPPORTED);
    }
  }

  /** AH=86h: wait CX:DX microseconds, with interrupts running. */
  private delay(call: BiosCall): void {
    const now = this.o.nowNs?.();
    const stack = call.linear('ss', call.regs.rsp);
    if (now === undefined) {
      call.ok();
      return;
    }
    if (this.wait === null || this.wait.stack !== stack) {
      const us = call.cx * 65536 + call.dx;
      this.wait = { stack, deadlineNs: now + us * 1000 };
    }
    if (now < this.wait.deadlineNs) {
      call.stubCarry = true;
      return;
    }
    this.wait = null;
    call.ok();
  }

  /** EAX=E820h: entry EBX of the map into ES:DI (20 bytes, or 24 with ACPI 3.0 attributes). */
  private e820(call: BiosCall): void {
    const map = this.o.e820;
    const index = call.ebx;
    if (call.edx !== SMAP || call.ecx < 20 || index >= map.length) {
      call.fail(UNSUPPORTED);
      return;
    }
    const e = map[index]!;
    const size = call.ecx >= 24 ? 24 : 20;
    const out = new Uint8Array(size);
    const v = new DataView(out.buffer);
    v.setUint32(0, e.addr % 0x1_0000_0000, true);
    v.setUint32(4, Math.floor(e.addr / 0x1_0000_0000), true);
    v.setUint32(8, e.size % 0x1_0000_0000, true);
    v.setUint32(12, Math.floor(e.size / 0x1_0000_0000), true);
    v.setUint32(16, e.type, true);
    if (size === 24) v.setUint32(20, 1, true); // extended attributes: "enabled"
    call.ram.write(call.linear('es', call.di), out);
    call.eax = SMAP;
    call.ecx = size;
    call.ebx = index + 1 < map.length ? index + 1 : 0;
    call.carry = false;
  }
}
