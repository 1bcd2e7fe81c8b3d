/** A boot image or configuration the firmware cannot use; the message says what is wrong. */
export class BootError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BootError';
  }
}
