import { describe, it, expect } from 'vitest';
import { IoBus } from '../bus.js';
import { PIC_ELCR_BASE, PIC_MASTER_BASE, PIC_PORT_LEN, PIC_SLAVE_BASE, Pic, type PicState } from './pic.js';

function harness(): { pic: Pic; intr: boolean[]; out: (port: number, v: number) => void; inb: (port: number) => number } {
  const intr: boolean[] = [];
  const pic = new Pic({ intr: (l) => intr.push(l) });
  const bus = new IoBus();
  bus.insert(pic.master, PIC_MASTER_BASE, PIC_PORT_LEN);
  bus.insert(pic.slave, PIC_SLAVE_BASE, PIC_PORT_LEN);
  bus.insert(pic.elcr, PIC_ELCR_BASE, PIC_PORT_LEN);
  const one = new Uint8Array(1);
  return {
    pic,
    intr,
    out: (port, v) => {
      one[0] = v;
      expect(bus.write(port, one)).toBe(true);
    },
    inb: (port) => {
      expect(bus.read(port, one)).toBe(true);
      return one[0]!;
    },
  };
}

/** Linux's init_8259A: mask all, ICW1 0x11, ICW2 0x20/0x28, ICW3 0x04/0x02, ICW4 0x01, then masks. */
function linuxInit(h: ReturnType<typeof harness>, masterMask = 0x00, slaveMask = 0x00, icw4 = 0x01): void {
  h.out(0x21, 0xff);
  h.out(0xa1, 0xff);
  h.out(0x20, 0x11);
  h.out(0x21, 0x20);
  h.out(0x21, 0x04);
  h.out(0x21, icw4);
  h.out(0xa0, 0x11);
  h.out(0xa1, 0x28);
  h.out(0xa1, 0x02);
  h.out(0xa1, 0x01);
  h.out(0x21, masterMask);
  h.out(0xa1, slaveMask);
}

const READ_IRR = 0x0a;
const READ_ISR = 0x0b;
const POLL = 0x0c;
const EOI = 0x20;

describe('Pic (8259A pair)', () => {
  it('runs the Linux init sequence: ICW1 clears the mask, OCW1 sets it', () => {
    const h = harness();
    h.out(0x21, 0xff);
    h.out(0x20, 0x11);
    expect(h.inb(0x21)).toBe(0x00); // ICW1 clears IMR
    h.out(0x21, 0x20);
    h.out(0x21, 0x04);
    h.out(0x21, 0x01);
    h.out(0x21, 0xfb); // everything but the cascade masked
    expect(h.inb(0x21)).toBe(0xfb);
    expect(h.pic.save().master).toMatchObject({ vectorBase: 0x20, icw3: 0x04, initStep: 0, autoEoi: false, single: false });
    // after init a read of the command port returns IRR
    h.pic.setIrq(1, true);
    expect(h.inb(0x20)).toBe(0x02);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.out(0x21, 0xf9);
    expect(h.pic.hasInterrupt()).toBe(true);
    expect(h.intr).toEqual([true]);
    expect(h.pic.acknowledge()).toBe(0x21);
    expect(h.intr).toEqual([true, false]);
  });

  it('takes ICW4 straight after ICW2 in single mode, and zeroes ICW4 fields without IC4', () => {
    const h = harness();
    h.out(0x20, 0x13); // edge, single, IC4
    h.out(0x21, 0x08);
    h.out(0x21, 0x03); // 8086, AEOI
    expect(h.pic.save().master).toMatchObject({ single: true, vectorBase: 0x08, autoEoi: true, initStep: 0 });
    h.out(0x20, 0x12); // single, no ICW4
    h.out(0x21, 0x50);
    expect(h.pic.save().master).toMatchObject({ vectorBase: 0x50, autoEoi: false, initStep: 0 });
    // single mode: IR2 is an ordinary input with its own vector
    h.pic.setIrq(2, true);
    expect(h.pic.acknowledge()).toBe(0x52);
  });

  it('latches rising edges only', () => {
    const h = harness();
    linuxInit(h);
    h.pic.setIrq(0, true);
    h.pic.setIrq(0, true);
    expect(h.pic.acknowledge()).toBe(0x20);
    h.out(0x20, EOI);
    // still high: no new edge, no new interrupt
    h.pic.setIrq(0, true);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.pic.setIrq(0, false);
    h.pic.setIrq(0, true);
    expect(h.pic.hasInterrupt()).toBe(true);
    // a short pulse is latched until acknowledged
    h.pic.acknowledge();
    h.out(0x20, EOI);
    h.pic.setIrq(0, false);
    h.pic.setIrq(4, true);
    h.pic.setIrq(4, false);
    expect(h.pic.acknowledge()).toBe(0x24);
  });

  it('needs a fresh edge after ICW1 resets the edge sense circuit', () => {
    const h = harness();
    h.pic.setIrq(3, true);
    linuxInit(h);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.pic.setIrq(3, false);
    h.pic.setIrq(3, true);
    expect(h.pic.acknowledge()).toBe(0x23);
  });

  it('serves by fixed priority and nests only higher levels', () => {
    const h = harness();
    linuxInit(h);
    h.pic.setIrq(5, true);
    h.pic.setIrq(3, true);
    expect(h.pic.acknowledge()).toBe(0x23);
    h.out(0x20, READ_ISR);
    expect(h.inb(0x20)).toBe(0x08);
    expect(h.pic.hasInterrupt()).toBe(false); // 5 is below 3, which is in service
    h.pic.setIrq(1, true);
    expect(h.pic.acknowledge()).toBe(0x21); // 1 nests above 3
    expect(h.inb(0x20)).toBe(0x0a);
    h.out(0x20, EOI); // non-specific EOI retires the highest: 1
    expect(h.inb(0x20)).toBe(0x08);
    h.out(0x20, EOI);
    expect(h.pic.acknowledge()).toBe(0x25);
    h.out(0x20, READ_IRR);
    expect(h.inb(0x20)).toBe(0x00);
  });

  it('rotates priority: set-priority, rotate on non-specific and specific EOI', () => {
    const h = harness();
    linuxInit(h);
    h.out(0x20, 0xc4); // set priority: 4 lowest, so 5 highest
    h.pic.setIrq(3, true);
    h.pic.setIrq(5, true);
    expect(h.pic.acknowledge()).toBe(0x25);
    h.out(0x20, 0xa0); // rotate on non-specific EOI: 5 becomes lowest, 6 highest
    expect(h.pic.save().master.lowestPriority).toBe(5);
    h.pic.setIrq(6, true);
    expect(h.pic.acknowledge()).toBe(0x26);
    h.out(0x20, 0xe6); // rotate on specific EOI for 6: 7 highest, then 0..5
    expect(h.pic.save().master.lowestPriority).toBe(6);
    h.pic.setIrq(7, true);
    h.pic.setIrq(1, true);
    expect(h.pic.acknowledge()).toBe(0x27);
    h.out(0x20, 0x67); // specific EOI 7, no rotation
    expect(h.pic.acknowledge()).toBe(0x21); // then 0, 1, 2, 3...
    h.out(0x20, 0x61);
    expect(h.pic.acknowledge()).toBe(0x23);
  });

  it('rotates in automatic EOI mode', () => {
    const h = harness();
    linuxInit(h, 0, 0, 0x03); // ICW4: 8086, AEOI
    h.out(0x20, 0x80); // rotate in AEOI: set
    h.pic.setIrq(1, true);
    h.pic.setIrq(4, true);
    expect(h.pic.acknowledge()).toBe(0x21);
    h.out(0x20, READ_ISR);
    expect(h.inb(0x20)).toBe(0x00); // AEOI leaves nothing in service
    expect(h.pic.save().master.lowestPriority).toBe(1);
    h.pic.setIrq(0, true);
    expect(h.pic.acknowledge()).toBe(0x24); // 0 now ranks below 4
    expect(h.pic.acknowledge()).toBe(0x20);
    h.out(0x20, 0x00); // rotate in AEOI: clear
    h.pic.setIrq(6, true);
    h.pic.acknowledge();
    expect(h.pic.save().master.lowestPriority).toBe(0);
  });

  it('answers the poll command with 0x80 | level and treats it as an acknowledge', () => {
    const h = harness();
    linuxInit(h);
    h.out(0x20, POLL);
    expect(h.inb(0x20)).toBe(0x00); // nothing requesting
    h.pic.setIrq(6, true);
    h.pic.setIrq(4, true);
    h.out(0x20, POLL);
    expect(h.inb(0x20)).toBe(0x84);
    // poll is one-shot: the next read is IRR again
    expect(h.inb(0x20)).toBe(0x40);
    h.out(0x20, READ_ISR);
    expect(h.inb(0x20)).toBe(0x10);
    expect(h.intr).toEqual([true, false]);
    h.out(0x20, EOI);
    // a slave request polls as level 2 on the master
    h.pic.setIrq(9, true);
    h.out(0x20, POLL);
    expect(h.inb(0x20)).toBe(0x82);
    h.out(0xa0, POLL);
    expect(h.inb(0xa0)).toBe(0x81);
  });

  it('gives spurious IRQ 7 when a level request vanishes before the acknowledge', () => {
    const h = harness();
    linuxInit(h);
    h.out(0x4d0, 0x20); // IRQ 5 level-triggered
    h.pic.setIrq(5, true);
    expect(h.intr).toEqual([true]);
    h.pic.setIrq(5, false);
    expect(h.intr).toEqual([true, false]);
    // the CPU had already committed to the INTA cycle
    expect(h.pic.acknowledge()).toBe(0x27);
    h.out(0x20, READ_ISR);
    expect(h.inb(0x20)).toBe(0x00);
    // masking a latched edge request before the acknowledge does the same
    h.pic.setIrq(3, true);
    h.out(0x21, 0x08);
    expect(h.pic.acknowledge()).toBe(0x27);
    expect(h.inb(0x20)).toBe(0x00);
  });

  it('gives spurious IRQ 15 with master IR2 in service when a slave request vanishes', () => {
    const h = harness();
    linuxInit(h);
    h.out(0x4d1, 0x04); // IRQ 10 level-triggered
    h.pic.setIrq(10, true);
    h.pic.setIrq(10, false);
    // master IR2 saw the slave's INT edge and latched it
    expect(h.pic.acknowledge()).toBe(0x2f);
    h.out(0x20, READ_ISR);
    h.out(0xa0, READ_ISR);
    expect(h.inb(0x20)).toBe(0x04);
    expect(h.inb(0xa0)).toBe(0x00);
  });

  it('acknowledges a cascaded request with the slave vector and sets master ISR bit 2', () => {
    const h = harness();
    linuxInit(h);
    h.pic.setIrq(12, true);
    expect(h.pic.hasInterrupt()).toBe(true);
    h.out(0x20, READ_IRR);
    expect(h.inb(0x20)).toBe(0x04);
    expect(h.pic.acknowledge()).toBe(0x2c);
    h.out(0x20, READ_ISR);
    h.out(0xa0, READ_ISR);
    expect(h.inb(0x20)).toBe(0x04);
    expect(h.inb(0xa0)).toBe(0x10);
    // the slave's mask hides its requests from the master too
    h.out(0xa0, EOI);
    h.out(0x20, EOI);
    h.out(0xa1, 0x02);
    h.pic.setIrq(9, true);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.out(0xa1, 0x00);
    expect(h.pic.acknowledge()).toBe(0x29);
  });

  it('holds a lower slave request until both EOIs, then delivers it', () => {
    const h = harness();
    linuxInit(h);
    h.pic.setIrq(9, true);
    h.pic.setIrq(14, true);
    expect(h.pic.acknowledge()).toBe(0x29);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.out(0xa0, EOI);
    expect(h.pic.hasInterrupt()).toBe(false); // master IR2 still in service
    h.out(0x20, EOI);
    expect(h.pic.acknowledge()).toBe(0x2e);
  });

  it('re-asserts an ELCR level line after EOI while it stays high', () => {
    const h = harness();
    linuxInit(h);
    h.out(0x4d1, 0x08); // IRQ 11 level
    expect(h.inb(0x4d1)).toBe(0x08);
    h.pic.setIrq(11, true);
    expect(h.pic.acknowledge()).toBe(0x2b);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.out(0xa0, EOI);
    h.out(0x20, EOI);
    expect(h.pic.hasInterrupt()).toBe(true);
    expect(h.pic.acknowledge()).toBe(0x2b);
    // the device is serviced before the EOIs this time
    h.pic.setIrq(11, false);
    h.out(0xa0, EOI);
    h.out(0x20, EOI);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.out(0xa0, READ_IRR);
    expect(h.inb(0xa0)).toBe(0x00);
    h.out(0x20, READ_ISR);
    expect(h.inb(0x20)).toBe(0x00);
  });

  it('keeps IRQ 0, 1, 2, 8 and 13 edge-triggered in the ELCR', () => {
    const h = harness();
    h.out(0x4d0, 0xff);
    h.out(0x4d1, 0xff);
    expect(h.inb(0x4d0)).toBe(0xf8);
    expect(h.inb(0x4d1)).toBe(0xde);
    const two = new Uint8Array(2);
    h.pic.elcr.read(0, two);
    expect(Array.from(two)).toEqual([0xf8, 0xde]);
  });

  it('treats every line as level-triggered with ICW1 LTIM', () => {
    const h = harness();
    h.out(0x20, 0x19); // LTIM, cascade, IC4
    h.out(0x21, 0x20);
    h.out(0x21, 0x04);
    h.out(0x21, 0x01);
    h.pic.setIrq(0, true);
    expect(h.pic.acknowledge()).toBe(0x20);
    h.out(0x20, EOI);
    expect(h.pic.acknowledge()).toBe(0x20);
  });

  it('lets lower levels through in special mask mode', () => {
    const h = harness();
    linuxInit(h);
    h.pic.setIrq(3, true);
    expect(h.pic.acknowledge()).toBe(0x23);
    h.pic.setIrq(5, true);
    expect(h.pic.hasInterrupt()).toBe(false);
    h.out(0x20, 0x68); // OCW3: set special mask mode
    h.out(0x21, 0x08); // mask the level in service
    expect(h.pic.hasInterrupt()).toBe(true);
    expect(h.pic.acknowledge()).toBe(0x25);
    h.out(0x20, 0x65); // specific EOI 5
    h.out(0x20, 0x48); // OCW3: reset special mask mode
    h.out(0x21, 0x00);
    h.pic.setIrq(6, true);
    expect(h.pic.hasInterrupt()).toBe(false); // 3 is in service again as far as priority goes
  });

  it('admits a higher slave request over a slave in service only in special fully nested mode', () => {
    for (const [icw4, expected] of [[0x01, false], [0x11, true]] as const) {
      const h = harness();
      linuxInit(h, 0, 0, icw4);
      h.pic.setIrq(12, true);
      expect(h.pic.acknowledge()).toBe(0x2c);
      h.pic.setIrq(10, true);
      expect(h.pic.hasInterrupt()).toBe(expected);
      if (expected) {
        expect(h.pic.acknowledge()).toBe(0x2a);
        h.out(0xa0, READ_ISR);
        expect(h.inb(0xa0)).toBe(0x14);
      }
    }
  });

  it('reads IMR on the data port and IRR or ISR on the command port per OCW3', () => {
    const h = harness();
    linuxInit(h, 0x00, 0x00);
    h.pic.setIrq(4, true);
    h.pic.setIrq(6, true);
    h.pic.acknowledge();
    expect(h.inb(0x20)).toBe(0x40); // IRR by default
    h.out(0x20, READ_ISR);
    expect(h.inb(0x20)).toBe(0x10);
    h.out(0x20, 0x08); // OCW3 with RR=0: no change
    expect(h.inb(0x20)).toBe(0x10);
    h.out(0x20, READ_IRR);
    expect(h.inb(0x20)).toBe(0x40);
    h.out(0x21, 0x5a);
    expect(h.inb(0x21)).toBe(0x5a);
  });

  it('rejects lines outside 0..15', () => {
    const pic = new Pic();
    expect(() => pic.setIrq(16, true)).toThrow(RangeError);
    expect(() => pic.setIrq(-1, true)).toThrow(RangeError);
  });

  it('saves and restores through JSON', () => {
    const a = harness();
    linuxInit(a, 0x10, 0x00);
    a.out(0x4d1, 0x08);
    a.pic.setIrq(11, true);
    a.pic.setIrq(3, true);
    a.pic.setIrq(1, true);
    expect(a.pic.acknowledge()).toBe(0x21);
    a.out(0x20, READ_ISR);
    const state = JSON.parse(JSON.stringify(a.pic.save())) as PicState;
    expect(state.master).toMatchObject({ irr: 0x0c, isr: 0x02, imr: 0x10, lines: 0x0e, readIsr: true });
    expect(state.slave).toMatchObject({ irr: 0x08, isr: 0, elcr: 0x08, lines: 0x08, vectorBase: 0x28, icw3: 0x02 });

    const b = harness();
    b.pic.restore(state);
    expect(b.pic.save()).toEqual(state);
    expect(b.inb(0x20)).toBe(0x02);
    expect(b.intr).toEqual([]); // IRQ 1 in service holds off 2 and 3
    b.out(0x20, EOI);
    expect(b.intr).toEqual([true]);
    expect(b.pic.acknowledge()).toBe(0x2b); // slave IRQ 11 on IR2 outranks IRQ 3
    b.out(0xa0, EOI);
    b.out(0x20, EOI);

    // a snapshot taken with INTR up raises it on restore
    const c = harness();
    c.pic.restore(JSON.parse(JSON.stringify(b.pic.save())) as PicState);
    expect(c.intr).toEqual([true]);
    expect(c.pic.acknowledge()).toBe(0x2b); // level line still high
    c.out(0xa1, 0x08);
    c.out(0xa0, EOI);
    c.out(0x20, EOI);
    expect(c.pic.acknowledge()).toBe(0x23);
  });

  it('rejects malformed state', () => {
    const good = new Pic().save();
    const pic = new Pic();
    expect(() => pic.restore({ ...good, master: { ...good.master, imr: 256 } })).toThrow(/master.imr = 256 is not a byte/);
    expect(() => pic.restore({ ...good, slave: { ...good.slave, initStep: 1 } })).toThrow(/slave.initStep/);
    expect(() => pic.restore({ ...good, slave: { ...good.slave, lowestPriority: 8 } })).toThrow(RangeError);
  });
});
