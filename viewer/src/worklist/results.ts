// The studies of the last search, sorted and paged in the browser, apart from the DOM, so that
// they can be tested.

import type { DicomJson } from '../contract';
import { PAGE_SIZE } from './query';
import { DEFAULT_SORT, type SortKey, type StudyRow, type StudySort, nextSort, sortRows, studyRow } from './rows';

/** Every study of the last search, the order in which they are shown and the page on screen. */
export class WorklistResults {
  private rows: StudyRow[] = [];
  private sorted: StudyRow[] = [];
  page = 0;
  sort: StudySort = { ...DEFAULT_SORT };

  /** Keeps the studies of a new search, sorted in the current order, and shows the first page. */
  show(datasets: readonly DicomJson[]): void {
    this.rows = datasets.map(studyRow);
    this.page = 0;
    this.sorted = sortRows(this.rows, this.sort.key, this.sort.direction);
  }

  /** Drops the rows, so that none of an earlier search stays on screen under an error. */
  clear(): void {
    this.rows = [];
    this.sorted = [];
    this.page = 0;
  }

  /** Sorts every study by `key` (see nextSort) and goes back to the first page. */
  sortBy(key: SortKey): void {
    this.sort = nextSort(this.sort, key);
    this.sorted = sortRows(this.rows, this.sort.key, this.sort.direction);
    this.page = 0;
  }

  /** Shows page `page` (0-based), kept within the pages that exist. */
  goTo(page: number): void {
    this.page = Math.max(0, Math.min(page, this.pageCount - 1));
  }

  get total(): number {
    return this.rows.length;
  }

  get pageCount(): number {
    return Math.max(1, Math.ceil(this.rows.length / PAGE_SIZE));
  }

  get hasPrevious(): boolean {
    return this.page > 0;
  }

  get hasNext(): boolean {
    return this.page < this.pageCount - 1;
  }

  /** The studies of the current page, in the current order. */
  get displayed(): StudyRow[] {
    const first = this.page * PAGE_SIZE;
    return this.sorted.slice(first, first + PAGE_SIZE);
  }

  /** The 1-based range of the page's studies and the total, such as "26-50 of 134", or "0-0"
   * when there are none. */
  get range(): string {
    const shown = this.displayed.length;
    if (shown === 0) return '0-0';
    const first = this.page * PAGE_SIZE;
    return `${first + 1}-${first + shown} of ${this.total}`;
  }
}
