/**
 * Errors of snapshots and migration. Every failure is a {@link MigrationError} whose `kind`
 * says what went wrong and whose message names the offending value, section or difference.
 * @module
 */

/** What kind of failure a {@link MigrationError} is. */
export type MigrationErrorKind =
  /** The stream ended early (file cut short, connection closed). */
  | 'truncated'
  /** Bad magic, checksum mismatch, malformed section, impossible values. */
  | 'corrupt'
  /** The stream's format version (or a device's state version) is not one this build reads. */
  | 'version'
  /** The stream describes a machine that differs from the one it is loaded into. */
  | 'config-mismatch'
  /** A file could not be opened, read or written. */
  | 'io'
  /** The transport failed (socket error, connection reset). */
  | 'connection'
  /** The other side reported an error. */
  | 'remote'
  /** A message arrived that the protocol does not allow at this point. */
  | 'protocol'
  /** Waiting for the other side took too long. */
  | 'timeout'
  /** The migration was cancelled. */
  | 'aborted'
  /** Loading the saved state into the machine failed (a device or the vCPU rejected it). */
  | 'restore';

/** A snapshot or migration failure; see {@link MigrationErrorKind}. */
export class MigrationError extends Error {
  readonly kind: MigrationErrorKind;
  constructor(kind: MigrationErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MigrationError';
    this.kind = kind;
  }
}

/** `err` as a MigrationError (`kind` for anything that is not one yet). */
export function asMigrationError(err: unknown, kind: MigrationErrorKind, prefix = ''): MigrationError {
  if (err instanceof MigrationError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new MigrationError(kind, prefix + msg, { cause: err });
}
