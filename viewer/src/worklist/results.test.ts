import { describe, expect, it } from 'vitest';
import type { DicomJson } from '../contract';
import { PAGE_SIZE } from './query';
import { WorklistResults } from './results';

function study(uid: string, date: string, time = '', name = ''): DicomJson {
  return {
    '0020000D': { vr: 'UI', Value: [uid] },
    '00080020': date ? { vr: 'DA', Value: [date] } : { vr: 'DA' },
    '00080030': time ? { vr: 'TM', Value: [time] } : { vr: 'TM' },
    '00100010': name ? { vr: 'PN', Value: [{ Alphabetic: name }] } : { vr: 'PN' },
  };
}

const uids = (results: WorklistResults) => results.displayed.map((row) => row.studyUid);

describe('WorklistResults', () => {
  it('shows the newest study first by default', () => {
    const results = new WorklistResults();
    results.show(0, [
      study('old', '20230105'),
      study('undated', ''),
      study('new-morning', '20240301', '0815'),
      study('new-evening', '20240301', '1930'),
      study('middle', '20231120'),
    ]);

    expect(uids(results)).toEqual(['new-evening', 'new-morning', 'middle', 'old', 'undated']);
  });

  it('sorts by the column the user picks', () => {
    const results = new WorklistResults();
    results.show(0, [study('b', '20240101', '', 'Baker'), study('a', '20230101', '', 'Adams')]);

    results.sortBy('patientName');
    expect(uids(results)).toEqual(['a', 'b']);
    results.sortBy('date');
    expect(uids(results)).toEqual(['a', 'b']);
    results.sortBy('date');
    expect(uids(results)).toEqual(['b', 'a']);
  });

  it('keeps the picked order for the next search', () => {
    const results = new WorklistResults();
    results.sortBy('patientName');

    results.show(0, [study('z', '20240101', '', 'Zimmer'), study('y', '20230101', '', 'Young')]);

    expect(uids(results)).toEqual(['y', 'z']);
  });

  it('clears the rows of the previous search', () => {
    const results = new WorklistResults();
    const datasets = Array.from({ length: PAGE_SIZE + 1 }, (_, i) => study(`1.${i}`, '20240101'));
    results.show(1, datasets);
    expect(results.displayed).toHaveLength(PAGE_SIZE);
    expect(results.hasNext).toBe(true);

    results.clear();

    expect(results.displayed).toEqual([]);
    expect(results.hasNext).toBe(false);
    expect(results.range).toBe('0-0');
  });

  it('numbers the studies of a page', () => {
    const results = new WorklistResults();
    results.show(1, [study('1', '20240101'), study('2', '20240102')]);

    expect(results.range).toBe(`${PAGE_SIZE + 1}-${PAGE_SIZE + 2}`);
  });
});
