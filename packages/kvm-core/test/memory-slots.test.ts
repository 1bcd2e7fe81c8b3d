/**
 * KVM_SET_USER_MEMORY_REGION: validation, delete, move, read-only slots, MMIO exits for
 * unbacked addresses, the kinds of backing memory, and the host-side accessors.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  GuestMemory, Kvm, KvmError, KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
  type KvmUserspaceMemoryRegion, type VmFd,
} from '../src/index.js';
import { ARITH, F, closeGuests, createGuest, runExpect, runToHlt, kvmError } from './helpers.js';

afterEach(closeGuests);


function region(slot: number, gpa: number, size: number, backing: KvmUserspaceMemoryRegion['userspaceAddr'] = new ArrayBuffer(size), flags = 0): KvmUserspaceMemoryRegion {
  return { slot, flags, guestPhysAddr: gpa, memorySize: size, userspaceAddr: backing };
}

let vms: { kvm: Kvm; vm: VmFd }[] = [];
afterEach(() => {
  for (const { kvm, vm } of vms) { vm.close(); kvm.close(); }
  vms = [];
});
function newVm(): VmFd {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  vms.push({ kvm, vm });
  return vm;
}

describe('slot validation', () => {
  it('rejects overlapping slots with EEXIST, naming both slots and ranges', () => {
    const vm = newVm();
    vm.setUserMemoryRegion(region(0, 0, 0x10000));
    const e = kvmError(() => vm.setUserMemoryRegion(region(3, 0x8000, 0x10000)));
    expect(e.errno).toBe('EEXIST');
    expect(e.message).toContain('slot 3');
    expect(e.message).toContain('slot 0');
    expect(e.message).toContain('[0x8000, 0x18000)');
    expect(e.message).toContain('[0x0, 0x10000)');
    // Containment both ways is an overlap too.
    expect(kvmError(() => vm.setUserMemoryRegion(region(3, 0x1000, 0x1000))).errno).toBe('EEXIST');
    // Adjacent is fine.
    vm.setUserMemoryRegion(region(3, 0x10000, 0x1000));
    expect(vm.memory.listSlots().map((s) => s.id)).toEqual([0, 3]);
  });

  it('rejects a guest-physical address or size that is not page-aligned (EINVAL)', () => {
    const vm = newVm();
    let e = kvmError(() => vm.setUserMemoryRegion(region(0, 0x1001, 0x1000)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('0x1001');
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0x1000, 0x1800)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('0x1800');
    expect(kvmError(() => vm.setUserMemoryRegion(region(0, -4096, 0x1000))).errno).toBe('EINVAL');
    expect(vm.memory.listSlots()).toHaveLength(0);
  });

  it('rejects a backing buffer smaller than memorySize (EFAULT) and a backing of the wrong kind', () => {
    const vm = newVm();
    let e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x2000, new ArrayBuffer(0x1fff))));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('0x2000');
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x2000, new Uint8Array(new ArrayBuffer(0x3000), 0x2000))));
    expect(e.errno).toBe('EFAULT');
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x1000, new Uint32Array(0x400) as unknown as Uint8Array)));
    expect(e.errno).toBe('EFAULT');
    // A view that does not start on a page boundary of its buffer.
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x1000, new Uint8Array(new ArrayBuffer(0x3000), 0x800, 0x1000))));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('2048');
  });

  it('rejects bad slot ids, unknown flags, and ranges beyond 4 GiB (EINVAL)', () => {
    const vm = newVm();
    expect(kvmError(() => vm.setUserMemoryRegion(region(32, 0, 0x1000))).errno).toBe('EINVAL');
    expect(kvmError(() => vm.setUserMemoryRegion(region(-1, 0, 0x1000))).errno).toBe('EINVAL');
    const e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x1000, new ArrayBuffer(0x1000), 4)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('0x4');
    expect(kvmError(() => vm.setUserMemoryRegion(region(0, 0xffff_f000, 0x2000))).errno).toBe('EINVAL');
    vm.setUserMemoryRegion(region(31, 0xffff_f000, 0x1000));
    expect(vm.memory.findSlot(0xffff_ffff)?.id).toBe(31);
  });
});

describe('deleting and moving slots', () => {
  it('memorySize 0 deletes a slot: the range becomes MMIO and the id can be reused', () => {
    const g = createGuest({ ramSize: 0x10000, seg: { cs: 0x0100, ds: 0x2000 }, code: 'a0 10 00 f4 a0 10 00 f4' }); // mov al,[0x10]; hlt; twice
    const ram2 = new Uint8Array(0x1000);
    ram2[0x10] = 0x5a;
    g.vm.setUserMemoryRegion(region(1, 0x20000, 0x1000, ram2));
    expect(runToHlt(g).rax & 0xff).toBe(0x5a);

    g.vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0x20000, memorySize: 0, userspaceAddr: ram2 });
    expect(g.vm.memory.getSlot(1)).toBeUndefined();
    expect(kvmError(() => g.vm.slotMemory(1)).errno).toBe('ENOENT');
    // The vCPU had the page cached; the delete must drop the translation.
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio.physAddr).toBe(0x20010);
    expect(g.run.mmio.isWrite).toBe(false);
    expect(g.run.mmio.len).toBe(1);

    // Deleting a slot that does not exist is EINVAL, as in Linux.
    const e = kvmError(() => g.vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0, memorySize: 0, userspaceAddr: ram2 }));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('slot 1');
    // The id is free again, at another size.
    g.vm.setUserMemoryRegion(region(1, 0x40000, 0x3000));
    expect(g.vm.memory.getSlot(1)?.size).toBe(0x3000);
  });

  it('re-registering a slot with the same size and backing at a new address moves it', () => {
    const g = createGuest({ ramSize: 0x10000, seg: { cs: 0x0100, ds: 0x2000 }, code: 'a1 10 00 f4 a1 10 00 f4' }); // mov ax,[0x10]; hlt; twice
    const back = new ArrayBuffer(0x2000);
    new Uint8Array(back).set([0x34, 0x12], 0x10);
    new Uint8Array(back).set([0x78, 0x56], 0x1010);
    g.vm.setUserMemoryRegion(region(2, 0x20000, 0x2000, back));
    expect(runToHlt(g).rax).toBe(0x1234);

    // Move down by a page: guest address 0x20010 now lands on the slot's second page.
    g.vm.setUserMemoryRegion(region(2, 0x1f000, 0x2000, back));
    expect(g.vm.memory.getSlot(2)?.guestPhysAddr).toBe(0x1f000);
    expect(runToHlt(g).rax).toBe(0x5678);
    expect(g.vm.memory.findSlot(0x20fff)?.id).toBe(2);
    expect(g.vm.memory.findSlot(0x21000)).toBeUndefined();
  });

  it('refuses to resize a slot, swap its backing, toggle READONLY, or move it onto another slot', () => {
    const vm = newVm();
    const back = new ArrayBuffer(0x4000);
    vm.setUserMemoryRegion(region(0, 0, 0x2000, back));
    vm.setUserMemoryRegion(region(1, 0x10000, 0x1000));
    let e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x4000, back)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('resiz');
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x2000, new ArrayBuffer(0x2000))));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('backing');
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0, 0x2000, back, KVM_MEM_READONLY)));
    expect(e.errno).toBe('EINVAL');
    expect(e.message).toContain('KVM_MEM_READONLY');
    e = kvmError(() => vm.setUserMemoryRegion(region(0, 0xf000, 0x2000, back)));
    expect(e.errno).toBe('EEXIST');
    expect(e.message).toContain('slot 1');
    // The failed calls left slot 0 as it was.
    expect(vm.memory.getSlot(0)).toMatchObject({ guestPhysAddr: 0, size: 0x2000, flags: 0 });
    // Toggling dirty logging on an existing slot is allowed.
    vm.setUserMemoryRegion(region(0, 0, 0x2000, back, KVM_MEM_LOG_DIRTY_PAGES));
    expect(vm.memory.getSlot(0)?.dirty).not.toBeNull();
  });
});

describe('read-only slots', () => {
  function roGuest(code: string) {
    // RAM 0..0xA0000; a read-only 64 KiB "ROM" at 0xA0000, addressed through DS = 0xA000.
    const g = createGuest({ ramSize: 0xa0000, seg: { ds: 0xa000 }, code });
    const rom = new Uint8Array(0x10000);
    rom.set([0x11, 0x22, 0x33, 0x44], 0x20);
    g.vm.setUserMemoryRegion(region(1, 0xa0000, 0x10000, rom, KVM_MEM_READONLY));
    return { g, rom };
  }

  it('guest reads see the slot contents without exits', () => {
    // mov eax,[0x20]; mov bl,[0x23]; hlt
    const { g } = roGuest('66 a1 20 00 8a 1e 23 00 f4');
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0x44332211);
    expect(regs.rbx & 0xff).toBe(0x44);
  });

  it('a guest write becomes a KVM_EXIT_MMIO write exit with address, length and data; memory is untouched', () => {
    // mov word [0x20], 0xbeef ; mov byte [0x30], 0x7e ; mov [0x40], eax ; hlt
    const { g, rom } = roGuest('c7 06 20 00 ef be  c6 06 30 00 7e  66 a3 40 00  f4');
    g.vcpu.setRegs({ ...g.vcpu.getRegs(), rax: 0xcafef00d });

    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio.isWrite).toBe(true);
    expect(g.run.mmio.physAddr).toBe(0xa0020);
    expect(g.run.mmio.len).toBe(2);
    expect([...g.run.mmio.data.subarray(0, 2)]).toEqual([0xef, 0xbe]);
    // At the exit RIP still points at the instruction; it completes on the next run().
    expect(g.vcpu.getRegs().rip).toBe(0x100);

    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: true, physAddr: 0xa0030, len: 1 });
    expect(g.run.mmio.data[0]).toBe(0x7e);
    expect(g.vcpu.getRegs().rip).toBe(0x106);

    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: true, physAddr: 0xa0040, len: 4 });
    expect([...g.run.mmio.data.subarray(0, 4)]).toEqual([0x0d, 0xf0, 0xfe, 0xca]);

    expect(runToHlt(g, 1).rip).toBe(0x110);
    expect([...rom.subarray(0x20, 0x24)]).toEqual([0x11, 0x22, 0x33, 0x44]);
    expect(rom[0x30]).toBe(0);
    expect([...rom.subarray(0x40, 0x44)]).toEqual([0, 0, 0, 0]);
  });

  it('a read-modify-write reads the ROM and exits with the computed value', () => {
    // add word [0x20], 0x0101 ; hlt      (0x2211 + 0x0101 = 0x2312)
    const { g } = roGuest('81 06 20 00 01 01 f4');
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: true, physAddr: 0xa0020, len: 2 });
    expect([...g.run.mmio.data.subarray(0, 2)]).toEqual([0x12, 0x23]);
    const regs = runToHlt(g, 1);
    expect(regs.rflags & ARITH).toBe(F.PF); // 0x2312: no carry, low byte 0x12 has even parity, non-zero, positive
  });
});

describe('MMIO exits for unbacked addresses', () => {
  function mmioGuest(code: string, regs = {}) {
    // RAM ends at 0xA0000; DS = 0xA000 points at nothing.
    return createGuest({ ramSize: 0xa0000, seg: { ds: 0xa000 }, code, regs });
  }

  it('a word read exits with len 2; the VMM data lands in AX on the next run()', () => {
    const g = mmioGuest('a1 30 00 f4', { rax: 0xaaaa5555 }); // mov ax,[0x30]; hlt
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio.isWrite).toBe(false);
    expect(g.run.mmio.physAddr).toBe(0xa0030);
    expect(g.run.mmio.len).toBe(2);
    expect(g.vcpu.getRegs().rip).toBe(0x100);
    expect(g.vcpu.getRegs().rax).toBe(0xaaaa5555); // nothing committed yet
    g.run.mmio.data.set([0x34, 0x12]);
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0xaaaa1234);
    expect(regs.rip).toBe(0x104);
  });

  it('dword and byte reads exit with len 4 and 1', () => {
    const g = mmioGuest('66 a1 40 00 8a 1e 50 00 f4'); // mov eax,[0x40]; mov bl,[0x50]; hlt
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: false, physAddr: 0xa0040, len: 4 });
    g.run.mmio.data.set([0x78, 0x56, 0x34, 0x12]);
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: false, physAddr: 0xa0050, len: 1 });
    g.run.mmio.data[0] = 0x9c;
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0x12345678);
    expect(regs.rbx & 0xff).toBe(0x9c);
  });

  it('writes exit with isWrite, the length and little-endian data', () => {
    // mov [0x60],ax ; mov [0x64],eax ; mov [0x70],cl ; hlt
    const g = mmioGuest('a3 60 00 66 a3 64 00 88 0e 70 00 f4', { rax: 0x89abcdef, rcx: 0x5a });
    const seen: [number, number, number[]][] = [];
    for (let i = 0; i < 3; i++) {
      runExpect(g, KVM_EXIT_MMIO);
      expect(g.run.mmio.isWrite).toBe(true);
      seen.push([g.run.mmio.physAddr, g.run.mmio.len, [...g.run.mmio.data.subarray(0, g.run.mmio.len)]]);
    }
    expect(seen).toEqual([
      [0xa0060, 2, [0xef, 0xcd]],
      [0xa0064, 4, [0xef, 0xcd, 0xab, 0x89]],
      [0xa0070, 1, [0x5a]],
    ]);
    expect(runToHlt(g, 1).rip).toBe(0x10c);
  });

  it('a read-modify-write on MMIO reads, then writes the result, then sets the flags', () => {
    const g = mmioGuest('83 06 80 00 05 f4', { rflags: 0x2 | F.CF }); // add word [0x80],5; hlt
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: false, physAddr: 0xa0080, len: 2 });
    g.run.mmio.data.set([0xfd, 0xff]); // 0xfffd
    // The flags are not committed while the instruction is incomplete.
    expect(g.vcpu.getRegs().rflags & F.CF).toBe(F.CF);
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio).toMatchObject({ isWrite: true, physAddr: 0xa0080, len: 2 });
    expect([...g.run.mmio.data.subarray(0, 2)]).toEqual([0x02, 0x00]); // 0xfffd + 5 = 0x10002
    const regs = runToHlt(g, 1);
    expect(regs.rflags & ARITH).toBe(F.CF | F.AF); // carry out, nibble carry (d+5), 0x02 has odd parity
  });

  it('an access that hits a slot gap between two slots exits, and the slots around it keep working', () => {
    const g = createGuest({ ramSize: 0x30000, code: 'a1 00 00 8b 1e 00 10 8b 0e 00 20 f4', seg: { ds: 0x3000 } });
    // slot 1 at 0x31000 (one page gap at 0x30000), DS base 0x30000.
    const s1 = new Uint8Array(0x2000);
    s1.set([0xcd, 0xab], 0);
    s1.set([0x21, 0x43], 0x1000);
    g.vm.setUserMemoryRegion(region(1, 0x31000, 0x2000, s1));
    runExpect(g, KVM_EXIT_MMIO);
    expect(g.run.mmio.physAddr).toBe(0x30000);
    g.run.mmio.data.set([0x01, 0x02]);
    const regs = runToHlt(g, 1);
    expect(regs.rax).toBe(0x0201);
    expect(regs.rbx).toBe(0xabcd);
    expect(regs.rcx).toBe(0x4321);
  });
});

describe('backing memory', () => {
  it('slotMemory() returns the slot bytes that the guest wrote, by slot id', () => {
    // mov word [0x0], 0x1111 (DS=0x2000 -> slot 0) ; es: mov word [0x8], 0x2222 (ES=0x5000 -> slot 1) ; hlt
    const g = createGuest({ ramSize: 0x40000, seg: { es: 0x5000 }, code: 'c7 06 00 00 11 11 26 c7 06 08 00 22 22 f4' });
    g.vm.setUserMemoryRegion(region(1, 0x50000, 0x1000));
    runToHlt(g);
    expect(g.vm.slotMemory(0)[0x20000]).toBe(0x11);
    expect(g.vm.slotMemory(0)).toBe(g.vm.memory.getSlot(0)!.bytes);
    expect(g.vm.slotMemory(1).length).toBe(0x1000);
    expect([...g.vm.slotMemory(1).subarray(8, 10)]).toEqual([0x22, 0x22]);
    expect(kvmError(() => g.vm.slotMemory(7)).errno).toBe('ENOENT');
  });

  it('a SharedArrayBuffer backing is written in place (visible through any other view)', () => {
    const g = createGuest({ ramSize: 0x30000, seg: { es: 0x4000 }, code: '26 66 c7 06 04 00 78 56 34 12 f4' }); // es: mov dword [4], 0x12345678
    const sab = new SharedArrayBuffer(0x1000);
    g.vm.setUserMemoryRegion(region(1, 0x40000, 0x1000, sab));
    runToHlt(g);
    expect(new Uint32Array(sab)[1]).toBe(0x12345678);
    expect(g.vm.slotMemory(1).buffer).toBe(sab);
  });

  it('a Uint8Array backing maps from its page-aligned byteOffset, and only memorySize bytes of it', () => {
    const buf = new ArrayBuffer(0x4000);
    const view = new Uint8Array(buf, 0x1000, 0x3000);
    // es: mov byte [0x10], 0xab ; es: mov al, [0x1010] ; hlt
    const g = createGuest({ ramSize: 0x30000, seg: { es: 0x4000 }, code: '26 c6 06 10 00 ab 26 a0 10 10 f4' });
    view[0x1010] = 0x5c; // buffer offset 0x2010 = guest 0x41010
    g.vm.setUserMemoryRegion(region(1, 0x40000, 0x2000, view));
    const regs = runToHlt(g);
    expect(new Uint8Array(buf)[0x1010]).toBe(0xab);
    expect(regs.rax & 0xff).toBe(0x5c);
    const s = g.vm.slotMemory(1);
    expect(s.byteOffset).toBe(0x1000);
    expect(s.length).toBe(0x2000);
    expect(g.vm.memory.findSlot(0x42000)).toBeUndefined();
  });

  it('host accessors read and write across adjacent slots and fail with EFAULT where nothing is mapped', () => {
    const mem = new GuestMemory();
    const a = new Uint8Array(0x1000), b = new Uint8Array(0x1000);
    mem.setRegion(region(0, 0x1000, 0x1000, a));
    mem.setRegion(region(1, 0x2000, 0x1000, b));
    mem.writeU32(0x1ffe, 0xddccbbaa);
    expect([a[0xffe], a[0xfff], b[0], b[1]]).toEqual([0xaa, 0xbb, 0xcc, 0xdd]);
    expect(mem.readU32(0x1ffe)).toBe(0xddccbbaa);
    expect(mem.readU16(0x1fff)).toBe(0xccbb);
    mem.writeU8(0x2fff, 0x99);
    expect(mem.readU8(0x2fff)).toBe(0x99);
    const dst = new Uint8Array(4);
    mem.read(0x1ffe, dst);
    expect([...dst]).toEqual([0xaa, 0xbb, 0xcc, 0xdd]);
    let e = kvmError(() => mem.readU16(0x2fff));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('0x3000');
    e = kvmError(() => mem.writeU8(0x0fff, 1));
    expect(e.errno).toBe('EFAULT');
    expect(e.message).toContain('0xfff');
  });

  it('two slots backed by one buffer alias each other', () => {
    const back = new ArrayBuffer(0x1000);
    // mov byte [0x0], 0x42 (DS=0x2000 -> 0x20000, slot 1) ; es: mov al, [0x0] (ES=0x3000 -> 0x30000, slot 2) ; hlt
    const g = createGuest({ ramSize: 0x20000, seg: { ds: 0x2000, es: 0x3000 }, code: 'c6 06 00 00 42 26 a0 00 00 f4' });
    g.vm.setUserMemoryRegion(region(1, 0x20000, 0x1000, back));
    g.vm.setUserMemoryRegion(region(2, 0x30000, 0x1000, back));
    expect(runToHlt(g).rax & 0xff).toBe(0x42);
  });
});

describe('exits leave memory consistent', () => {
  it('HLT after MMIO: the completed instruction is not re-executed', () => {
    // inc word [0x10] on MMIO, then hlt: exactly one read and one write exit.
    const g = createGuest({ ramSize: 0xa0000, seg: { ds: 0xa000 }, code: 'ff 06 10 00 f4' });
    const exits: string[] = [];
    for (;;) {
      const r = g.vcpu.run();
      if (r === KVM_EXIT_HLT) break;
      expect(r).toBe(KVM_EXIT_MMIO);
      exits.push(`${g.run.mmio.isWrite ? 'W' : 'R'}${g.run.mmio.len}:${g.run.mmio.physAddr.toString(16)}`);
      if (!g.run.mmio.isWrite) g.run.mmio.data.set([0xff, 0x00]);
      else expect([...g.run.mmio.data.subarray(0, 2)]).toEqual([0x00, 0x01]);
      expect(exits.length).toBeLessThan(4);
    }
    expect(exits).toEqual(['R2:a0010', 'W2:a0010']);
  });
});
