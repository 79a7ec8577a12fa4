import { describe, expect, it } from 'vitest';
import type { DicomJson } from '../contract';
import { cineFrameRate } from './cine';
import { pixelValueUnit } from './units';

function dataset(values: Record<string, [string, unknown]>): DicomJson {
  return Object.fromEntries(Object.entries(values).map(([tag, [vr, value]]) => [tag, { vr, Value: [value] }]));
}

describe('pixelValueUnit', () => {
  it('gives HU for rescaled CT', () => {
    expect(pixelValueUnit(dataset({ '00080060': ['CS', 'CT'], '00281052': ['DS', -1024], '00281053': ['DS', 1] }))).toBe('HU');
  });

  it('gives no unit for CT without a rescale', () => {
    expect(pixelValueUnit(dataset({ '00080060': ['CS', 'CT'] }))).toBe('');
  });

  it('gives the PET Units', () => {
    expect(pixelValueUnit(dataset({ '00080060': ['CS', 'PT'], '00541001': ['CS', 'BQML'] }))).toBe('BQML');
  });

  it('gives no unit for MR', () => {
    expect(pixelValueUnit(dataset({ '00080060': ['CS', 'MR'] }))).toBe('');
  });

  it('gives a RescaleType other than US', () => {
    const instance = dataset({ '00080060': ['CS', 'XA'], '00281053': ['DS', 2], '00281054': ['LO', 'OD'] });
    expect(pixelValueUnit(instance)).toBe('OD');
  });

  it('ignores RescaleType US', () => {
    const instance = dataset({ '00080060': ['CS', 'XA'], '00281053': ['DS', 2], '00281054': ['LO', 'US'] });
    expect(pixelValueUnit(instance)).toBe('');
  });
});

describe('cineFrameRate', () => {
  it('prefers CineRate', () => {
    expect(cineFrameRate(dataset({ '00180040': ['IS', 25], '00181063': ['DS', 80] }))).toBe(25);
  });

  it('derives the rate from FrameTime', () => {
    expect(cineFrameRate(dataset({ '00181063': ['DS', 80] }))).toBe(12.5);
  });

  it('defaults to 10 frames per second', () => {
    expect(cineFrameRate(dataset({}))).toBe(10);
    expect(cineFrameRate(undefined)).toBe(10);
  });

  it('ignores a zero FrameTime', () => {
    expect(cineFrameRate(dataset({ '00181063': ['DS', 0] }))).toBe(10);
  });
});
