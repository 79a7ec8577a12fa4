import { describe, expect, it } from 'vitest';
import { MAX_ZOOM, MIN_ZOOM, clampedZoom } from './zoom';

describe('clampedZoom', () => {
  it('limits a zoom beyond the range', () => {
    expect(clampedZoom(3000)).toBe(MAX_ZOOM);
    expect(clampedZoom(0.001)).toBe(MIN_ZOOM);
  });

  it('leaves a zoom within the range', () => {
    expect(clampedZoom(1)).toBeUndefined();
    expect(clampedZoom(MAX_ZOOM)).toBeUndefined();
    expect(clampedZoom(0.187)).toBeUndefined();
  });
});
