/**
 * The `kvmts` command and its building blocks, for use from other programs and tests.
 * @module
 */

export { main, processIo, runCommand, demoBuildCommand } from './main.js';
export type { CliIo, RunOptions } from './main.js';
export { CliError, ExitStatus } from './errors.js';
export {
  MAX_MEM_SIZE,
  MEM_ALIGN,
  MIN_MEM_SIZE,
  checkMemSize,
  formatSize,
  parseAddress,
  parseSize,
} from './args.js';
export { REAL_MODE_LOAD_LIMIT, checkPlacement, readImageFile, realModeEntry } from './image.js';
export type { RealModeEntry } from './image.js';
export { RunLoop, Vmm, outcomeExitStatus, outcomeMessage, setRealModeEntry } from './vmm.js';
export type { RunOutcome, RunnableVcpu, VmmConfig } from './vmm.js';
export { ExitDispatcher } from './exit-dispatch.js';
export type { ExitBus, ExitRecord } from './exit-dispatch.js';
export { ConsoleSink } from './console.js';
export { DEMO_GUEST_OUTPUT, buildDemoGuest } from './guests/demo.js';
export type { DemoGuestOptions } from './guests/demo.js';
export { GUEST_FILES, VIRTIO_MODULES, defaultGuestDir, fetchGuest } from './guest/fetch.js';
export type { FetchHost, FetchOptions, FetchResult } from './guest/fetch.js';
export { readNewc, sortEntries, writeNewc } from './guest/cpio.js';
export type { CpioEntry, CpioOptions, NewcMember } from './guest/cpio.js';
export { DISK_SIGNATURE, DISK_SIZE, buildDiskImage, buildInitramfs } from './guest/initramfs.js';
export { INIT_SCRIPT } from './guest/init-script.js';
export { ACPI_SCI_IRQ, PcMachine } from './machine/pc.js';
export type { MachineStop, PcMachineOptions } from './machine/pc.js';
export { PcRunLoop } from './machine/run-loop.js';
export type {
  InterruptSource,
  LoopBus,
  LoopClock,
  LoopHost,
  LoopOutcome,
  LoopRunData,
  LoopStats,
  LoopTimers,
  LoopVcpu,
  PcRunLoopParts,
  SliceResult,
} from './machine/run-loop.js';
export { DEFAULT_LINUX_MEM, MIN_LINUX_MEM, processInput, runLinux } from './machine/linux.js';
export type { GuestInput, LinuxRunIo, LinuxRunOptions } from './machine/linux.js';
export { ESCAPE_CHAR, ESCAPE_HELP, EscapeFilter } from './machine/escape.js';
export type { EscapeResult } from './machine/escape.js';
