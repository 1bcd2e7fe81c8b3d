/**
 * The BIOS ROM: real-mode stubs assembled with kvm-core's assembler. The services themselves
 * run in the VMM: a service stub starts with `out BIOS_CALL_PORT, al`, the VMM recognises the
 * stub by its address, runs the service on the vCPU's registers and memory (patching CF/ZF
 * into the FLAGS on the stub's IRET frame), and the stub `iret`s. If the VMM leaves CF set in
 * the live flags, the service wants to wait (a keystroke, a delay): the stub does `sti; hlt`
 * and calls again, so timer and keyboard interrupts keep running meanwhile.
 * @module
 */
import { Assembler, reg } from '@kvmts/kvm-core/asm';
import {
  BIOS_CALL_PORT, BIOS_ROM_SEGMENT, BIOS_ROM_SIZE, BOOT_SECTOR_ADDRESS, BOOT_STACK_TOP, MODEL_BYTE, RomEntry,
} from './layout.js';

/** What a ROM stub asks the VMM to do. */
export type StubKind = 'service' | 'timer' | 'boot' | 'no-boot';

/** One VMM call site in the ROM. */
export interface RomStub {
  /** The interrupt vector it serves. */
  vector: number;
  kind: StubKind;
}

export interface BiosRom {
  /** The 64 KiB image for F000:0000. */
  bytes: Uint8Array;
  /** ROM offset of each stub's `out` → the stub. */
  stubs: ReadonlyMap<number, RomStub>;
  /** Interrupt vector → ROM offset of its handler (vectors not listed get a bare `iret`). */
  vectors: ReadonlyMap<number, number>;
}

/** The vectors with a VMM service behind a generic stub. */
const SERVICE_VECTORS = [0x09, 0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x1a] as const;
/** Fixed entry point of each service vector that has one. */
const FIXED_ENTRY: Partial<Record<number, number>> = {
  0x08: RomEntry.int08, 0x09: RomEntry.int09, 0x10: RomEntry.int10, 0x11: RomEntry.int11, 0x12: RomEntry.int12,
  0x13: RomEntry.int13, 0x15: RomEntry.int15, 0x16: RomEntry.int16, 0x19: RomEntry.int19, 0x1a: RomEntry.int1a,
};

/** The 1.44 MB diskette parameter table (INT 1Eh points here), with the usual PC/AT values. */
const DISKETTE_PARAMS = [0xaf, 0x02, 0x25, 0x02, 0x12, 0x1b, 0xff, 0x6c, 0xf6, 0x0f, 0x08];

/** Assembles the ROM. */
export function buildBiosRom(): BiosRom {
  const { al, ax, sp, ds, es, ss } = reg;
  const a = new Assembler({ bits: 16, origin: 0 });
  const stubLabels: { label: string; stub: RomStub }[] = [];
  const call = (label: string, stub: RomStub): void => {
    a.label(label).out(BIOS_CALL_PORT, al);
    stubLabels.push({ label, stub });
  };

  a.org(0x100, 0xff);
  // Generic service stubs: call, then return or wait and call again.
  for (const v of SERVICE_VECTORS) {
    const name = `svc${v.toString(16)}`;
    call(name, { vector: v, kind: 'service' });
    a.jc(`${name}.wait`, 'short').iret();
    a.label(`${name}.wait`).sti().hlt().jmp(name, 'short');
  }

  // INT 08h (IRQ 0): the VMM advances the tick count; then INT 1Ch and the end of interrupt.
  call('irq0', { vector: 0x08, kind: 'timer' });
  a.int(0x1c).push(ax).mov(al, 0x20).out(0x20, al).pop(ax).iret();

  // Other IRQs have no handler: acknowledge them at the PIC(s) so they do not block lower ones.
  a.label('irqMaster').push(ax).mov(al, 0x20).out(0x20, al).pop(ax).iret();
  a.label('irqSlave').push(ax).mov(al, 0x20).out(0xa0, al).out(0x20, al).pop(ax).iret();

  // INT 19h: the VMM loads a boot sector at 0000:7C00 and sets DL, or sets CF: nothing to boot.
  call('boot', { vector: 0x19, kind: 'boot' });
  a.jc('boot.none', 'short');
  a.cli().xor(ax, ax).mov(ds, ax).mov(es, ax).mov(ss, ax).mov(sp, BOOT_STACK_TOP).sti();
  a.jmpFar(0, BOOT_SECTOR_ADDRESS);
  a.label('boot.none').int(0x18);
  // INT 18h: the VMM reports that there is no bootable device; the CPU stops here.
  call('noBoot', { vector: 0x18, kind: 'no-boot' });
  a.label('halt').cli().hlt().jmp('halt', 'short');

  // Power-on entry: the memory-side POST has run in the VMM. The interrupt controller and the
  // timer are programmed here, by guest port writes, so they reach whichever 8259A and 8254 the
  // machine has (its own or an in-kernel irqchip). Then set up a stack and boot.
  a.label('post').cli().cld().xor(ax, ax).mov(ss, ax).mov(sp, BOOT_STACK_TOP).mov(ds, ax).mov(es, ax);
  // 8259A pair: ICW1 edge/cascade/ICW4, ICW2 vectors 08h and 70h, ICW3 cascade on IR2, ICW4
  // 8086 mode; then mask everything but the timer, keyboard and cascade.
  for (const [port, value] of [[0x20, 0x11], [0x21, 0x08], [0x21, 0x04], [0x21, 0x01], [0xa0, 0x11], [0xa1, 0x70], [0xa1, 0x02], [0xa1, 0x01], [0x21, 0xf8], [0xa1, 0xff]] as const) {
    a.mov(al, value).out(port, al);
  }
  // 8254 channel 0: rate generator with the full 65536 divisor, 18.2 Hz, the BIOS tick.
  a.mov(al, 0x34).out(0x43, al).xor(al, al).out(0x40, al).out(0x40, al);
  a.sti().int(0x19);
  a.jmp('halt');

  // The fixed PC/AT entry points, in address order.
  const fixed: [number, () => void][] = [
    [RomEntry.post, () => a.jmp('post', 'near')],
    [RomEntry.int13, () => a.jmp('svc13', 'near')],
    [RomEntry.int19, () => a.jmp('boot', 'near')],
    [RomEntry.configTable, () => a.dw(8).db(MODEL_BYTE, 0x00, 0x01, 0x74, 0x00, 0x00, 0x00, 0x00)],
    [RomEntry.int16, () => a.jmp('svc16', 'near')],
    [RomEntry.int09, () => a.jmp('svc9', 'near')],
    [RomEntry.diskettePrams, () => a.db(...DISKETTE_PARAMS)],
    [RomEntry.int10, () => a.jmp('svc10', 'near')],
    [RomEntry.int12, () => a.jmp('svc12', 'near')],
    [RomEntry.int11, () => a.jmp('svc11', 'near')],
    [RomEntry.int15, () => a.jmp('svc15', 'near')],
    [RomEntry.int1a, () => a.jmp('svc1a', 'near')],
    [RomEntry.int08, () => a.jmp('irq0', 'near')],
    [RomEntry.dummyIret, () => a.iret()],
    [RomEntry.resetVector, () => a.jmpFar(BIOS_ROM_SEGMENT, RomEntry.post)],
    [RomEntry.releaseDate, () => a.ascii('01/01/25')],
    [RomEntry.modelByte, () => a.db(MODEL_BYTE, 0x00)],
  ];
  for (const [at, emit] of fixed) {
    a.org(at, 0xff);
    emit();
  }
  const out = a.assemble();
  if (out.bytes.length !== BIOS_ROM_SIZE) throw new Error(`BIOS ROM is ${out.bytes.length} bytes, expected ${BIOS_ROM_SIZE}`);

  const label = (name: string): number => {
    const v = out.labels.get(name);
    if (v === undefined) throw new Error(`BIOS ROM: no label ${name}`);
    return v;
  };
  const stubs = new Map<number, RomStub>();
  for (const { label: l, stub } of stubLabels) stubs.set(label(l), stub);

  const vectors = new Map<number, number>();
  for (let irq = 0; irq < 8; irq++) vectors.set(0x08 + irq, label('irqMaster'));
  for (let irq = 0; irq < 8; irq++) vectors.set(0x70 + irq, label('irqSlave'));
  for (const v of [0x08, 0x09, 0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x19, 0x1a]) vectors.set(v, FIXED_ENTRY[v]!);
  vectors.set(0x18, label('noBoot'));
  // With a hard disk BIOS present, diskette services move to INT 40h: the same handler.
  vectors.set(0x40, label('svc13'));
  vectors.set(0x1e, RomEntry.diskettePrams);
  return { bytes: out.bytes, stubs, vectors };
}
