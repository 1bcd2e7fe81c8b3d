/**
 * An SSDT next to `@kvmts/firmware`'s ACPI tables, for devices the DSDT does not describe
 * (virtio-mmio windows): {@link withSsdt} lays the firmware's tables out one region lower
 * and puts the SSDT, a new RSDT and XSDT listing it, and a new RSDP in the pages above them.
 * The firmware's own RSDT, XSDT and RSDP stay in the blob, unreferenced.
 * @module
 */

import { aml, buildAcpiTables, buildRsdp, buildRsdt, buildTable, buildXsdt, type AcpiBuildOptions, type AcpiTables, type Aml } from '@kvmts/firmware';

const PAGE = 4096;
const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Memory32Fixed(ReadWrite, base, length) (ACPI 6.5, 6.4.3.4). */
export function memory32Fixed(base: number, length: number): Aml {
  const d = new Uint8Array(12);
  const v = new DataView(d.buffer);
  d.set([0x86, 9, 0, 1]);
  v.setUint32(4, base, true);
  v.setUint32(8, length, true);
  return d;
}

/**
 * Interrupt(ResourceConsumer, trigger, ActiveHigh, Exclusive) {gsi}: the Extended Interrupt
 * Descriptor (ACPI 6.5, 6.4.3.6), which can name GSIs above 15.
 */
export function extendedInterrupt(gsi: number, trigger: 'level' | 'edge'): Aml {
  const d = new Uint8Array(9);
  const v = new DataView(d.buffer);
  // Flags: bit 0 consumer, bit 1 edge-triggered; active high, exclusive.
  d.set([0x89, 6, 0, 0x01 | (trigger === 'edge' ? 0x02 : 0), 1]);
  v.setUint32(5, gsi, true);
  return d;
}

/**
 * The firmware's tables plus an SSDT whose definition block is `ssdtBody` (AML terms, e.g. a
 * `Scope(\_SB)` with devices), below the same top of low RAM as the firmware would use.
 */
export function withSsdt(options: AcpiBuildOptions, ssdtBody: Aml): AcpiTables {
  if (options.rsdpAddress !== undefined) throw new RangeError('withSsdt: the RSDP goes with the new RSDT and XSDT; rsdpAddress is not supported');
  const ssdt = buildTable('SSDT', 2, ssdtBody, options.oem);
  // SSDT, RSDT (3 entries), XSDT (3 entries), RSDP: 8-, 8-, 8- and 16-byte aligned.
  const rsdtOff = align(ssdt.length, 8);
  const xsdtOff = align(rsdtOff + 36 + 3 * 4, 8);
  const rsdpOff = align(xsdtOff + 36 + 3 * 8, 16);
  const extraSize = align(rsdpOff + 36, PAGE);

  // Where the firmware would put its blob, then the same one region lower.
  const probe = buildAcpiTables(options);
  const base = buildAcpiTables({ ...options, address: probe.address - extraSize });
  const extraAt = base.address + align(base.blob.length, PAGE);
  const ssdtAt = extraAt;
  const tables = [base.tables.FACP.address, base.tables.APIC.address, ssdtAt];
  const rsdt = buildRsdt(tables, options.oem);
  const xsdt = buildXsdt(tables, options.oem);
  const rsdp = buildRsdp({
    rsdtAddress: extraAt + rsdtOff,
    xsdtAddress: extraAt + xsdtOff,
    revision: 2,
    ...(options.oem?.oemId !== undefined ? { oemId: options.oem.oemId } : {}),
  });

  const blob = new Uint8Array(extraAt + rsdpOff + rsdp.length - base.address);
  blob.set(base.blob, 0);
  const put = (bytes: Uint8Array, at: number): void => blob.set(bytes, at - base.address);
  put(ssdt, ssdtAt);
  put(rsdt, extraAt + rsdtOff);
  put(xsdt, extraAt + xsdtOff);
  put(rsdp, extraAt + rsdpOff);
  const size = align(blob.length, PAGE);
  return {
    address: base.address,
    blob,
    rsdpAddress: extraAt + rsdpOff,
    rsdp,
    writes: [{ addr: base.address, bytes: blob }],
    e820Reserved: { ...base.e820Reserved, addr: base.address, size },
    tables: {
      ...base.tables,
      RSDT: { address: extraAt + rsdtOff, length: rsdt.length },
      XSDT: { address: extraAt + xsdtOff, length: xsdt.length },
      RSDP: { address: extraAt + rsdpOff, length: rsdp.length },
    },
  };
}

/** `Device(name) { _HID hid, _UID uid, _CRS resources }`. */
export function acpiDevice(path: string, hid: string, uid: number, resources: readonly Aml[]): Aml {
  return aml.device(
    path,
    aml.name('_HID', aml.string(hid)),
    aml.name('_UID', aml.integer(uid)),
    aml.name('_CRS', aml.resourceTemplate(...resources)),
  );
}
