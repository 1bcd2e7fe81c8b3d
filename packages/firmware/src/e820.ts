/**
 * The BIOS memory map (INT 15h E820), as handed to Linux in boot_params and to bootloaders.
 * @module
 */

/** E820 region types. */
export const E820Type = {
  Ram: 1,
  Reserved: 2,
  Acpi: 3,
  Nvs: 4,
  Unusable: 5,
} as const;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** The top of conventional memory: the EBDA occupies the last KiB below 640 KiB. */
export const EBDA_START = 0x9fc00;
/** The VGA hole and option/BIOS ROMs span 640 KiB to 1 MiB. */
export const LOW_RESERVED_START = 0xa0000;
export const HIGH_MEMORY_START = 0x100000;
/** Where PCI devices and the APICs live: RAM stops here and resumes above 4 GiB. */
export const PCI_HOLE_START = 0xc0000000;

/**
 * The PC memory map for `ramSize` bytes of RAM: conventional memory, the EBDA and BIOS area
 * reserved, extended memory, and `reserved` ranges (APICs, firmware ROM, ACPI tables) on top.
 * RAM beyond the PCI hole is not mapped (an i686 without PAE addresses 4 GiB).
 */
export function pcE820(ramSize: number, reserved: readonly E820Entry[] = []): E820Entry[] {
  const map: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820Type.Ram },
    { addr: EBDA_START, size: LOW_RESERVED_START - EBDA_START, type: E820Type.Reserved },
    { addr: 0xf0000, size: 0x10000, type: E820Type.Reserved },
  ];
  const highEnd = Math.min(ramSize, PCI_HOLE_START);
  if (highEnd > HIGH_MEMORY_START) map.push({ addr: HIGH_MEMORY_START, size: highEnd - HIGH_MEMORY_START, type: E820Type.Ram });
  // Reserved ranges carve RAM out where they overlap it.
  let out = map;
  for (const r of reserved) out = carve(out, r);
  return out.sort((a, b) => a.addr - b.addr);
}

function carve(map: E820Entry[], r: E820Entry): E820Entry[] {
  const out: E820Entry[] = [];
  for (const e of map) {
    const end = e.addr + e.size, rEnd = r.addr + r.size;
    if (rEnd <= e.addr || r.addr >= end) { out.push(e); continue; }
    if (r.addr > e.addr) out.push({ addr: e.addr, size: r.addr - e.addr, type: e.type });
    if (rEnd < end) out.push({ addr: rEnd, size: end - rEnd, type: e.type });
  }
  out.push({ ...r });
  return out;
}

/** Total bytes of usable RAM in a map. */
export function e820RamBytes(map: readonly E820Entry[]): number {
  return map.filter((e) => e.type === E820Type.Ram).reduce((n, e) => n + e.size, 0);
}
