import { describe, expect, it } from 'vitest';
import { isNativeYbrFull422, ybrFull422ToRgb } from './ybr';

describe('ybrFull422ToRgb', () => {
  it('shares Cb and Cr across a pixel pair', () => {
    // Grey (Y 100 and 200, neutral chroma), then pure red from YCbCr (76, 85, 255).
    const pixels = new Uint8Array([100, 200, 128, 128, 76, 76, 85, 255]);
    const rgb = ybrFull422ToRgb(pixels, 1, 4);
    expect(Array.from(rgb.slice(0, 6))).toEqual([100, 100, 100, 200, 200, 200]);
    expect(rgb[6]).toBeGreaterThan(250);
    expect(rgb[7]).toBeLessThan(5);
    expect(rgb[8]).toBeLessThan(5);
    expect(rgb.length).toBe(12);
  });

  it('rejects an odd number of columns', () => {
    expect(() => ybrFull422ToRgb(new Uint8Array(6), 1, 3)).toThrow('odd number of columns');
  });

  it('rejects a short frame', () => {
    expect(() => ybrFull422ToRgb(new Uint8Array(4), 2, 2)).toThrow('expected 8');
  });
});

describe('isNativeYbrFull422', () => {
  const format = { photometricInterpretation: 'YBR_FULL_422', bitsAllocated: 8, rows: 2, columns: 2 };

  it('matches an uncompressed frame of two bytes a pixel', () => {
    expect(isNativeYbrFull422(format, '1.2.840.10008.1.2.1', 8)).toBe(true);
  });

  it('skips compressed and already expanded frames', () => {
    expect(isNativeYbrFull422(format, '1.2.840.10008.1.2.4.50', 8)).toBe(false);
    expect(isNativeYbrFull422(format, '1.2.840.10008.1.2.1', 12)).toBe(false);
    expect(isNativeYbrFull422({ ...format, photometricInterpretation: 'YBR_FULL' }, '1.2.840.10008.1.2.1', 8)).toBe(false);
  });
});
