/**
 * System control port B at 0x61, the PC/AT's glue between the PIT's channel 2, the speaker
 * and the memory-refresh logic.
 *
 * - bit 0 (read/write): GATE of PIT channel 2.
 * - bit 1 (read/write): speaker data enable (channel 2's OUT reaches the speaker only when set).
 * - bits 2, 3 (read/write): parity and I/O channel check disables; stored, no checks are raised.
 * - bit 4 (read-only): refresh request, toggling every 15.085 µs of guest time.
 * - bit 5 (read-only): channel 2's OUT.
 * - bits 6, 7 (read-only): I/O channel check and parity error; always 0.
 *
 * Linux calibrates the TSC by gating channel 2 on here, running it as a mode-0 one-shot and
 * polling bit 5 until it goes high; both come straight from the PIT at the current guest time.
 * @module
 */

import type { GuestClock } from '../time/clock.js';
import type { BusDevice } from '../bus.js';
import type { Pit } from './pit.js';

/** The port. */
export const PORT61_PORT = 0x61;

const GATE2 = 0x01;
const SPEAKER = 0x02;
const WRITABLE = 0x0f; // gate, speaker and the two check disables
const REFRESH = 0x10;
const OUT2 = 0x20;
/** Half-period of the refresh-request toggle: one DRAM refresh cycle (PIT channel 1's 18 ticks). */
const REFRESH_TOGGLE_NS = 15_085;

/** Options for {@link Port61}. */
export interface Port61Options {
  /** The PIT whose channel 2 this port gates and watches. */
  pit: Pit;
  /** Guest time for the refresh toggle; defaults to the PIT's clock. */
  clock?: GuestClock;
  /** Called when the speaker enable (bit 1) or GATE 2 changes, with both. */
  speaker?: (enabled: boolean, gate: boolean) => void;
}

/** Plain, JSON-able snapshot of a {@link Port61}. */
export interface Port61State {
  /** The writable bits 0–3 as last written. */
  value: number;
}

/** Map on an {@link IoBus} at {@link PORT61_PORT}, length 1. */
export class Port61 implements BusDevice {
  private readonly pit: Pit;
  private readonly clock: GuestClock;
  private readonly speaker: ((enabled: boolean, gate: boolean) => void) | undefined;
  private value = 0;

  constructor(options: Port61Options) {
    this.pit = options.pit;
    this.clock = options.clock ?? options.pit.clock;
    this.speaker = options.speaker;
    this.pit.setGate(2, false);
  }

  /** Whether channel 2's OUT is routed to the speaker (bit 1). */
  get speakerEnabled(): boolean {
    return (this.value & SPEAKER) !== 0;
  }

  /** The port's value as the guest would read it now. */
  get byte(): number {
    const refresh = Math.floor(this.clock.nowNs() / REFRESH_TOGGLE_NS) & 1 ? REFRESH : 0;
    return this.value | refresh | (this.pit.channelOut(2) ? OUT2 : 0);
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i === 0 ? this.byte : 0xff;
  }

  write(offset: number, data: Uint8Array): void {
    if (offset !== 0 || data.length === 0) return;
    this.set(data[0]! & WRITABLE);
  }

  /** Power-on state: all writable bits clear (channel 2 gated off, speaker off). */
  reset(): void {
    this.set(0);
  }

  save(): Port61State {
    return { value: this.value };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. GATE 2 itself is in the PIT's snapshot. */
  restore(state: Port61State): void {
    const v = state.value;
    if (!Number.isInteger(v) || v < 0 || v > WRITABLE) throw new RangeError(`port61 state: value = ${String(v)}`);
    this.value = v;
  }

  private set(v: number): void {
    const old = this.value;
    this.value = v;
    if ((old ^ v) & GATE2) this.pit.setGate(2, (v & GATE2) !== 0);
    if ((old ^ v) & (GATE2 | SPEAKER)) this.speaker?.((v & SPEAKER) !== 0, (v & GATE2) !== 0);
  }
}
