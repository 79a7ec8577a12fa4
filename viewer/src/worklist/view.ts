// The worklist: a study search form, and a table of every matching study (up to a cap),
// sorted and paged in the browser.

import { type DicomwebClient, RequestError, SessionExpiredError } from '../contract';
import { formatPersonName } from '../dicomweb';
import { el, messagePanel, replaceChildren } from '../ui/dom';
import { type StudySearchResult, fetchAllStudies, truncationNotice } from './fetch';
import { EMPTY_FILTERS, FilterError, type WorklistFilters, studyDateRange } from './query';
import { WorklistResults } from './results';
import { type SortKey, type StudyRow, studyRoute } from './rows';

const FILTERS_KEY = 'cirrus.worklist.filters';
const SORT_ARROWS = { ascending: ' ▲', descending: ' ▼', none: '' };

interface Column {
  label: string;
  sortKey?: SortKey;
  sortTestId?: string;
  cell: (row: StudyRow) => string;
  numeric?: boolean;
}

const COLUMNS: Column[] = [
  { label: 'Patient name', sortKey: 'patientName', sortTestId: 'sort-patient-name', cell: (row) => formatPersonName(row.patientName) },
  { label: 'Patient ID', sortKey: 'patientId', sortTestId: 'sort-patient-id', cell: (row) => row.patientId },
  { label: 'Date', sortKey: 'date', sortTestId: 'sort-date', cell: (row) => formatDate(row.studyDate, row.studyTime) },
  { label: 'Modalities', sortKey: 'modalities', sortTestId: 'sort-modalities', cell: (row) => row.modalities.join(', ') },
  { label: 'Description', cell: (row) => row.description },
  { label: 'Accession', sortKey: 'accession', sortTestId: 'sort-accession', cell: (row) => row.accession },
  { label: 'Site', sortKey: 'site', sortTestId: 'sort-site', cell: (row) => row.site },
  { label: 'Series', cell: (row) => formatCount(row.seriesCount), numeric: true },
  { label: 'Instances', cell: (row) => formatCount(row.instanceCount), numeric: true },
];

const FIELDS: { key: keyof WorklistFilters; label: string; testId: string; type?: string; hint?: string }[] = [
  { key: 'patientName', label: 'Patient name', testId: 'worklist-patient-name', hint: 'Family name first; matches names that start with it, * and ? are wildcards' },
  { key: 'patientId', label: 'Patient ID', testId: 'worklist-patient-id' },
  { key: 'dateFrom', label: 'From', testId: 'worklist-date-from', type: 'date' },
  { key: 'dateTo', label: 'To', testId: 'worklist-date-to', type: 'date' },
  { key: 'modality', label: 'Modality', testId: 'worklist-modality', hint: 'Such as CT, or CT,MR for either' },
  { key: 'accession', label: 'Accession', testId: 'worklist-accession' },
];

/** Mounts the worklist into `container` and runs the search of the saved filters. Returns a
 * function that unmounts it and cancels its requests. */
export function mountWorklist(container: HTMLElement, client: DicomwebClient): () => void {
  const worklist = new Worklist(client);
  replaceChildren(container, worklist.root);
  void worklist.search();
  return () => worklist.dispose();
}

class Worklist {
  readonly root = el('main', { class: 'worklist', 'aria-labelledby': 'worklist-title' });
  private readonly inputs = new Map<keyof WorklistFilters, HTMLInputElement>();
  private readonly formMessage = el('p', { class: 'form-error', role: 'alert', id: 'worklist-form-message' });
  private readonly status = el('div', { class: 'worklist-status', 'aria-live': 'polite' });
  private readonly table = el('table', { class: 'worklist-table', 'data-testid': 'worklist-table' });
  private readonly warnings = el('p', { class: 'warning', hidden: true });
  private readonly truncated = el('p', { class: 'warning', 'data-testid': 'worklist-truncated', role: 'status', hidden: true });
  private readonly prev = el('button', { type: 'button', 'data-testid': 'worklist-prev', disabled: true }, ['Previous']);
  private readonly next = el('button', { type: 'button', 'data-testid': 'worklist-next', disabled: true }, ['Next']);
  private readonly pageText = el('span', { 'data-testid': 'worklist-page', 'aria-live': 'polite' });
  private readonly results = new WorklistResults();
  private controller: AbortController | null = null;

  constructor(private readonly client: DicomwebClient) {
    const filters = loadFilters();
    const fields = FIELDS.map((field) => {
      const id = `filter-${field.key}`;
      const input = el('input', {
        id, name: field.key, type: field.type ?? 'text', 'data-testid': field.testId,
        value: filters[field.key], title: field.hint, spellcheck: 'false', autocomplete: 'off',
      });
      this.inputs.set(field.key, input);
      return el('div', { class: 'field' }, [el('label', { for: id }, [field.label]), input]);
    });
    const form = el('form', { class: 'worklist-filters', role: 'search', 'aria-label': 'Study search' }, [
      ...fields,
      el('div', { class: 'field actions' }, [
        el('button', { type: 'submit', class: 'primary', 'data-testid': 'worklist-search' }, ['Search']),
        el('button', { type: 'button', 'data-testid': 'worklist-clear' }, ['Clear'], { click: () => this.clear() }),
      ]),
    ], {
      submit: (event) => {
        event.preventDefault();
        void this.search();
      },
    });
    this.prev.addEventListener('click', () => this.goTo(this.results.page - 1));
    this.next.addEventListener('click', () => this.goTo(this.results.page + 1));
    this.root.append(
      el('h1', { id: 'worklist-title', class: 'visually-hidden' }, ['Worklist']),
      form,
      this.formMessage,
      this.truncated,
      this.warnings,
      this.status,
      el('div', { class: 'table-scroll' }, [this.table]),
      el('nav', { class: 'paging', 'aria-label': 'Pages' }, [this.prev, this.pageText, this.next]),
    );
    this.renderTable();
  }

  dispose(): void {
    this.controller?.abort();
  }

  private filters(): WorklistFilters {
    const filters = { ...EMPTY_FILTERS };
    for (const [key, input] of this.inputs) filters[key] = input.value;
    return filters;
  }

  private clear(): void {
    for (const input of this.inputs.values()) input.value = '';
    this.inputs.get('patientName')?.focus();
    void this.search();
  }

  /** Searches for every study of the form's filters, up to MAX_STUDIES, and shows the first
   * page in the current order. A new search cancels the one still running. */
  async search(): Promise<void> {
    const filters = this.filters();
    try {
      studyDateRange(filters.dateFrom, filters.dateTo);
    } catch (error) {
      if (!(error instanceof FilterError)) throw error;
      this.showInvalidFilters(error);
      return;
    }
    this.formMessage.textContent = '';
    saveFilters(filters);
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.showStatus(el('p', { 'data-testid': 'worklist-loading', role: 'status' }, ['Searching…']));
    this.table.setAttribute('aria-busy', 'true');
    try {
      const result = await fetchAllStudies(this.client, filters, { signal: controller.signal });
      if (controller.signal.aborted) return;
      this.results.show(result.datasets);
      this.showWarnings(result);
      this.showPage();
    } catch (error) {
      if (controller.signal.aborted) return;
      this.showFailure(error);
    } finally {
      if (this.controller === controller) this.table.removeAttribute('aria-busy');
    }
  }

  private goTo(page: number): void {
    this.results.goTo(page);
    this.showPage();
  }

  private showPage(): void {
    this.pageText.textContent = this.results.range;
    this.prev.disabled = !this.results.hasPrevious;
    this.next.disabled = !this.results.hasNext;
    this.renderTable();
    this.showStatus(
      this.results.displayed.length === 0
        ? el('p', { 'data-testid': 'worklist-empty', role: 'status' }, ['No studies match.'])
        : null,
    );
  }

  /** Shows why the filters cannot be searched, and no rows, because rows of the previous
   * search would look like the result of these filters. A search still running is cancelled. */
  private showInvalidFilters(error: FilterError): void {
    this.controller?.abort();
    this.controller = null;
    this.table.removeAttribute('aria-busy');
    this.clearPage();
    this.showWarnings(null);
    this.showStatus(null);
    this.formMessage.textContent = error.message;
    this.inputs.get(error.field)?.focus();
  }

  private clearPage(): void {
    this.results.clear();
    this.renderTable();
    this.prev.disabled = true;
    this.next.disabled = true;
    this.pageText.textContent = '';
  }

  private showFailure(error: unknown): void {
    this.clearPage();
    this.showWarnings(null);
    if (error instanceof SessionExpiredError) {
      // The app shows the session-expired screen, and a retry would fail until a new sign-in.
      this.showStatus(null);
      return;
    }
    const reason = error instanceof RequestError || error instanceof Error ? error.message : String(error);
    const retry = el('button', { type: 'button', 'data-testid': 'worklist-retry' }, ['Retry'], {
      click: () => void this.search(),
    });
    const panel = messagePanel('worklist-error', 'The search failed', reason, [retry]);
    this.showStatus(panel);
    retry.focus();
  }

  private showStatus(content: HTMLElement | null): void {
    replaceChildren(this.status, content);
  }

  /** Shows the server's warnings, and a notice when the rows are not every matching study. */
  private showWarnings(result: StudySearchResult | null): void {
    const texts = result?.warnings ?? [];
    this.warnings.hidden = texts.length === 0;
    this.warnings.textContent = texts.length ? `The server warns: ${texts.join(' ')}` : '';
    const notice = result ? truncationNotice(result) : '';
    this.truncated.hidden = notice === '';
    this.truncated.textContent = notice;
  }

  private renderTable(): void {
    const rows = this.results.displayed;
    const head = el('thead', {}, [el('tr', {}, COLUMNS.map((column) => this.headerCell(column)))]);
    const body = el('tbody', {}, rows.map((row) => this.bodyRow(row)));
    replaceChildren(this.table, el('caption', { class: 'visually-hidden' }, ['Studies; a column header sorts every study found']), head, body);
  }

  private headerCell(column: Column): HTMLTableCellElement {
    const { sortKey } = column;
    if (!sortKey) return el('th', { scope: 'col', class: column.numeric ? 'numeric' : undefined }, [column.label]);
    const { sort } = this.results;
    const direction = sort.key === sortKey ? sort.direction : undefined;
    const button = el('button', {
      type: 'button', class: 'sort', 'data-testid': column.sortTestId,
      title: 'Sorts every study found; click again to reverse',
    }, [column.label, el('span', { 'aria-hidden': 'true' }, [SORT_ARROWS[direction ?? 'none']])], {
      click: () => {
        this.results.sortBy(sortKey);
        this.showPage();
        this.table.querySelector<HTMLButtonElement>(`[data-testid="${column.sortTestId}"]`)?.focus();
      },
    });
    return el('th', { scope: 'col', 'aria-sort': direction ?? 'none' }, [button]);
  }

  private bodyRow(row: StudyRow): HTMLTableRowElement {
    const open = () => location.assign(studyRoute(row));
    return el('tr', {
      'data-testid': 'worklist-row', 'data-study-uid': row.studyUid, 'data-site': row.site,
      tabindex: 0, class: 'study-row', title: 'Open the study (Enter); Up and Down move between studies',
    }, COLUMNS.map((column) => el('td', { class: column.numeric ? 'numeric' : undefined }, [column.cell(row)])), {
      click: open,
      keydown: (event) => onRowKey(event as KeyboardEvent, open),
    });
  }
}

/** Opens the row on Enter, and moves the focus to another row with the arrow keys, Home
 * and End. */
function onRowKey(event: KeyboardEvent, open: () => void): void {
  const row = event.currentTarget as HTMLTableRowElement;
  const targets: Record<string, Element | null | undefined> = {
    ArrowDown: row.nextElementSibling,
    ArrowUp: row.previousElementSibling,
    Home: row.parentElement?.firstElementChild,
    End: row.parentElement?.lastElementChild,
  };
  if (event.key === 'Enter') {
    open();
  } else if (event.key in targets) {
    event.preventDefault();
    (targets[event.key] as HTMLElement | null | undefined)?.focus();
  }
}

function formatDate(date: string, time: string): string {
  const day = /^\d{8}$/.test(date) ? `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}` : date;
  const clock = /^\d{4}/.test(time) ? ` ${time.slice(0, 2)}:${time.slice(2, 4)}` : '';
  return day + clock;
}

function formatCount(count: number | null): string {
  return count === null ? '' : String(count);
}

/** Returns the filters of this tab's last search: kept in sessionStorage, never in the URL. */
function loadFilters(): WorklistFilters {
  try {
    const saved = JSON.parse(sessionStorage.getItem(FILTERS_KEY) ?? '{}') as Partial<WorklistFilters>;
    const filters = { ...EMPTY_FILTERS };
    for (const key of Object.keys(EMPTY_FILTERS) as (keyof WorklistFilters)[]) {
      if (typeof saved[key] === 'string') filters[key] = saved[key];
    }
    return filters;
  } catch {
    return { ...EMPTY_FILTERS };
  }
}

function saveFilters(filters: WorklistFilters): void {
  sessionStorage.setItem(FILTERS_KEY, JSON.stringify(filters));
}
