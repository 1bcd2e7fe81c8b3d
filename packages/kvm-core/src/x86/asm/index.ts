/**
 * A small x86 assembler for building guest code in tests and demos:
 * `import { Assembler, reg, mem } from '@kvmts/kvm-core/asm'`.
 * @module
 */

export { Assembler, Cond } from './assembler.js';
export type { Assembled, AssemblerOptions, Condition, JumpSize, Operand, StringOpOptions } from './assembler.js';
export {
  AsmError,
  ControlRegister,
  Expr,
  Mem,
  Register,
  SegmentRegister,
  byte,
  dword,
  mem,
  reg,
  sizeBetween,
  sym,
  word,
} from './operands.js';
export type { Bits, Imm, MemSpec, OperandSize } from './operands.js';
