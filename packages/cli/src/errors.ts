/**
 * Exit statuses of the `kvmts` command, and the error type that carries one.
 * @module
 */

/**
 * How `kvmts` ends. A guest that writes `v` to the debug-exit port ends with status `v`
 * instead (its low 8 bits, as the OS keeps them); QEMU would use `(v << 1) | 1`.
 */
export const ExitStatus = {
  /** The guest halted with interrupts disabled (or wrote 0 to the debug-exit port). */
  Ok: 0,
  /** The guest halted with interrupts enabled: it waits for an interrupt that no device can send yet. */
  HaltedWithInterrupts: 1,
  /** The guest triple-faulted (KVM_EXIT_SHUTDOWN). */
  Shutdown: 2,
  /** The vCPU stopped with KVM_EXIT_INTERNAL_ERROR (e.g. an unsupported instruction) or an unknown exit. */
  InternalError: 3,
  /** Bad command line or unusable input (sysexits' EX_USAGE). */
  Usage: 64,
  /** A host tool or service that is needed is missing or failed, e.g. apt-get or the network (EX_UNAVAILABLE). */
  Unavailable: 69,
  /** An output file cannot be written: permission denied, disk full, ... (EX_CANTCREAT). */
  CantCreate: 73,
  /** The operation needs privileges the user does not have, e.g. root for apt (EX_NOPERM). */
  NoPerm: 77,
  /** A bug in kvmts itself (sysexits' EX_SOFTWARE). */
  Software: 70,
} as const;

/** A failure to report as one line, `kvmts: <message>`, ending with `exitCode`. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = ExitStatus.Usage) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}
