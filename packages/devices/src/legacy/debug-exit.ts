/**
 * An exit port for test guests, after QEMU's isa-debug-exit: a write of value `v` asks the
 * VMM to stop and report `v`.
 *
 * QEMU exits its process with status `(v << 1) | 1`; this device hands the raw `v` to
 * `onExit` and leaves the policy to the VMM (kvmts uses `v` itself as the exit status).
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';

/** The port QEMU's isa-debug-exit uses by default on PCs. */
export const DEBUG_EXIT_PORT = 0xf4;
/** Default width of the port range (QEMU's `iosize`). */
export const DEBUG_EXIT_SIZE = 1;

/** Plain, JSON-able snapshot of a {@link DebugExit} (it has no state of its own). */
export type DebugExitState = Record<string, never>;

/** Map on an {@link IoBus} at {@link DEBUG_EXIT_PORT}, length {@link DEBUG_EXIT_SIZE}. */
export class DebugExit implements BusDevice {
  private readonly onExit: (value: number) => void;

  constructor(onExit: (value: number) => void) {
    this.onExit = onExit;
  }

  /** Reads return all-ones, like an empty ISA bus. */
  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }

  /** Any write, of any width, is an exit request with its little-endian value. */
  write(_offset: number, data: Uint8Array): void {
    let v = 0;
    for (let i = Math.min(data.length, 4) - 1; i >= 0; i--) v = v * 256 + data[i]!;
    this.onExit(v);
  }

  save(): DebugExitState {
    return {};
  }

  restore(_state: DebugExitState): void {
    // Nothing to restore: the device keeps no state between accesses.
  }
}
