import { describe, expect, it } from 'vitest';
import { parseRoute } from './router';

describe('parseRoute', () => {
  it.each(['', '#', '#/'])('opens the worklist for %j', (hash) => {
    expect(parseRoute(hash)).toEqual({ kind: 'worklist' });
  });
  it('reads a study', () => {
    expect(parseRoute('#/studies/1.2.3')).toEqual({ kind: 'study', site: null, studyUid: '1.2.3' });
  });
  it('reads a study of a site', () => {
    expect(parseRoute('#/sites/north/studies/1.2.3')).toEqual({ kind: 'study', site: 'north', studyUid: '1.2.3' });
  });
  it('reads an MPR route', () => {
    expect(parseRoute('#/sites/north/studies/1.2.3/mpr/4.5')).toEqual({ kind: 'study', site: 'north', studyUid: '1.2.3', mprSeriesUid: '4.5' });
    expect(parseRoute('#/studies/1.2.3/mpr/4.5')).toEqual({ kind: 'study', site: null, studyUid: '1.2.3', mprSeriesUid: '4.5' });
  });
  it.each(['#/patients/doe', '#/studies/', '#/sites/north', '#/studies/%E0%A4%A'])('rejects %j', (hash) => {
    expect(parseRoute(hash).kind).toBe('not-found');
  });
});
