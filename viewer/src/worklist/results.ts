// The page of studies that the worklist shows, apart from the DOM, so that it can be tested.

import type { DicomJson } from '../contract';
import { PAGE_SIZE } from './query';
import { DEFAULT_SORT, type SortKey, type StudyRow, type StudySort, nextSort, sortRows, studyRow } from './rows';

/** The rows of the last search, its page number and the order in which the rows are shown. */
export class WorklistResults {
  private rows: StudyRow[] = [];
  page = 0;
  hasNext = false;
  sort: StudySort = { ...DEFAULT_SORT };

  /** Keeps page `page` (0-based) of a search that requested one study more than a page. */
  show(page: number, datasets: readonly DicomJson[]): void {
    this.page = page;
    this.rows = datasets.slice(0, PAGE_SIZE).map(studyRow);
    this.hasNext = datasets.length > PAGE_SIZE;
  }

  /** Drops the rows, so that none of an earlier search stays on screen under an error. */
  clear(): void {
    this.rows = [];
    this.hasNext = false;
  }

  sortBy(key: SortKey): void {
    this.sort = nextSort(this.sort, key);
  }

  get displayed(): StudyRow[] {
    return sortRows(this.rows, this.sort.key, this.sort.direction);
  }

  /** The 1-based range of the page's studies, such as "26-50", or "0-0" for an empty page. */
  get range(): string {
    const first = this.page * PAGE_SIZE;
    return this.rows.length ? `${first + 1}-${first + this.rows.length}` : '0-0';
  }
}
