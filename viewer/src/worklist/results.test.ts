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

/** Returns `count` studies in the server's index order: the oldest first, one day apart. */
function studiesOldestFirst(count: number): DicomJson[] {
  return Array.from({ length: count }, (_, i) => {
    const day = new Date(Date.UTC(2020, 0, 1 + i)).toISOString().slice(0, 10).replaceAll('-', '');
    return study(`1.${i}`, day, '', `Patient^${String(count - i).padStart(3, '0')}`);
  });
}

const uids = (results: WorklistResults) => results.displayed.map((row) => row.studyUid);

describe('WorklistResults', () => {
  it('shows the newest study first by default', () => {
    const results = new WorklistResults();
    results.show([
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
    results.show([study('b', '20240101', '', 'Baker'), study('a', '20230101', '', 'Adams')]);

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

    results.show([study('z', '20240101', '', 'Zimmer'), study('y', '20230101', '', 'Young')]);

    expect(uids(results)).toEqual(['y', 'z']);
  });

  it('puts the newest of every page first', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(60));

    expect(results.displayed).toHaveLength(PAGE_SIZE);
    expect(uids(results)[0]).toBe('1.59');
    expect(uids(results)[PAGE_SIZE - 1]).toBe('1.35');
  });

  it('pages the sorted studies', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(60));

    results.goTo(1);
    expect(uids(results)[0]).toBe('1.34');
    expect(results.range).toBe('26-50 of 60');
    results.goTo(2);
    expect(uids(results)).toEqual(['1.9', '1.8', '1.7', '1.6', '1.5', '1.4', '1.3', '1.2', '1.1', '1.0']);
    expect(results.range).toBe('51-60 of 60');
    expect(results.hasNext).toBe(false);
    expect(results.hasPrevious).toBe(true);
  });

  it('sorts every study, not one page', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(60));

    results.sortBy('date');
    expect(uids(results)[0]).toBe('1.0');
    results.sortBy('patientName');
    // Patient^001 is the newest study, the last that the server returned.
    expect(uids(results)[0]).toBe('1.59');
    results.sortBy('patientName');
    expect(uids(results)[0]).toBe('1.0');
  });

  it('goes to the first page when the order changes', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(60));
    results.goTo(2);

    results.sortBy('patientName');

    expect(results.page).toBe(0);
    expect(results.range).toBe('1-25 of 60');
  });

  it('goes to the first page for a new search', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(60));
    results.goTo(1);

    results.show(studiesOldestFirst(30));

    expect(results.page).toBe(0);
    expect(results.range).toBe('1-25 of 30');
  });

  it('keeps the page within the pages that exist', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(30));

    results.goTo(5);
    expect(results.page).toBe(1);
    results.goTo(-1);
    expect(results.page).toBe(0);
  });

  it('clears the rows of the previous search', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(PAGE_SIZE + 1));
    expect(results.displayed).toHaveLength(PAGE_SIZE);
    expect(results.hasNext).toBe(true);

    results.clear();

    expect(results.displayed).toEqual([]);
    expect(results.hasNext).toBe(false);
    expect(results.hasPrevious).toBe(false);
    expect(results.range).toBe('0-0');
  });

  it('numbers one short page', () => {
    const results = new WorklistResults();
    results.show([study('1', '20240101'), study('2', '20240102')]);

    expect(results.range).toBe('1-2 of 2');
    expect(results.hasNext).toBe(false);
    expect(results.hasPrevious).toBe(false);
  });

  it('numbers a full last page', () => {
    const results = new WorklistResults();
    results.show(studiesOldestFirst(2 * PAGE_SIZE));

    expect(results.pageCount).toBe(2);
    results.goTo(1);
    expect(results.range).toBe(`${PAGE_SIZE + 1}-${2 * PAGE_SIZE} of ${2 * PAGE_SIZE}`);
    expect(results.hasNext).toBe(false);
  });
});
