import { describe, expect, it } from 'vitest';
import type { DicomJson } from '../contract';
import { buildStack, compareSeries, hasThumbnail } from './series';

function instance(sop: string, fields: Record<string, [string, unknown[]]>): DicomJson {
  const data: DicomJson = { '00080018': { vr: 'UI', Value: [sop] }, '00280010': { vr: 'US', Value: [64] } };
  for (const [tag, [vr, value]] of Object.entries(fields)) {
    data[tag] = { vr, Value: value };
  }
  return data;
}

const study = { site: null, studyUid: '1.2' };

describe('buildStack', () => {
  it('orders single-frame instances by position', () => {
    const instances = [10, 30, 20].map((z, i) =>
      instance(`1.${i}`, {
        '00080060': ['CS', ['CT']],
        '00200013': ['IS', [i + 1]],
        '00200032': ['DS', [0, 0, z]],
        '00200037': ['DS', [1, 0, 0, 0, 1, 0]],
      }),
    );
    const stack = buildStack(study, '9', instances);
    expect(stack.images.map((image) => image.sopInstanceUid)).toEqual(['1.1', '1.2', '1.0']);
    expect(stack.modality).toBe('CT');
    expect(stack.multiframe).toBe(false);
  });

  it('gives one image per frame of a multi-frame instance', () => {
    const stack = buildStack(study, '9', [instance('5.5', { '00280008': ['IS', [3]] })]);
    expect(stack.images.map((image) => image.path)).toEqual([
      '/studies/1.2/series/9/instances/5.5/frames/1',
      '/studies/1.2/series/9/instances/5.5/frames/2',
      '/studies/1.2/series/9/instances/5.5/frames/3',
    ]);
    expect(stack.multiframe).toBe(true);
  });

  it('leaves out instances without pixels', () => {
    const report: DicomJson = { '00080018': { vr: 'UI', Value: ['7.7'] } };
    const stack = buildStack(study, '9', [report, instance('8.8', {})]);
    expect(stack.images.map((image) => image.sopInstanceUid)).toEqual(['8.8']);
  });
});

describe('compareSeries', () => {
  it('orders by SeriesNumber with unnumbered series last', () => {
    const series = [
      { seriesUid: 'c', modality: 'CT', description: '' },
      { seriesUid: 'b', modality: 'CT', description: '', seriesNumber: 10 },
      { seriesUid: 'a', modality: 'CT', description: '', seriesNumber: 2 },
    ];
    expect([...series].sort(compareSeries).map((s) => s.seriesUid)).toEqual(['a', 'b', 'c']);
  });
});

describe('hasThumbnail', () => {
  it('skips series without images', () => {
    for (const modality of ['SR', 'ECG', 'RTPLAN']) {
      expect(hasThumbnail(modality)).toBe(false);
    }
  });

  it('keeps image series and an unknown modality', () => {
    for (const modality of ['CT', 'OT', 'RTDOSE', '']) {
      expect(hasThumbnail(modality)).toBe(true);
    }
  });
});
