import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MigrationError, PAGE_SIZE, Section, encodeFrame, jsonPayload, readSnapshotConfig, restoreSnapshot, saveSnapshot } from '../src/index.js';
import { TestMachine, blankLike, closeAll } from './guest.js';

const dir = mkdtempSync(join(tmpdir(), 'kvmts-snap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(closeAll);

describe('snapshot files', () => {
  it('save → restore into a fresh machine → the counter continues', async () => {
    const a = new TestMachine({ irqchip: true });
    a.run({ untilCount: 4 });
    a.run({ maxExits: 3 });
    const file = join(dir, 'a.snap');
    const report = await saveSnapshot(a, file);
    expect(a.paused).toBe(false); // it was running: resumed after the save
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect(report.bytes).toBe(readFileSync(file).length);
    expect(report.ram.zeroPages).toBeGreaterThan(0);
    const config = await readSnapshotConfig(file);
    expect(config).toMatchObject({ kind: 'test', memorySize: 4 << 20, vcpus: 1, devices: [{ name: 'outlog', version: 1 }] });
    const { machine: b } = await restoreSnapshot(file, (c) => blankLike({ memSize: c.memorySize, irqchip: c.options.irqchip as boolean }));
    expect(b.paused).toBe(false);
    const c0 = b.counter();
    expect(c0).toBe(a.counter());
    b.run({ untilCount: 8 });
    expect(b.counter()).toBe(8 * 1024);
    a.run({ untilCount: 8 });
    expect(b.checksum()).toBe(a.checksum());
  });

  it('restoreSnapshot can leave the machine paused', async () => {
    const a = new TestMachine();
    a.run({ untilCount: 1 });
    const file = join(dir, 'p.snap');
    await saveSnapshot(a, file);
    const target = blankLike({});
    const { machine } = await restoreSnapshot(file, target, { paused: true });
    expect(machine).toBe(target);
    expect(machine.paused).toBe(true);
  });

  it('clear errors for missing, unwritable, truncated and over-long files', async () => {
    await expect(readSnapshotConfig(join(dir, 'nope.snap'))).rejects.toThrow(/cannot read snapshot '.*nope\.snap': ENOENT/);
    const a = new TestMachine();
    a.run({ untilCount: 1 });
    const err = await saveSnapshot(a, join(dir, 'no-such-dir', 'x.snap')).catch((e: MigrationError) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as MigrationError).kind).toBe('io');
    expect((err as MigrationError).message).toMatch(/cannot write snapshot/);
    expect(a.paused).toBe(false);

    const file = join(dir, 't.snap');
    await saveSnapshot(a, file);
    const whole = readFileSync(file);
    writeFileSync(join(dir, 'cut.snap'), whole.subarray(0, whole.length - 100));
    let built: TestMachine | undefined;
    const cut = await restoreSnapshot(join(dir, 'cut.snap'), () => (built = blankLike({}))).catch((e: MigrationError) => e);
    expect((cut as MigrationError).kind).toBe('truncated');
    expect((cut as MigrationError).message).toMatch(/truncated snapshot '.*cut\.snap': it ended at byte \d+, inside STATE section/);
    expect(built!.closed).toBe(true);

    writeFileSync(join(dir, 'long.snap'), Buffer.concat([whole, encodeFrame(Section.Round, jsonPayload({ round: 9 }))]));
    built = undefined;
    await expect(restoreSnapshot(join(dir, 'long.snap'), () => (built = blankLike({})))).rejects.toThrow(/data after the END section/);
    expect(built!.closed).toBe(true);
    expect(existsSync(file)).toBe(true);
  });

  it('pages a balloon released are skipped', async () => {
    const a = new TestMachine();
    a.run({ untilCount: 1 });
    const released = new Uint8Array(Math.ceil(1024 / 8));
    // Pages 600..699 (inside the pattern-filled area) are released.
    for (let p = 600; p < 700; p++) released[p >>> 3] = released[p >>> 3]! | (1 << (p & 7));
    (a as TestMachine & { releasedPages(slot: number): Uint8Array | undefined }).releasedPages = (slot: number) => (slot === 0 ? released : undefined);
    const file = join(dir, 'balloon.snap');
    const report = await saveSnapshot(a, file);
    expect(report.ram.skippedPages).toBe(100);
    const { machine: b } = await restoreSnapshot(file, blankLike({}));
    expect(a.ram.subarray(650 * PAGE_SIZE, 651 * PAGE_SIZE).some((x) => x !== 0)).toBe(true);
    expect(b.ram.subarray(600 * PAGE_SIZE, 700 * PAGE_SIZE).every((x) => x === 0)).toBe(true);
    expect(Buffer.compare(b.ram.subarray(0, 600 * PAGE_SIZE), a.ram.subarray(0, 600 * PAGE_SIZE))).toBe(0);
  });
});
