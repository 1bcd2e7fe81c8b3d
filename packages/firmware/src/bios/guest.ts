/**
 * How BIOS services reach the machine: guest memory (checked, so a bad pointer from the guest
 * becomes a BIOS error instead of a host exception), the I/O bus (the BIOS programs the PIC,
 * reads the RTC and so on through ports, as ROM code would), and one call's registers.
 * @module
 */
import { KVM_MEM_READONLY, type KvmRegs, type KvmSregs } from '@kvmts/kvm-core';

/** A guest address or length the BIOS cannot use: the service reports an error to the guest. */
export class GuestFault extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestFault';
  }
}

/** What the BIOS needs of guest memory (kvm-core's GuestMemory has it). */
export interface BiosMemoryBackend {
  read(gpa: number, dst: Uint8Array): void;
  write(gpa: number, src: Uint8Array): void;
  findSlot(gpa: number): { guestPhysAddr: number; size: number; flags: number } | undefined;
}

/** Guest-physical memory as the BIOS sees it: every byte must be backed; ROM is not written. */
export class GuestRam {
  private readonly scratch = new Uint8Array(4);
  private readonly view = new DataView(this.scratch.buffer);

  constructor(private readonly backend: BiosMemoryBackend) {}

  private check(gpa: number, len: number, write: boolean): void {
    if (!Number.isInteger(gpa) || gpa < 0 || gpa + len > 0x1_0000_0000) throw new GuestFault(`address 0x${gpa.toString(16)} is out of range`);
    let at = gpa;
    const end = gpa + len;
    while (at < end) {
      const slot = this.backend.findSlot(at);
      if (!slot) throw new GuestFault(`guest address 0x${at.toString(16)} is not RAM`);
      if (write && (slot.flags & KVM_MEM_READONLY) !== 0) throw new GuestFault(`guest address 0x${at.toString(16)} is read-only`);
      at = slot.guestPhysAddr + slot.size;
    }
  }

  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    if (len === 0) return out;
    this.check(gpa, len, false);
    this.backend.read(gpa, out);
    return out;
  }

  write(gpa: number, bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.check(gpa, bytes.length, true);
    this.backend.write(gpa, bytes);
  }

  /** Whether `[gpa, gpa+len)` is all writable RAM. */
  isWritable(gpa: number, len: number): boolean {
    try {
      this.check(gpa, len, true);
      return true;
    } catch (err) {
      if (err instanceof GuestFault) return false;
      throw err;
    }
  }

  u8(gpa: number): number {
    this.check(gpa, 1, false);
    this.backend.read(gpa, this.scratch.subarray(0, 1));
    return this.scratch[0]!;
  }
  u16(gpa: number): number {
    this.check(gpa, 2, false);
    this.backend.read(gpa, this.scratch.subarray(0, 2));
    return this.view.getUint16(0, true);
  }
  u32(gpa: number): number {
    this.check(gpa, 4, false);
    this.backend.read(gpa, this.scratch);
    return this.view.getUint32(0, true);
  }
  setU8(gpa: number, v: number): void {
    this.write(gpa, Uint8Array.of(v & 0xff));
  }
  setU16(gpa: number, v: number): void {
    this.write(gpa, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff));
  }
  setU32(gpa: number, v: number): void {
    this.write(gpa, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff));
  }
}

/** An I/O bus (IoBus from @kvmts/devices has this shape). */
export interface PortBus {
  read(port: number, data: Uint8Array): boolean;
  write(port: number, data: Uint8Array): boolean | void;
}

/** `in`/`out` on a {@link PortBus}; unclaimed reads are all-ones, as on a PC. */
export class Ports {
  private readonly bufs = [new Uint8Array(1), new Uint8Array(2), new Uint8Array(4)] as const;
  constructor(private readonly bus: PortBus) {}

  private buf(size: 1 | 2 | 4): Uint8Array {
    return size === 1 ? this.bufs[0] : size === 2 ? this.bufs[1] : this.bufs[2];
  }

  in(port: number, size: 1 | 2 | 4): number {
    const b = this.buf(size);
    if (!this.bus.read(port & 0xffff, b)) b.fill(0xff);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | b[i]!;
    return v >>> 0;
  }

  out(port: number, size: 1 | 2 | 4, value: number): void {
    const b = this.buf(size);
    for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
    this.bus.write(port & 0xffff, b);
  }

  inb(port: number): number { return this.in(port, 1); }
  outb(port: number, v: number): void { this.out(port, 1, v); }
  inl(port: number): number { return this.in(port, 4); }
  outl(port: number, v: number): void { this.out(port, 4, v); }
}

/** The vCPU as the BIOS uses it (VcpuFd has it). */
export interface BiosVcpu {
  getRegs(): KvmRegs;
  setRegs(regs: KvmRegs): void;
  getSregs(): KvmSregs;
  setSregs(sregs: KvmSregs): void;
}

export const FLAG_CF = 0x1;
export const FLAG_ZF = 0x40;
export const FLAG_IF = 0x200;

type SegName = 'es' | 'cs' | 'ss' | 'ds' | 'fs' | 'gs';

/**
 * One service call from a ROM stub, stopped at the stub's `out` (the IRET frame is at SS:SP).
 * Handlers read and change registers here; {@link BiosCall.commit} writes them back, with the
 * CF/ZF results patched into the saved FLAGS so the stub's `iret` returns them to the caller.
 */
export class BiosCall {
  readonly regs: KvmRegs;
  readonly sregs: KvmSregs;
  /** Results for the caller's FLAGS (undefined: leave the caller's bit as it was). */
  carry: boolean | undefined;
  zero: boolean | undefined;
  /**
   * The CF the stub itself sees after the call (the caller's CF is `carry`): a service stub
   * then waits for an interrupt (sti; hlt) and calls again with the same registers; the INT 19h
   * stub takes it as "nothing to boot".
   */
  stubCarry = false;
  private sregsChanged = false;

  constructor(private readonly vcpu: BiosVcpu, readonly ram: GuestRam) {
    this.regs = vcpu.getRegs();
    this.sregs = vcpu.getSregs();
  }

  get eax(): number { return this.regs.rax >>> 0; }
  set eax(v: number) { this.regs.rax = v >>> 0; }
  get ebx(): number { return this.regs.rbx >>> 0; }
  set ebx(v: number) { this.regs.rbx = v >>> 0; }
  get ecx(): number { return this.regs.rcx >>> 0; }
  set ecx(v: number) { this.regs.rcx = v >>> 0; }
  get edx(): number { return this.regs.rdx >>> 0; }
  set edx(v: number) { this.regs.rdx = v >>> 0; }
  get esi(): number { return this.regs.rsi >>> 0; }
  get edi(): number { return this.regs.rdi >>> 0; }

  get ax(): number { return this.regs.rax & 0xffff; }
  set ax(v: number) { this.regs.rax = ((this.regs.rax & ~0xffff) | (v & 0xffff)) >>> 0; }
  get bx(): number { return this.regs.rbx & 0xffff; }
  set bx(v: number) { this.regs.rbx = ((this.regs.rbx & ~0xffff) | (v & 0xffff)) >>> 0; }
  get cx(): number { return this.regs.rcx & 0xffff; }
  set cx(v: number) { this.regs.rcx = ((this.regs.rcx & ~0xffff) | (v & 0xffff)) >>> 0; }
  get dx(): number { return this.regs.rdx & 0xffff; }
  set dx(v: number) { this.regs.rdx = ((this.regs.rdx & ~0xffff) | (v & 0xffff)) >>> 0; }
  get si(): number { return this.regs.rsi & 0xffff; }
  get di(): number { return this.regs.rdi & 0xffff; }
  get bp(): number { return this.regs.rbp & 0xffff; }

  get al(): number { return this.regs.rax & 0xff; }
  set al(v: number) { this.regs.rax = ((this.regs.rax & ~0xff) | (v & 0xff)) >>> 0; }
  get ah(): number { return (this.regs.rax >>> 8) & 0xff; }
  set ah(v: number) { this.regs.rax = ((this.regs.rax & ~0xff00) | ((v & 0xff) << 8)) >>> 0; }
  get bl(): number { return this.regs.rbx & 0xff; }
  set bl(v: number) { this.regs.rbx = ((this.regs.rbx & ~0xff) | (v & 0xff)) >>> 0; }
  get bh(): number { return (this.regs.rbx >>> 8) & 0xff; }
  set bh(v: number) { this.regs.rbx = ((this.regs.rbx & ~0xff00) | ((v & 0xff) << 8)) >>> 0; }
  get cl(): number { return this.regs.rcx & 0xff; }
  set cl(v: number) { this.regs.rcx = ((this.regs.rcx & ~0xff) | (v & 0xff)) >>> 0; }
  get ch(): number { return (this.regs.rcx >>> 8) & 0xff; }
  set ch(v: number) { this.regs.rcx = ((this.regs.rcx & ~0xff00) | ((v & 0xff) << 8)) >>> 0; }
  get dl(): number { return this.regs.rdx & 0xff; }
  set dl(v: number) { this.regs.rdx = ((this.regs.rdx & ~0xff) | (v & 0xff)) >>> 0; }
  get dh(): number { return (this.regs.rdx >>> 8) & 0xff; }
  set dh(v: number) { this.regs.rdx = ((this.regs.rdx & ~0xff00) | ((v & 0xff) << 8)) >>> 0; }

  /** The guest-physical address of seg:offset (real mode: base + 16-bit offset). */
  linear(seg: SegName, offset: number): number {
    return (this.sregs[seg].base + (offset & 0xffff)) >>> 0;
  }

  /** Load a real-mode segment register (e.g. ES:DI → a ROM table). */
  setSegment(seg: SegName, selector: number): void {
    const s = this.sregs[seg];
    s.selector = selector & 0xffff;
    s.base = (selector & 0xffff) * 16;
    this.sregsChanged = true;
  }

  /** Report success: CF=0 and AH=0 (the common BIOS convention). */
  ok(): void {
    this.carry = false;
    this.ah = 0;
  }

  /** Report failure: CF=1 with status `ah`. */
  fail(ah: number): void {
    this.carry = true;
    this.ah = ah;
  }

  /** Write the registers back, and the results into the caller's FLAGS on the IRET frame. */
  commit(): void {
    const frameFlags = this.linear('ss', this.regs.rsp + 4);
    if (this.carry !== undefined || this.zero !== undefined) {
      try {
        let flags = this.ram.u16(frameFlags);
        if (this.carry !== undefined) flags = this.carry ? flags | FLAG_CF : flags & ~FLAG_CF;
        if (this.zero !== undefined) flags = this.zero ? flags | FLAG_ZF : flags & ~FLAG_ZF;
        this.ram.setU16(frameFlags, flags);
      } catch (err) {
        // A stack outside RAM: the caller cannot get its flags back, but the VMM carries on.
        if (!(err instanceof GuestFault)) throw err;
      }
    }
    // The segment base of CS is unchanged, so the stub's pending `out` still completes.
    if (this.sregsChanged) this.vcpu.setSregs(this.sregs);
    // The live CF is for the stub (see rom.ts).
    this.regs.rflags = this.stubCarry ? this.regs.rflags | FLAG_CF : this.regs.rflags & ~FLAG_CF;
    this.vcpu.setRegs(this.regs);
  }
}
