/**
 * `kvmts run --bios FILE`: boot a third-party PC firmware image (e.g. Debian's SeaBIOS,
 * /usr/share/seabios/bios.bin) instead of kvmts's own BIOS, on a {@link PcMachine} set up as
 * QEMU sets one up for it:
 *
 * - the image is mapped read-only so that it ends at 4 GiB, where the CPU fetches its reset
 *   vector, and its last 128 KiB (all of a smaller image) is copied into RAM just below 1 MiB,
 *   where real-mode code runs it. That copy is what the chipset's shadow RAM holds once the
 *   firmware has "shadowed" itself (SeaBIOS copies itself there again, harmlessly, and then
 *   writes to it), so no PAM emulation is needed;
 * - the fw_cfg device at 0x510/0x511 tells the firmware the machine's RAM (`etc/e820`), the
 *   CPU count, how long to wait before retrying a failed boot (`etc/boot-fail-wait`) and that
 *   COM1 is the console (`etc/sercon-port`: SeaBIOS then mirrors its screen to the UART), and
 *   hands it the machine's ACPI tables to place itself (`etc/table-loader`, see
 *   firmware-acpi.ts) unless `--no-acpi`;
 * - QEMU's debug console at port 0x402 (reads 0xE9, as SeaBIOS checks before it logs there):
 *   the firmware's log goes to stderr, each line prefixed with "bios: ".
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';
import { KVM_MEM_READONLY, type VmFd } from '@kvmts/kvm-core';
import { FW_CFG_PORT, FW_CFG_PORT_LEN, FwCfg, FwCfgKey, fwCfgE820, fwCfgU32 } from '@kvmts/devices';
import { formatSize } from '../args.js';
import { addAcpiFiles } from './firmware-acpi.js';
import { CliError } from '../errors.js';
import { readInput, runPcGuest, type GuestInput, type LinuxRunIo, type PcRunOptions } from './linux.js';
import type { PcMachine } from './pc.js';

/** Where a firmware image ends: the top of the 32-bit address space. */
const FOUR_GIB = 0x1_0000_0000;
/** How much of the image's end real mode sees below 1 MiB (0xE0000–0xFFFFF). */
export const LOW_BIOS_WINDOW = 128 * 1024;
/** Image sizes accepted: whole 64 KiB blocks, up to 16 MiB (a large flash part). */
const IMAGE_ALIGN = 64 * 1024;
const MAX_IMAGE_SIZE = 16 * 1024 * 1024;
/** QEMU's debug console port and the byte it reads back, by which firmware detects it. */
export const DEBUGCON_PORT = 0x402;
const DEBUGCON_READBACK = 0xe9;
/** Smallest RAM for a firmware boot: SeaBIOS wants some above 1 MiB for itself. */
export const MIN_FIRMWARE_MEM = 16 * 1024 * 1024;
/** RAM below the PCI hole that the firmware may use (above it would need a high-RAM entry). */
const MAX_FIRMWARE_MEM = 0xe000_0000;
/** After "No bootable device.", wait this long before the firmware retries (it reboots). */
const BOOT_FAIL_WAIT_MS = 1000;
const COM1 = 0x3f8;

/** Options of `kvmts run --bios`. */
export interface FirmwareRunOptions extends PcRunOptions {
  /** The firmware image file. */
  bios: string;
}

/** Checks a firmware image's size; returns a CliError message, or undefined when it is usable. */
export function firmwareImageProblem(size: number): string | undefined {
  if (size === 0 || size % IMAGE_ALIGN !== 0) return `its size (${size} bytes) is not a whole number of 64 KiB blocks`;
  if (size > MAX_IMAGE_SIZE) return `it is larger than ${formatSize(MAX_IMAGE_SIZE)}`;
  return undefined;
}

/**
 * Maps `image` read-only at [4 GiB − size, 4 GiB) and copies its last 128 KiB into RAM ending at
 * 1 MiB (the RAM must already be mapped there).
 */
export function mapFirmwareImage(vm: VmFd, image: Uint8Array): void {
  const used = new Set(vm.memory.listSlots().map((s) => s.id));
  let slot = 0;
  while (used.has(slot)) slot++;
  const rom = new Uint8Array(new ArrayBuffer(image.length));
  rom.set(image);
  vm.setUserMemoryRegion({ slot, flags: KVM_MEM_READONLY, guestPhysAddr: FOUR_GIB - image.length, memorySize: image.length, userspaceAddr: rom });
  const low = image.subarray(Math.max(0, image.length - LOW_BIOS_WINDOW));
  vm.memory.write(0x100000 - low.length, low);
}

/** The fw_cfg items a PC firmware reads at POST. */
export function pcFwCfg(ramSize: number): FwCfg {
  const fwCfg = new FwCfg({ ramSize, cpus: 1 });
  // The PIT's IRQ 0 reaches the I/O APIC on pin 2 (PcMachine's irqchip), which SeaBIOS's MP
  // table states only when told so.
  fwCfg.setItem(FwCfgKey.irq0Override, fwCfgU32(1));
  fwCfg.addFile('etc/e820', fwCfgE820([{ addr: 0, size: ramSize, type: 1 }]));
  fwCfg.addFile('etc/boot-fail-wait', fwCfgU32(BOOT_FAIL_WAIT_MS));
  fwCfg.addFile('etc/sercon-port', Uint8Array.of(COM1 & 0xff, COM1 >> 8));
  return fwCfg;
}

/** QEMU's isa-debugcon: bytes written are the firmware's log; reads give the detection byte. */
export class DebugConsole implements BusDevice {
  private line = '';

  constructor(private readonly emit: (line: string) => void) {}

  read(_offset: number, data: Uint8Array): void {
    data.fill(DEBUGCON_READBACK);
  }

  write(_offset: number, data: Uint8Array): void {
    for (const byte of data) {
      if (byte === 0x0a) this.flush();
      else if (byte !== 0x0d) this.line += String.fromCharCode(byte);
    }
  }

  /** Emits a pending partial line. */
  flush(): void {
    if (this.line !== '') this.emit(this.line);
    this.line = '';
  }
}

/** `kvmts run --bios FILE`: boots the firmware until the guest ends; returns the exit status. */
export async function runFirmware(options: FirmwareRunOptions, io: LinuxRunIo, input?: GuestInput): Promise<number> {
  if (options.memSize < MIN_FIRMWARE_MEM || options.memSize > MAX_FIRMWARE_MEM) {
    throw new CliError(`--mem ${formatSize(options.memSize)} does not suit --bios: give ${formatSize(MIN_FIRMWARE_MEM)} to ${formatSize(MAX_FIRMWARE_MEM)}`);
  }
  const image = readInput(options.bios, 'BIOS image');
  const problem = firmwareImageProblem(image.length);
  if (problem !== undefined) throw new CliError(`cannot use '${options.bios}' as a BIOS image: ${problem}`);
  let log: DebugConsole | undefined;
  try {
    // The tables go to the firmware through fw_cfg, not into RAM at fixed addresses.
    return await runPcGuest({ ...options, noAcpi: true }, io, input, (machine: PcMachine) => {
      mapFirmwareImage(machine.vm, image);
      const fwCfg = pcFwCfg(options.memSize);
      if (!options.noAcpi) addAcpiFiles(fwCfg, machine.acpiTables(options.memSize));
      machine.ioBus.insert(fwCfg, FW_CFG_PORT, FW_CFG_PORT_LEN);
      log?.flush();
      log = new DebugConsole((line) => io.stderr(`bios: ${line}\n`));
      machine.ioBus.insert(log, DEBUGCON_PORT, 1);
    });
  } finally {
    log?.flush();
  }
}
