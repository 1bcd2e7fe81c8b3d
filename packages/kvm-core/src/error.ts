/** errno names that kvm-core's ioctls fail with, as Linux's KVM would. */
export type Errno = 'ENXIO' | 'EBADF' | 'EINVAL' | 'ENOTTY' | 'EEXIST' | 'ENOENT' | 'EFAULT' | 'ENOMEM' | 'EBUSY';

/**
 * An ioctl failed. `errno` is what Linux would return; the message says what was wrong
 * in words, naming the request and the offending value.
 */
export class KvmError extends Error {
  readonly errno: Errno;
  constructor(errno: Errno, message: string) {
    super(`${errno}: ${message}`);
    this.name = 'KvmError';
    this.errno = errno;
  }
}
