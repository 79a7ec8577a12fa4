import { describe, expect, it } from 'vitest';
import { CT_WINDOW_PRESETS, rangeToWindow, windowToRange } from './presets';

describe('CT window presets', () => {
  it('has the values of the viewer contract', () => {
    const byId = Object.fromEntries(CT_WINDOW_PRESETS.map((p) => [p.id, [p.width, p.center]]));
    expect(byId).toEqual({
      'ct-soft-tissue': [400, 40],
      'ct-lung': [1500, -600],
      'ct-bone': [2000, 300],
      'ct-brain': [80, 40],
    });
  });

  it('maps a window to its linear range', () => {
    expect(windowToRange(400, 40)).toEqual({ lower: -160, upper: 239 });
  });

  it('round-trips every preset', () => {
    for (const preset of CT_WINDOW_PRESETS) {
      const { lower, upper } = windowToRange(preset.width, preset.center);
      expect(rangeToWindow(lower, upper)).toEqual({ width: preset.width, center: preset.center });
    }
  });
});
