import { describe, expect, it } from 'vitest';
import type { DicomJson } from '../contract';
import { describeMeasurement, measurementOf } from './measurement';

const ct: DicomJson = {
  '00080060': { vr: 'CS', Value: ['CT'] },
  '00281052': { vr: 'DS', Value: [-1024] },
  '00281053': { vr: 'DS', Value: [1] },
};
const mr: DicomJson = { '00080060': { vr: 'CS', Value: ['MR'] } };

function annotation(toolName: string, stats: Record<string, number | string | null>, imageId = 'cirrus:/a/frames/1') {
  return {
    annotationUID: 'u1',
    metadata: { toolName, referencedImageId: imageId },
    data: { cachedStats: { [`imageId:${imageId}`]: stats } },
  };
}

describe('measurementOf', () => {
  it('reads a length in mm', () => {
    const measurement = measurementOf(annotation('Length', { length: 12.5 }), () => ct);
    expect(measurement).toMatchObject({ kind: 'length', value: 12.5, unit: 'mm' });
  });

  it('reads an angle in degrees', () => {
    const measurement = measurementOf(annotation('Angle', { angle: 90 }), () => ct);
    expect(measurement).toMatchObject({ kind: 'angle', value: 90, unit: '°' });
  });

  it('gives a CT ROI in HU', () => {
    const measurement = measurementOf(annotation('RectangleROI', { mean: 40, stdDev: 2 }), () => ct);
    expect(measurement).toMatchObject({ kind: 'rectangle-roi', value: 40, std: 2, unit: 'HU' });
  });

  it('gives an MR ROI no unit', () => {
    const measurement = measurementOf(annotation('RectangleROI', { mean: 400, stdDev: 20 }), () => mr);
    expect(measurement?.unit).toBe('');
  });

  it('ignores other tools', () => {
    expect(measurementOf(annotation('Probe', {}), () => ct)).toBeUndefined();
  });

  it('leaves the value empty until stats exist', () => {
    const item = { annotationUID: 'u2', metadata: { toolName: 'Length', referencedImageId: 'x' }, data: {} };
    expect(measurementOf(item, () => ct)?.value).toBeUndefined();
  });
});

describe('describeMeasurement', () => {
  it('shows an ROI mean, deviation and unit', () => {
    const text = describeMeasurement({ uid: 'u', kind: 'rectangle-roi', imageId: 'x', value: 40.04, std: 2.26, unit: 'HU' }, 3);
    expect(text).toBe('ROI mean 40 ± 2.3 HU (image 3)');
  });

  it('shows a length with mm', () => {
    expect(describeMeasurement({ uid: 'u', kind: 'length', imageId: 'x', value: 16.79, unit: 'mm' }, 1)).toBe('Length 16.8 mm (image 1)');
  });
});

describe('measurementOf while drawing', () => {
  it('reads a null angle as measuring', () => {
    const measurement = measurementOf(annotation('Angle', { angle: null }), () => ct);
    expect(measurement?.value).toBeUndefined();
    expect(describeMeasurement(measurement!, 1)).toBe('angle: measuring… (image 1)');
  });
});

describe('rectangle ROI outside the image', () => {
  it('reads NaN statistics as outside', () => {
    const measurement = measurementOf(annotation('RectangleROI', { mean: Number.NaN, stdDev: Number.NaN }), () => ct);
    expect(measurement?.outside).toBe(true);
    expect(measurement?.value).toBeUndefined();
    expect(measurement?.std).toBeUndefined();
    expect(describeMeasurement(measurement!, 111)).toBe('ROI not inside the image (image 111)');
  });

  it('reads statistics without a mean as outside', () => {
    const measurement = measurementOf(annotation('RectangleROI', {}), () => ct);
    expect(measurement?.outside).toBeUndefined();
    const cornerOutside = measurementOf(annotation('RectangleROI', { area: 4 }), () => ct);
    expect(cornerOutside?.outside).toBe(true);
  });

  it('reads a null mean as outside', () => {
    const measurement = measurementOf(annotation('RectangleROI', { mean: null, stdDev: null }), () => ct);
    expect(measurement?.outside).toBe(true);
  });

  it('keeps a ROI inside the image', () => {
    const measurement = measurementOf(annotation('RectangleROI', { mean: 0, stdDev: 0 }), () => ct);
    expect(measurement?.outside).toBeUndefined();
    expect(describeMeasurement(measurement!, 1)).toBe('ROI mean 0 ± 0 HU (image 1)');
  });
});
