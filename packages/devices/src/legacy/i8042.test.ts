import { describe, it, expect } from 'vitest';
import { IoBus } from '@kvmts/kvm-core';
import { I8042, I8042_COMMAND_PORT, I8042_DATA_PORT, PS2_QUEUE_SIZE, type I8042State } from './i8042.js';

// Status bits.
const OBF = 0x01;
const SYS = 0x04;
const CMD = 0x08;
const UNLOCKED = 0x10;
const AUX = 0x20;

function harness(): {
  kbc: I8042;
  irq1: boolean[];
  irq12: boolean[];
  resets: number[];
  a20: boolean[];
  cmd: (v: number) => void;
  data: (v: number) => void;
  status: () => number;
  read: () => number;
  drain: () => number[];
} {
  const irq1: boolean[] = [];
  const irq12: boolean[] = [];
  const resets: number[] = [];
  const a20: boolean[] = [];
  const kbc = new I8042({
    irq1: (l) => irq1.push(l),
    irq12: (l) => irq12.push(l),
    reset: () => resets.push(resets.length),
    a20: (on) => a20.push(on),
  });
  const bus = new IoBus();
  bus.insert(kbc.data, I8042_DATA_PORT, 1);
  bus.insert(kbc.command, I8042_COMMAND_PORT, 1);
  const one = new Uint8Array(1);
  const outb = (port: number, v: number): void => {
    one[0] = v;
    expect(bus.write(port, one)).toBe(true);
  };
  const inb = (port: number): number => {
    expect(bus.read(port, one)).toBe(true);
    return one[0]!;
  };
  const status = (): number => inb(I8042_COMMAND_PORT);
  return {
    kbc,
    irq1,
    irq12,
    resets,
    a20,
    cmd: (v) => outb(I8042_COMMAND_PORT, v),
    data: (v) => outb(I8042_DATA_PORT, v),
    status,
    read: () => inb(I8042_DATA_PORT),
    drain: () => {
      const got: number[] = [];
      while (status() & OBF) got.push(inb(I8042_DATA_PORT));
      return got;
    },
  };
}

describe('I8042 (PS/2 controller)', () => {
  it('powers on with an empty output buffer, the system flag and the keyboard unlocked', () => {
    const h = harness();
    expect(h.status()).toBe(SYS | UNLOCKED);
    expect(h.kbc.config).toBe(0x47);
    expect(h.kbc.a20Enabled).toBe(true);
  });

  it('passes its self test with 0x55 and its interface tests with 0x00', () => {
    const h = harness();
    h.cmd(0xaa);
    expect(h.status()).toBe(OBF | SYS | CMD | UNLOCKED);
    expect(h.read()).toBe(0x55);
    expect(h.status()).toBe(SYS | CMD | UNLOCKED);
    // controller replies land in the keyboard side of the buffer and raise IRQ 1
    expect(h.irq1).toEqual([true, false]);
    expect(h.irq12).toEqual([]);
    h.cmd(0xab);
    expect(h.read()).toBe(0x00);
    h.cmd(0xa9);
    expect(h.read()).toBe(0x00);
  });

  it('sets the system flag on self test', () => {
    const h = harness();
    h.cmd(0x60);
    h.data(0x00);
    expect(h.status() & SYS).toBe(0);
    h.cmd(0xaa);
    h.read();
    expect(h.status() & SYS).toBe(SYS);
    expect(h.kbc.config).toBe(0x04);
  });

  it('round-trips the configuration byte through 0x60/0x20, and RAM through 0x6n/0x2n', () => {
    const h = harness();
    h.cmd(0x20);
    expect(h.read()).toBe(0x47);
    h.cmd(0x60);
    expect(h.status() & CMD).toBe(CMD);
    h.data(0x74); // Linux: interrupts off, both ports disabled, translation on, system flag
    expect(h.status() & CMD).toBe(0);
    expect(h.irq1).toEqual([true, false]); // the first reply, with IRQ 1 still enabled
    h.cmd(0x20);
    expect(h.read()).toBe(0x74);
    expect(h.irq1).toEqual([true, false]); // IRQ 1 is disabled in the new configuration
    h.cmd(0x65);
    h.data(0x9c);
    h.cmd(0x25);
    expect(h.read()).toBe(0x9c);
  });

  it('toggles the port-disable bits with 0xA7/0xA8 and 0xAD/0xAE', () => {
    const h = harness();
    const ctr = (): number => {
      h.cmd(0x20);
      return h.read();
    };
    h.cmd(0xa7);
    expect(ctr()).toBe(0x67);
    h.cmd(0xa8);
    expect(ctr()).toBe(0x47);
    h.cmd(0xad);
    expect(ctr()).toBe(0x57);
    h.cmd(0xae);
    expect(ctr()).toBe(0x47);
  });

  it('resets the system on 0xFE and on any pulse command with bit 0 clear', () => {
    const h = harness();
    h.cmd(0xfe);
    expect(h.resets).toHaveLength(1);
    h.cmd(0xff); // pulse nothing
    h.cmd(0xfd); // pulse A20 only
    expect(h.resets).toHaveLength(1);
    h.cmd(0xf0); // pulse all four
    expect(h.resets).toHaveLength(2);
    expect(h.a20).toEqual([]);
  });

  it('drives A20 and reset from the output port (0xD1) and reads it back (0xD0)', () => {
    const h = harness();
    h.cmd(0xd0);
    expect(h.read()).toBe(0xcf);
    h.cmd(0xd1);
    h.data(0xdd); // A20 off
    expect(h.a20).toEqual([false]);
    expect(h.kbc.a20Enabled).toBe(false);
    h.cmd(0xd1);
    h.data(0xdf); // A20 on: the classic enable
    h.cmd(0xd1);
    h.data(0xdf);
    expect(h.a20).toEqual([false, true]);
    expect(h.resets).toEqual([]);
    h.cmd(0xd0);
    expect(h.read()).toBe(0xcf); // bits 4/5 are the IRQ lines, low once the buffer is empty
    h.cmd(0xd1);
    h.data(0xde); // reset line low
    expect(h.resets).toHaveLength(1);
    h.cmd(0xd0);
    expect(h.read() & 0x01).toBe(0x01); // the reset pulse is over
  });

  it('answers a keyboard reset with 0xFA then 0xAA, raising IRQ 1 for each byte', () => {
    const h = harness();
    h.data(0xff);
    expect(h.status()).toBe(OBF | SYS | UNLOCKED);
    expect(h.read()).toBe(0xfa);
    expect(h.read()).toBe(0xaa);
    expect(h.status() & OBF).toBe(0);
    // the line falls between bytes so an edge-triggered input sees each one
    expect(h.irq1).toEqual([true, false, true, false]);
  });

  it('identifies an MF2 keyboard: 0xAB 0x83, or 0xAB 0x41 through the translator', () => {
    const h = harness();
    h.data(0xf2);
    expect(h.drain()).toEqual([0xfa, 0xab, 0x41]);
    h.cmd(0x60);
    h.data(0x07); // translation off
    h.data(0xf2);
    expect(h.drain()).toEqual([0xfa, 0xab, 0x83]);
  });

  it('implements the LED, echo, scan code set, typematic and unknown keyboard commands', () => {
    const h = harness();
    h.data(0xed);
    expect(h.drain()).toEqual([0xfa]);
    h.data(0x05);
    expect(h.drain()).toEqual([0xfa]);
    expect(h.kbc.keyboardLeds).toBe(5);
    h.data(0xee);
    expect(h.drain()).toEqual([0xee]);
    h.data(0xf3);
    h.data(0x20);
    expect(h.drain()).toEqual([0xfa, 0xfa]);
    h.data(0xe0);
    expect(h.drain()).toEqual([0xfe]);
    h.data(0xf0);
    h.data(0x00);
    expect(h.drain()).toEqual([0xfa, 0xfa, 0x41]); // set 2, translated
    h.data(0xf0);
    h.data(0x01);
    expect(h.drain()).toEqual([0xfa, 0xfa]);
    expect(h.kbc.scancodeSet).toBe(1);
    // a command byte while an argument is expected starts the new command
    h.data(0xed);
    h.data(0xee);
    expect(h.drain()).toEqual([0xfa, 0xee]);
    // resend repeats the last byte sent
    h.data(0xfe);
    expect(h.drain()).toEqual([0xee]);
  });

  it('translates set 2 keystrokes to set 1 when the translation bit is set', () => {
    const h = harness();
    expect(h.kbc.keyboardInput([0x1c, 0xf0, 0x1c])).toBe(true); // A down, up
    expect(h.kbc.keyboardInput([0xe0, 0x75, 0xe0, 0xf0, 0x75])).toBe(true); // up arrow down, up
    expect(h.drain()).toEqual([0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8]);
    h.cmd(0x60);
    h.data(0x07);
    h.kbc.keyboardInput([0x1c, 0xf0, 0x1c]);
    expect(h.drain()).toEqual([0x1c, 0xf0, 0x1c]);
  });

  it('drops keystrokes while scanning is disabled or the buffer is full', () => {
    const h = harness();
    h.data(0xf5);
    expect(h.drain()).toEqual([0xfa]);
    expect(h.kbc.keyboardInput([0x1c])).toBe(false);
    h.data(0xf4);
    expect(h.drain()).toEqual([0xfa]);
    h.cmd(0xad); // hold bytes in the keyboard
    expect(h.kbc.keyboardInput(new Array<number>(PS2_QUEUE_SIZE).fill(0x29))).toBe(true);
    expect(h.kbc.keyboardInput([0x29])).toBe(false);
    expect(h.status() & OBF).toBe(0);
    h.cmd(0xae);
    expect(h.drain()).toHaveLength(PS2_QUEUE_SIZE);
  });

  it('places 0xD2 bytes as keyboard data and 0xD3 bytes as aux data (Linux\'s AUX loop test)', () => {
    const h = harness();
    h.cmd(0xd2);
    h.data(0x12);
    expect(h.status() & (OBF | AUX)).toBe(OBF);
    expect(h.read()).toBe(0x12);
    h.cmd(0xd3);
    h.data(0x5a);
    expect(h.status() & (OBF | AUX)).toBe(OBF | AUX);
    expect(h.irq12).toEqual([true]);
    expect(h.read()).toBe(0x5a);
    expect(h.irq12).toEqual([true, false]);
    expect(h.irq1).toEqual([true, false]);
  });

  it('talks to the mouse through 0xD4: reset, identify, status, reporting', () => {
    const h = harness();
    h.cmd(0xd4);
    h.data(0xff);
    expect(h.status() & (OBF | AUX)).toBe(OBF | AUX);
    expect(h.drain()).toEqual([0xfa, 0xaa, 0x00]);
    expect(h.irq12).toEqual([true, false, true, false, true, false]);
    h.cmd(0xd4);
    h.data(0xf2);
    expect(h.drain()).toEqual([0xfa, 0x00]);
    h.cmd(0xd4);
    h.data(0xf3);
    h.cmd(0xd4);
    h.data(200);
    h.cmd(0xd4);
    h.data(0xe8);
    h.cmd(0xd4);
    h.data(0x03);
    h.cmd(0xd4);
    h.data(0xe9);
    expect(h.drain()).toEqual([0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0x00, 0x03, 200]);
    expect(h.kbc.mouseInput(1, 1)).toBe(false); // reporting still off
    h.cmd(0xd4);
    h.data(0xf4);
    expect(h.drain()).toEqual([0xfa]);
    expect(h.kbc.mouseInput(5, -3, 1)).toBe(true);
    expect(h.drain()).toEqual([0x29, 0x05, 0xfd]);
    h.cmd(0xd4);
    h.data(0x42);
    expect(h.drain()).toEqual([0xfe]);
  });

  it('raises no IRQ when the config byte disables it, and holds aux data while the aux clock is off', () => {
    const h = harness();
    h.cmd(0x60);
    h.data(0x44); // no interrupts, translation, system flag
    h.data(0xee);
    expect(h.status() & OBF).toBe(OBF);
    expect(h.irq1).toEqual([]);
    expect(h.read()).toBe(0xee);
    h.cmd(0xa7);
    h.cmd(0xd4);
    h.data(0xf2);
    expect(h.status() & OBF).toBe(0);
    h.cmd(0xa8);
    expect(h.drain()).toEqual([0xfa, 0x00]);
    expect(h.irq12).toEqual([]);
  });

  it('queues controller replies ahead of device bytes', () => {
    const h = harness();
    h.kbc.keyboardInput([0x1c, 0x32]);
    h.cmd(0x20);
    expect(h.drain()).toEqual([0x1e, 0x47, 0x30]);
  });

  it('saves and restores through JSON', () => {
    const a = harness();
    a.data(0xed); // LEDs: argument pending
    a.kbc.keyboardInput([0x1c]);
    a.cmd(0xd4);
    a.data(0xf2);
    a.cmd(0x60); // config write pending
    const state = JSON.parse(JSON.stringify(a.kbc.save())) as I8042State;
    expect(state).toMatchObject({
      outputBuffer: 0xfa,
      outputAux: false,
      commandFlag: true,
      pendingCommand: 0x60,
      controllerQueue: [],
    });
    expect(state.keyboard).toMatchObject({ queue: [0x1c], pendingCommand: 0xed, leds: 0 });
    expect(state.mouse.queue).toEqual([0xfa, 0x00]);

    const b = harness();
    b.kbc.restore(state);
    expect(b.irq1).toEqual([true]);
    expect(b.kbc.save()).toEqual(state);
    b.data(0x05); // IRQ 1, system flag, no translation
    b.data(0x03);
    expect(b.kbc.keyboardLeds).toBe(3);
    expect(b.drain()).toEqual([0xfa, 0x1c, 0xfa, 0xfa, 0x00]); // untranslated now
  });

  it('rejects malformed state', () => {
    const good = new I8042().save();
    const kbc = new I8042();
    expect(() => kbc.restore({ ...good, ram: [1, 2] })).toThrow(/32 bytes/);
    expect(() => kbc.restore({ ...good, outputBuffer: 256 })).toThrow(/outputBuffer/);
    expect(() => kbc.restore({ ...good, keyboard: { ...good.keyboard, scancodeSet: 4 } })).toThrow(/scancodeSet/);
    expect(() => kbc.restore({ ...good, mouse: { ...good.mouse, queue: [0x100] } })).toThrow(RangeError);
  });
});
