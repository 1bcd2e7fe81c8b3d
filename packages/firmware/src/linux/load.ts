/**
 * Direct Linux boot: put a bzImage, its initrd, command line and boot_params in guest memory,
 * and start the vCPU at the 32-bit entry point in the state the boot protocol documents.
 * @module
 */
import type { GuestMemory, VcpuFd } from '@kvmts/kvm-core';
import { pcE820, type E820Entry } from '../e820.js';
import { BootError } from '../errors.js';
import { parseBzImage, type BzImage } from './bzimage.js';
import { buildBootParams } from './boot-params.js';

/** Where the loader puts its pieces (all below 640 KiB except the kernel and the initrd). */
export const Layout = {
  GDT: 0x6000,
  ZERO_PAGE: 0x7000,
  CMDLINE: 0x20000,
  /** The protected-mode kernel's load address for the 32-bit entry. */
  KERNEL: 0x100000,
} as const;

/** Selectors the boot protocol requires: __BOOT_CS and __BOOT_DS. */
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;

export interface LinuxBootOptions {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline?: string;
  /** Guest RAM size in bytes (RAM is at guest-physical 0). */
  ramSize: number;
  /** Extra reserved E820 ranges (APICs, ROMs, ACPI tables). */
  reserved?: readonly E820Entry[];
  /** Guest address of the ACPI RSDP, passed in boot_params.acpi_rsdp_addr. */
  rsdpAddr?: number;
}

export interface LoadedLinux {
  image: BzImage;
  entry: number;
  bootParams: number;
  initrd: { addr: number; size: number } | undefined;
  e820: E820Entry[];
}

/** Places the kernel, initrd, command line, GDT and boot_params in guest memory. */
export function loadLinux(memory: GuestMemory, o: LinuxBootOptions): LoadedLinux {
  const image = parseBzImage(o.kernel);
  const e820 = pcE820(o.ramSize, o.reserved ?? []);
  const ramTop = Math.max(...e820.filter((e) => e.type === 1).map((e) => e.addr + e.size));
  const kernelEnd = Layout.KERNEL + Math.max(image.kernel.length, image.initSize);
  if (kernelEnd > ramTop) {
    throw new BootError(`the kernel needs memory up to 0x${kernelEnd.toString(16)} to start, but RAM ends at 0x${ramTop.toString(16)}: give the VM more memory`);
  }
  memory.write(Layout.KERNEL, image.kernel);

  const cmdline = new TextEncoder().encode(o.cmdline ?? '');
  if (cmdline.length > image.cmdlineSize) {
    throw new BootError(`the kernel command line is ${cmdline.length} bytes; this kernel accepts at most ${image.cmdlineSize}`);
  }
  const cmdBuf = new Uint8Array(cmdline.length + 1);
  cmdBuf.set(cmdline);
  memory.write(Layout.CMDLINE, cmdBuf);

  let initrd: { addr: number; size: number } | undefined;
  if (o.initrd && o.initrd.length > 0) {
    // As high as the kernel allows, page-aligned, and clear of the kernel's working area.
    const top = Math.min(image.initrdAddrMax + 1, ramTop);
    const addr = Math.floor((top - o.initrd.length) / 4096) * 4096;
    if (addr < kernelEnd) {
      throw new BootError(`the initrd (${o.initrd.length} bytes) does not fit between the kernel (ending at 0x${kernelEnd.toString(16)}) and 0x${top.toString(16)}: give the VM more memory`);
    }
    memory.write(addr, o.initrd);
    initrd = { addr, size: o.initrd.length };
  }

  // A flat GDT with __BOOT_CS and __BOOT_DS, as the 32-bit boot protocol requires.
  const gdt = new Uint8Array(32);
  const dv = new DataView(gdt.buffer);
  dv.setUint32(BOOT_CS, 0x0000ffff, true); dv.setUint32(BOOT_CS + 4, 0x00cf9b00, true);
  dv.setUint32(BOOT_DS, 0x0000ffff, true); dv.setUint32(BOOT_DS + 4, 0x00cf9300, true);
  memory.write(Layout.GDT, gdt);

  memory.write(Layout.ZERO_PAGE, buildBootParams({ header: image.header, cmdlineAddr: Layout.CMDLINE, initrd, e820, rsdpAddr: o.rsdpAddr }));
  return { image, entry: image.code32Start, bootParams: Layout.ZERO_PAGE, initrd, e820 };
}

/**
 * The 32-bit entry state: flat CS = __BOOT_CS and DS = ES = SS = __BOOT_DS from the GDT,
 * protected mode without paging, interrupts off, ESI = boot_params, EBP = EDI = EBX = 0.
 */
export function enterLinux(vcpu: VcpuFd, loaded: LoadedLinux): void {
  const sregs = vcpu.getSregs();
  const flat = (sel: number, code: boolean) => ({
    base: 0, limit: 0xffffffff, selector: sel, type: code ? 0xb : 0x3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
  });
  sregs.cs = flat(BOOT_CS, true);
  sregs.ds = flat(BOOT_DS, false); sregs.es = flat(BOOT_DS, false); sregs.ss = flat(BOOT_DS, false);
  sregs.fs = flat(BOOT_DS, false); sregs.gs = flat(BOOT_DS, false);
  sregs.gdt = { base: Layout.GDT, limit: 0x1f };
  sregs.idt = { base: 0, limit: 0 };
  sregs.cr0 = 0x11; // PE | ET
  sregs.cr3 = 0; sregs.cr4 = 0;
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  for (const k of ['rax', 'rbx', 'rcx', 'rdx', 'rdi', 'rbp', 'rsp'] as const) regs[k] = 0;
  regs.rsi = loaded.bootParams;
  regs.rip = loaded.entry;
  regs.rflags = 2;
  vcpu.setRegs(regs);
}
