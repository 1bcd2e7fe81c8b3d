/**
 * The PC's 8042 keyboard controller with a PS/2 keyboard on its first port and a PS/2 mouse on
 * its auxiliary port.
 *
 * The controller has two ports that are not adjacent (0x61–0x63 belong to other devices), so it
 * exposes two {@link BusDevice}s: {@link I8042.data} for 0x60 and {@link I8042.command} for 0x64
 * (status on read, command on write), each one port long.
 *
 * Commands complete instantly, so IBF always reads 0. Bytes wait in three queues behind the
 * one-byte output buffer: controller replies first, then the keyboard, then the mouse; a port
 * whose clock is disabled in the configuration byte keeps its bytes until it is enabled again.
 * With translation on (config bit 6) keyboard bytes pass through the set 2 → set 1 translator on
 * their way into the output buffer, as on the real controller.
 *
 * The system reset line is treated as a pulse: `reset` is called and the line reads back high,
 * because the VMM resets the machine (and with it this device) in response.
 * @module
 */

import type { BusDevice } from '@kvmts/kvm-core';

/** The data port (output buffer on read, input buffer on write). */
export const I8042_DATA_PORT = 0x60;
/** The status (read) / command (write) port. */
export const I8042_COMMAND_PORT = 0x64;
/** ISA IRQ of the keyboard port. */
export const I8042_KBD_IRQ = 1;
/** ISA IRQ of the auxiliary (mouse) port. */
export const I8042_AUX_IRQ = 12;
/** How many pending input bytes each PS/2 device buffers (the keyboard's 16-byte FIFO). */
export const PS2_QUEUE_SIZE = 16;

// Status register bits.
const ST_OBF = 0x01;
const ST_SYS = 0x04;
const ST_CMD = 0x08;
// Keyboard-lock switch: 1 means unlocked, the only position a VM's keyboard has.
const ST_UNLOCKED = 0x10;
const ST_AUX_OBF = 0x20;

// Configuration ("command") byte bits.
const CFG_KBD_INT = 0x01;
const CFG_AUX_INT = 0x02;
const CFG_SYS = 0x04;
const CFG_KBD_DISABLED = 0x10;
const CFG_AUX_DISABLED = 0x20;
const CFG_XLAT = 0x40;
/** IRQ1, IRQ12, system flag and translation: what a PS/2 BIOS leaves behind. */
const CFG_DEFAULT = CFG_KBD_INT | CFG_AUX_INT | CFG_SYS | CFG_XLAT;

// Output port bits.
const OUT_RESET = 0x01; // active low
const OUT_A20 = 0x02;
const OUT_IRQ1 = 0x10;
const OUT_IRQ12 = 0x20;
/** Not in reset, A20 on, keyboard and mouse clock/data lines idle high. */
const OUT_DEFAULT = 0xcf;

// Controller replies destined for the aux side are tagged with this bit in the queue.
const AUX_TAG = 0x100;

// PS/2 device replies.
const ACK = 0xfa;
const RESEND = 0xfe;
const BAT_OK = 0xaa;
const ECHO = 0xee;

/**
 * Set 2 → set 1 pairs for the keys of a 102-key keyboard plus the Japanese and Brazilian extras,
 * from the published scan-code tables. Set 2 0x02 is not a key but reads back as 0x41 (it is the
 * translated reply to "get scan code set" for set 2). Codes not listed pass through unchanged.
 */
const XLAT_PAIRS: readonly (readonly [number, number])[] = [
  [0x00, 0xff], [0x01, 0x43], [0x02, 0x41], [0x03, 0x3f], [0x04, 0x3d], [0x05, 0x3b], [0x06, 0x3c],
  [0x07, 0x58], [0x09, 0x44], [0x0a, 0x42], [0x0b, 0x40], [0x0c, 0x3e], [0x0d, 0x0f], [0x0e, 0x29],
  [0x11, 0x38], [0x12, 0x2a], [0x13, 0x70], [0x14, 0x1d], [0x15, 0x10], [0x16, 0x02], [0x1a, 0x2c],
  [0x1b, 0x1f], [0x1c, 0x1e], [0x1d, 0x11], [0x1e, 0x03], [0x21, 0x2e], [0x22, 0x2d], [0x23, 0x20],
  [0x24, 0x12], [0x25, 0x05], [0x26, 0x04], [0x29, 0x39], [0x2a, 0x2f], [0x2b, 0x21], [0x2c, 0x14],
  [0x2d, 0x13], [0x2e, 0x06], [0x31, 0x31], [0x32, 0x30], [0x33, 0x23], [0x34, 0x22], [0x35, 0x15],
  [0x36, 0x07], [0x3a, 0x32], [0x3b, 0x24], [0x3c, 0x16], [0x3d, 0x08], [0x3e, 0x09], [0x41, 0x33],
  [0x42, 0x25], [0x43, 0x17], [0x44, 0x18], [0x45, 0x0b], [0x46, 0x0a], [0x49, 0x34], [0x4a, 0x35],
  [0x4b, 0x26], [0x4c, 0x27], [0x4d, 0x19], [0x4e, 0x0c], [0x51, 0x73], [0x52, 0x28], [0x54, 0x1a],
  [0x55, 0x0d], [0x58, 0x3a], [0x59, 0x36], [0x5a, 0x1c], [0x5b, 0x1b], [0x5d, 0x2b], [0x61, 0x56],
  [0x64, 0x79], [0x66, 0x0e], [0x67, 0x7b], [0x69, 0x4f], [0x6a, 0x7d], [0x6b, 0x4b], [0x6c, 0x47],
  [0x6d, 0x7e], [0x70, 0x52], [0x71, 0x53], [0x72, 0x50], [0x73, 0x4c], [0x74, 0x4d], [0x75, 0x48],
  [0x76, 0x01], [0x77, 0x45], [0x78, 0x57], [0x79, 0x4e], [0x7a, 0x51], [0x7b, 0x4a], [0x7c, 0x37],
  [0x7d, 0x49], [0x7e, 0x46], [0x83, 0x41], [0x84, 0x54],
];
const XLAT = (() => {
  const t = new Uint8Array(256);
  for (let i = 0; i < 256; i++) t[i] = i;
  for (const [s2, s1] of XLAT_PAIRS) t[s2] = s1;
  return t;
})();

/** Plain, JSON-able snapshot of the PS/2 keyboard. */
export interface Ps2KeyboardState {
  /** Bytes waiting to go to the controller, oldest first. */
  queue: number[];
  scanning: boolean;
  /** LED bits from the last 0xED: scroll lock 1, num lock 2, caps lock 4. */
  leds: number;
  typematic: number;
  scancodeSet: number;
  /** Command waiting for its argument byte, or 0. */
  pendingCommand: number;
  /** Last byte sent, for the resend command. */
  lastByte: number;
}

/** Plain, JSON-able snapshot of the PS/2 mouse. */
export interface Ps2MouseState {
  queue: number[];
  reporting: boolean;
  remote: boolean;
  wrap: boolean;
  scaling21: boolean;
  resolution: number;
  sampleRate: number;
  pendingCommand: number;
  lastByte: number;
}

/** Plain, JSON-able snapshot of an {@link I8042}. */
export interface I8042State {
  /** Controller RAM; byte 0 is the configuration byte. */
  ram: number[];
  outputPort: number;
  /** The byte in the output buffer, or null when it is empty. */
  outputBuffer: number | null;
  /** The output buffer byte came from (or is addressed as) the aux port. */
  outputAux: boolean;
  /** The last write went to the command port (status bit 3). */
  commandFlag: boolean;
  /** Controller replies waiting for the output buffer; 0x100 marks aux-side bytes. */
  controllerQueue: number[];
  /** Controller command waiting for its data byte, or 0. */
  pendingCommand: number;
  /** The translator saw 0xF0 and will set bit 7 of the next keyboard byte. */
  translateBreak: boolean;
  keyboard: Ps2KeyboardState;
  mouse: Ps2MouseState;
}

/** Options for {@link I8042}. */
export interface I8042Options {
  /** Called when the guest pulls the system reset line (output port bit 0 low, or 0xFE). */
  reset?: () => void;
  /** Called with the new state of the A20 gate (output port bit 1) when it changes. */
  a20?: (enabled: boolean) => void;
  /** Called with the new level of IRQ 1 whenever it changes. */
  irq1?: (level: boolean) => void;
  /** Called with the new level of IRQ 12 whenever it changes. */
  irq12?: (level: boolean) => void;
}

/** A minimal PS/2 keyboard: the host-to-keyboard command set, scan codes supplied by the host. */
class Ps2Keyboard {
  queue: number[] = [];
  scanning = true;
  leds = 0;
  // 10.9 characters/s after 500 ms: the power-on typematic setting.
  typematic = 0x2b;
  set = 2;
  pending = 0;
  last = ACK;

  private reply(...bytes: number[]): void {
    for (const b of bytes) this.queue.push(b);
    this.last = bytes[bytes.length - 1]!;
  }

  private defaults(): void {
    this.leds = 0;
    this.typematic = 0x2b;
    this.set = 2;
    this.queue = [];
  }

  write(v: number): void {
    // An argument is expected, but command codes (0xED and up) start a new command instead.
    if (this.pending !== 0 && v < 0xed) {
      const cmd = this.pending;
      this.pending = 0;
      this.argument(cmd, v);
      return;
    }
    this.pending = 0;
    switch (v) {
      case 0xed: // set LEDs
      case 0xf0: // get/set scan code set
      case 0xf3: // set typematic rate/delay
        this.reply(ACK);
        this.pending = v;
        return;
      case 0xee:
        this.reply(ECHO);
        return;
      case 0xf2: // identify: an MF2 keyboard
        this.reply(ACK, 0xab, 0x83);
        return;
      case 0xf4:
        this.queue = [];
        this.scanning = true;
        this.reply(ACK);
        return;
      case 0xf5: // default and disable
        this.defaults();
        this.scanning = false;
        this.reply(ACK);
        return;
      case 0xf6: // set defaults, keep scanning
        this.defaults();
        this.reply(ACK);
        return;
      case 0xfe:
        this.queue.push(this.last);
        return;
      case 0xff: // reset: ACK, then the basic assurance test passes
        this.defaults();
        this.scanning = true;
        this.reply(ACK, BAT_OK);
        return;
      default:
        this.reply(RESEND);
    }
  }

  private argument(cmd: number, v: number): void {
    switch (cmd) {
      case 0xed:
        this.leds = v & 7;
        this.reply(ACK);
        return;
      case 0xf3:
        this.typematic = v & 0x7f;
        this.reply(ACK);
        return;
      default: // 0xf0
        if (v === 0) this.reply(ACK, this.set);
        else if (v <= 3) {
          this.set = v;
          this.reply(ACK);
        } else this.reply(RESEND);
    }
  }

  save(): Ps2KeyboardState {
    return {
      queue: [...this.queue],
      scanning: this.scanning,
      leds: this.leds,
      typematic: this.typematic,
      scancodeSet: this.set,
      pendingCommand: this.pending,
      lastByte: this.last,
    };
  }

  restore(s: Ps2KeyboardState): void {
    checkBytes('keyboard.queue', s.queue);
    for (const k of ['leds', 'typematic', 'pendingCommand', 'lastByte'] as const) checkByte(`keyboard.${k}`, s[k]);
    if (s.scancodeSet !== 1 && s.scancodeSet !== 2 && s.scancodeSet !== 3) throw new RangeError(`i8042 state: keyboard.scancodeSet = ${String(s.scancodeSet)}`);
    this.queue = [...s.queue];
    this.scanning = Boolean(s.scanning);
    this.leds = s.leds & 7;
    this.typematic = s.typematic & 0x7f;
    this.set = s.scancodeSet;
    this.pending = s.pendingCommand;
    this.last = s.lastByte;
  }
}

/** A minimal PS/2 mouse (ID 0): enough of the command set for an OS to probe and configure it. */
class Ps2Mouse {
  queue: number[] = [];
  reporting = false;
  remote = false;
  wrap = false;
  scaling21 = false;
  // 4 counts/mm at 100 samples/s: the power-on defaults.
  resolution = 2;
  sampleRate = 100;
  pending = 0;
  last = ACK;

  private reply(...bytes: number[]): void {
    for (const b of bytes) this.queue.push(b);
    this.last = bytes[bytes.length - 1]!;
  }

  private defaults(): void {
    this.reporting = false;
    this.scaling21 = false;
    this.resolution = 2;
    this.sampleRate = 100;
    this.queue = [];
  }

  write(v: number): void {
    if (this.pending !== 0) {
      const cmd = this.pending;
      this.pending = 0;
      if (cmd === 0xe8) this.resolution = v & 3;
      else this.sampleRate = v;
      this.reply(ACK);
      return;
    }
    // Wrap (echo) mode returns everything except the two commands that leave it.
    if (this.wrap && v !== 0xec && v !== 0xff) {
      this.reply(v);
      return;
    }
    switch (v) {
      case 0xe6:
        this.scaling21 = false;
        this.reply(ACK);
        return;
      case 0xe7:
        this.scaling21 = true;
        this.reply(ACK);
        return;
      case 0xe8: // set resolution
      case 0xf3: // set sample rate
        this.reply(ACK);
        this.pending = v;
        return;
      case 0xe9: // status request: mode bits (no buttons down), resolution, sample rate
        this.reply(ACK, (this.remote ? 0x40 : 0) | (this.reporting ? 0x20 : 0) | (this.scaling21 ? 0x10 : 0), this.resolution, this.sampleRate);
        return;
      case 0xea:
        this.remote = false;
        this.reply(ACK);
        return;
      case 0xeb: // read data: an empty movement packet
        this.reply(ACK, 0x08, 0, 0);
        return;
      case 0xec:
        this.wrap = false;
        this.reply(ACK);
        return;
      case 0xee:
        this.wrap = true;
        this.reply(ACK);
        return;
      case 0xf0:
        this.remote = true;
        this.reply(ACK);
        return;
      case 0xf2: // identify: a standard PS/2 mouse
        this.reply(ACK, 0x00);
        return;
      case 0xf4:
        this.reporting = true;
        this.reply(ACK);
        return;
      case 0xf5:
        this.reporting = false;
        this.reply(ACK);
        return;
      case 0xf6:
        this.defaults();
        this.reply(ACK);
        return;
      case 0xfe:
        this.queue.push(this.last);
        return;
      case 0xff: // reset: ACK, self-test passed, device ID
        this.defaults();
        this.remote = false;
        this.wrap = false;
        this.reply(ACK, BAT_OK, 0x00);
        return;
      default:
        this.reply(RESEND);
    }
  }

  save(): Ps2MouseState {
    return {
      queue: [...this.queue],
      reporting: this.reporting,
      remote: this.remote,
      wrap: this.wrap,
      scaling21: this.scaling21,
      resolution: this.resolution,
      sampleRate: this.sampleRate,
      pendingCommand: this.pending,
      lastByte: this.last,
    };
  }

  restore(s: Ps2MouseState): void {
    checkBytes('mouse.queue', s.queue);
    for (const k of ['resolution', 'sampleRate', 'pendingCommand', 'lastByte'] as const) checkByte(`mouse.${k}`, s[k]);
    this.queue = [...s.queue];
    this.reporting = Boolean(s.reporting);
    this.remote = Boolean(s.remote);
    this.wrap = Boolean(s.wrap);
    this.scaling21 = Boolean(s.scaling21);
    this.resolution = s.resolution & 3;
    this.sampleRate = s.sampleRate;
    this.pending = s.pendingCommand;
    this.last = s.lastByte;
  }
}

function checkByte(name: string, v: unknown, max = 0xff): void {
  if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) throw new RangeError(`i8042 state: ${name} = ${String(v)} is out of range`);
}

function checkBytes(name: string, a: unknown, max = 0xff): void {
  if (!Array.isArray(a)) throw new RangeError(`i8042 state: ${name} is not an array`);
  for (const v of a) checkByte(name, v, max);
}

/** The 8042 controller with its keyboard and mouse. */
export class I8042 {
  private readonly resetHook: (() => void) | undefined;
  private readonly a20Hook: ((enabled: boolean) => void) | undefined;
  private readonly irq1Hook: ((level: boolean) => void) | undefined;
  private readonly irq12Hook: ((level: boolean) => void) | undefined;

  private readonly ram = new Uint8Array(32);
  private outputPort = OUT_DEFAULT;
  private obf = false;
  private ob = 0;
  private obAux = false;
  private cmdFlag = false;
  private ctrlQueue: number[] = [];
  private pendingCmd = 0;
  private xlatBreak = false;
  private readonly kbd = new Ps2Keyboard();
  private readonly mouse = new Ps2Mouse();
  private irq1 = false;
  private irq12 = false;

  /** Port 0x60; map at {@link I8042_DATA_PORT}, length 1. */
  readonly data: BusDevice;
  /** Port 0x64; map at {@link I8042_COMMAND_PORT}, length 1. */
  readonly command: BusDevice;

  constructor(options: I8042Options = {}) {
    this.resetHook = options.reset;
    this.a20Hook = options.a20;
    this.irq1Hook = options.irq1;
    this.irq12Hook = options.irq12;
    this.ram[0] = CFG_DEFAULT;
    this.data = {
      read: (_offset, data) => {
        for (let i = 0; i < data.length; i++) data[i] = this.readData();
      },
      write: (_offset, data) => {
        for (const v of data) this.writeData(v);
      },
    };
    this.command = {
      read: (_offset, data) => data.fill(this.status()),
      write: (_offset, data) => {
        for (const v of data) this.writeCommand(v);
      },
    };
  }

  /** The configuration byte (controller RAM byte 0). */
  get config(): number {
    return this.ram[0]!;
  }

  /** The state of the A20 gate output. */
  get a20Enabled(): boolean {
    return (this.outputPort & OUT_A20) !== 0;
  }

  /** The keyboard LEDs the guest last set: scroll lock 1, num lock 2, caps lock 4. */
  get keyboardLeds(): number {
    return this.kbd.leds;
  }

  /** The scan code set the guest selected on the keyboard (the host should supply codes in it). */
  get scancodeSet(): number {
    return this.kbd.set;
  }

  get irq1Level(): boolean {
    return this.irq1;
  }

  get irq12Level(): boolean {
    return this.irq12;
  }

  /**
   * Keystrokes from the host, as the keyboard would send them: scan code set 2 bytes unless the
   * guest selected another set (see {@link scancodeSet}). With translation on, the controller
   * turns them into set 1. The sequence is queued whole or not at all: it is dropped (returning
   * false) while the guest has scanning disabled or when the keyboard's buffer lacks room.
   */
  keyboardInput(bytes: ArrayLike<number>): boolean {
    if (!this.kbd.scanning || this.kbd.queue.length + bytes.length > PS2_QUEUE_SIZE) return false;
    for (let i = 0; i < bytes.length; i++) this.kbd.queue.push(bytes[i]! & 0xff);
    this.pump();
    return true;
  }

  /**
   * Mouse motion from the host: a standard 3-byte packet with `dx`/`dy` in counts (positive dy is
   * up) and `buttons` left 1, right 2, middle 4. Dropped (returning false) unless the guest
   * enabled stream-mode reporting, or when the buffer lacks room.
   */
  mouseInput(dx: number, dy: number, buttons = 0): boolean {
    const m = this.mouse;
    if (!m.reporting || m.remote || m.queue.length + 3 > PS2_QUEUE_SIZE) return false;
    const clamp = (v: number): number => Math.max(-256, Math.min(255, Math.trunc(v)));
    const x = clamp(dx);
    const y = clamp(dy);
    const flags =
      0x08 | (buttons & 7) | (x < 0 ? 0x10 : 0) | (y < 0 ? 0x20 : 0) | (x !== Math.trunc(dx) ? 0x40 : 0) | (y !== Math.trunc(dy) ? 0x80 : 0);
    m.queue.push(flags, x & 0xff, y & 0xff);
    this.pump();
    return true;
  }

  /** Snapshot the device state. */
  save(): I8042State {
    return {
      ram: Array.from(this.ram),
      outputPort: this.outputPort,
      outputBuffer: this.obf ? this.ob : null,
      outputAux: this.obAux,
      commandFlag: this.cmdFlag,
      controllerQueue: [...this.ctrlQueue],
      pendingCommand: this.pendingCmd,
      translateBreak: this.xlatBreak,
      keyboard: this.kbd.save(),
      mouse: this.mouse.save(),
    };
  }

  /** Load a snapshot from {@link save}; throws RangeError if it is malformed. */
  restore(state: I8042State): void {
    checkBytes('ram', state.ram);
    if (state.ram.length !== 32) throw new RangeError('i8042 state: ram must hold 32 bytes');
    checkByte('outputPort', state.outputPort);
    if (state.outputBuffer !== null) checkByte('outputBuffer', state.outputBuffer);
    checkBytes('controllerQueue', state.controllerQueue, 0x1ff);
    checkByte('pendingCommand', state.pendingCommand);
    this.kbd.restore(state.keyboard);
    this.mouse.restore(state.mouse);
    this.ram.set(state.ram);
    this.outputPort = state.outputPort | OUT_RESET;
    this.obf = state.outputBuffer !== null;
    this.ob = state.outputBuffer ?? 0;
    this.obAux = Boolean(state.outputAux);
    this.cmdFlag = Boolean(state.commandFlag);
    this.ctrlQueue = [...state.controllerQueue];
    this.pendingCmd = state.pendingCommand;
    this.xlatBreak = Boolean(state.translateBreak);
    this.pump();
  }

  private status(): number {
    return (
      (this.obf ? ST_OBF : 0) |
      (this.config & CFG_SYS ? ST_SYS : 0) |
      (this.cmdFlag ? ST_CMD : 0) |
      ST_UNLOCKED |
      (this.obf && this.obAux ? ST_AUX_OBF : 0)
    );
  }

  private readData(): number {
    const v = this.ob;
    if (this.obf) {
      this.obf = false;
      // Let the IRQ line fall before the next byte loads, so edge-triggered inputs see it again.
      this.updateIrqs();
      this.pump();
    }
    return v;
  }

  private writeData(v: number): void {
    this.cmdFlag = false;
    const cmd = this.pendingCmd;
    this.pendingCmd = 0;
    if (cmd >= 0x60 && cmd < 0x80) {
      this.ram[cmd & 0x1f] = v;
    } else if (cmd === 0xd1) {
      this.writeOutputPort(v);
    } else if (cmd === 0xd2) {
      this.ctrlQueue.push(v);
    } else if (cmd === 0xd3) {
      this.ctrlQueue.push(v | AUX_TAG);
    } else if (cmd === 0xd4) {
      this.mouse.write(v);
    } else {
      this.kbd.write(v);
    }
    this.pump();
  }

  private writeCommand(cmd: number): void {
    this.cmdFlag = true;
    this.pendingCmd = 0;
    if (cmd >= 0x20 && cmd < 0x40) {
      // Read controller RAM; 0x20 reads the configuration byte.
      this.ctrlQueue.push(this.ram[cmd & 0x1f]!);
    } else if (cmd >= 0x60 && cmd < 0x80) {
      this.pendingCmd = cmd;
    } else if (cmd >= 0xf0) {
      // Pulse output port bits 0–3 where the command has a 0; only bit 0 (reset) has an effect.
      if (!(cmd & OUT_RESET)) this.resetHook?.();
    } else {
      switch (cmd) {
        case 0xa7:
          this.ram[0] = this.config | CFG_AUX_DISABLED;
          break;
        case 0xa8:
          this.ram[0] = this.config & ~CFG_AUX_DISABLED;
          break;
        case 0xa9: // aux interface test: no clock/data line stuck
        case 0xab: // keyboard interface test
          this.ctrlQueue.push(0x00);
          break;
        case 0xaa: // self test; passing it sets the system flag
          this.ram[0] = this.config | CFG_SYS;
          this.ctrlQueue.push(0x55);
          break;
        case 0xad:
          this.ram[0] = this.config | CFG_KBD_DISABLED;
          break;
        case 0xae:
          this.ram[0] = this.config & ~CFG_KBD_DISABLED;
          break;
        case 0xd0: {
          // Bits 4 and 5 are the IRQ outputs themselves.
          const v = (this.outputPort & ~(OUT_IRQ1 | OUT_IRQ12)) | (this.irq1 ? OUT_IRQ1 : 0) | (this.irq12 ? OUT_IRQ12 : 0);
          this.ctrlQueue.push(v);
          break;
        }
        case 0xd1:
        case 0xd2:
        case 0xd3:
        case 0xd4:
          this.pendingCmd = cmd;
          break;
        default:
          // Vendor and diagnostic commands are not implemented and do nothing.
          break;
      }
    }
    this.pump();
  }

  private writeOutputPort(v: number): void {
    const a20 = (v & OUT_A20) !== 0;
    const changed = a20 !== this.a20Enabled;
    this.outputPort = v | OUT_RESET;
    if (changed) this.a20Hook?.(a20);
    if (!(v & OUT_RESET)) this.resetHook?.();
  }

  /** Refill an empty output buffer from the queues, in priority order. */
  private pump(): void {
    while (!this.obf) {
      const cfg = this.config;
      const c = this.ctrlQueue.shift();
      if (c !== undefined) {
        this.load(c & 0xff, (c & AUX_TAG) !== 0);
      } else if (!(cfg & CFG_KBD_DISABLED) && this.kbd.queue.length > 0) {
        let b = this.kbd.queue.shift()!;
        if (cfg & CFG_XLAT) {
          // Set 2 marks a release with an 0xF0 prefix; set 1 sets bit 7 of the code instead.
          if (b === 0xf0) {
            this.xlatBreak = true;
            continue;
          }
          b = XLAT[b]! | (this.xlatBreak ? 0x80 : 0);
          this.xlatBreak = false;
        }
        this.load(b, false);
      } else if (!(cfg & CFG_AUX_DISABLED) && this.mouse.queue.length > 0) {
        this.load(this.mouse.queue.shift()!, true);
      } else {
        break;
      }
    }
    this.updateIrqs();
  }

  private load(b: number, aux: boolean): void {
    this.ob = b;
    this.obAux = aux;
    this.obf = true;
  }

  private updateIrqs(): void {
    const cfg = this.config;
    const irq1 = this.obf && !this.obAux && (cfg & CFG_KBD_INT) !== 0;
    const irq12 = this.obf && this.obAux && (cfg & CFG_AUX_INT) !== 0;
    if (irq1 !== this.irq1) {
      this.irq1 = irq1;
      this.irq1Hook?.(irq1);
    }
    if (irq12 !== this.irq12) {
      this.irq12 = irq12;
      this.irq12Hook?.(irq12);
    }
  }
}
