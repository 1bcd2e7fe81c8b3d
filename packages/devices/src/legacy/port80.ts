/**
 * The POST diagnostic port at 0x80. Firmware writes progress codes here (a POST card shows
 * them); operating systems also write it just to waste an I/O cycle. Reads return the last
 * code written.
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';

/** The port. */
export const PORT80_PORT = 0x80;

/** Options for {@link Port80}. */
export interface Port80Options {
  /** Called with each code written. */
  onCode?: (code: number) => void;
}

/** Plain, JSON-able snapshot of a {@link Port80}. */
export interface Port80State {
  lastCode: number;
}

/** Map on an {@link IoBus} at {@link PORT80_PORT}, length 1. */
export class Port80 implements BusDevice {
  private readonly onCode: ((code: number) => void) | undefined;
  private code = 0;

  constructor(options: Port80Options = {}) {
    this.onCode = options.onCode;
  }

  /** The last code written (0 before any). */
  get lastCode(): number {
    return this.code;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i === 0 ? this.code : 0xff;
  }

  /** Only the byte at the port itself counts; wider writes spill onto the next ports. */
  write(offset: number, data: Uint8Array): void {
    if (offset !== 0 || data.length === 0) return;
    this.code = data[0]!;
    this.onCode?.(this.code);
  }

  save(): Port80State {
    return { lastCode: this.code };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. */
  restore(state: Port80State): void {
    const v = state.lastCode;
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`port80 state: lastCode = ${String(v)}`);
    this.code = v;
  }
}
