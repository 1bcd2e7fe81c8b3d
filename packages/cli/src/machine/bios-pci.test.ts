// The BIOS's POST gives PCI functions their resources, as firmware must before an OS from disk
// runs: tested on a real PcMachine (host bridge + PIIX3 with its PIRQ routing) with a device
// that has an I/O BAR, a 32-bit and a 64-bit memory BAR and INTB.
import { describe, expect, it } from 'vitest';
import { Bios } from '@kvmts/firmware';
import { PCI_INTB, PciConfigSpace } from '@kvmts/devices';
import { PcMachine, PIRQ_IRQS } from './pc.js';

describe('BIOS POST PCI enumeration', () => {
  it('assigns aligned BARs in the PCI windows, enables decoding and writes the routed IRQ line', () => {
    const m = new PcMachine({ memSize: 4 << 20, clockMode: 'instructions', startTime: 0 });
    try {
      const dev = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000, interruptPin: PCI_INTB });
      dev.addBar(0, { kind: 'io', size: 32 });
      dev.addBar(1, { kind: 'mem32', size: 0x1000 });
      dev.addBar(2, { kind: 'mem64', size: 0x4000 });
      m.pci.attach(dev, 3);
      const bios = new Bios({ vm: m.vm, vcpu: m.vcpu, io: m.ioBus, ramSize: 4 << 20, hardDisks: [], bootOrder: [], nowNs: () => 0 });
      bios.install();
      const io = dev.bar(0)!;
      const mem32 = dev.bar(1)!;
      const mem64 = dev.bar(2)!;
      expect(io.address).not.toBeNull();
      expect(io.address! % 32).toBe(0);
      expect(io.address!).toBeGreaterThanOrEqual(0xc000);
      expect(mem32.address! % 0x1000).toBe(0);
      expect(mem64.address! % 0x4000).toBe(0);
      expect(mem32.address!).toBeGreaterThanOrEqual(0xc0000000);
      expect(mem64.address!).toBeLessThan(0xfec00000);
      expect(mem32.address! + 0x1000 <= mem64.address! || mem64.address! + 0x4000 <= mem32.address!).toBe(true);
      const cmd = new Uint8Array(2);
      dev.readConfig(0x04, cmd);
      expect(cmd[0]! & 0x7).toBe(0x7); // I/O, memory, bus master
      const line = new Uint8Array(1);
      dev.readConfig(0x3c, line);
      // Slot 3, INTB: PIRQ (3 + 2 - 2) & 3 = 3 → the fourth PIRQ register.
      expect(line[0]).toBe(PIRQ_IRQS[3]);
      expect(bios.pciAssignments.filter((a) => a.devfn === 3 << 3)).toHaveLength(3);
    } finally {
      m.close();
    }
  });
});
