import { describe, it, expect } from 'vitest';
import { MAX_MEM_SIZE, MIN_MEM_SIZE, checkMemSize, formatSize, parseAddress, parseSize } from './args.js';
import { CliError, ExitStatus } from './errors.js';

describe('parseSize', () => {
  it('accepts plain bytes, hex, and K/M/G suffixes in any case', () => {
    expect(parseSize('65536')).toBe(65536);
    expect(parseSize('0x10000')).toBe(65536);
    expect(parseSize('64K')).toBe(64 * 1024);
    expect(parseSize('64k')).toBe(64 * 1024);
    expect(parseSize('16M')).toBe(16 * 1024 * 1024);
    expect(parseSize('16MiB')).toBe(16 * 1024 * 1024);
    expect(parseSize('16MB')).toBe(16 * 1024 * 1024);
    expect(parseSize('3G')).toBe(3 * 1024 ** 3);
    expect(parseSize(' 1g ')).toBe(1024 ** 3);
  });

  it('rejects anything else with a one-line usage error', () => {
    for (const bad of ['', 'M', '16X', '1.5M', '-1M', '16 M B', '0x', 'sixteen']) {
      let err: unknown;
      try {
        parseSize(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitStatus.Usage);
      expect((err as CliError).message).toMatch(/^invalid --mem '.*': expected a size such as 16M/);
    }
    expect(() => parseSize('99999999999999999999G')).toThrow(/too large/);
  });
});

describe('checkMemSize', () => {
  it('enforces the minimum, the 3G cap and page alignment', () => {
    expect(() => checkMemSize(MIN_MEM_SIZE, '64K')).not.toThrow();
    expect(() => checkMemSize(MAX_MEM_SIZE, '3G')).not.toThrow();
    expect(() => checkMemSize(32 * 1024, '32K')).toThrow('--mem 32K is too small: at least 64K is needed');
    expect(() => checkMemSize(MAX_MEM_SIZE + 4096, 'big')).toThrow('--mem big is too large: at most 3G is supported');
    expect(() => checkMemSize(65536 + 4097, 'odd')).toThrow(/not a multiple of 4K/);
  });
});

describe('parseAddress', () => {
  it('accepts hex and decimal', () => {
    expect(parseAddress('0x7c00')).toBe(0x7c00);
    expect(parseAddress('0X7C00')).toBe(0x7c00);
    expect(parseAddress('31744')).toBe(0x7c00);
    expect(parseAddress('0')).toBe(0);
  });

  it('rejects garbage', () => {
    for (const bad of ['', '7c00h', '0x', '-5', '1e3', 'x7c00', '0x7g00']) {
      expect(() => parseAddress(bad), bad).toThrow(/^invalid --load-addr '.*': expected an address such as 0x7c00 or 31744$/);
    }
  });
});

describe('formatSize', () => {
  it('uses the largest unit that divides exactly', () => {
    expect(formatSize(16 * 1024 * 1024)).toBe('16M');
    expect(formatSize(3 * 1024 ** 3)).toBe('3G');
    expect(formatSize(1536)).toBe('1536 bytes');
    expect(formatSize(4096)).toBe('4K');
    expect(formatSize(0)).toBe('0 bytes');
  });
});
