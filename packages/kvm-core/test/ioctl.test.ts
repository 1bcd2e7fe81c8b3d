/**
 * The raw ioctl layer (`open`, `ioctl`, `close`, `mmapRun`, `vmMemory`) and the typed wrappers
 * over it: Linux request numbers, capabilities, descriptor lifetimes and argument errors.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  Kvm, KvmError, KvmRun, close, emptyRegs, emptySregs, ioctl, mmapRun, open, vmMemory,
  KVM_API_VERSION, KVM_CAP_HLT, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_CAP_MAX_VCPUS,
  KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS, KVM_CAP_READONLY_MEM, KVM_CAP_USER_MEMORY, KVM_CHECK_EXTENSION,
  KVM_CLEAR_DIRTY_LOG, KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_EXIT_HLT, KVM_GET_API_VERSION, KVM_GET_DIRTY_LOG,
  KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_VCPU_MMAP_SIZE, KVM_MAX_VCPUS, KVM_RUN, KVM_RUN_MMAP_SIZE,
  KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_USER_MEMORY_REGION, KVM_USER_MEM_SLOTS,
} from '../src/index.js';
import { closeGuests, createGuest, hex, realSeg, kvmError } from './helpers.js';

afterEach(closeGuests);


/** Descriptors opened by a test through the raw layer, closed afterwards. */
const rawFds: number[] = [];
afterEach(() => {
  for (const fd of rawFds.splice(0)) {
    try { close(fd); } catch { /* already closed by the test */ }
  }
});
function track(fd: number): number {
  rawFds.push(fd);
  return fd;
}

describe('request numbers and constants', () => {
  it('are the values of <linux/kvm.h> on x86_64', () => {
    expect(KVM_GET_API_VERSION).toBe(0xae00);
    expect(KVM_CREATE_VM).toBe(0xae01);
    expect(KVM_CHECK_EXTENSION).toBe(0xae03);
    expect(KVM_GET_VCPU_MMAP_SIZE).toBe(0xae04);
    expect(KVM_CREATE_VCPU).toBe(0xae41);
    expect(KVM_GET_DIRTY_LOG).toBe(0x4010ae42);
    expect(KVM_SET_USER_MEMORY_REGION).toBe(0x4020ae46);
    expect(KVM_CLEAR_DIRTY_LOG).toBe(0xc018aec0);
    expect(KVM_RUN).toBe(0xae80);
    expect(KVM_GET_REGS).toBe(0x8090ae81);
    expect(KVM_SET_REGS).toBe(0x4090ae82);
    expect(KVM_GET_SREGS).toBe(0x8138ae83);
    expect(KVM_SET_SREGS).toBe(0x4138ae84);
  });

  it('encode the struct sizes as _IOR/_IOW do (size in bits 16..29, direction in 30..31)', () => {
    const size = (req: number) => (req >>> 16) & 0x3fff;
    const dir = (req: number) => req >>> 30;
    expect(size(KVM_GET_REGS)).toBe(144); // sizeof(struct kvm_regs)
    expect(size(KVM_GET_SREGS)).toBe(312); // sizeof(struct kvm_sregs)
    expect(size(KVM_SET_USER_MEMORY_REGION)).toBe(32);
    expect(size(KVM_GET_DIRTY_LOG)).toBe(16);
    expect(dir(KVM_GET_REGS)).toBe(2); // _IOR
    expect(dir(KVM_SET_REGS)).toBe(1); // _IOW
    expect(dir(KVM_CLEAR_DIRTY_LOG)).toBe(3); // _IOWR
  });
});

describe('the /dev/kvm descriptor', () => {
  it('reports API version 12 through both layers', () => {
    const fd = track(open('/dev/kvm'));
    expect(ioctl(fd, KVM_GET_API_VERSION)).toBe(12);
    expect(KVM_API_VERSION).toBe(12);
    const kvm = new Kvm();
    expect(kvm.getApiVersion()).toBe(12);
    kvm.close();
  });

  it('hands out distinct descriptors above stdin/stdout/stderr', () => {
    const a = track(open('/dev/kvm'));
    const b = track(open('/dev/kvm'));
    const vm = track(ioctl(a, KVM_CREATE_VM, 0));
    expect(a).toBeGreaterThan(2);
    expect(new Set([a, b, vm]).size).toBe(3);
  });

  it('answers KVM_CHECK_EXTENSION with positive values for present capabilities and 0 otherwise', () => {
    const kvm = new Kvm();
    for (const cap of [KVM_CAP_HLT, KVM_CAP_USER_MEMORY, KVM_CAP_READONLY_MEM, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2]) {
      expect(kvm.checkExtension(cap), `cap ${cap}`).toBe(1);
    }
    expect(kvm.checkExtension(KVM_CAP_NR_MEMSLOTS)).toBe(KVM_USER_MEM_SLOTS);
    expect(KVM_USER_MEM_SLOTS).toBe(32);
    expect(kvm.checkExtension(KVM_CAP_NR_VCPUS)).toBe(KVM_MAX_VCPUS);
    expect(kvm.checkExtension(KVM_CAP_MAX_VCPUS)).toBe(KVM_MAX_VCPUS);
    expect(KVM_MAX_VCPUS).toBeGreaterThan(0);
    // Absent capabilities: numbers Linux has not assigned.
    expect(kvm.checkExtension(100_000)).toBe(0);
    expect(kvm.checkExtension(0x7fffffff)).toBe(0);
    expect(kvm.checkExtension(-1)).toBe(0);
    // The VM descriptor answers the same question.
    const vm = kvm.createVm();
    expect(vm.checkExtension(KVM_CAP_READONLY_MEM)).toBe(1);
    expect(vm.checkExtension(KVM_CAP_NR_MEMSLOTS)).toBe(32);
    expect(vm.checkExtension(100_000)).toBe(0);
    vm.close();
    kvm.close();
  });

  it('reports the kvm_run mapping size', () => {
    const kvm = new Kvm();
    expect(kvm.getVcpuMmapSize()).toBe(4096);
    expect(KVM_RUN_MMAP_SIZE).toBe(4096);
    kvm.close();
  });

  it('rejects other device paths with ENOENT', () => {
    const e = kvmError(() => open('/dev/other'));
    expect(e.errno).toBe('ENOENT');
    expect(e.message).toContain('/dev/other');
    expect(kvmError(() => open('/dev/kvm ')).errno).toBe('ENOENT');
  });

  it('rejects KVM_CREATE_VM with a machine type other than 0', () => {
    const fd = track(open('/dev/kvm'));
    const e = kvmError(() => ioctl(fd, KVM_CREATE_VM, 1));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('KVM_CREATE_VM');
    // No argument is machine type 0.
    expect(track(ioctl(fd, KVM_CREATE_VM))).toBeGreaterThan(fd);
  });
});

describe('unknown requests', () => {
  it('fail with ENOTTY and the request in hex, on every descriptor kind', () => {
    const sys = track(open('/dev/kvm'));
    let e = kvmError(() => ioctl(sys, 0xdeadbeef));
    expect(e.errno).toBe('ENOTTY');
    expect(e.message).toContain('0xdeadbeef');
    expect(e.message).toContain('/dev/kvm');

    // A vCPU request on the system descriptor is just as unknown there.
    e = kvmError(() => ioctl(sys, KVM_RUN));
    expect(e.errno).toBe('ENOTTY');
    expect(e.message).toContain('0xae80');

    const vm = track(ioctl(sys, KVM_CREATE_VM, 0));
    e = kvmError(() => ioctl(vm, KVM_GET_API_VERSION));
    expect(e.errno).toBe('ENOTTY');
    expect(e.message).toContain('0xae00');
    expect(e.message).toContain('VM descriptor');

    const vcpu = track(ioctl(vm, KVM_CREATE_VCPU, 0));
    e = kvmError(() => ioctl(vcpu, KVM_CREATE_VM, 0));
    expect(e.errno).toBe('ENOTTY');
    expect(e.message).toContain('0xae01');
    expect(e.message).toContain('vCPU descriptor');
    e = kvmError(() => ioctl(vcpu, 0x8138ae99));
    expect(e.message).toContain('0x8138ae99');
  });
});

describe('argument shapes', () => {
  function vcpuFd(): { sys: number; vm: number; vcpu: number } {
    const sys = track(open('/dev/kvm'));
    const vm = track(ioctl(sys, KVM_CREATE_VM, 0));
    const vcpu = track(ioctl(vm, KVM_CREATE_VCPU, 0));
    return { sys, vm, vcpu };
  }

  it('KVM_CHECK_EXTENSION and KVM_CREATE_VCPU need an integer (EINVAL)', () => {
    const { sys, vm } = vcpuFd();
    let e = kvmError(() => ioctl(sys, KVM_CHECK_EXTENSION, '3'));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('KVM_CHECK_EXTENSION');
    e = kvmError(() => ioctl(sys, KVM_CHECK_EXTENSION, 1.5));
    expect(e.errno).toBe('EINVAL');
    e = kvmError(() => ioctl(vm, KVM_CREATE_VCPU, undefined));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('KVM_CREATE_VCPU');
  });

  it('struct requests need an object (EFAULT naming the request)', () => {
    const { vm, vcpu } = vcpuFd();
    for (const [fd, req, name] of [
      [vcpu, KVM_GET_REGS, 'KVM_GET_REGS'], [vcpu, KVM_SET_REGS, 'KVM_SET_REGS'],
      [vcpu, KVM_GET_SREGS, 'KVM_GET_SREGS'], [vcpu, KVM_SET_SREGS, 'KVM_SET_SREGS'],
      [vm, KVM_SET_USER_MEMORY_REGION, 'KVM_SET_USER_MEMORY_REGION'], [vm, KVM_GET_DIRTY_LOG, 'KVM_GET_DIRTY_LOG'],
      [vm, KVM_CLEAR_DIRTY_LOG, 'KVM_CLEAR_DIRTY_LOG'],
    ] as const) {
      for (const bad of [undefined, null, 42]) {
        const e = kvmError(() => ioctl(fd, req, bad));
        expect(e.errno, name).toBe('EFAULT');
        expect(e.message, name).toContain(name);
      }
    }
  });

  it('struct requests with a missing field fail with EFAULT naming the field', () => {
    const { vm, vcpu } = vcpuFd();
    const regs: Partial<ReturnType<typeof emptyRegs>> = emptyRegs();
    delete regs.rflags;
    let e = kvmError(() => ioctl(vcpu, KVM_SET_REGS, regs));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('KVM_SET_REGS');
    expect(e.message).toContain("'rflags'");

    const sregs: Partial<ReturnType<typeof emptySregs>> = emptySregs();
    delete sregs.idt;
    e = kvmError(() => ioctl(vcpu, KVM_SET_SREGS, sregs));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain("'idt'");

    e = kvmError(() => ioctl(vm, KVM_SET_USER_MEMORY_REGION, { slot: 0, flags: 0, guestPhysAddr: 0, memorySize: 4096 }));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('KVM_SET_USER_MEMORY_REGION');
    expect(e.message).toContain("'userspaceAddr'");
  });

  it('KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG need a Uint8Array bitmap (EFAULT)', () => {
    const { vm } = vcpuFd();
    ioctl(vm, KVM_SET_USER_MEMORY_REGION, { slot: 0, flags: 1, guestPhysAddr: 0, memorySize: 0x10000, userspaceAddr: new ArrayBuffer(0x10000) });
    let e = kvmError(() => ioctl(vm, KVM_GET_DIRTY_LOG, { slot: 0, dirtyBitmap: [0, 0, 0, 0, 0, 0, 0, 0] }));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('KVM_GET_DIRTY_LOG');
    e = kvmError(() => ioctl(vm, KVM_CLEAR_DIRTY_LOG, { slot: 0, firstPage: 0, numPages: 16, dirtyBitmap: 0xffff }));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('KVM_CLEAR_DIRTY_LOG');
  });

  it('KVM_SET_SREGS without apicBase is rejected rather than storing undefined', () => {
    const { vcpu } = vcpuFd();
    const sregs: Partial<ReturnType<typeof emptySregs>> = emptySregs();
    delete sregs.apicBase;
    const e = kvmError(() => ioctl(vcpu, KVM_SET_SREGS, sregs));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain("'apicBase'");
    const out = emptySregs();
    ioctl(vcpu, KVM_GET_SREGS, out);
    expect(out.apicBase).toBe(0xfee00900);
  });
});

describe('vCPU creation', () => {
  it('rejects a duplicate id with EEXIST and an out-of-range id with EINVAL', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    let e = kvmError(() => vm.createVcpu(0));
    expect(e.errno).toBe('EEXIST');
    expect(e.message).toContain('vcpu 0');
    e = kvmError(() => vm.createVcpu(KVM_MAX_VCPUS));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain(`vcpu id ${KVM_MAX_VCPUS}`);
    expect(kvmError(() => vm.createVcpu(-1)).errno).toBe('EINVAL');
    // Closing the vCPU descriptor does not free the id, as in Linux.
    vcpu.close();
    expect(kvmError(() => vm.createVcpu(0)).errno).toBe('EEXIST');
    vm.close();
    kvm.close();
  });

  it('starts at the x86 reset state (CS:IP = F000:FFF0, EDX = CPU signature, RFLAGS = 2)', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const regs = vcpu.getRegs();
    const sregs = vcpu.getSregs();
    expect(regs.rip).toBe(0xfff0);
    expect(regs.rflags).toBe(2);
    expect(regs.rdx).toBe(0x600);
    expect(sregs.cs.selector).toBe(0xf000);
    expect(sregs.cs.base).toBe(0xffff0000);
    expect(sregs.cs.limit).toBe(0xffff);
    expect(sregs.cr0).toBe(0x60000010);
    vcpu.close(); vm.close(); kvm.close();
  });
});

describe('descriptor lifetimes', () => {
  it('a closed descriptor fails with EBADF for ioctl, close, mmapRun and vmMemory', () => {
    const fd = open('/dev/kvm');
    close(fd);
    let e = kvmError(() => ioctl(fd, KVM_GET_API_VERSION));
    expect(e.errno).toBe('EBADF');
    expect(e.message).toContain(`fd ${fd}`);
    expect(kvmError(() => close(fd)).errno).toBe('EBADF');
    expect(kvmError(() => mmapRun(fd)).errno).toBe('EBADF');
    expect(kvmError(() => vmMemory(fd)).errno).toBe('EBADF');
    // Never-opened numbers too.
    expect(kvmError(() => ioctl(-1, KVM_GET_API_VERSION)).errno).toBe('EBADF');
    expect(kvmError(() => ioctl(1, KVM_GET_API_VERSION)).errno).toBe('EBADF');
  });

  it('closing /dev/kvm leaves its VMs working', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    kvm.close();
    expect(kvmError(() => kvm.getApiVersion()).errno).toBe('EBADF');
    const vcpu = vm.createVcpu(0);
    expect(vcpu.getRegs().rip).toBe(0xfff0);
    vcpu.close();
    vm.close();
  });

  it('a vCPU keeps running after its VM descriptor is closed (the VM lives on), while the VM descriptor is dead', () => {
    const g = createGuest({ code: 'b8 34 12 a3 00 01 f4' }); // mov ax,0x1234; mov [0x100],ax; hlt
    const memory = g.vm.memory;
    g.vm.close();
    expect(g.vcpu.run()).toBe(KVM_EXIT_HLT);
    expect(g.vcpu.getRegs().rax).toBe(0x1234);
    // The guest's write reached the VM's memory, which is still reachable through the object.
    expect(memory.readU16(0x20100)).toBe(0x1234);
    expect(g.ram[0x20100]).toBe(0x34);
    const e = kvmError(() => g.vm.createVcpu(0));
    expect(e.errno).toBe('EBADF');
    expect(kvmError(() => g.vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0x200000, memorySize: 4096, userspaceAddr: new ArrayBuffer(4096) })).errno).toBe('EBADF');
    expect(kvmError(() => vmMemory(g.vm.fd)).errno).toBe('EBADF');
  });

  it('a closed vCPU descriptor fails with EBADF', () => {
    const g = createGuest({ code: 'f4' });
    g.vcpu.close();
    expect(kvmError(() => g.vcpu.run()).errno).toBe('EBADF');
    expect(kvmError(() => g.vcpu.getRegs()).errno).toBe('EBADF');
    expect(kvmError(() => mmapRun(g.vcpu.fd)).errno).toBe('EBADF');
  });
});

describe('mmapRun and vmMemory', () => {
  it('mmapRun returns the same kvm_run record every time, and only for vCPU descriptors', () => {
    const sys = track(open('/dev/kvm'));
    const vm = track(ioctl(sys, KVM_CREATE_VM, 0));
    const vcpu = track(ioctl(vm, KVM_CREATE_VCPU, 0));
    const run = mmapRun(vcpu);
    expect(run).toBeInstanceOf(KvmRun);
    expect(mmapRun(vcpu)).toBe(run);
    expect(run.io.data.length).toBe(4096);
    expect(run.mmio.data.length).toBe(8);
    let e = kvmError(() => mmapRun(vm));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain(`fd ${vm}`);
    expect(kvmError(() => mmapRun(sys)).errno).toBe('EINVAL');
    e = kvmError(() => vmMemory(vcpu));
    expect(e.errno).toBe('EINVAL');
    expect(vmMemory(vm)).toBe(vmMemory(vm));
  });
});

describe('a guest driven entirely through the raw layer', () => {
  it('runs to HLT with Linux-shaped calls, and get-style requests fill the caller’s struct', () => {
    const sys = track(open('/dev/kvm'));
    expect(ioctl(sys, KVM_GET_API_VERSION)).toBe(12);
    const vm = track(ioctl(sys, KVM_CREATE_VM, 0));
    const mem = new ArrayBuffer(0x20000);
    expect(ioctl(vm, KVM_SET_USER_MEMORY_REGION, { slot: 0, flags: 0, guestPhysAddr: 0, memorySize: 0x20000, userspaceAddr: mem })).toBe(0);
    const vcpu = track(ioctl(vm, KVM_CREATE_VCPU, 0));
    const run = mmapRun(vcpu);

    const sregs = emptySregs();
    expect(ioctl(vcpu, KVM_GET_SREGS, sregs)).toBe(0);
    expect(sregs.cs.selector).toBe(0xf000); // filled in place
    sregs.cs = realSeg(0x1000, true);
    for (const k of ['ds', 'es', 'fs', 'gs', 'ss'] as const) sregs[k] = realSeg(0);
    expect(ioctl(vcpu, KVM_SET_SREGS, sregs)).toBe(0);
    const regs = emptyRegs();
    regs.rip = 0x10; regs.rsp = 0x8000; regs.rbx = 0x7;
    expect(ioctl(vcpu, KVM_SET_REGS, regs)).toBe(0);
    // add bx, 0x35 ; hlt
    new Uint8Array(mem).set(hex('83 c3 35 f4'), 0x10010);

    expect(ioctl(vcpu, KVM_RUN)).toBe(0);
    expect(run.exitReason).toBe(KVM_EXIT_HLT);
    const out = emptyRegs();
    out.rbx = 0xdead;
    expect(ioctl(vcpu, KVM_GET_REGS, out)).toBe(0);
    expect(out.rbx).toBe(0x3c);
    expect(out.rip).toBe(0x14);
    expect(out.rsp).toBe(0x8000);
  });
});
