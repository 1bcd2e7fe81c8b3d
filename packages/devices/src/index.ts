/**
 * Emulated devices for kvmts virtual machines, and the buses that route guest port and
 * MMIO accesses to them.
 * @module
 */

export { BusError, IO_PORT_COUNT, IoBus, MMIO_ADDR_LIMIT, MmioBus } from './bus.js';
export type { BusDevice, BusErrorKind, BusRange } from './bus.js';
export {
  COM1_BASE,
  COM1_IRQ,
  COM2_BASE,
  COM2_IRQ,
  COM3_BASE,
  COM4_BASE,
  SERIAL_FIFO_SIZE,
  SERIAL_PORT_LEN,
  Serial,
} from './legacy/serial.js';
export type { SerialOptions, SerialState } from './legacy/serial.js';
export { DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit } from './legacy/debug-exit.js';
export type { DebugExitState } from './legacy/debug-exit.js';
