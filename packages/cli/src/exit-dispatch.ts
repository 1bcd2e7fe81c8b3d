/**
 * Completing port and MMIO exits against the buses, shared by every run loop: OUT and MMIO
 * writes go to the device that claims the address, IN and MMIO reads fill the kvm_run data
 * (all-ones where nothing answers, as on a PC bus). Views of the kvm_run data areas are made
 * once per access size, so an exit allocates nothing.
 * @module
 */
import { KVM_EXIT_IO_OUT } from '@kvmts/kvm-core';

/** A port or MMIO bus as the dispatcher uses it (IoBus and MmioBus have this shape). */
export interface ExitBus {
  /** Fills `data` and returns true when a device claims `addr`. */
  read(addr: number, data: Uint8Array): boolean;
  write(addr: number, data: Uint8Array): boolean | void;
}

/** The kvm_run fields an exit dispatcher reads and fills (KvmRun has them). */
export interface ExitRecord {
  readonly io: { direction: number; size: number; port: number; count: number; readonly data: Uint8Array };
  readonly mmio: { physAddr: number; readonly data: Uint8Array; len: number; isWrite: boolean };
  readonly internal: { suberror: number; message: string };
}

export class ExitDispatcher {
  private readonly ioViews: Uint8Array[];
  private readonly mmioViews: Uint8Array[];
  private readonly scratch: Uint8Array[];

  constructor(
    private readonly run: ExitRecord,
    private readonly ioBus: ExitBus,
    private readonly mmioBus: ExitBus,
    /** Checked between the accesses of string I/O: true ends the exit early (e.g. a debug-exit write). */
    private readonly stopped: () => boolean = () => false,
  ) {
    this.ioViews = [0, 1, 2, 3, 4].map((n) => run.io.data.subarray(0, n));
    this.mmioViews = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((n) => run.mmio.data.subarray(0, n));
    this.scratch = [0, 1, 2, 3, 4].map((n) => new Uint8Array(n));
  }

  /** KVM_EXIT_IO. */
  io(): void {
    const io = this.run.io;
    const { size, count, port, data } = io;
    const bus = this.ioBus;
    if (count === 1) {
      const view = this.ioViews[size]!;
      if (io.direction === KVM_EXIT_IO_OUT) bus.write(port, view);
      else if (!bus.read(port, view)) view.fill(0xff);
      return;
    }
    // String I/O: `count` accesses to the same port, packed back to back in `data`.
    const s = this.scratch[size]!;
    for (let i = 0, off = 0; i < count; i++, off += size) {
      if (io.direction === KVM_EXIT_IO_OUT) {
        for (let j = 0; j < size; j++) s[j] = data[off + j]!;
        bus.write(port, s);
        if (this.stopped()) return;
      } else {
        if (!bus.read(port, s)) s.fill(0xff);
        for (let j = 0; j < size; j++) data[off + j] = s[j]!;
      }
    }
  }

  /** KVM_EXIT_MMIO. */
  mmio(): void {
    const mmio = this.run.mmio;
    const view = this.mmioViews[mmio.len]!;
    if (mmio.isWrite) this.mmioBus.write(mmio.physAddr, view);
    else if (!this.mmioBus.read(mmio.physAddr, view)) view.fill(0xff);
  }
}
