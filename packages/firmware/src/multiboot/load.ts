/**
 * Direct Multiboot (version 1) boot, as QEMU's `-kernel` does for Multiboot images: load the
 * kernel, its modules (one per initrd file) and the Multiboot information, and start the vCPU
 * in the 32-bit protected-mode state the spec documents (section 3.2).
 *
 * Placement: the kernel where its ELF program headers or Multiboot address fields say (it
 * must lie in RAM); modules page-aligned right after the kernel (falling back to any free
 * RAM); the information block and the loader's GDT in the lowest free RAM above the first page.
 * Nothing overlaps the kernel, and everything stays in the E820 map's RAM below its end.
 * @module
 */
import type { GuestMemory, VcpuFd } from '@kvmts/kvm-core';
import { E820Type, pcE820, type E820Entry } from '../e820.js';
import { BootError } from '../errors.js';
import { parseMultiboot, type MultibootImage } from './image.js';
import { buildMultibootInfo, multibootInfoSize, MULTIBOOT_BOOTLOADER_MAGIC, type PlacedModule } from './info.js';

/** Selectors of the loader's flat GDT (the kernel must load its own before reloading segments). */
export const MULTIBOOT_CS = 0x08;
export const MULTIBOOT_DS = 0x10;
const GDT_SIZE = 24;
const PAGE = 4096;

/** A module (initrd file) to hand to the kernel. */
export interface MultibootModule {
  data: Uint8Array;
  /** Its string in the module list (QEMU and GRUB use the file name and arguments). */
  string: string;
}

export interface MultibootBootOptions {
  kernel: Uint8Array;
  modules?: readonly MultibootModule[];
  cmdline?: string;
  /** Guest RAM size in bytes (RAM is at guest-physical 0). */
  ramSize: number;
  /** Extra reserved E820 ranges (APICs, ROMs, ACPI tables). */
  reserved?: readonly E820Entry[];
  /** What to call the kernel in error messages. */
  name?: string;
  bootLoaderName?: string;
}

export interface LoadedMultiboot {
  image: MultibootImage;
  entry: number;
  /** Guest address of the Multiboot information (EBX). */
  infoAddress: number;
  gdtAddress: number;
  modules: PlacedModule[];
  e820: E820Entry[];
  memLowerKiB: number;
  memUpperKiB: number;
}

const hex = (v: number) => `0x${v.toString(16)}`;
const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** First-fit placement in the map's RAM below 4 GiB, around ranges already taken. */
class RamAllocator {
  private readonly ram: { start: number; end: number }[];
  private readonly taken: { start: number; end: number }[] = [];

  constructor(e820: readonly E820Entry[]) {
    this.ram = e820
      .filter((e) => e.type === E820Type.Ram)
      .map((e) => ({ start: e.addr, end: Math.min(e.addr + e.size, 0x1_0000_0000) }))
      .sort((a, b) => a.start - b.start);
  }

  /** The RAM region that holds all of [start, end), if any. */
  regionOf(start: number, end: number): { start: number; end: number } | undefined {
    return this.ram.find((r) => start >= r.start && end <= r.end);
  }

  take(start: number, end: number): void {
    this.taken.push({ start, end });
  }

  /** Lowest `align`-aligned address >= `floor` with `size` free bytes, or undefined. */
  place(size: number, align: number, floor: number): number | undefined {
    for (const r of this.ram) {
      let at = alignUp(Math.max(r.start, floor), align);
      for (;;) {
        if (at + size > r.end) break;
        const clash = this.taken.find((t) => at < t.end && t.start < at + size);
        if (clash === undefined) {
          this.take(at, at + size);
          return at;
        }
        at = alignUp(clash.end, align);
      }
    }
    return undefined;
  }
}

/** Loads the kernel and modules and writes the Multiboot information and a flat GDT. */
export function loadMultiboot(memory: GuestMemory, o: MultibootBootOptions): LoadedMultiboot {
  const name = o.name ?? 'kernel image';
  const image = parseMultiboot(o.kernel, name);
  const e820 = pcE820(o.ramSize, o.reserved ?? []);
  const ram = new RamAllocator(e820);
  const ramTop = Math.max(...e820.filter((e) => e.type === E820Type.Ram).map((e) => e.addr + e.size));

  for (const s of image.segments) {
    const end = s.addr + s.memSize;
    if (ram.regionOf(s.addr, end) === undefined) {
      const hint = end > ramTop ? `: RAM ends at ${hex(ramTop)}, give the VM more memory` : ' (it overlaps memory reserved for the BIOS, devices or ACPI)';
      throw new BootError(`${name} loads a segment at ${hex(s.addr)}-${hex(end - 1)}, which is not in RAM${hint}`);
    }
  }
  for (const s of image.segments) {
    memory.write(s.addr, s.data);
    if (s.memSize > s.data.length) memory.write(s.addr + s.data.length, new Uint8Array(s.memSize - s.data.length));
  }
  // The first page stays free too: nothing the kernel is given should sit at a null pointer.
  ram.take(0, PAGE);
  ram.take(image.start, image.end);

  const modules: PlacedModule[] = [];
  for (const [i, m] of (o.modules ?? []).entries()) {
    // Page-aligned whether or not the kernel asks (header flag bit 0); an empty module still gets an address.
    const size = Math.max(m.data.length, 1);
    const at = ram.place(size, PAGE, image.end) ?? ram.place(size, PAGE, 0);
    if (at === undefined) {
      const total = (o.modules ?? []).reduce((n, x) => n + x.data.length, 0);
      throw new BootError(`module ${i + 1} ('${m.string}', ${m.data.length} bytes) does not fit in RAM beside the kernel and the other modules (${total} bytes in all): give the VM more memory`);
    }
    memory.write(at, m.data);
    modules.push({ start: at, end: at + m.data.length, string: m.string });
  }

  const cmdline = o.cmdline ?? '';
  const infoParts = { cmdline, modules, e820, ...(o.bootLoaderName !== undefined ? { bootLoaderName: o.bootLoaderName } : {}) };
  const blockSize = GDT_SIZE + multibootInfoSize(infoParts);
  const block = ram.place(blockSize, 8, 0);
  if (block === undefined) throw new BootError(`the Multiboot information (${blockSize} bytes) does not fit in RAM beside the kernel and its modules: give the VM more memory`);
  const gdtAddress = block;
  const info = buildMultibootInfo({ address: block + GDT_SIZE, ...infoParts });

  // A flat GDT: null, 4 GiB code (0x08) and data (0x10), both 32-bit and page-granular.
  const gdt = new Uint8Array(GDT_SIZE);
  const dv = new DataView(gdt.buffer);
  dv.setUint32(MULTIBOOT_CS, 0x0000ffff, true); dv.setUint32(MULTIBOOT_CS + 4, 0x00cf9b00, true);
  dv.setUint32(MULTIBOOT_DS, 0x0000ffff, true); dv.setUint32(MULTIBOOT_DS + 4, 0x00cf9300, true);
  memory.write(gdtAddress, gdt);
  memory.write(info.infoAddress, info.bytes);
  return {
    image, entry: image.entry, infoAddress: info.infoAddress, gdtAddress, modules, e820,
    memLowerKiB: info.memLowerKiB, memUpperKiB: info.memUpperKiB,
  };
}

/**
 * The Multiboot entry state (spec section 3.2): EAX = 0x2BADB002, EBX = the information's
 * address, CS a flat 4 GiB 32-bit code segment and DS/ES/FS/GS/SS flat data segments,
 * CR0.PE = 1 with paging off, EFLAGS.IF = EFLAGS.VM = 0. A20 is always on (kvm-core does not
 * mask it). GDTR points at the loader's GDT; IDTR and ESP are left empty, as the spec allows.
 */
export function enterMultiboot(vcpu: VcpuFd, loaded: LoadedMultiboot): void {
  const sregs = vcpu.getSregs();
  const flat = (sel: number, code: boolean) => ({
    base: 0, limit: 0xffffffff, selector: sel, type: code ? 0xb : 0x3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
  });
  sregs.cs = flat(MULTIBOOT_CS, true);
  sregs.ds = flat(MULTIBOOT_DS, false); sregs.es = flat(MULTIBOOT_DS, false); sregs.ss = flat(MULTIBOOT_DS, false);
  sregs.fs = flat(MULTIBOOT_DS, false); sregs.gs = flat(MULTIBOOT_DS, false);
  sregs.gdt = { base: loaded.gdtAddress, limit: GDT_SIZE - 1 };
  sregs.idt = { base: 0, limit: 0 };
  sregs.cr0 = 0x11; // PE | ET
  sregs.cr3 = 0; sregs.cr4 = 0;
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  for (const k of ['rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp'] as const) regs[k] = 0;
  regs.rax = MULTIBOOT_BOOTLOADER_MAGIC;
  regs.rbx = loaded.infoAddress;
  regs.rip = loaded.entry;
  regs.rflags = 2;
  vcpu.setRegs(regs);
}
