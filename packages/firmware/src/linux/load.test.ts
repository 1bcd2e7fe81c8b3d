import { describe, expect, it } from 'vitest';
import { Kvm, KVM_EXIT_HLT } from '@kvmts/kvm-core';
import { BootError } from '../errors.js';
import { E820Type } from '../e820.js';
import { BOOT_CS, BOOT_DS, Layout, enterLinux, loadLinux } from './load.js';
import { BootParams } from './boot-params.js';
import { Hdr } from './bzimage.js';
import { fakeBzImage } from './bzimage.test.js';

function vmWith(ramSize: number) {
  const vm = new Kvm().createVm();
  const ram = new ArrayBuffer(ramSize);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: ramSize, userspaceAddr: ram });
  return { vm, dv: new DataView(ram), bytes: new Uint8Array(ram) };
}

describe('loadLinux', () => {
  it('places the kernel at 1 MiB, the command line, the initrd at the top of RAM, and fills boot_params', () => {
    const { vm, dv, bytes } = vmWith(64 << 20);
    const initrd = new Uint8Array(100_000).fill(0x5a);
    const loaded = loadLinux(vm.memory, { kernel: fakeBzImage(), initrd, cmdline: 'console=ttyS0 quiet', ramSize: 64 << 20 });
    expect(bytes[Layout.KERNEL + 0x20]).toBe(0x20);
    const zp = Layout.ZERO_PAGE;
    expect(new TextDecoder().decode(bytes.subarray(Layout.CMDLINE, Layout.CMDLINE + 19))).toBe('console=ttyS0 quiet');
    expect(bytes[Layout.CMDLINE + 19]).toBe(0);
    expect(dv.getUint32(zp + Hdr.CMD_LINE_PTR, true)).toBe(Layout.CMDLINE);
    expect(bytes[zp + Hdr.TYPE_OF_LOADER]).toBe(0xff);
    expect(dv.getUint16(zp + Hdr.BOOT_FLAG, true)).toBe(0xaa55); // the header was copied
    // The initrd: page-aligned, as high as RAM allows.
    expect(loaded.initrd).toEqual({ addr: Math.floor(((64 << 20) - 100_000) / 4096) * 4096, size: 100_000 });
    expect(dv.getUint32(zp + Hdr.RAMDISK_IMAGE, true)).toBe(loaded.initrd!.addr);
    expect(dv.getUint32(zp + Hdr.RAMDISK_SIZE, true)).toBe(100_000);
    expect(bytes[loaded.initrd!.addr]).toBe(0x5a);
    // E820: 639 KiB conventional, EBDA and BIOS reserved, RAM from 1 MiB to 64 MiB.
    expect(bytes[zp + BootParams.E820_ENTRIES]).toBe(4);
    const entry = (i: number) => ({
      addr: dv.getUint32(zp + BootParams.E820_TABLE + i * 20, true),
      size: dv.getUint32(zp + BootParams.E820_TABLE + i * 20 + 8, true),
      type: dv.getUint32(zp + BootParams.E820_TABLE + i * 20 + 16, true),
    });
    expect([0, 1, 2, 3].map(entry)).toEqual([
      { addr: 0, size: 0x9fc00, type: E820Type.Ram },
      { addr: 0x9fc00, size: 0x400, type: E820Type.Reserved },
      { addr: 0xf0000, size: 0x10000, type: E820Type.Reserved },
      { addr: 0x100000, size: (64 << 20) - 0x100000, type: E820Type.Ram },
    ]);
    expect(dv.getUint32(zp + BootParams.ALT_MEM_K, true)).toBe(((64 << 20) - 0x100000) / 1024);
  });

  it('honours initrd_addr_max', () => {
    const { vm } = vmWith(64 << 20);
    const loaded = loadLinux(vm.memory, { kernel: fakeBzImage({ initrdMax: 0x01ffffff }), initrd: new Uint8Array(8192), ramSize: 64 << 20 });
    expect(loaded.initrd!.addr).toBe(0x02000000 - 8192);
  });

  it('refuses a command line longer than the kernel accepts, an initrd that does not fit, and too little RAM', () => {
    const { vm } = vmWith(4 << 20);
    expect(() => loadLinux(vm.memory, { kernel: fakeBzImage({ cmdlineSize: 8 }), cmdline: 'console=ttyS0', ramSize: 4 << 20 }))
      .toThrow(/13 bytes; this kernel accepts at most 8/);
    expect(() => loadLinux(vm.memory, { kernel: fakeBzImage(), initrd: new Uint8Array(3 << 20), ramSize: 4 << 20 }))
      .toThrow(BootError);
    expect(() => loadLinux(vm.memory, { kernel: fakeBzImage({ initSize: 8 << 20 }), ramSize: 4 << 20 }))
      .toThrow(/give the VM more memory/);
  });

  it('enters at code32_start in flat protected mode with ESI = boot_params, as the protocol documents', () => {
    const { vm, bytes } = vmWith(16 << 20);
    // A "kernel" whose first instructions check the entry state: cs, ds, esi, then hlt.
    const kernel = fakeBzImage({ kernel: 64 });
    const k = (5) * 512;
    kernel.set([0x8c, 0xc8, 0x8c, 0xdb, 0xf4], k); // mov ax, cs; mov bx, ds; hlt (32-bit code)
    const loaded = loadLinux(vm.memory, { kernel, ramSize: 16 << 20 });
    const vcpu = vm.createVcpu(0);
    enterLinux(vcpu, loaded);
    expect(vcpu.run()).toBe(KVM_EXIT_HLT);
    const regs = vcpu.getRegs();
    expect(regs.rax & 0xffff).toBe(BOOT_CS);
    expect(regs.rbx & 0xffff).toBe(BOOT_DS);
    expect(regs.rsi).toBe(Layout.ZERO_PAGE);
    expect(regs.rip).toBe(0x100005);
    expect(regs.rflags & 0x200).toBe(0); // interrupts off
    const sregs = vcpu.getSregs();
    expect(sregs.cr0 & 0x80000001).toBe(1); // protected mode, no paging
    expect(sregs.cs.db).toBe(1);
    // The GDT really holds the two flat descriptors.
    expect(Array.from(bytes.subarray(Layout.GDT + BOOT_CS, Layout.GDT + BOOT_CS + 8))).toEqual([0xff, 0xff, 0, 0, 0, 0x9b, 0xcf, 0]);
  });
});
