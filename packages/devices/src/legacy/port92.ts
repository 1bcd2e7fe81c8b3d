/**
 * System control port A at 0x92 (the PS/2 "fast A20 and reset" port).
 *
 * - bit 0: fast reset; writing it 0→1 resets the processor (it reads back as written).
 * - bit 1: A20 gate; 1 lets address line 20 through, 0 wraps addresses at 1 MiB.
 * - bits 2–7: stored and read back (security lock and disk-activity lights on real boards).
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';

/** The port. */
export const PORT92_PORT = 0x92;

const RESET = 0x01;
const A20 = 0x02;

/** Options for {@link Port92}. */
export interface Port92Options {
  /** Called with the new A20 state whenever bit 1 changes. */
  a20?: (enabled: boolean) => void;
  /** Called when bit 0 is written 0→1. */
  reset?: () => void;
}

/** Plain, JSON-able snapshot of a {@link Port92}. */
export interface Port92State {
  value: number;
}

/** Map on an {@link IoBus} at {@link PORT92_PORT}, length 1. A20 starts enabled. */
export class Port92 implements BusDevice {
  private readonly a20Hook: ((enabled: boolean) => void) | undefined;
  private readonly resetHook: (() => void) | undefined;
  private value = A20;

  constructor(options: Port92Options = {}) {
    this.a20Hook = options.a20;
    this.resetHook = options.reset;
  }

  /** Whether the A20 gate is open. */
  get a20(): boolean {
    return (this.value & A20) !== 0;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i === 0 ? this.value : 0xff;
  }

  write(offset: number, data: Uint8Array): void {
    if (offset !== 0 || data.length === 0) return;
    this.set(data[0]!);
  }

  /** Power-on state (A20 enabled, reset bit clear); reports an A20 change. */
  reset(): void {
    const old = this.value;
    this.value = A20;
    if ((old ^ A20) & A20) this.a20Hook?.(true);
  }

  save(): Port92State {
    return { value: this.value };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. Calls no hooks. */
  restore(state: Port92State): void {
    const v = state.value;
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`port92 state: value = ${String(v)}`);
    this.value = v;
  }

  private set(v: number): void {
    const old = this.value;
    this.value = v;
    if ((old ^ v) & A20) this.a20Hook?.((v & A20) !== 0);
    if (!(old & RESET) && v & RESET) this.resetHook?.();
  }
}
