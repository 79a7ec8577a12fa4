// QIDO-RS study searches of the worklist: filters to query parameters.

/** The worklist's search form. Dates are the YYYY-MM-DD values of <input type="date">. */
export interface WorklistFilters {
  patientName: string;
  patientId: string;
  dateFrom: string;
  dateTo: string;
  modality: string;
  accession: string;
}

export const EMPTY_FILTERS: WorklistFilters = {
  patientName: '',
  patientId: '',
  dateFrom: '',
  dateTo: '',
  modality: '',
  accession: '',
};

/** The number of studies that one page of the worklist shows. */
export const PAGE_SIZE = 25;

/** The attributes that the worklist's columns show, beyond the study's default ones. */
export const INCLUDE_FIELDS = [
  'StudyDescription',
  'ModalitiesInStudy',
  'NumberOfStudyRelatedSeries',
  'NumberOfStudyRelatedInstances',
];

/** A filter value that cannot become a valid query, such as a date range that ends first. */
export class FilterError extends Error {
  constructor(
    readonly field: keyof WorklistFilters,
    message: string,
  ) {
    super(message);
    this.name = 'FilterError';
  }
}

/** Returns the PatientName matching key for what the user typed. A name without wildcards
 * becomes a prefix match ("doe" to "doe*"), and "Doe, Jane" becomes "Doe^Jane*", because
 * Cirrus matches each name component group whole, case-insensitively, with * and ?. */
export function patientNameKey(typed: string): string {
  let name = typed.trim();
  if (name === '') return '';
  name = name.replace(/\s*,\s*/g, '^');
  return /[*?]/.test(name) ? name : `${name}*`;
}

/** Returns the StudyDate range key (YYYYMMDD-YYYYMMDD, open at either end) for two
 * YYYY-MM-DD dates, '' when both are empty. Raises FilterError for an invalid date or a
 * range that ends before it starts. */
export function studyDateRange(from: string, to: string): string {
  const start = compactDate(from, 'dateFrom');
  const end = compactDate(to, 'dateTo');
  if (start && end && start > end) {
    throw new FilterError('dateTo', 'The end date is before the start date.');
  }
  if (!start && !end) return '';
  if (start === end) return start;
  return `${start}-${end}`;
}

function compactDate(value: string, field: 'dateFrom' | 'dateTo'): string {
  const text = value.trim();
  if (text === '') return '';
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  const date = match ? new Date(Date.UTC(+match[1], +match[2] - 1, +match[3])) : null;
  if (!match || !date || date.getUTCDate() !== +match[3] || date.getUTCMonth() !== +match[2] - 1) {
    throw new FilterError(field, `${JSON.stringify(text)} is not a valid date; use YYYY-MM-DD.`);
  }
  return `${match[1]}${match[2]}${match[3]}`;
}

/** Returns the ModalitiesInStudy key: codes in upper case, several joined by commas. */
export function modalitiesKey(typed: string): string {
  return typed
    .split(/[\s,\\]+/)
    .filter(Boolean)
    .map((code) => code.toUpperCase())
    .join(',');
}

/** Returns the path and query of a study search for `limit` matches from `offset` (0-based). */
export function studySearchPath(filters: WorklistFilters, { limit, offset }: { limit: number; offset: number }): string {
  const params = new URLSearchParams();
  const keys: [string, string][] = [
    ['PatientName', patientNameKey(filters.patientName)],
    ['PatientID', filters.patientId.trim()],
    ['StudyDate', studyDateRange(filters.dateFrom, filters.dateTo)],
    ['ModalitiesInStudy', modalitiesKey(filters.modality)],
    ['AccessionNumber', filters.accession.trim()],
  ];
  for (const [name, value] of keys) {
    if (value) params.set(name, value);
  }
  params.set('includefield', INCLUDE_FIELDS.join(','));
  params.set('limit', String(limit));
  params.set('offset', String(offset));
  return `/studies?${params}`;
}
