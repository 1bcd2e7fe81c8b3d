/** EFLAGS bits. */
export const CF = 0x0001;
export const PF = 0x0004;
export const AF = 0x0010;
export const ZF = 0x0040;
export const SF = 0x0080;
export const TF = 0x0100;
export const IF = 0x0200;
export const DF = 0x0400;
export const OF = 0x0800;
export const IOPL = 0x3000;
export const NT = 0x4000;
export const RF = 0x10000;
export const VM = 0x20000;
export const AC = 0x40000;
export const VIF = 0x80000;
export const VIP = 0x100000;
export const ID = 0x200000;
/** Bit 1 always reads as 1. */
export const FLAGS_FIXED = 0x0002;
/** The six arithmetic flags that lazy evaluation may defer. */
export const ARITH_FLAGS = CF | PF | AF | ZF | SF | OF;

/** Which formula the deferred arithmetic flags follow. */
export const enum LazyOp {
  /** Flags derived from the result alone; CF = OF = AF = 0 (logic ops). */
  Logic = 0,
  Add = 1,
  Sub = 2,
}

/** PARITY[b] is PF for the low byte b: set when b has an even number of 1 bits. */
export const PARITY: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (let i = 0; i < 256; i++) {
    let n = 0;
    for (let b = i; b; b >>= 1) n += b & 1;
    t[i] = n & 1 ? 0 : PF;
  }
  return t;
})();
