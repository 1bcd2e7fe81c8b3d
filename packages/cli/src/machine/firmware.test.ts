import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_OUT, KVM_MEM_READONLY } from '@kvmts/kvm-core';
import { Assembler, byte, reg } from '@kvmts/kvm-core/asm';
import { FW_CFG_PORT, FwCfgKey } from '@kvmts/devices';
import { DEBUGCON_PORT, DebugConsole, LOW_BIOS_WINDOW, firmwareImageProblem, mapFirmwareImage, pcFwCfg, runFirmware } from './firmware.js';
import { PcMachine } from './pc.js';
import { CliError } from '../errors.js';

const machines: PcMachine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.close();
});

/** A 256 KiB image whose every byte is its 64 KiB block number plus one, with `resetCode` at the reset vector. */
function testImage(resetCode: Uint8Array = new Uint8Array(0)): Uint8Array {
  const image = new Uint8Array(256 * 1024);
  for (let i = 0; i < image.length; i++) image[i] = (i >>> 16) + 1;
  image.set(resetCode, image.length - 16);
  return image;
}

describe('kvmts run --bios: the firmware image', () => {
  it('is mapped read-only to end at 4 GiB, and its last 128 KiB is copied to end at 1 MiB', () => {
    const m = new PcMachine({ memSize: 2 << 20, clockMode: 'instructions', startTime: 0 });
    machines.push(m);
    const image = testImage();
    mapFirmwareImage(m.vm, image);
    const read = (gpa: number, n: number): number[] => {
      const out = new Uint8Array(n);
      m.vm.memory.read(gpa, out);
      return [...out];
    };
    expect(read(0xfffc0000, 1)).toEqual([1]);
    expect(read(0xfffffff0, 2)).toEqual([4, 4]);
    expect(read(0x100000 - LOW_BIOS_WINDOW, 1)).toEqual([3]);
    expect(read(0xfffff, 1)).toEqual([4]);
    expect(read(0x100000 - LOW_BIOS_WINDOW - 1, 1)).toEqual([0]); // RAM below the window is untouched
    const slot = m.vm.memory.listSlots().find((s) => s.guestPhysAddr === 0xfffc0000);
    expect(slot?.size).toBe(256 * 1024);
    expect(slot!.flags & KVM_MEM_READONLY).toBe(KVM_MEM_READONLY);
  });

  it('runs from the reset vector at the top of 4 GiB, with the low copy at F000:0000', () => {
    const m = new PcMachine({ memSize: 2 << 20, clockMode: 'instructions', startTime: 0 });
    machines.push(m);
    const { al, ax, ds } = reg;
    const a = new Assembler({ bits: 16, origin: 0xfff0 });
    a.mov(ax, 0xf000).mov(ds, ax).mov(al, byte(0)).out(0xf4, al).hlt();
    mapFirmwareImage(m.vm, testImage(a.bytes()));
    expect(m.vcpu.run()).toBe(KVM_EXIT_IO);
    const io = m.vcpu.runData.io;
    expect([io.direction, io.port, io.data[0]]).toEqual([KVM_EXIT_IO_OUT, 0xf4, 4]);
    expect(m.vcpu.run()).toBe(KVM_EXIT_HLT);
  });

  it('accepts whole 64 KiB blocks up to 16 MiB', () => {
    expect(firmwareImageProblem(128 * 1024)).toBeUndefined();
    expect(firmwareImageProblem(0)).toMatch(/64 KiB blocks/);
    expect(firmwareImageProblem(100_000)).toMatch(/64 KiB blocks/);
    expect(firmwareImageProblem(32 << 20)).toMatch(/larger than/);
  });

  it('gives the firmware fw_cfg with the RAM, one CPU, the IRQ 0 override, etc/e820, boot-fail-wait and COM1 as the serial console', () => {
    const fwCfg = pcFwCfg(64 << 20);
    const u = (key: number): DataView => {
      const b = fwCfg.item(key)!;
      return new DataView(b.buffer, b.byteOffset, b.byteLength);
    };
    expect(u(FwCfgKey.ramSize).getBigUint64(0, true)).toBe(BigInt(64 << 20));
    expect(u(FwCfgKey.nbCpus).getUint16(0, true)).toBe(1);
    expect(u(FwCfgKey.irq0Override).getUint32(0, true)).toBe(1);
    const dir = u(FwCfgKey.fileDir);
    const names = Array.from({ length: dir.getUint32(0, false) }, (_, i) =>
      new TextDecoder().decode(new Uint8Array(dir.buffer, dir.byteOffset + 4 + i * 64 + 8, 56)).replace(/\0+$/, ''),
    );
    expect(names).toEqual(['etc/boot-fail-wait', 'etc/e820', 'etc/sercon-port']);
    const e820 = u(FwCfgKey.fileFirst);
    expect([e820.getBigUint64(0, true), e820.getBigUint64(8, true), e820.getUint32(16, true)]).toEqual([0n, BigInt(64 << 20), 1]);
    expect(u(FwCfgKey.fileFirst + 2).getUint16(0, true)).toBe(0x3f8);
    expect(FW_CFG_PORT).toBe(0x510);
  });

  it("collects the debug console's bytes into lines and reads back 0xE9, the byte firmware probes for", () => {
    const lines: string[] = [];
    const con = new DebugConsole((l) => lines.push(l));
    const probe = new Uint8Array(1);
    con.read(0, probe);
    expect(probe[0]).toBe(0xe9);
    for (const c of 'SeaBIOS\r\nBUILD: x\npartial') con.write(0, Uint8Array.of(c.charCodeAt(0)));
    expect(lines).toEqual(['SeaBIOS', 'BUILD: x']);
    con.flush();
    expect(lines).toEqual(['SeaBIOS', 'BUILD: x', 'partial']);
    expect(DEBUGCON_PORT).toBe(0x402);
  });

  it('refuses unusable images and memory sizes with one-line errors, before making a machine', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmts-firmware-'));
    try {
      const odd = join(dir, 'odd.bin');
      writeFileSync(odd, new Uint8Array(1000));
      const io = { stdout: (): void => {}, stderr: (): void => {} };
      await expect(runFirmware({ bios: odd, memSize: 64 << 20 }, io)).rejects.toThrow(new CliError(`cannot use '${odd}' as a BIOS image: its size (1000 bytes) is not a whole number of 64 KiB blocks`));
      await expect(runFirmware({ bios: join(dir, 'missing.bin'), memSize: 64 << 20 }, io)).rejects.toThrow(/cannot read BIOS image '.*missing\.bin': no such file or directory/);
      await expect(runFirmware({ bios: odd, memSize: 8 << 20 }, io)).rejects.toThrow(/does not suit --bios/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
