import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_MP_STATE_RUNNABLE, type VcpuFd } from '@kvmts/kvm-core';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_PCI_COMMON_Q_SELECT,
  VIRTIO_PCI_COMMON_NUMQ,
  VIRTIO_PCI_NOTIFY_OFFSET,
  VIRTIO_STATUS_ACKNOWLEDGE,
  VIRTIO_STATUS_DRIVER,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK,
  VIRTIO_VENDOR_ID,
  VirtioBlock,
  VirtioConsole,
  VirtioRng,
  type VirtioDevice,
} from '@kvmts/virtio';
import { PIRQ_IRQS, PcMachine } from './pc.js';
import { VIRTIO_MMIO_ACPI_HID, VIRTIO_MMIO_BASE, VIRTIO_PCI_FIRST_SLOT, type VirtioTransportKind } from './virtio.js';

const machines: PcMachine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.close();
});

const MEM = 16 << 20;

function makeMachine(transport: VirtioTransportKind, devices: VirtioDevice[], irqchip: 'kernel' | 'userspace' = 'kernel'): PcMachine {
  const m = new PcMachine({ memSize: MEM, clockMode: 'instructions', startTime: 0, irqchip, virtio: { transport, devices } });
  machines.push(m);
  return m;
}

// ---- PCI configuration mechanism #1 through the machine's ports ----
const cfgAddress = (slot: number, offset: number): number => (0x80000000 | (slot << 11) | (offset & 0xfc)) >>> 0;
function cfgRead32(m: PcMachine, slot: number, offset: number): number {
  const a = cfgAddress(slot, offset);
  m.ioBus.write(0xcf8, Uint8Array.of(a & 0xff, (a >>> 8) & 0xff, (a >>> 16) & 0xff, a >>> 24));
  const d = new Uint8Array(4);
  m.ioBus.read(0xcfc, d);
  return new DataView(d.buffer).getUint32(0, true);
}
function cfgWrite32(m: PcMachine, slot: number, offset: number, v: number): void {
  const a = cfgAddress(slot, offset);
  m.ioBus.write(0xcf8, Uint8Array.of(a & 0xff, (a >>> 8) & 0xff, (a >>> 16) & 0xff, a >>> 24));
  m.ioBus.write(0xcfc, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24));
}

// ---- MMIO accesses as the vCPU's exits would make them ----
function mmioRead(m: PcMachine, addr: number, len: 1 | 2 | 4): number {
  const d = new Uint8Array(len);
  m.mmioBus.read(addr, d);
  let v = 0;
  for (let i = len - 1; i >= 0; i--) v = v * 256 + d[i]!;
  return v;
}
function mmioWrite(m: PcMachine, addr: number, len: 1 | 2 | 4, v: number): void {
  const d = new Uint8Array(len);
  for (let i = 0; i < len; i++) d[i] = (v / 256 ** i) & 0xff;
  m.mmioBus.write(addr, d);
}

/**
 * Puts the vCPU in 32-bit flat protected mode at `code` (in RAM at 0x1000): enough to store to
 * any guest-physical address, as a driver's notify does.
 */
function runFlat(vcpu: VcpuFd, m: PcMachine, code: number[]): number {
  m.vm.memory.write(0x1000, Uint8Array.from(code));
  const sregs = vcpu.getSregs();
  const flat = (sel: number, type: number) => ({ base: 0, limit: 0xffffffff, selector: sel, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  sregs.cs = flat(0x10, 0xb);
  sregs.ds = sregs.es = sregs.ss = sregs.fs = sregs.gs = flat(0x18, 0x3);
  sregs.cr0 = 0x11;
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.rip = 0x1000;
  regs.rflags = 2; // IF=0: HLT ends the run
  vcpu.setRegs(regs);
  vcpu.setMpState(KVM_MP_STATE_RUNNABLE); // out of the previous run's HLT
  const reason = vcpu.run();
  // Complete an MMIO write as a VMM's next KVM_RUN would (nothing to hand back), reaching the HLT.
  if (reason === KVM_EXIT_MMIO) expect(vcpu.run()).toBe(KVM_EXIT_HLT);
  return reason;
}
/** `mov dword [addr], imm32` then `hlt`. */
const storeThenHlt = (addr: number, imm: number): number[] => [0xc7, 0x05, ...le32(addr), ...le32(imm), 0xf4];
/** `mov word [addr], imm16` then `hlt`. */
const store16ThenHlt = (addr: number, imm: number): number[] => [0x66, 0xc7, 0x05, ...le32(addr), imm & 0xff, imm >> 8, 0xf4];
const le32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];

// Driver-side queue layout in guest RAM (one queue of 16 entries).
const QSIZE = 16;
const DESC = 0x10000;
const AVAIL = 0x11000;
const USED = 0x12000;
const BUF = 0x20000;

/** One device-writable buffer on queue 0, published in the available ring. */
function postWritableBuffer(m: PcMachine, len: number): void {
  const d = new DataView(new ArrayBuffer(16));
  d.setUint32(0, BUF, true);
  d.setUint32(8, len, true);
  d.setUint16(12, 2, true); // VIRTQ_DESC_F_WRITE
  m.vm.memory.write(DESC, new Uint8Array(d.buffer));
  m.vm.memory.write(AVAIL, Uint8Array.of(0, 0, 1, 0, 0, 0)); // flags 0, idx 1, ring[0] = 0
}
const usedIdx = (m: PcMachine): number => {
  const b = new Uint8Array(2);
  m.vm.memory.read(USED + 2, b);
  return b[0]! | (b[1]! << 8);
};

describe('PcMachine with virtio-pci devices', () => {
  it('puts each device on its own slot after the PIIX3, with vendor 1AF4h and modern device IDs', () => {
    const m = makeMachine('pci', [new VirtioRng(), new VirtioConsole()]);
    expect(cfgRead32(m, VIRTIO_PCI_FIRST_SLOT, 0)).toBe(((0x1040 + 4) << 16) | VIRTIO_VENDOR_ID);
    expect(cfgRead32(m, VIRTIO_PCI_FIRST_SLOT + 1, 0)).toBe((((0x1040 + 3) << 16) | VIRTIO_VENDOR_ID) >>> 0);
    expect(cfgRead32(m, VIRTIO_PCI_FIRST_SLOT + 2, 0)).toBe(0xffffffff); // nothing more
    // Interrupt pin INTA#; the PIIX3 routes slot 2's INTA# (PIRQB) and slot 3's (PIRQC) as the _PRT says.
    expect((cfgRead32(m, VIRTIO_PCI_FIRST_SLOT, 0x3c) >>> 8) & 0xff).toBe(1);
    expect(m.piix.routeIntx(VIRTIO_PCI_FIRST_SLOT, 1)).toBe(PIRQ_IRQS[1]);
    expect(m.piix.routeIntx(VIRTIO_PCI_FIRST_SLOT + 1, 1)).toBe(PIRQ_IRQS[2]);
  });

  it('maps the BAR on the MMIO bus where the guest programs it, and moves its ioeventfds along', () => {
    const m = makeMachine('pci', [new VirtioRng()]);
    const slot = VIRTIO_PCI_FIRST_SLOT;
    cfgWrite32(m, slot, 0x10, 0xffffffff);
    expect(cfgRead32(m, slot, 0x10)).toBe((~(0x4000 - 1)) >>> 0); // 16 KiB, 32-bit memory BAR
    cfgWrite32(m, slot, 0x10, 0xc0000000);
    expect(m.mmioBus.find(0xc0000000)).toBeUndefined(); // memory decoding still off
    cfgWrite32(m, slot, 0x04, 0x0006); // memory space + bus master
    expect(m.mmioBus.find(0xc0000000)?.len).toBe(0x4000);
    expect(mmioRead(m, 0xc0000000 + VIRTIO_PCI_COMMON_NUMQ, 2)).toBe(1);
    cfgWrite32(m, slot, 0x10, 0xc0010000);
    expect(m.mmioBus.find(0xc0000000)).toBeUndefined();
    expect(mmioRead(m, 0xc0010000 + VIRTIO_PCI_COMMON_NUMQ, 2)).toBe(1);
    // The kick address moved too: the old one exits to the VMM, the new one is taken in KVM_RUN.
    expect(runFlat(m.vcpu, m, store16ThenHlt(0xc0000000 + VIRTIO_PCI_NOTIFY_OFFSET, 0))).toBe(KVM_EXIT_MMIO);
    expect(runFlat(m.vcpu, m, store16ThenHlt(0xc0010000 + VIRTIO_PCI_NOTIFY_OFFSET, 0))).toBe(KVM_EXIT_HLT);
    cfgWrite32(m, slot, 0x04, 0); // decoding off: no BAR, no ioeventfd
    expect(m.mmioBus.find(0xc0010000)).toBeUndefined();
    expect(runFlat(m.vcpu, m, store16ThenHlt(0xc0010000 + VIRTIO_PCI_NOTIFY_OFFSET, 0))).toBe(KVM_EXIT_MMIO);
  });

  it('runs a queue kick at the notify address inside KVM_RUN (ioeventfd) and interrupts through the PIIX3', async () => {
    const rng = new VirtioRng();
    const m = makeMachine('pci', [rng], 'userspace');
    let wakes = 0;
    m.virtio!.onInterrupt = () => wakes++;
    const slot = VIRTIO_PCI_FIRST_SLOT;
    const bar = 0xc0000000;
    cfgWrite32(m, slot, 0x10, bar);
    cfgWrite32(m, slot, 0x04, 0x0006);
    // The driver's handshake through the common configuration structure.
    const common = (off: number, len: 1 | 2 | 4, v: number): void => mmioWrite(m, bar + off, len, v);
    common(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    common(0x08, 4, 1); // driver_feature_select: bits 32..63
    common(0x0c, 4, 1 << (VIRTIO_F_VERSION_1 - 32));
    common(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    expect(mmioRead(m, bar + 0x14, 1) & VIRTIO_STATUS_FEATURES_OK).toBe(VIRTIO_STATUS_FEATURES_OK);
    common(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    common(0x18, 2, QSIZE);
    common(0x20, 4, DESC);
    common(0x28, 4, AVAIL);
    common(0x30, 4, USED);
    common(0x1c, 2, 1);
    common(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    postWritableBuffer(m, 64);
    // Linux's vp_notify: a 16-bit write of the queue index. No exit: the HLT after it is the first.
    const reason = runFlat(m.vcpu, m, store16ThenHlt(bar + VIRTIO_PCI_NOTIFY_OFFSET, 0));
    expect(reason).toBe(KVM_EXIT_HLT);
    expect(usedIdx(m)).toBe(1);
    expect(rng.bytesServed).toBe(64);
    expect(wakes).toBe(1);
    // INTA# of slot 2 → PIRQB → ISA IRQ 10: the slave 8259A's input 2.
    expect(m.pic!.save().slave.lines).toBe(1 << (10 - 8));
    expect(mmioRead(m, bar + 0x1000, 1)).toBe(1); // ISR: used buffer; reading it deasserts INTA#
    expect(m.pic!.save().slave.lines).toBe(0);
  });
});

/** The driver's handshake on a virtio-mmio window, with queue 0 at DESC/AVAIL/USED. */
function startMmioQueue(m: PcMachine, base: number): void {
  const reg = (off: number, v: number): void => mmioWrite(m, base + off, 4, v);
  reg(0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
  reg(0x24, 1);
  reg(0x20, 1 << (VIRTIO_F_VERSION_1 - 32));
  reg(0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
  reg(0x30, 0);
  reg(0x38, QSIZE);
  reg(0x80, DESC);
  reg(0x90, AVAIL);
  reg(0xa0, USED);
  reg(0x44, 1);
  reg(0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

describe('PcMachine with virtio-mmio devices', () => {
  it('answers the virtio-mmio magic, version 2 and device ID in consecutive 0x200 windows', () => {
    const m = makeMachine('mmio', [new VirtioRng(), new VirtioConsole()]);
    expect(mmioRead(m, VIRTIO_MMIO_BASE, 4)).toBe(VIRTIO_MMIO_MAGIC);
    expect(mmioRead(m, VIRTIO_MMIO_BASE + 4, 4)).toBe(2);
    expect(mmioRead(m, VIRTIO_MMIO_BASE + 8, 4)).toBe(4);
    expect(mmioRead(m, VIRTIO_MMIO_BASE + 0x200 + 8, 4)).toBe(3);
    expect(mmioRead(m, VIRTIO_MMIO_BASE + 0x200 + 12, 4)).toBe(VIRTIO_VENDOR_ID);
    expect(m.virtio!.mmioWindows.map((w) => w.gsi)).toEqual([16, 17]);
    expect(m.virtio!.kernelCmdline()).toBe('virtio_mmio.device=512@0xd0000000:16 virtio_mmio.device=512@0xd0000200:17');
  });

  it('uses free ISA IRQs with the userspace PIC', () => {
    const m = makeMachine('mmio', [new VirtioRng()], 'userspace');
    expect(m.virtio!.mmioWindows.map((w) => w.gsi)).toEqual([5]);
  });

  it('describes the windows in an SSDT that the RSDT and XSDT list', () => {
    const m = makeMachine('mmio', [new VirtioRng(), new VirtioConsole()]);
    const t = m.acpiTables(MEM);
    const text = Buffer.from(t.blob).toString('latin1');
    expect(text.split(VIRTIO_MMIO_ACPI_HID).length - 1).toBe(2);
    const at = (addr: number): number => addr - t.address;
    const dv = new DataView(t.blob.buffer, t.blob.byteOffset, t.blob.byteLength);
    const rsdt = at(t.tables.RSDT.address);
    expect(text.slice(rsdt, rsdt + 4)).toBe('RSDT');
    const entries = (dv.getUint32(rsdt + 4, true) - 36) / 4;
    const signatures = Array.from({ length: entries }, (_, i) => {
      const a = at(dv.getUint32(rsdt + 36 + 4 * i, true));
      return text.slice(a, a + 4);
    });
    expect(signatures).toEqual(['FACP', 'APIC', 'SSDT']);
    // Every table checksums to 0, the RSDP points at the new RSDT, and all of it is reserved.
    const sum = (off: number, len: number): number => t.blob.subarray(off, off + len).reduce((a, b) => a + b, 0) & 0xff;
    for (const a of [rsdt, at(t.tables.XSDT.address), at(dv.getUint32(rsdt + 36 + 8, true))]) expect(sum(a, dv.getUint32(a + 4, true))).toBe(0);
    expect(dv.getUint32(at(t.rsdpAddress) + 16, true)).toBe(t.tables.RSDT.address);
    expect(t.e820Reserved.addr).toBe(t.address);
    expect(t.e820Reserved.addr + t.e820Reserved.size).toBe(MEM);
  });

  it('runs a kick of QueueNotify inside KVM_RUN and raises GSI 16', () => {
    const rng = new VirtioRng();
    const m = makeMachine('mmio', [rng]);
    let wakes = 0;
    m.virtio!.onInterrupt = () => wakes++;
    startMmioQueue(m, VIRTIO_MMIO_BASE);
    postWritableBuffer(m, 32);
    // A write of another queue's index matches no ioeventfd and exits as MMIO.
    expect(runFlat(m.vcpu, m, storeThenHlt(VIRTIO_MMIO_BASE + 0x50, 7))).toBe(KVM_EXIT_MMIO);
    expect(runFlat(m.vcpu, m, storeThenHlt(VIRTIO_MMIO_BASE + 0x50, 0))).toBe(KVM_EXIT_HLT);
    expect(usedIdx(m)).toBe(1);
    expect(rng.bytesServed).toBe(32);
    expect(wakes).toBe(1);
    expect(m.virtio!.mmioWindows[0]!.transport.irqLevel).toBe(true);
    expect(m.vm.getIrqchip(2).pins & (1 << 16)).not.toBe(0);
    mmioWrite(m, VIRTIO_MMIO_BASE + 0x64, 4, 1); // InterruptACK
    expect(m.vm.getIrqchip(2).pins & (1 << 16)).toBe(0);
  });
});

describe('asynchronous completions', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmts-pc-virtio-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a virtio-blk read completes on the event loop, raises the line and calls onInterrupt', async () => {
    const image = join(dir, 'disk.img');
    const sector1 = Buffer.alloc(512, 0x5a);
    writeFileSync(image, Buffer.concat([Buffer.alloc(512), sector1]));
    const disk = await VirtioBlock.open(image);
    try {
      const m = makeMachine('mmio', [disk]);
      let wakes = 0;
      m.virtio!.onInterrupt = () => wakes++;
      startMmioQueue(m, VIRTIO_MMIO_BASE);
      // IN request for sector 1: header (readable), 512 data bytes and a status byte (writable).
      const header = new DataView(new ArrayBuffer(16));
      header.setUint32(0, 0, true); // VIRTIO_BLK_T_IN
      header.setUint32(8, 1, true); // sector
      m.vm.memory.write(BUF, new Uint8Array(header.buffer));
      const desc = new DataView(new ArrayBuffer(48));
      const put = (i: number, addr: number, len: number, flags: number, next: number): void => {
        desc.setUint32(i * 16, addr, true);
        desc.setUint32(i * 16 + 8, len, true);
        desc.setUint16(i * 16 + 12, flags, true);
        desc.setUint16(i * 16 + 14, next, true);
      };
      put(0, BUF, 16, 1, 1); // NEXT
      put(1, BUF + 0x100, 512, 3, 2); // NEXT | WRITE
      put(2, BUF + 0x400, 1, 2, 0); // WRITE
      m.vm.memory.write(DESC, new Uint8Array(desc.buffer));
      m.vm.memory.write(AVAIL, Uint8Array.of(0, 0, 1, 0, 0, 0));
      m.vm.memory.write(BUF + 0x400, Uint8Array.of(0xff));
      expect(runFlat(m.vcpu, m, storeThenHlt(VIRTIO_MMIO_BASE + 0x50, 0))).toBe(KVM_EXIT_HLT);
      // The file read is still in flight: nothing in the used ring, no interrupt, but busy.
      expect(usedIdx(m)).toBe(0);
      expect(wakes).toBe(0);
      expect(m.virtio!.busy()).toBe(true);
      for (let i = 0; i < 200 && wakes === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(wakes).toBe(1);
      expect(m.virtio!.busy()).toBe(false);
      expect(usedIdx(m)).toBe(1);
      const data = new Uint8Array(513);
      m.vm.memory.read(BUF + 0x100, data.subarray(0, 512));
      m.vm.memory.read(BUF + 0x400, data.subarray(512));
      expect(Buffer.from(data.subarray(0, 512)).equals(sector1)).toBe(true);
      expect(data[512]).toBe(0); // VIRTIO_BLK_S_OK
      expect(m.vm.getIrqchip(2).pins & (1 << 16)).not.toBe(0);
    } finally {
      await disk.close();
    }
  });
});
