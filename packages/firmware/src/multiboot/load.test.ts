import { afterEach, describe, expect, it } from 'vitest';
import {
  Kvm, KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_OUT, type VcpuFd, type VmFd,
} from '@kvmts/kvm-core';
import { BootError } from '../errors.js';
import { E820Type } from '../e820.js';
import { MULTIBOOT_BOOTLOADER_MAGIC, MbInfo, MultibootInfoFlag } from './info.js';
import { MULTIBOOT_CS, MULTIBOOT_DS, enterMultiboot, loadMultiboot, type MultibootBootOptions } from './load.js';
import { MULTIBOOT_TEST_PASS, buildMultibootTestKernel, multibootModuleChecksum, type MultibootTestKernelOptions } from './test-kernel.js';

const MiB = 1 << 20;
const open: { vm: VmFd; kvm: Kvm; vcpu?: VcpuFd }[] = [];
afterEach(() => {
  for (const g of open.splice(0)) {
    g.vcpu?.close();
    g.vm.close();
    g.kvm.close();
  }
});

/** A VM whose RAM starts out full of 0xAA, so anything the loader forgets to write shows. */
function vmWith(ramSize: number) {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const ram = new ArrayBuffer(ramSize);
  new Uint8Array(ram).fill(0xaa);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: ramSize, userspaceAddr: ram });
  const g: { vm: VmFd; kvm: Kvm; vcpu?: VcpuFd } = { vm, kvm };
  open.push(g);
  return { g, vm, dv: new DataView(ram), bytes: new Uint8Array(ram) };
}

const moduleA = new TextEncoder().encode('first module: hello from the initrd\n');
const moduleB = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 7 + 3) & 0xff);
const CMDLINE = 'console=ttyS0 answer=42';

/** Loads `kernel`, enters it, and runs it to the debug-exit write, collecting COM1 output. */
function boot(kernel: Uint8Array, o: Omit<MultibootBootOptions, 'kernel' | 'ramSize'> & { ramSize?: number } = {}) {
  const ramSize = o.ramSize ?? 32 * MiB;
  const { g, vm, dv, bytes } = vmWith(ramSize);
  const loaded = loadMultiboot(vm.memory, { ...o, kernel, ramSize });
  const vcpu = (g.vcpu = vm.createVcpu(0));
  enterMultiboot(vcpu, loaded);
  let serial = '';
  let exitCode: number | undefined;
  for (let i = 0; i < 100_000 && exitCode === undefined; i++) {
    const reason = vcpu.run();
    if (reason === KVM_EXIT_INTR) continue;
    if (reason === KVM_EXIT_HLT) break;
    const io = vcpu.runData.io;
    if (reason !== KVM_EXIT_IO || io.direction !== KVM_EXIT_IO_OUT) throw new Error(`unexpected exit ${reason} (port 0x${io.port.toString(16)})`);
    if (io.port === 0x3f8) serial += String.fromCharCode(...io.data.subarray(0, io.size * io.count));
    else if (io.port === 0xf4) exitCode = io.data[0]!;
    else throw new Error(`OUT to unexpected port 0x${io.port.toString(16)}`);
  }
  return { loaded, serial, exitCode, dv, bytes, vcpu };
}

function testKernel(o: Partial<MultibootTestKernelOptions> = {}): Uint8Array {
  return buildMultibootTestKernel({ format: 'elf', expectedCmdline: CMDLINE, expectedModules: [moduleA, moduleB], ...o });
}
const modules = [{ data: moduleA, string: 'modA.bin' }, { data: moduleB, string: 'initrd-b.img arg=1' }];

describe('the Multiboot test kernel on a vCPU', () => {
  it.each(['elf', 'aout-kludge'] as const)('%s: passes every check and reports the info it was given', (format) => {
    const kernel = testKernel({ format, loadAddress: format === 'elf' ? 0x100000 : 0x200000 });
    const r = boot(kernel, { cmdline: CMDLINE, modules });
    expect(r.loaded.image.format).toBe(format);
    expect(r.loaded.entry).toBeGreaterThanOrEqual(format === 'elf' ? 0x100000 : 0x200000);
    const lines = r.serial.split('\n');
    expect(lines).toContain('eax=0x2BADB002');
    expect(lines).toContain(`mem_lower=639 mem_upper=${(32 * MiB - MiB) / 1024}`);
    expect(lines).toContain(`mmap: RAM at 1 MiB, KiB=${(32 * MiB - MiB) / 1024}`);
    expect(lines).toContain(`cmdline='${CMDLINE}'`);
    expect(lines).toContain('mods=2');
    expect(lines).toContain(`mod0 'modA.bin' size=${moduleA.length} sum=0x${multibootModuleChecksum(moduleA).toString(16).toUpperCase().padStart(8, '0')}`);
    expect(lines).toContain(`mod1 'initrd-b.img arg=1' size=10000 sum=0x${multibootModuleChecksum(moduleB).toString(16).toUpperCase().padStart(8, '0')}`);
    expect(lines).toContain("loader='kvmts'");
    expect(r.serial).not.toContain('FAIL');
    expect(lines).toContain(MULTIBOOT_TEST_PASS);
    expect(r.exitCode).toBe(0);
  });

  it('translates a higher-half ELF entry point to its physical address', () => {
    const r = boot(testKernel({ virtualOffset: 0xc0000000 }), { cmdline: CMDLINE, modules });
    expect(r.loaded.entry).toBeLessThan(0x200000);
    expect(r.serial).toContain(MULTIBOOT_TEST_PASS);
  });

  it('fails its checks (and says which) when the loader passes the wrong things', () => {
    const r = boot(testKernel(), { cmdline: 'something else', modules: [modules[0]!, { data: moduleA, string: 'wrong' }] });
    expect(r.serial).toContain('FAIL: the command line differs from the expected one');
    expect(r.serial).toContain('FAIL: a module checksum differs');
    expect(r.serial).toContain('multiboot-test: FAIL, failed checks: 2');
    expect(r.exitCode).toBe(2);
    const noModules = boot(testKernel(), { cmdline: CMDLINE });
    expect(noModules.serial).toContain('FAIL: module count is not 2');
    expect(noModules.exitCode).toBe(1);
  });
});

describe('loadMultiboot', () => {
  it('enters in flat 32-bit protected mode with EAX = 0x2BADB002 and EBX = the info, paging and interrupts off', () => {
    const { vm, bytes } = vmWith(16 * MiB);
    const loaded = loadMultiboot(vm.memory, { kernel: testKernel(), ramSize: 16 * MiB });
    const vcpu = vm.createVcpu(0);
    open[open.length - 1]!.vcpu = vcpu;
    enterMultiboot(vcpu, loaded);
    const regs = vcpu.getRegs();
    expect(regs.rax).toBe(MULTIBOOT_BOOTLOADER_MAGIC);
    expect(regs.rbx).toBe(loaded.infoAddress);
    expect(regs.rip).toBe(loaded.entry);
    expect(regs.rflags & 0x20200).toBe(0); // IF and VM clear
    const s = vcpu.getSregs();
    expect(s.cr0 & 0x80000001).toBe(1);
    for (const seg of [s.cs, s.ds, s.es, s.fs, s.gs, s.ss]) {
      expect([seg.base, seg.limit, seg.db, seg.present]).toEqual([0, 0xffffffff, 1, 1]);
    }
    expect(s.cs.selector).toBe(MULTIBOOT_CS);
    expect(s.ss.selector).toBe(MULTIBOOT_DS);
    expect(Array.from(bytes.subarray(loaded.gdtAddress + 8, loaded.gdtAddress + 16))).toEqual([0xff, 0xff, 0, 0, 0, 0x9b, 0xcf, 0]);
  });

  it('builds the info structure: memory sizes, command line, modules page-aligned after the kernel, E820 memory map, loader name', () => {
    const { vm, dv, bytes } = vmWith(64 * MiB);
    const acpi = { addr: 64 * MiB - 0x10000, size: 0x10000, type: E820Type.Acpi };
    const loaded = loadMultiboot(vm.memory, { kernel: testKernel(), cmdline: CMDLINE, modules, ramSize: 64 * MiB, reserved: [acpi] });
    const info = loaded.infoAddress;
    const u32 = (a: number) => dv.getUint32(a, true);
    const cstr = (a: number) => {
      let e = a;
      while (bytes[e] !== 0) e++;
      return new TextDecoder().decode(bytes.subarray(a, e));
    };
    const F = MultibootInfoFlag;
    expect(u32(info + MbInfo.FLAGS)).toBe(F.MEMORY | F.CMDLINE | F.MODS | F.MMAP | F.BOOT_LOADER_NAME);
    expect(u32(info + MbInfo.MEM_LOWER)).toBe(639);
    expect(u32(info + MbInfo.MEM_UPPER)).toBe((64 * MiB - 0x10000 - MiB) / 1024); // up to the ACPI tables
    expect(cstr(u32(info + MbInfo.CMDLINE))).toBe(CMDLINE);
    expect(cstr(u32(info + MbInfo.BOOT_LOADER_NAME))).toBe('kvmts');
    expect(u32(info + MbInfo.MODS_COUNT)).toBe(2);
    const mods = u32(info + MbInfo.MODS_ADDR);
    const kernelEnd = loaded.image.end;
    const starts = [u32(mods), u32(mods + 16)];
    expect(starts[0]).toBe(Math.ceil(kernelEnd / 4096) * 4096);
    expect(starts.every((s) => s % 4096 === 0)).toBe(true);
    expect(u32(mods + 4) - u32(mods)).toBe(moduleA.length);
    expect(u32(mods + 20) - u32(mods + 16)).toBe(moduleB.length);
    expect(cstr(u32(mods + 8))).toBe('modA.bin');
    expect(cstr(u32(mods + 24))).toBe('initrd-b.img arg=1');
    expect(Array.from(bytes.subarray(starts[1]!, starts[1]! + moduleB.length))).toEqual(Array.from(moduleB));
    // The memory map: walk it by each entry's size field, as kernels do.
    const map: { addr: number; size: number; type: number }[] = [];
    const mmap = u32(info + MbInfo.MMAP_ADDR);
    for (let p = mmap; p < mmap + u32(info + MbInfo.MMAP_LENGTH); p += u32(p) + 4) {
      map.push({ addr: u32(p + 4) + u32(p + 8) * 2 ** 32, size: u32(p + 12) + u32(p + 16) * 2 ** 32, type: u32(p + 20) });
    }
    expect(map).toEqual([
      { addr: 0, size: 0x9fc00, type: E820Type.Ram },
      { addr: 0x9fc00, size: 0x400, type: E820Type.Reserved },
      { addr: 0xf0000, size: 0x10000, type: E820Type.Reserved },
      { addr: MiB, size: 63 * MiB - 0x10000, type: E820Type.Ram },
      acpi,
    ]);
    // Nothing the loader placed overlaps the kernel, and it all lies in RAM.
    for (const [start, end] of [[loaded.gdtAddress, info + MbInfo.SIZE], [starts[0]!, starts[0]! + moduleA.length]] as const) {
      expect(end <= loaded.image.start || start >= loaded.image.end).toBe(true);
      expect(start).toBeGreaterThanOrEqual(0x1000);
    }
  });

  it('zeroes the bss and loads the a.out-kludge text at load_addr', () => {
    const kernel = testKernel({ format: 'aout-kludge', loadAddress: 0x300000 });
    const { vm, bytes } = vmWith(16 * MiB);
    const loaded = loadMultiboot(vm.memory, { kernel, ramSize: 16 * MiB });
    expect(loaded.image.segments).toHaveLength(1);
    expect(loaded.image.start).toBe(0x300000);
    expect(loaded.image.end).toBe(0x300000 + kernel.length + 0x1000);
    expect(Array.from(bytes.subarray(0x300000, 0x300000 + kernel.length))).toEqual(Array.from(kernel));
    expect(bytes.subarray(0x300000 + kernel.length, loaded.image.end).every((b) => b === 0)).toBe(true);
    expect(bytes[loaded.image.end]).toBe(0xaa);
  });

  it('refuses a kernel outside RAM and modules that do not fit, with clear messages', () => {
    const { vm } = vmWith(4 * MiB);
    expect(() => loadMultiboot(vm.memory, { kernel: testKernel({ loadAddress: 0x800000 }), ramSize: 4 * MiB }))
      .toThrow(/segment at 0x800000-0x80[0-9a-f]+, which is not in RAM: RAM ends at 0x400000, give the VM more memory/);
    expect(() => loadMultiboot(vm.memory, { kernel: testKernel({ loadAddress: 0xa0000 }), ramSize: 4 * MiB }))
      .toThrow(/not in RAM \(it overlaps memory reserved/);
    expect(() => loadMultiboot(vm.memory, { kernel: testKernel(), ramSize: 4 * MiB, modules: [{ data: new Uint8Array(3 * MiB), string: 'big.img' }] }))
      .toThrow(/module 1 \('big.img', 3145728 bytes\) does not fit in RAM/);
    expect(() => loadMultiboot(vm.memory, { kernel: testKernel(), ramSize: 4 * MiB, modules: [{ data: new Uint8Array(3 * MiB), string: 'big.img' }] }))
      .toThrow(BootError);
  });
});
