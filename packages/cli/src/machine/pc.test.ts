import { describe, it, expect, afterEach } from 'vitest';
import { PcMachine, ACPI_SCI_IRQ, IOAPIC_ID } from './pc.js';
import { ACPI_SLP_TYP_S5, PM_BASE_DEFAULT, PM1_SLP_EN, type Pic } from '@kvmts/devices';
import { KVM_IRQCHIP_IOAPIC, LapicReg } from '@kvmts/kvm-core';

const machines: PcMachine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.close();
});

function makeMachine(opts: { debugExit?: boolean; irqchip?: 'kernel' | 'userspace'; serial2Output?: (byte: number) => void } = {}): PcMachine {
  const m = new PcMachine({ memSize: 1 << 20, clockMode: 'instructions', startTime: 0, ...opts });
  machines.push(m);
  return m;
}

const out8 = (m: PcMachine, port: number, v: number): void => {
  m.ioBus.write(port, Uint8Array.of(v));
};
const out16 = (m: PcMachine, port: number, v: number): void => {
  m.ioBus.write(port, Uint8Array.of(v & 0xff, v >> 8));
};
const in8 = (m: PcMachine, port: number): number => {
  const d = new Uint8Array(1);
  m.ioBus.read(port, d);
  return d[0]!;
};

/** Program the PICs as Linux does: vectors 0x20–0x2F, cascade on IR2, all lines unmasked. */
function initPic(m: PcMachine): void {
  out8(m, 0x20, 0x11);
  out8(m, 0x21, 0x20);
  out8(m, 0x21, 0x04);
  out8(m, 0x21, 0x01);
  out8(m, 0xa0, 0x11);
  out8(m, 0xa1, 0x28);
  out8(m, 0xa1, 0x02);
  out8(m, 0xa1, 0x01);
  out8(m, 0x21, 0x00);
  out8(m, 0xa1, 0x00);
}

describe('PcMachine IRQ routing (userspace 8259A)', () => {
  const make = (): PcMachine & { pic: Pic } => {
    const m = makeMachine({ irqchip: 'userspace' });
    if (!m.pic) throw new Error('no userspace PIC');
    return m as PcMachine & { pic: Pic };
  };

  it('routes COM1 to IRQ 4', () => {
    const m = make();
    initPic(m);
    expect(m.pic.hasInterrupt()).toBe(false);
    out8(m, 0x3f9, 0x01); // IER: received data available
    out8(m, 0x3fc, 0x08); // MCR: OUT2 (the PC gates the UART's IRQ with it)
    m.serial.enqueueInput([0x41]);
    expect(m.pic.hasInterrupt()).toBe(true);
    expect(m.pic.acknowledge()).toBe(0x24);
    expect(in8(m, 0x3f8)).toBe(0x41);
  });

  it('routes PIT channel 0 to IRQ 0 through the VM timer queue', () => {
    const m = make();
    initPic(m);
    out8(m, 0x43, 0x34); // channel 0, lobyte/hibyte, mode 2
    out8(m, 0x40, 0x9c);
    out8(m, 0x40, 0x2e); // 11932: 100 Hz
    const deadline = m.vm.timers.nextDeadlineNs();
    expect(deadline).toBeGreaterThan(0);
    m.vm.setClock(deadline);
    m.vm.timers.runDue();
    expect(m.pic.hasInterrupt()).toBe(true);
    expect(m.pic.acknowledge()).toBe(0x20);
  });

  it('routes the RTC to IRQ 8 on the slave', () => {
    const m = make();
    initPic(m);
    out8(m, 0x70, 0x0b);
    out8(m, 0x71, 0x42); // PIE, 24-hour mode
    const deadline = m.vm.timers.nextDeadlineNs();
    expect(deadline).toBeGreaterThan(0);
    m.vm.setClock(deadline);
    m.vm.timers.runDue();
    expect(m.pic.acknowledge()).toBe(0x28);
  });

  it('routes the keyboard to IRQ 1', () => {
    const m = make();
    initPic(m);
    m.i8042.keyboardInput([0x1c]);
    expect(m.pic.acknowledge()).toBe(0x21);
  });

  it('routes the ACPI SCI to IRQ 9', () => {
    const m = make();
    initPic(m);
    out16(m, PM_BASE_DEFAULT + 2, 0x100); // PM1_EN: power button
    m.pm.pressPowerButton();
    expect(m.pic.acknowledge()).toBe(0x28 + (ACPI_SCI_IRQ - 8));
  });

  it('tells the CMOS the memory size', () => {
    const m = make();
    out8(m, 0x70, 0x15);
    expect(in8(m, 0x71)).toBe(0x80); // 640K base memory, low byte (0x280)
  });
});

describe('PcMachine IRQ routing (in-kernel irqchip)', () => {
  /** I/O APIC input pins asserted now (in-kernel irqchip state). */
  const ioapicPins = (m: PcMachine): number => m.vm.getIrqchip(KVM_IRQCHIP_IOAPIC).pins;

  it('drives the in-kernel chips with KVM_IRQ_LINE: COM1 on 4, i8042 on 1, RTC on 8, SCI on 9', () => {
    const m = makeMachine();
    expect(m.irqchip).toBe('kernel');
    expect(m.pic).toBeUndefined();
    expect(ioapicPins(m)).toBe(0);
    out8(m, 0x3f9, 0x01);
    out8(m, 0x3fc, 0x08);
    m.serial.enqueueInput([0x41]);
    expect(ioapicPins(m)).toBe(1 << 4);
    expect(in8(m, 0x3f8)).toBe(0x41);
    expect(ioapicPins(m)).toBe(0);
    m.i8042.keyboardInput([0x1c]);
    expect(ioapicPins(m)).toBe(1 << 1);
    out16(m, PM_BASE_DEFAULT + 2, 0x100);
    m.pm.pressPowerButton();
    expect(ioapicPins(m) & (1 << ACPI_SCI_IRQ)).toBe(1 << ACPI_SCI_IRQ);
  });

  it('maps COM2 at 0x2f8 on IRQ 3 only when asked', () => {
    const plain = makeMachine();
    expect(plain.serial2).toBeUndefined();
    expect(plain.ioBus.find(0x2f8)).toBeUndefined();
    const sent: number[] = [];
    const m = makeMachine({ serial2Output: (b) => sent.push(b) });
    out8(m, 0x2f8, 0x4b);
    expect(sent).toEqual([0x4b]);
    out8(m, 0x2f9, 0x02); // IER: transmitter empty
    out8(m, 0x2fc, 0x08); // MCR: OUT2
    expect(ioapicPins(m)).toBe(1 << 3);
  });

  it('leaves the local APIC in virtual-wire mode and the I/O APIC with the ID the tables give', () => {
    const m = makeMachine();
    const lapic = new DataView(m.vcpu.getLapic().buffer);
    expect(lapic.getUint32(LapicReg.SVR, true) & 0x100).toBe(0x100);
    expect(lapic.getUint32(LapicReg.LVT_LINT0, true)).toBe(0x700);
    expect(m.vm.getIrqchip(KVM_IRQCHIP_IOAPIC).id).toBe(IOAPIC_ID);
    // No ports of the in-kernel chips on the machine's own bus.
    expect(m.ioBus.find(0x20)).toBeUndefined();
    expect(m.ioBus.find(0x40)).toBeUndefined();
  });

  it('builds MP tables naming the same I/O APIC, and none without a local APIC', () => {
    const m = makeMachine();
    const mp = m.mpTables();
    expect(mp).toBeDefined();
    const text = new TextDecoder('latin1').decode(mp!.writes[0]!.bytes);
    expect(text.startsWith('_MP_')).toBe(true);
    expect(text).toContain('PCMP');
    expect(makeMachine({ irqchip: 'userspace' }).mpTables()).toBeUndefined();
  });
});

describe('PcMachine stop requests', () => {
  const make = makeMachine;
  it.each([
    ['keyboard controller', (m: PcMachine) => out8(m, 0x64, 0xfe)],
    ['PCI reset control (0xcf9)', (m: PcMachine) => out8(m, 0xcf9, 0x06)],
    ['port 0x92', (m: PcMachine) => out8(m, 0x92, 0x03)],
    ['ACPI reset register', (m: PcMachine) => out8(m, PM_BASE_DEFAULT + 0x10, 0x01)],
  ])('resets through the %s', (source, poke) => {
    const m = make();
    expect(m.takeStop()).toBeNull();
    poke(m);
    expect(m.takeStop()).toEqual({ kind: 'reset', source });
    expect(m.takeStop()).toBeNull();
  });

  it('powers off on ACPI S5', () => {
    const m = make();
    out16(m, PM_BASE_DEFAULT + 4, (ACPI_SLP_TYP_S5 << 10) | PM1_SLP_EN);
    expect(m.takeStop()).toEqual({ kind: 'poweroff' });
  });

  it('maps the debug-exit port only when asked', () => {
    const plain = make();
    out8(plain, 0xf4, 7);
    expect(plain.takeStop()).toBeNull();
    const m = make({ debugExit: true });
    out8(m, 0xf4, 7);
    expect(m.takeStop()).toEqual({ kind: 'debug-exit', value: 7 });
  });
});
