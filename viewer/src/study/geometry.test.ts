import { describe, expect, it } from 'vitest';
import { type SliceGeometry, checkVolume, sliceNormal, sortSlices, mprRefusal } from './geometry';

const AXIAL = [1, 0, 0, 0, 1, 0];
const SAGITTAL = [0, 1, 0, 0, 0, -1];

function axial(z: number, instanceNumber?: number): SliceGeometry {
  return { position: [-100, -100, z], orientation: AXIAL, instanceNumber, rows: 64, columns: 64 };
}

describe('sortSlices', () => {
  it('orders axial slices head first by position, not instance number', () => {
    const slices = [axial(10, 1), axial(30, 2), axial(20, 3)];
    const sorted = sortSlices(slices, (s) => s);
    expect(sorted.map((s) => s.position![2])).toEqual([30, 20, 10]);
  });

  it('orders sagittal slices along their normal', () => {
    const normal = sliceNormal(SAGITTAL)!;
    expect(normal).toEqual([-1, 0, 0]);
    const slices = [5, -5, 0].map((x, i) => ({ position: [x, 0, 0], orientation: SAGITTAL, instanceNumber: i + 1 }));
    const sorted = sortSlices(slices, (s) => s);
    expect(sorted.map((s) => s.position[0])).toEqual([-5, 0, 5]);
  });

  it('falls back to instance number without positions', () => {
    const slices = [{ instanceNumber: 3 }, { instanceNumber: 1 }, { instanceNumber: 2 }];
    expect(sortSlices(slices, (s) => s).map((s) => s.instanceNumber)).toEqual([1, 2, 3]);
  });

  it('falls back to instance number for mixed orientations', () => {
    const slices = [axial(0, 2), { position: [0, 0, 5], orientation: SAGITTAL, instanceNumber: 1 }];
    expect(sortSlices(slices, (s) => s).map((s) => s.instanceNumber)).toEqual([1, 2]);
  });

  it('keeps the order of slices without keys', () => {
    const slices = [{ instanceNumber: undefined, id: 'a' }, { instanceNumber: 1, id: 'b' }, { instanceNumber: undefined, id: 'c' }];
    expect(sortSlices(slices, (s) => s).map((s) => s.id)).toEqual(['b', 'a', 'c']);
  });
});

describe('checkVolume', () => {
  const stack = [0, 2.5, 5, 7.5].map((z) => axial(z));

  it('accepts evenly spaced CT slices', () => {
    expect(checkVolume('CT', stack)).toEqual({ volume: true, spacing: 2.5 });
  });

  it('accepts MR', () => {
    expect(checkVolume('MR', stack).volume).toBe(true);
  });

  it('rejects other modalities', () => {
    const check = checkVolume('CR', stack);
    expect(check.volume).toBe(false);
  });

  it('rejects fewer than 3 slices', () => {
    expect(checkVolume('CT', stack.slice(0, 2)).volume).toBe(false);
  });

  it('rejects a gap in the spacing', () => {
    const gapped = [0, 2.5, 5, 10].map((z) => axial(z));
    const check = checkVolume('CT', gapped);
    expect(check).toEqual({ volume: false, reason: 'The slices are not evenly spaced.' });
  });

  it('rejects duplicate positions', () => {
    const check = checkVolume('CT', [axial(0), axial(0), axial(2.5)]);
    expect(check.volume).toBe(false);
  });

  it('rejects mixed orientations', () => {
    const mixed = [...stack.slice(0, 3), { ...axial(7.5), orientation: SAGITTAL }];
    expect(checkVolume('CT', mixed).volume).toBe(false);
  });

  it('rejects slices of different sizes', () => {
    const mixed = [...stack.slice(0, 3), { ...axial(7.5), rows: 128 }];
    expect(checkVolume('CT', mixed).volume).toBe(false);
  });

  it('rejects slices without positions', () => {
    expect(checkVolume('CT', [{ instanceNumber: 1 }, { instanceNumber: 2 }, { instanceNumber: 3 }]).volume).toBe(false);
  });
});

describe('mprRefusal', () => {
  const axial = [1, 0, 0, 0, 1, 0];
  const slices = [0, 1, 2].map((z) => ({ position: [0, 0, z], orientation: axial, rows: 4, columns: 4 }));
  const volume = { modality: 'CT', multiframe: false, geometry: slices, images: slices };

  it('accepts a complete volume', () => {
    expect(mprRefusal(volume, 0)).toBeUndefined();
  });

  it('refuses a volume with failed slices', () => {
    expect(mprRefusal(volume, 2)).toBe('The volume cannot be built: 2 of 3 slices failed to load.');
  });

  it('names a multi-frame instance by its frames', () => {
    const frames = Array.from({ length: 100 }, (_, i) => ({ instanceNumber: i + 1 }));
    const message = mprRefusal({ modality: 'CT', multiframe: true, geometry: frames, images: frames }, 0);
    expect(message).toContain('multi-frame instance (100 frames)');
    expect(message).not.toContain('has 0');
  });
});
