// Worklist rows from QIDO-RS study results, and their client-side sorting.

import type { DicomJson } from '../contract';
import { dicomNumber, dicomString, dicomStrings, personName } from '../dicomweb';

export interface StudyRow {
  studyUid: string;
  /** The site of the RetrieveURL, or '' when it names none. */
  site: string;
  /** The Alphabetic group of PatientName, as stored ("Doe^Jane"). */
  patientName: string;
  patientId: string;
  /** StudyDate as YYYYMMDD, and StudyTime as HHMMSS.FFFFFF or shorter. */
  studyDate: string;
  studyTime: string;
  modalities: string[];
  description: string;
  accession: string;
  seriesCount: number | null;
  instanceCount: number | null;
}

const TAG = {
  StudyInstanceUID: '0020000D',
  RetrieveURL: '00081190',
  PatientName: '00100010',
  PatientID: '00100020',
  StudyDate: '00080020',
  StudyTime: '00080030',
  ModalitiesInStudy: '00080061',
  StudyDescription: '00081030',
  AccessionNumber: '00080050',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
} as const;

export function studyRow(dataset: DicomJson): StudyRow {
  return {
    studyUid: dicomString(dataset, TAG.StudyInstanceUID),
    site: siteOfRetrieveUrl(dicomString(dataset, TAG.RetrieveURL)),
    patientName: personName(dataset, TAG.PatientName),
    patientId: dicomString(dataset, TAG.PatientID),
    studyDate: dicomString(dataset, TAG.StudyDate),
    studyTime: dicomString(dataset, TAG.StudyTime),
    modalities: dicomStrings(dataset, TAG.ModalitiesInStudy),
    description: dicomString(dataset, TAG.StudyDescription),
    accession: dicomString(dataset, TAG.AccessionNumber),
    seriesCount: dicomNumber(dataset, TAG.NumberOfStudyRelatedSeries),
    instanceCount: dicomNumber(dataset, TAG.NumberOfStudyRelatedInstances),
  };
}

/** Returns the site of a RetrieveURL whose path has `/sites/{site}/studies/`, else ''. */
export function siteOfRetrieveUrl(retrieveUrl: string): string {
  let path: string;
  try {
    path = new URL(retrieveUrl, 'http://base.invalid').pathname;
  } catch {
    return '';
  }
  const match = /\/sites\/([^/]+)\/studies\//.exec(path);
  if (!match) return '';
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return match[1];
  }
}

/** Returns the route of a study: with its site when the row has one. */
export function studyRoute(row: Pick<StudyRow, 'site' | 'studyUid'>): string {
  const study = `studies/${encodeURIComponent(row.studyUid)}`;
  return row.site ? `#/sites/${encodeURIComponent(row.site)}/${study}` : `#/${study}`;
}

export type SortKey = 'patientName' | 'patientId' | 'date' | 'modalities' | 'accession' | 'site';
export type SortDirection = 'ascending' | 'descending';
export interface StudySort {
  key: SortKey;
  direction: SortDirection;
}

/** The order of the rows until the user picks a column: newest study first. */
export const DEFAULT_SORT: Readonly<StudySort> = { key: 'date', direction: 'descending' };

/** Returns the order after a click on the header of `key`: the other direction when `key` is
 * the current column, else ascending. */
export function nextSort(current: Readonly<StudySort>, key: SortKey): StudySort {
  if (current.key !== key) return { key, direction: 'ascending' };
  return { key, direction: current.direction === 'ascending' ? 'descending' : 'ascending' };
}

const SORT_VALUES: Record<SortKey, (row: StudyRow) => string> = {
  patientName: (row) => row.patientName,
  patientId: (row) => row.patientId,
  date: (row) => (row.studyDate ? `${row.studyDate}${timeSortValue(row.studyTime)}` : ''),
  modalities: (row) => row.modalities.join(','),
  accession: (row) => row.accession,
  site: (row) => row.site,
};

/** Returns a TM value (HHMMSS.FFFFFF, or shorter, or with the colons of older files) as
 * 12 digits, so that times of any precision compare in time order. */
export function timeSortValue(time: string): string {
  const [whole = '', fraction = ''] = time.replace(/:/g, '').trim().split('.');
  return `${whole.padEnd(6, '0').slice(0, 6)}${fraction.padEnd(6, '0').slice(0, 6)}`;
}

const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

/** Returns a sorted copy of `rows`. Empty values go last in both directions, and rows with
 * equal values keep their order. */
export function sortRows(rows: readonly StudyRow[], key: SortKey, direction: SortDirection): StudyRow[] {
  const valueOf = SORT_VALUES[key];
  const sign = direction === 'ascending' ? 1 : -1;
  return [...rows].sort((a, b) => {
    const left = valueOf(a);
    const right = valueOf(b);
    if (!left || !right) return Number(!left) - Number(!right);
    return sign * collator.compare(left, right);
  });
}
