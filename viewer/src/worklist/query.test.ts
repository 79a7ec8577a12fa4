import { describe, expect, it } from 'vitest';
import { EMPTY_FILTERS, FilterError, modalitiesKey, patientNameKey, studyDateRange, studySearchPath } from './query';

describe('patientNameKey', () => {
  it.each([
    ['doe', 'doe*'],
    ['  Doe^Jane ', 'Doe^Jane*'],
    ['Doe, Jane', 'Doe^Jane*'],
    ['Do?', 'Do?'],
    ['*ane', '*ane'],
    ['', ''],
    ['   ', ''],
  ])('maps %j to %j', (typed, key) => {
    expect(patientNameKey(typed)).toBe(key);
  });
});

describe('studyDateRange', () => {
  it('joins both ends', () => {
    expect(studyDateRange('2024-01-02', '2024-03-04')).toBe('20240102-20240304');
  });
  it('leaves the end open', () => {
    expect(studyDateRange('2024-01-02', '')).toBe('20240102-');
  });
  it('leaves the start open', () => {
    expect(studyDateRange('', '2024-03-04')).toBe('-20240304');
  });
  it('gives one date for one day', () => {
    expect(studyDateRange('2024-01-02', '2024-01-02')).toBe('20240102');
  });
  it('is empty without dates', () => {
    expect(studyDateRange('', '')).toBe('');
  });
  it('rejects a range that ends first', () => {
    expect(() => studyDateRange('2024-03-04', '2024-01-02')).toThrow(FilterError);
  });
  it('rejects a date that does not exist', () => {
    expect(() => studyDateRange('2023-02-29', '')).toThrow(/not a valid date/);
  });
  it('names the invalid field', () => {
    try {
      studyDateRange('', '2024/01/02');
      expect.unreachable();
    } catch (error) {
      expect((error as FilterError).field).toBe('dateTo');
    }
  });
});

describe('modalitiesKey', () => {
  it('upper-cases and joins codes', () => {
    expect(modalitiesKey(' ct, mr ')).toBe('CT,MR');
  });
  it('accepts spaces and backslashes', () => {
    expect(modalitiesKey('CT MR\\PT')).toBe('CT,MR,PT');
  });
});

describe('studySearchPath', () => {
  const paramsOf = (path: string) => new URL(path, 'http://x').searchParams;
  const FIRST = { limit: 1000, offset: 0 };

  it('builds every matching key', () => {
    const path = studySearchPath(
      { patientName: 'doe', patientId: ' P1 ', dateFrom: '2024-01-01', dateTo: '2024-01-31', modality: 'ct', accession: 'A7' },
      { limit: 10, offset: 0 },
    );
    expect(path.startsWith('/studies?')).toBe(true);
    const params = paramsOf(path);
    expect(params.get('PatientName')).toBe('doe*');
    expect(params.get('PatientID')).toBe('P1');
    expect(params.get('StudyDate')).toBe('20240101-20240131');
    expect(params.get('ModalitiesInStudy')).toBe('CT');
    expect(params.get('AccessionNumber')).toBe('A7');
  });

  it('leaves out empty filters', () => {
    const params = paramsOf(studySearchPath(EMPTY_FILTERS, FIRST));
    expect([...params.keys()].sort()).toEqual(['includefield', 'limit', 'offset']);
  });

  it('sends the limit and offset', () => {
    const params = paramsOf(studySearchPath(EMPTY_FILTERS, { limit: 1000, offset: 2000 }));
    expect(params.get('limit')).toBe('1000');
    expect(params.get('offset')).toBe('2000');
  });

  it('includes the columns', () => {
    const fields = paramsOf(studySearchPath(EMPTY_FILTERS, FIRST)).get('includefield')?.split(',');
    expect(fields).toContain('StudyDescription');
    expect(fields).toContain('ModalitiesInStudy');
    expect(fields).toContain('NumberOfStudyRelatedSeries');
    expect(fields).toContain('NumberOfStudyRelatedInstances');
  });

  it('percent-encodes name separators', () => {
    const path = studySearchPath({ ...EMPTY_FILTERS, patientName: 'Doe^J' }, FIRST);
    expect(path).toContain('PatientName=Doe%5EJ*');
  });
});
