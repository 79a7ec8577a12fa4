import { describe, expect, it } from 'vitest';
import type { DicomJson } from '../contract';
import { DEFAULT_SORT, type StudyRow, nextSort, siteOfRetrieveUrl, sortRows, studyRoute, studyRow, timeSortValue } from './rows';

const STUDY: DicomJson = {
  '0020000D': { vr: 'UI', Value: ['1.2.3'] },
  '00081190': { vr: 'UR', Value: ['http://127.0.0.1:8080/dicomweb/sites/north/studies/1.2.3'] },
  '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane' }] },
  '00100020': { vr: 'LO', Value: ['P1'] },
  '00080020': { vr: 'DA', Value: ['20240102'] },
  '00080030': { vr: 'TM', Value: ['101500'] },
  '00080061': { vr: 'CS', Value: ['CT', 'SR'] },
  '00081030': { vr: 'LO', Value: ['Chest'] },
  '00080050': { vr: 'SH' },
  '00201206': { vr: 'IS', Value: [3] },
  '00201208': { vr: 'IS', Value: ['120'] },
};

describe('studyRow', () => {
  it('reads every column', () => {
    expect(studyRow(STUDY)).toEqual({
      studyUid: '1.2.3',
      site: 'north',
      patientName: 'Doe^Jane',
      patientId: 'P1',
      studyDate: '20240102',
      studyTime: '101500',
      modalities: ['CT', 'SR'],
      description: 'Chest',
      accession: '',
      seriesCount: 3,
      instanceCount: 120,
    });
  });
});

describe('siteOfRetrieveUrl', () => {
  it('reads the site of an absolute URL', () => {
    expect(siteOfRetrieveUrl('https://api.example/prod/sites/south/studies/1.2')).toBe('south');
  });
  it('reads the site of a relative URL', () => {
    expect(siteOfRetrieveUrl('/dicomweb/sites/north/studies/1.2')).toBe('north');
  });
  it('decodes an escaped site', () => {
    expect(siteOfRetrieveUrl('/dicomweb/sites/a%2Db/studies/1.2')).toBe('a-b');
  });
  it('is empty without a site', () => {
    expect(siteOfRetrieveUrl('http://127.0.0.1:8080/dicomweb/studies/1.2')).toBe('');
  });
  it('is empty without a URL', () => {
    expect(siteOfRetrieveUrl('')).toBe('');
  });
  it('ignores a site in the query', () => {
    expect(siteOfRetrieveUrl('/dicomweb/studies/1.2?x=/sites/a/studies/')).toBe('');
  });
});

describe('studyRoute', () => {
  it('names the site', () => {
    expect(studyRoute({ site: 'north', studyUid: '1.2.3' })).toBe('#/sites/north/studies/1.2.3');
  });
  it('leaves out an empty site', () => {
    expect(studyRoute({ site: '', studyUid: '1.2.3' })).toBe('#/studies/1.2.3');
  });
});

describe('sortRows', () => {
  const row = (studyUid: string, patientName: string, studyDate: string, site = ''): StudyRow => ({
    ...studyRow({}),
    studyUid,
    patientName,
    studyDate,
    site,
  });
  const rows = [row('1', 'doe^jane', '20240301'), row('2', 'Adams', '20231201', 'b'), row('3', '', '20240101', 'a'), row('4', 'Doe^Jane', '20240201')];
  const uids = (sorted: StudyRow[]) => sorted.map((r) => r.studyUid);

  it('sorts names ascending, case-insensitively and stably', () => {
    expect(uids(sortRows(rows, 'patientName', 'ascending'))).toEqual(['2', '1', '4', '3']);
  });
  it('sorts names descending with empty ones last', () => {
    expect(uids(sortRows(rows, 'patientName', 'descending'))).toEqual(['1', '4', '2', '3']);
  });
  it('sorts dates', () => {
    expect(uids(sortRows(rows, 'date', 'descending'))).toEqual(['1', '4', '3', '2']);
  });
  it('sorts sites with empty ones last', () => {
    expect(uids(sortRows(rows, 'site', 'ascending'))).toEqual(['3', '2', '1', '4']);
  });
  it('leaves the input unchanged', () => {
    sortRows(rows, 'date', 'ascending');
    expect(uids(rows)).toEqual(['1', '2', '3', '4']);
  });
  it('sorts times of any precision in time order', () => {
    const timed = [row('a', '', '20240301'), row('b', '', '20240301'), row('c', '', '20240301'), row('d', '', '20240301')].map((r, i) => ({
      ...r,
      studyTime: ['2300', '081500.5', '09', '08:15:00.25'][i],
    }));
    expect(uids(sortRows(timed, 'date', 'descending'))).toEqual(['a', 'c', 'b', 'd']);
  });
  it('puts a study with a time but no date last', () => {
    const timed = [{ ...row('a', '', ''), studyTime: '235959' }, row('b', '', '19990101')];
    expect(uids(sortRows(timed, 'date', 'descending'))).toEqual(['b', 'a']);
    expect(uids(sortRows(timed, 'date', 'ascending'))).toEqual(['b', 'a']);
  });
  it('compares numbers in IDs by value', () => {
    const ids = [row('a', '', ''), row('b', '', ''), row('c', '', '')].map((r, i) => ({ ...r, patientId: ['P10', 'P9', 'P100'][i] }));
    expect(uids(sortRows(ids, 'patientId', 'ascending'))).toEqual(['b', 'a', 'c']);
  });
});

describe('nextSort', () => {
  it('starts with the newest study first', () => {
    expect(DEFAULT_SORT).toEqual({ key: 'date', direction: 'descending' });
  });
  it('reverses the current column', () => {
    expect(nextSort(DEFAULT_SORT, 'date')).toEqual({ key: 'date', direction: 'ascending' });
    expect(nextSort({ key: 'date', direction: 'ascending' }, 'date')).toEqual({ key: 'date', direction: 'descending' });
  });
  it('sorts another column ascending', () => {
    expect(nextSort(DEFAULT_SORT, 'patientName')).toEqual({ key: 'patientName', direction: 'ascending' });
  });
});

describe('timeSortValue', () => {
  it.each([
    ['', '000000000000'],
    ['08', '080000000000'],
    ['0815', '081500000000'],
    ['081530.25', '081530250000'],
    ['08:15:30', '081530000000'],
    ['081530.1234567', '081530123456'],
  ])('maps %j to %j', (time, value) => {
    expect(timeSortValue(time)).toBe(value);
  });
});
