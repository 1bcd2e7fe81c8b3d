/**
 * QEMU's console escape on a terminal: Ctrl-A X quits, Ctrl-A Ctrl-A sends one Ctrl-A to the
 * guest, Ctrl-A H prints the keys; Ctrl-A followed by anything else is dropped (as QEMU does).
 * @module
 */

/** Ctrl-A. */
export const ESCAPE_CHAR = 0x01;

/** The help text for Ctrl-A H. */
export const ESCAPE_HELP = '\r\nC-a h    print this help\r\nC-a x    exit kvmts\r\nC-a C-a  sends C-a\r\n';

/** What a chunk of terminal input turned into. */
export interface EscapeResult {
  /** Bytes for the guest. */
  data: Uint8Array;
  /** Ctrl-A X was typed: stop the VM (bytes after it are dropped). */
  quit: boolean;
  /** Ctrl-A H was typed: show {@link ESCAPE_HELP}. */
  help: boolean;
}

/** Filters terminal input; the Ctrl-A state carries over between chunks. */
export class EscapeFilter {
  private afterEscape = false;

  feed(chunk: Uint8Array): EscapeResult {
    const out: number[] = [];
    let help = false;
    for (const b of chunk) {
      if (this.afterEscape) {
        this.afterEscape = false;
        if (b === 0x78 || b === 0x58) return { data: Uint8Array.from(out), quit: true, help };
        if (b === 0x68 || b === 0x48) help = true;
        else if (b === ESCAPE_CHAR) out.push(ESCAPE_CHAR);
        continue;
      }
      if (b === ESCAPE_CHAR) this.afterEscape = true;
      else out.push(b);
    }
    return { data: Uint8Array.from(out), quit: false, help };
  }
}
