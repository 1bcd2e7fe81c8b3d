/**
 * Snapshots and pre-copy live migration for kvmts machines: the capability ladder
 * ({@link Persist}, {@link Pausable}, {@link Snapshottable}, {@link Migratable}), vCPU and VM
 * state through the kvm-core interface, a framed, versioned and checksummed stream, snapshots
 * to files and live migration over TCP.
 * @packageDocumentation
 */
export type { Persist, DeviceEntry, Pausable, Snapshottable, Migratable, MigratableMachine } from './persist.js';
export { MigrationError, asMigrationError } from './errors.js';
export type { MigrationErrorKind } from './errors.js';
export { describeMachine, checkConfig, validateConfig } from './config.js';
export type { MachineConfig, SlotConfig } from './config.js';
export { VCPU_STATE_VERSION, quiesceVcpu, saveVcpu, restoreVcpu, saveVm, restoreClock, restoreVmChips } from './vcpu.js';
export type { VcpuState, VmState, FpuJson } from './vcpu.js';
export { captureState, applyState, validateState } from './state.js';
export type { MachineState } from './state.js';
export { loadStream, readConfig } from './load.js';
export type { LoadTarget, Loaded, LoadHooks } from './load.js';
export { saveSnapshot, writeSnapshot, restoreSnapshot, readSnapshotConfig } from './snapshot.js';
export type { SnapshotOptions, SnapshotReport, RestoreOptions } from './snapshot.js';
export { PrecopySource, receiveMigration } from './precopy.js';
export type { PrecopyOptions, MigrationProgress, MigrationReport, StepResult, IncomingOptions, IncomingResult } from './precopy.js';
export { parseTcpAddress, connectMigration, listenForMigration, driveMigration } from './tcp.js';
export type { TcpAddress, IncomingServer } from './tcp.js';
export { PageQueue, vmSlots, allPages, countPages } from './pages.js';
export type { SlotRef } from './pages.js';
export { MAGIC, FORMAT_VERSION, HEADER_SIZE, FRAME_OVERHEAD, MAX_SECTION_BYTES, PAGE_SIZE, Section, PageKind, sectionName } from './stream/format.js';
export type { Frame, SectionType } from './stream/format.js';
export { encodeHeader, encodeFrame, jsonPayload, parseJson, FrameParser } from './stream/frame.js';
export { StreamReader } from './stream/reader.js';
export { StreamWriter } from './stream/writer.js';
export { RamEncoder, applyRamSection, emptyRamStats } from './stream/ram.js';
export type { RamEncoderOptions, RamStats } from './stream/ram.js';
export { xbzrleEncode, xbzrleDecode } from './stream/xbzrle.js';
export { crc32, crc32Portable } from './stream/crc32.js';
