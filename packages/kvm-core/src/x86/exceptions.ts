/** Architectural exception vectors. */
export const enum Vector {
  DE = 0, DB = 1, NMI = 2, BP = 3, OF = 4, BR = 5, UD = 6, NM = 7, DF = 8,
  TS = 10, NP = 11, SS = 12, GP = 13, PF = 14, MF = 16, AC = 17, MC = 18, XM = 19,
}

/** Vectors that push an error code in protected mode. */
export function hasErrorCode(vector: number): boolean {
  return vector === 8 || (vector >= 10 && vector <= 14) || vector === 17;
}

/**
 * Thrown (preallocated, never built per fault) to unwind the interpreter. The CPU keeps the
 * details in its own fields; these objects only say which kind of unwind it is.
 */
export const FAULT = { kind: 'fault' } as const;
/** Unwind to return an exit to the VMM; the instruction is replayed on the next run(). */
export const EXIT = { kind: 'exit' } as const;
