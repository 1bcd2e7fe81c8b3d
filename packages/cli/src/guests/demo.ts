/**
 * The built-in demo guest: a real-mode, boot-sector-sized program that talks to COM1, does
 * some arithmetic and string work, takes a software interrupt, checks its own results, and
 * leaves through the debug-exit port.
 *
 * It uses only 8086 instructions and short conditional jumps, so it runs on the simplest
 * real-mode CPU. It sets DS = ES = CS itself, so it runs wherever it is loaded as long as
 * `origin` is the IP it starts at.
 * @module
 */

import { Assembler, byte, mem, reg, sizeBetween, word } from '@kvmts/kvm-core/asm';

/** Options for {@link buildDemoGuest}. */
export interface DemoGuestOptions {
  /** The IP of the first byte (the load address when CS = 0). Default 0x7c00. */
  origin?: number;
  /** The vector the demo installs and calls with `int`. Default 0x30. */
  vector?: number;
}

const COM1 = 0x3f8;
const UART_THR = COM1 + 0;
const UART_IER = COM1 + 1;
const UART_FCR = COM1 + 2;
const UART_LCR = COM1 + 3;
const UART_MCR = COM1 + 4;
const UART_LSR = COM1 + 5;
const UART_SCR = COM1 + 7;
const LSR_THRE = 0x20;
const DEBUG_EXIT = 0xf4;

const STRING = 'string ops work';

/** What the demo prints on success with the default options. */
export const DEMO_GUEST_OUTPUT: string =
  'Hello from kvmts!\n' +
  'sum 1..100 = 5050 (0x13BA)\n' +
  '8! = 40320 (0x9D80)\n' +
  'int 0x30 returned ax = 0x2345\n' +
  `copied "${STRING}" (length ${STRING.length})\n` +
  'demo: all checks passed\n';

/** Assemble the demo guest. */
export function buildDemoGuest(options: DemoGuestOptions = {}): Uint8Array {
  const origin = options.origin ?? 0x7c00;
  const vector = options.vector ?? 0x30;
  const { al, ax, bx, cx, dx, si, di, dl, bl, bh } = reg;
  const a = new Assembler({ bits: 16, origin });

  // Count a failed check unless ZF is set (the preceding compare found equality).
  let checks = 0;
  const expectEqual = (): void => {
    const ok = `check${checks++}.ok`;
    a.je(ok, 'short').inc(byte('fails')).label(ok);
  };

  a.label('start');
  a.cli().cld();
  a.mov(ax, reg.cs).mov(reg.ds, ax).mov(reg.es, ax);
  a.call('uart_init');

  // The UART's scratch register must read back what was written.
  a.mov(dx, UART_SCR).mov(al, 0x5a).out(dx, al).mov(al, 0).in(al, dx).cmp(al, 0x5a);
  expectEqual();

  a.mov(si, 'msg_hello').call('puts');

  // sum 1..100 with LOOP
  a.xor(ax, ax).mov(cx, 100);
  a.label('sum_loop').add(ax, cx).loop('sum_loop');
  a.mov(si, 'msg_sum').call('puts').call('print_dec_hex');
  a.cmp(ax, 5050);
  expectEqual();

  // 8! with MUL; the high word in DX must stay zero
  a.mov(ax, 1).mov(cx, 8);
  a.label('fact_loop').mul(cx).loop('fact_loop');
  a.test(dx, dx);
  expectEqual();
  a.mov(si, 'msg_fact').call('puts').call('print_dec_hex');
  a.cmp(ax, 40320);
  expectEqual();

  // Install a handler in the real-mode IVT (at 0000:vector*4) and call it with INT.
  a.push(reg.es).xor(bx, bx).mov(reg.es, bx);
  a.mov(word({ seg: reg.es, disp: vector * 4 }), 'int_handler');
  a.mov(mem({ seg: reg.es, disp: vector * 4 + 2 }), reg.cs);
  a.pop(reg.es);
  a.mov(ax, 0x1234).int(vector);
  a.mov(si, 'msg_int').call('puts').call('print_hex').call('newline');
  a.cmp(ax, 0x2345);
  expectEqual();
  a.cmp(byte('int_count'), 1);
  expectEqual();

  // Copy the string with REP MOVSB, then measure the copy with REPNE SCASB.
  a.mov(si, 'src_str').mov(di, 'buffer').mov(cx, sizeBetween('src_str', 'src_end')).rep().movsb();
  a.mov(di, 'buffer').xor(al, al).mov(cx, 0xffff).repne().scasb();
  a.not(cx).dec(cx); // SCASB ran length+1 times from 0xFFFF, so NOT CX is length+1
  a.mov(si, 'msg_copied').call('puts');
  a.mov(si, 'buffer').call('puts');
  a.mov(si, 'msg_len').call('puts');
  a.mov(ax, cx).call('print_dec');
  a.mov(si, 'msg_close').call('puts');
  a.cmp(cx, STRING.length);
  expectEqual();
  // ... and compare the copy with the original using REPE CMPSB.
  a.mov(si, 'src_str').mov(di, 'buffer').mov(cx, sizeBetween('src_str', 'src_end')).repe().cmpsb();
  expectEqual();

  // Verdict.
  a.cmp(byte('fails'), 0).jne('failed', 'short');
  a.mov(si, 'msg_pass').call('puts');
  a.mov(al, 0).out(DEBUG_EXIT, al);
  // Without a debug-exit device: halt with interrupts off, which kvmts also reports as success.
  a.cli().hlt();
  a.label('failed');
  a.mov(si, 'msg_fail').call('puts');
  a.mov(al, byte('fails')).mov(bl, al).xor(bh, bh).mov(ax, bx).call('print_dec').call('newline');
  a.mov(al, 1).out(DEBUG_EXIT, al);
  // Without a debug-exit device: halt with interrupts on, which kvmts reports as a failure.
  a.sti().hlt();

  // --- subroutines ---

  // The handler cannot rely on DS, so it addresses its counter through CS.
  a.label('int_handler');
  a.add(ax, 0x1111).inc(byte({ seg: reg.cs, disp: 'int_count' })).iret();

  // 115200 8N1, FIFOs on, no interrupts (the demo polls), DTR and RTS up.
  a.label('uart_init');
  a.mov(dx, UART_LCR).mov(al, 0x80).out(dx, al); // DLAB on
  a.mov(dx, UART_THR).mov(al, 1).out(dx, al); // divisor low
  a.inc(dx).mov(al, 0).out(dx, al); // divisor high
  a.mov(dx, UART_LCR).mov(al, 0x03).out(dx, al);
  a.mov(dx, UART_FCR).mov(al, 0xc7).out(dx, al);
  a.mov(dx, UART_IER).mov(al, 0).out(dx, al);
  a.mov(dx, UART_MCR).mov(al, 0x03).out(dx, al);
  a.ret();

  // putc: AL. Wait for THR empty, as a driver for real hardware must.
  a.label('putc');
  a.push(dx).push(ax);
  a.mov(dx, UART_LSR);
  a.label('putc.wait').in(al, dx).test(al, LSR_THRE).jz('putc.wait', 'short');
  a.pop(ax).mov(dx, UART_THR).out(dx, al);
  a.pop(dx).ret();

  // puts: DS:SI, NUL-terminated.
  a.label('puts');
  a.push(ax).push(si);
  a.label('puts.next').lodsb().test(al, al).jz('puts.done', 'short').call('putc').jmp('puts.next');
  a.label('puts.done').pop(si).pop(ax).ret();

  a.label('newline');
  a.push(ax).mov(al, 0x0a).call('putc').pop(ax).ret();

  // print_dec: AX as unsigned decimal, by repeated division by 10.
  a.label('print_dec');
  a.push(ax).push(bx).push(cx).push(dx);
  a.mov(bx, 10).xor(cx, cx);
  a.label('print_dec.div').xor(dx, dx).div(bx).push(dx).inc(cx).test(ax, ax).jnz('print_dec.div', 'short');
  a.label('print_dec.out').pop(ax).add(al, 0x30).call('putc').loop('print_dec.out');
  a.pop(dx).pop(cx).pop(bx).pop(ax).ret();

  // print_hex: AX as four upper-case hex digits, high nibble first.
  a.label('print_hex');
  a.push(ax).push(bx).push(cx).push(dx);
  a.mov(dx, ax).mov(cx, 4);
  a.label('print_hex.nibble');
  a.push(cx).mov(reg.cl, 4).rol(dx, reg.cl).pop(cx);
  a.mov(bl, dl).and(bl, 0x0f).xor(bh, bh).mov(al, mem({ base: bx, disp: 'hex_digits' })).call('putc');
  a.loop('print_hex.nibble');
  a.pop(dx).pop(cx).pop(bx).pop(ax).ret();

  // print_dec_hex: "AX (0xHHHH)\n"
  a.label('print_dec_hex');
  a.push(si).call('print_dec').mov(si, 'msg_open_hex').call('puts').call('print_hex');
  a.mov(si, 'msg_close').call('puts').pop(si).ret();

  // --- data ---
  a.label('fails').db(0);
  a.label('int_count').db(0);
  a.label('hex_digits').ascii('0123456789ABCDEF');
  a.label('msg_hello').asciz('Hello from kvmts!\n');
  a.label('msg_sum').asciz('sum 1..100 = ');
  a.label('msg_fact').asciz('8! = ');
  a.label('msg_int').asciz(`int 0x${vector.toString(16)} returned ax = 0x`);
  a.label('msg_open_hex').asciz(' (0x');
  a.label('msg_close').asciz(')\n');
  a.label('msg_copied').asciz('copied "');
  a.label('msg_len').asciz('" (length ');
  a.label('msg_pass').asciz('demo: all checks passed\n');
  a.label('msg_fail').asciz('demo: FAILED checks: ');
  a.label('src_str').asciz(STRING).label('src_end');
  a.label('buffer').fill(32);
  return a.bytes();
}
