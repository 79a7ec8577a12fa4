// Fetches every study of a worklist search, page by page, up to a cap, so that the browser
// can sort the whole result: QIDO-RS has no sort parameter.

import type { DicomJson, DicomwebClient } from '../contract';
import { dicomString, warningTexts } from '../dicomweb';
import { type WorklistFilters, studySearchPath } from './query';

/** The maximum number of matches in one QIDO-RS response of Cirrus (docs/conformance.md). */
export const MAX_RESPONSE_SIZE = 1000;

/** The maximum number of studies that one search keeps, so that it sends at most three requests. A search
 * that matches more should be narrowed. */
export const MAX_STUDIES = 2000;

export interface FetchOptions {
  signal?: AbortSignal;
  /** The maximum number of studies to keep: MAX_STUDIES unless a test sets it. */
  maxStudies?: number;
  /** The `limit` of each request: MAX_RESPONSE_SIZE unless a test sets it. */
  pageSize?: number;
}

export interface StudySearchResult {
  /** The studies in the server's order, at most maxStudies of them. */
  datasets: DicomJson[];
  /** More studies match than maxStudies, and only the first maxStudies were read. */
  moreThanMax: boolean;
  /** A Warning of the server states that it searched only part of the studies. */
  incomplete: boolean;
  /** The Warning texts of every response, each once, without the expected "result is cut"
   * ones that paging causes. */
  warnings: string[];
}

// Cirrus's Warning texts (cirrus/query/qido.py). "the result is cut" means that a next page
// exists, which the loop reads anyway. "may be incomplete" means that an unindexed search
// stopped reading candidates, so studies may be missing from every page.
const PAGE_CUT_WARNING = /^the result is cut/;
const INCOMPLETE_WARNING = /may be incomplete/;

const TAG_STUDY_UID = '0020000D';
const TAG_RETRIEVE_URL = '00081190';

/**
 * Searches the studies of `filters` with requests of `pageSize` and increasing `offset` until a
 * response contains fewer than it requested, or maxStudies studies have been read. The last
 * request has a limit of one study beyond maxStudies, which shows whether more match.
 * Raises FilterError for invalid filters, the client's errors for a failed request, and an
 * AbortError when `signal` is aborted.
 */
export async function fetchAllStudies(
  client: DicomwebClient,
  filters: WorklistFilters,
  { signal, maxStudies = MAX_STUDIES, pageSize = MAX_RESPONSE_SIZE }: FetchOptions = {},
): Promise<StudySearchResult> {
  if (!(pageSize >= 1 && maxStudies >= 1)) {
    throw new RangeError(`pageSize (${pageSize}) and maxStudies (${maxStudies}) must be 1 or more`);
  }
  const datasets: DicomJson[] = [];
  const seen = new Set<string>();
  const warnings = new Set<string>();
  let offset = 0;
  let moreThanMax = false;
  for (;;) {
    const limit = Math.min(pageSize, maxStudies + 1 - offset);
    const path = studySearchPath(filters, { limit, offset });
    signal?.throwIfAborted();
    const response = await client.fetch(path, { headers: { Accept: 'application/dicom+json' }, signal });
    const page = response.status === 204 ? [] : ((await response.json()) as DicomJson[]);
    signal?.throwIfAborted();
    for (const text of warningTexts(response.headers.get('Warning'))) warnings.add(text);
    offset += Math.min(page.length, limit);
    for (const dataset of page.slice(0, limit)) {
      // A study stored while the pages are read shifts the later ones, so one can come twice.
      const key = `${dicomString(dataset, TAG_STUDY_UID)} ${dicomString(dataset, TAG_RETRIEVE_URL)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      datasets.push(dataset);
    }
    // NOTE: a server whose own maximum is below `limit` ends the search at its first response.
    if (page.length < limit) break;
    if (offset > maxStudies) {
      moreThanMax = true;
      break;
    }
  }
  const texts = [...warnings].filter((text) => !PAGE_CUT_WARNING.test(text));
  return {
    datasets: datasets.slice(0, maxStudies),
    moreThanMax,
    incomplete: texts.some((text) => INCOMPLETE_WARNING.test(text)),
    warnings: texts,
  };
}

/** Returns the notice for a result that is not every matching study, or ''. */
export function truncationNotice(result: Pick<StudySearchResult, 'datasets' | 'moreThanMax' | 'incomplete'>): string {
  const count = result.datasets.length.toLocaleString('en');
  if (result.moreThanMax) {
    // The server returns studies in its index order, which is StudyDate ascending for most
    // searches, so the studies left out are often the newest.
    return (
      `More than ${count} studies match, and only the first ${count} that the ` +
      'server returned are listed. Newer studies may be missing: narrow the search, such as with a date range.'
    );
  }
  if (result.incomplete) {
    return `The server searched only part of the studies, so the ${count} listed may not be all that match: narrow the search.`;
  }
  return '';
}
