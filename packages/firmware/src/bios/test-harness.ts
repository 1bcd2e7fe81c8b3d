/**
 * For the BIOS's unit tests: a real kvm-core VM with the BIOS installed and small fake devices
 * (COM1, CMOS, PCI configuration mechanism #1, port 0x92, the PICs), running real-mode code
 * that calls the BIOS with `int`.
 * @module
 */
import { Kvm, KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO, type KvmRegs, type VcpuFd, type VmFd } from '@kvmts/kvm-core';
import { Assembler } from '@kvmts/kvm-core/asm';
import { Bios, type BiosOptions } from './bios.js';
import { BIOS_CALL_PORT, BIOS_ROM_BASE, BIOS_ROM_SIZE } from './layout.js';

/** Where test code is loaded and started (CS = 0). */
export const TEST_CODE = 0x1000;
export const TEST_STACK = 0x8000;

/** Ports the fake devices claim. */
class FakeDevices {
  /** Bytes written to COM1's transmitter. */
  readonly serialOut: number[] = [];
  /** Bytes COM1's receiver will hand out. */
  readonly serialIn: number[] = [];
  /** Writes to the PIC command/data ports, as [port, value]. */
  readonly picWrites: [number, number][] = [];
  readonly cmos = new Uint8Array(128);
  cmosIndex = 0;
  port92 = 0;
  private configAddress = 0;
  /** devfn → 256 bytes of configuration space (bus 0). */
  readonly pciFunctions = new Map<number, Uint8Array>();
  /** The value written to 0xF4, ending the run. */
  exitValue: number | undefined;
  /** Port reads, for tests that check the BIOS did (not) touch a device. */
  readonly reads: number[] = [];

  read(port: number, data: Uint8Array): boolean {
    this.reads.push(port);
    const v = this.in(port, data.length);
    for (let i = 0; i < data.length; i++) data[i] = (v >>> (8 * i)) & 0xff;
    return true;
  }

  private in(port: number, size: number): number {
    if (port === 0x3fd) return 0x60 | (this.serialIn.length > 0 ? 1 : 0);
    if (port === 0x3f8) return this.serialIn.shift() ?? 0;
    if (port === 0x71) return this.cmos[this.cmosIndex & 0x7f]!;
    if (port === 0x92) return this.port92;
    if (port >= 0xcfc && port < 0xd00) {
      const a = this.configAddress;
      const space = (a & 0x80000000) !== 0 && ((a >>> 16) & 0xff) === 0 ? this.pciFunctions.get((a >>> 8) & 0xff) : undefined;
      if (!space) return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
      const off = (a & 0xfc) + (port - 0xcfc);
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = (v << 8) | space[off + i]!;
      return v >>> 0;
    }
    if (port === 0xcf8) return this.configAddress;
    return 0xffffffff;
  }

  write(port: number, data: Uint8Array): void {
    let v = 0;
    for (let i = data.length - 1; i >= 0; i--) v = (v << 8) | data[i]!;
    v >>>= 0;
    if (port === 0x3f8) this.serialOut.push(v & 0xff);
    else if (port === 0x70) this.cmosIndex = v & 0x7f;
    else if (port === 0x71) this.cmos[this.cmosIndex] = v;
    else if (port === 0x92) this.port92 = v;
    else if (port === 0xcf8 && data.length === 4) this.configAddress = v;
    else if (port >= 0xcfc && port < 0xd00) {
      const a = this.configAddress;
      const space = this.pciFunctions.get((a >>> 8) & 0xff);
      if (space && (a & 0x80000000) !== 0) for (let i = 0; i < data.length; i++) space[(a & 0xfc) + (port - 0xcfc) + i] = data[i]!;
    } else if (port === 0x20 || port === 0x21 || port === 0xa0 || port === 0xa1) this.picWrites.push([port, v]);
    else if (port === 0xf4) this.exitValue = v;
  }
}

export interface TestMachine {
  kvm: Kvm;
  vm: VmFd;
  vcpu: VcpuFd;
  bios: Bios;
  devices: FakeDevices;
  /** Runs until HLT outside the ROM (or a debug-exit write); `onBiosHalt` runs when the BIOS waits. */
  run(options?: { maxExits?: number; onBiosHalt?: () => void }): KvmRegs;
  /** Assembles `body` at 0000:1000 followed by `hlt`, and runs it from there. */
  runCode(body: (a: Assembler) => void, options?: { onBiosHalt?: () => void }): KvmRegs;
  readMemory(gpa: number, len: number): Uint8Array;
  writeMemory(gpa: number, bytes: Uint8Array): void;
  close(): void;
}

export type TestBiosOptions = Omit<BiosOptions, 'vm' | 'vcpu' | 'io' | 'ramSize'> & { ramSize?: number };

/** A VM with the BIOS installed (ROM mapped, POST done), not yet running. */
export function testMachine(options: TestBiosOptions = {}, setup?: (devices: FakeDevices) => void): TestMachine {
  const ramSize = options.ramSize ?? 32 * 1024 * 1024;
  const kvm = new Kvm();
  const vm = kvm.createVm();
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: ramSize, userspaceAddr: new ArrayBuffer(ramSize) });
  const vcpu = vm.createVcpu(0);
  const devices = new FakeDevices();
  devices.cmos[0x0b] = 0x02; // BCD, 24-hour
  setup?.(devices);
  const bios = new Bios({ ...options, vm, vcpu, io: devices, ramSize });
  bios.install();

  const run: TestMachine['run'] = (o = {}) => {
    const maxExits = o.maxExits ?? 100_000;
    for (let i = 0; i < maxExits; i++) {
      const reason = vcpu.run();
      if (reason === KVM_EXIT_IO) {
        const io = vcpu.runData.io;
        const data = io.data.subarray(0, io.size);
        if (io.direction === KVM_EXIT_IO_OUT) {
          if (io.port === BIOS_CALL_PORT) bios.callPort.write();
          else devices.write(io.port, data);
          if (devices.exitValue !== undefined) return vcpu.getRegs();
        } else devices.read(io.port, data);
        continue;
      }
      if (reason === KVM_EXIT_HLT) {
        const regs = vcpu.getRegs();
        const linear = (vcpu.getSregs().cs.base + regs.rip) >>> 0;
        // The BIOS waits inside the ROM (sti; hlt): let the test deliver what it waits for.
        if (linear > BIOS_ROM_BASE && linear <= BIOS_ROM_BASE + BIOS_ROM_SIZE && o.onBiosHalt) {
          o.onBiosHalt();
          continue;
        }
        return regs;
      }
      if (reason === KVM_EXIT_MMIO) {
        // Writes to the ROM come here, as on KVM; nothing else is mapped.
        if (!vcpu.runData.mmio.isWrite) vcpu.runData.mmio.data.fill(0xff);
        continue;
      }
      if (reason === KVM_EXIT_INTR) continue; // the time slice ended
      throw new Error(`unexpected exit ${reason}: ${vcpu.runData.internal.message}`);
    }
    throw new Error('the guest did not halt');
  };

  return {
    kvm, vm, vcpu, bios, devices, run,
    runCode(body, o = {}) {
      const a = new Assembler({ bits: 16, origin: TEST_CODE });
      body(a);
      a.hlt();
      vm.memory.write(TEST_CODE, a.bytes());
      const sregs = vcpu.getSregs();
      for (const s of [sregs.cs, sregs.ds, sregs.es, sregs.ss]) {
        s.selector = 0;
        s.base = 0;
      }
      vcpu.setSregs(sregs);
      const regs = vcpu.getRegs();
      regs.rip = TEST_CODE;
      regs.rsp = TEST_STACK;
      regs.rflags = 0x2;
      vcpu.setRegs(regs);
      return run(o);
    },
    readMemory(gpa, len) {
      const out = new Uint8Array(len);
      vm.memory.read(gpa, out);
      return out;
    },
    writeMemory(gpa, bytes) {
      vm.memory.write(gpa, bytes);
    },
    close() {
      vcpu.close();
      vm.close();
      kvm.close();
    },
  };
}

export const CF = 0x1;
export const ZF = 0x40;
