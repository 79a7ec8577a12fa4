import { describe, expect, it } from 'vitest';
import { Tag, withLoaderDefaults } from './dicomJson';

describe('withLoaderDefaults', () => {
  it('adds an empty Modality when it is absent', () => {
    const instance = { [Tag.Rows]: { vr: 'US', Value: [8] } };
    const prepared = withLoaderDefaults(instance);
    expect(prepared[Tag.Modality]).toEqual({ vr: 'CS', Value: [''] });
    expect(prepared[Tag.Rows]).toEqual({ vr: 'US', Value: [8] });
    expect(instance[Tag.Modality as keyof typeof instance]).toBeUndefined();
  });

  it('adds Modality when it has no value', () => {
    expect(withLoaderDefaults({ [Tag.Modality]: { vr: 'CS' } })[Tag.Modality]).toEqual({ vr: 'CS', Value: [''] });
  });

  it('keeps a present Modality', () => {
    const instance = { [Tag.Modality]: { vr: 'CS', Value: ['CT'] } };
    expect(withLoaderDefaults(instance)).toBe(instance);
  });
});
