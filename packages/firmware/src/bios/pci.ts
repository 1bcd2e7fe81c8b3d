/**
 * INT 1Ah AX=B1xxh, the PCI BIOS (2.1, real-mode interface): installation check, finding
 * devices by ID or class, and configuration space access through configuration mechanism #1
 * (ports 0xCF8/0xCFC of the host bridge). Bus 0 only: the PC has no PCI-to-PCI bridges.
 * @module
 */
import type { BiosCall, Ports } from './guest.js';

/** 'PCI ' in EDX after the installation check. */
export const PCI_SIGNATURE = 0x20494350;
/** PCI BIOS return codes (AH). */
export const PciStatus = {
  Successful: 0x00,
  FunctionNotSupported: 0x81,
  BadVendorId: 0x83,
  DeviceNotFound: 0x86,
  BadRegisterNumber: 0x87,
} as const;

const CONFIG_ADDRESS = 0xcf8;
const CONFIG_DATA = 0xcfc;
/** Where POST starts handing out PCI I/O space (above the legacy ISA ports). */
const PCI_IO_START = 0xc000;
/** The PIIX3 ISA bridge's function and its PIRQ route control registers. */
const PIIX_DEVFN = 1 << 3;
const PIIX_PIRQRC = 0x60;

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

export class PciBios {
  constructor(private readonly ports: Ports) {}

  /** Reads a configuration register of `size` bytes at `reg` (aligned) of bus/devfn. */
  read(bus: number, devfn: number, reg: number, size: 1 | 2 | 4): number {
    this.ports.outl(CONFIG_ADDRESS, (0x80000000 | (bus << 16) | (devfn << 8) | (reg & 0xfc)) >>> 0);
    return this.ports.in(CONFIG_DATA + (reg & 3), size);
  }

  write(bus: number, devfn: number, reg: number, size: 1 | 2 | 4, value: number): void {
    this.ports.outl(CONFIG_ADDRESS, (0x80000000 | (bus << 16) | (devfn << 8) | (reg & 0xfc)) >>> 0);
    this.ports.out(CONFIG_DATA + (reg & 3), size, value);
  }

  /** Every function present on bus 0, in device/function order. */
  private *functions(): Generator<number> {
    for (let dev = 0; dev < 32; dev++) {
      const devfn0 = dev << 3;
      if ((this.read(0, devfn0, 0, 2) & 0xffff) === 0xffff) continue;
      yield devfn0;
      const multi = (this.read(0, devfn0, 0x0e, 1) & 0x80) !== 0;
      if (!multi) continue;
      for (let fn = 1; fn < 8; fn++) {
        if ((this.read(0, devfn0 | fn, 0, 2) & 0xffff) !== 0xffff) yield devfn0 | fn;
      }
    }
  }

  /**
   * POST's PCI enumeration, as SeaBIOS does it: size every BAR of every function on bus 0 (write
   * all-ones, read back the mask), give it naturally aligned space from the I/O window
   * (0xC000 up) or the memory window (`memBase` up, the 32-bit PCI hole), enable decoding and bus
   * mastering, and write the interrupt line the PIIX3 routes the function's pin to. Returns what
   * was assigned, for the log.
   */
  assignResources(memBase: number, memLimit: number): { devfn: number; bar: number; kind: 'io' | 'mem'; base: number; size: number }[] {
    const assigned: { devfn: number; bar: number; kind: 'io' | 'mem'; base: number; size: number }[] = [];
    let io = PCI_IO_START;
    let mem = memBase;
    // The PIIX3 at 00:01.0 holds the PIRQ routing (0x60–0x63); 0x80 in a register = disabled.
    const pirqRoute = [0, 1, 2, 3].map((i) => this.read(0, PIIX_DEVFN, PIIX_PIRQRC + i, 1));
    for (const devfn of this.functions()) {
      const headerType = this.read(0, devfn, 0x0e, 1) & 0x7f;
      if (headerType !== 0) continue;
      let decode = 0;
      for (let bar = 0; bar < 6; bar++) {
        const reg = 0x10 + bar * 4;
        const old = this.read(0, devfn, reg, 4);
        this.write(0, devfn, reg, 4, 0xffffffff);
        const mask = this.read(0, devfn, reg, 4);
        this.write(0, devfn, reg, 4, old);
        if (mask === 0 || mask === 0xffffffff) continue;
        const isIo = (mask & 1) !== 0;
        const is64 = !isIo && ((mask >> 1) & 3) === 2;
        const size = isIo ? ((~(mask & 0xfffc) & 0xffff) + 1) : ((~(mask & 0xfffffff0)) >>> 0) + 1;
        if (isIo) {
          const base = alignUp(io, size);
          if (base + size > 0x10000) continue;
          this.write(0, devfn, reg, 4, base);
          io = base + size;
          decode |= 1;
          assigned.push({ devfn, bar, kind: 'io', base, size });
        } else {
          const base = alignUp(mem, size);
          if (base + size > memLimit) continue;
          this.write(0, devfn, reg, 4, base >>> 0);
          if (is64) this.write(0, devfn, reg + 4, 4, 0);
          mem = base + size;
          decode |= 2;
          assigned.push({ devfn, bar, kind: 'mem', base, size });
        }
        if (is64) bar++;
      }
      if (decode !== 0) this.write(0, devfn, 0x04, 2, (this.read(0, devfn, 0x04, 2) | decode | 4) & 0xffff);
      const pin = this.read(0, devfn, 0x3d, 1);
      if (pin >= 1 && pin <= 4) {
        const irq = pirqRoute[((devfn >> 3) + pin - 2) & 3]!;
        this.write(0, devfn, 0x3c, 1, irq & 0x80 ? 0xff : irq & 0x0f);
      }
    }
    return assigned;
  }

  /** INT 1Ah AH=B1h. */
  int1a(call: BiosCall): void {
    const status = (s: number): void => {
      call.ah = s;
      call.carry = s !== PciStatus.Successful;
    };
    switch (call.al) {
      case 0x01:
        call.edx = PCI_SIGNATURE;
        call.al = 0x01; // configuration mechanism #1
        call.bx = 0x0210; // version 2.10
        call.cl = 0; // last bus
        call.regs.rdi = 0; // no protected-mode entry point
        status(PciStatus.Successful);
        return;
      case 0x02: {
        if (call.dx === 0xffff) return status(PciStatus.BadVendorId);
        const id = ((call.cx << 16) | call.dx) >>> 0;
        return this.find(call, (devfn) => this.read(0, devfn, 0, 4) === id, status);
      }
      case 0x03: {
        const cls = call.ecx & 0xffffff;
        return this.find(call, (devfn) => this.read(0, devfn, 0x08, 4) >>> 8 === cls, status);
      }
      case 0x08:
      case 0x09:
      case 0x0a:
      case 0x0b:
      case 0x0c:
      case 0x0d: {
        const write = call.al >= 0x0b;
        const size = ([1, 2, 4] as const)[(call.al - 0x08) % 3]!;
        const reg = call.di;
        if (reg % size !== 0 || reg > 0xff) return status(PciStatus.BadRegisterNumber);
        if (write) {
          const value = size === 1 ? call.cl : size === 2 ? call.cx : call.ecx;
          this.write(call.bh, call.bl, reg, size, value);
        } else {
          const value = this.read(call.bh, call.bl, reg, size);
          if (size === 1) call.cl = value;
          else if (size === 2) call.cx = value;
          else call.ecx = value;
        }
        return status(PciStatus.Successful);
      }
      default:
        return status(PciStatus.FunctionNotSupported);
    }
  }

  /** The SI-th match (BH = bus, BL = devfn) or "device not found". */
  private find(call: BiosCall, match: (devfn: number) => boolean, status: (s: number) => void): void {
    let index = call.si;
    for (const devfn of this.functions()) {
      if (!match(devfn)) continue;
      if (index-- === 0) {
        call.bh = 0;
        call.bl = devfn;
        return status(PciStatus.Successful);
      }
    }
    status(PciStatus.DeviceNotFound);
  }
}
