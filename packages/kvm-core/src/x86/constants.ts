// Segment register numbers, in the order the ModRM `reg` field encodes them.
export const ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5, LDTR = 6, TR = 7;

// Segment attributes, packed as VMX access rights: type[3:0] S[4] DPL[6:5] P[7] AVL[12] L[13] DB[14] G[15].
export const AR_S = 1 << 4, AR_P = 1 << 7, AR_AVL = 1 << 12, AR_L = 1 << 13, AR_DB = 1 << 14, AR_G = 1 << 15;
export const AR_UNUSABLE = 1 << 16;

export const CR4_PSE = 1 << 4, CR4_PAE = 1 << 5, CR4_PGE = 1 << 7;

export const CR0_PE = 1, CR0_TS = 1 << 3, CR0_ET = 1 << 4, CR0_NE = 1 << 5, CR0_WP = 1 << 16, CR0_NW = 1 << 29, CR0_CD = 1 << 30, CR0_PG = 1 << 31;

/** Thrown when the emulator meets an instruction or state it does not implement yet. */
export class EmulationGap extends Error {}

