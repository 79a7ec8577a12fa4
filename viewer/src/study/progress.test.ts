import { describe, expect, it } from 'vitest';
import { allSettled, describeFailures, describeProgress } from './progress';

describe('load progress', () => {
  it('counts failed images as settled', () => {
    expect(allSettled({ count: 3, loaded: 1, failed: 2 })).toBe(true);
    expect(allSettled({ count: 3, loaded: 1, failed: 1 })).toBe(false);
  });

  it('describes loading and failures', () => {
    expect(describeProgress({ count: 10, loaded: 3, failed: 2 })).toBe('Loaded 3 of 10, 2 failed');
    expect(describeProgress({ count: 10, loaded: 8, failed: 2 })).toBe('2 failed');
    expect(describeProgress({ count: 10, loaded: 10, failed: 0 })).toBe('');
  });

  it('reports failures only once all settled', () => {
    expect(describeFailures({ count: 220, loaded: 1, failed: 200 }, 'not found')).toBeUndefined();
    expect(describeFailures({ count: 220, loaded: 1, failed: 219 }, 'not found')).toBe('219 of 220 images could not be loaded: not found');
    expect(describeFailures({ count: 2, loaded: 0, failed: 2 }, undefined)).toBe('None of the 2 images could be loaded.');
    expect(describeFailures({ count: 2, loaded: 2, failed: 0 }, undefined)).toBeUndefined();
  });
});
