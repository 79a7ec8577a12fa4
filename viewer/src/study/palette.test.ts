import { describe, expect, it } from 'vitest';
import type { DicomJson, DicomwebClient } from '../contract';
import { decodeLutData, needsPaletteData, withPaletteData } from './palette';

const noClient = {} as DicomwebClient;

describe('decodeLutData', () => {
  it('reads 16-bit little endian entries', () => {
    expect(decodeLutData(new Uint8Array([1, 0, 0, 1, 255, 255]), [3, 0, 16])).toEqual([1, 256, 65535]);
  });

  it('reads one byte per entry', () => {
    expect(decodeLutData(new Uint8Array([7, 8]), [2, 0, 8])).toEqual([7, 8]);
  });

  it('rejects data shorter than the descriptor', () => {
    expect(() => decodeLutData(new Uint8Array([1]), [4, 0, 16])).toThrow(/too few/);
  });
});

describe('withPaletteData', () => {
  const descriptor = { vr: 'US', Value: [2, 0, 16] };
  const inline = { vr: 'OW', InlineBinary: btoa(String.fromCharCode(0, 1, 255, 0)) };
  const instance: DicomJson = {
    '00281101': descriptor,
    '00281102': descriptor,
    '00281103': descriptor,
    '00281201': inline,
    '00281202': inline,
    '00281203': inline,
  };

  it('decodes InlineBinary palettes', async () => {
    expect(needsPaletteData(instance)).toBe(true);
    const prepared = await withPaletteData(instance, noClient);
    expect(prepared['00281201'].Value).toEqual([256, 255]);
    expect(prepared['00281203'].Value).toEqual([256, 255]);
    expect(needsPaletteData(prepared)).toBe(false);
  });

  it('leaves an instance without palettes alone', () => {
    expect(needsPaletteData({ '00280004': { vr: 'CS', Value: ['MONOCHROME2'] } })).toBe(false);
  });
});
