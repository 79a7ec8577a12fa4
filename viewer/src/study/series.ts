// The series of a study and the ordered images of each, from QIDO-RS and WADO-RS metadata.

import type { DicomJson, DicomwebClient, StudyRef } from '../contract';
import { Tag, getNumber, getNumbers, getString } from './dicomJson';
import { type SliceGeometry, sortSlices } from './geometry';
import { needsPaletteData, withPaletteData } from './palette';
import { framePath, seriesPath, studyPath } from './paths';

/** One series as the QIDO-RS series search returns it. */
export interface SeriesSummary {
  seriesUid: string;
  modality: string;
  seriesNumber?: number;
  description: string;
  instanceCount?: number;
}

/** One image of a stack: a frame of an instance. */
export interface StackImage {
  // The frame's path relative to the DICOMweb base URL.
  path: string;
  sopInstanceUid: string;
  // 1-based, as in frame URLs.
  frame: number;
  instance: DicomJson;
}

export interface SeriesImages {
  seriesUid: string;
  modality: string;
  images: StackImage[];
  // The geometry of each image, in the order of `images`.
  geometry: SliceGeometry[];
  // True when some instance has several frames.
  multiframe: boolean;
}

/** Orders series by SeriesNumber; series without one go last, then by description. */
export function compareSeries(a: SeriesSummary, b: SeriesSummary): number {
  const na = a.seriesNumber ?? Number.POSITIVE_INFINITY;
  const nb = b.seriesNumber ?? Number.POSITIVE_INFINITY;
  if (na !== nb) {
    return na < nb ? -1 : 1;
  }
  return a.description.localeCompare(b.description) || a.seriesUid.localeCompare(b.seriesUid);
}

export async function fetchSeriesList(client: DicomwebClient, study: StudyRef): Promise<SeriesSummary[]> {
  const results = await client.json<DicomJson[]>(`${studyPath(study)}/series`);
  const series = results
    .map((result) => ({
      seriesUid: getString(result, Tag.SeriesInstanceUID) ?? '',
      modality: getString(result, Tag.Modality) ?? '',
      seriesNumber: getNumber(result, Tag.SeriesNumber),
      description: getString(result, Tag.SeriesDescription) ?? '',
      instanceCount: getNumber(result, Tag.NumberOfSeriesRelatedInstances),
    }))
    .filter((summary) => summary.seriesUid !== '');
  return series.sort(compareSeries);
}

function geometryOf(instance: DicomJson): SliceGeometry {
  return {
    instanceNumber: getNumber(instance, Tag.InstanceNumber),
    position: getNumbers(instance, Tag.ImagePositionPatient),
    orientation: getNumbers(instance, Tag.ImageOrientationPatient),
    rows: getNumber(instance, Tag.Rows),
    columns: getNumber(instance, Tag.Columns),
  };
}

/**
 * Builds the stack of a series from its metadata: image instances (those with Rows) in slice
 * order, and one image per frame of a multi-frame instance, in frame order.
 */
export function buildStack(study: StudyRef, seriesUid: string, instances: DicomJson[]): SeriesImages {
  const images = instances.filter((instance) => getNumber(instance, Tag.Rows) !== undefined);
  const sorted = sortSlices(images, geometryOf);
  const stack: StackImage[] = [];
  const geometry: SliceGeometry[] = [];
  let multiframe = false;
  for (const instance of sorted) {
    const sopInstanceUid = getString(instance, Tag.SOPInstanceUID);
    if (!sopInstanceUid) {
      continue;
    }
    const frames = Math.max(1, Math.trunc(getNumber(instance, Tag.NumberOfFrames) ?? 1));
    multiframe ||= frames > 1;
    for (let frame = 1; frame <= frames; frame++) {
      stack.push({ path: framePath(study, seriesUid, sopInstanceUid, frame), sopInstanceUid, frame, instance });
      // TODO: order the frames of enhanced multi-frame instances by their per-frame positions.
      geometry.push(frames > 1 ? { instanceNumber: frame } : geometryOf(instance));
    }
  }
  return {
    seriesUid,
    modality: getString(sorted[0], Tag.Modality) ?? '',
    images: stack,
    geometry,
    multiframe,
  };
}

export async function fetchSeriesImages(client: DicomwebClient, study: StudyRef, seriesUid: string): Promise<SeriesImages> {
  const instances = await client.json<DicomJson[]>(`${seriesPath(study, seriesUid)}/metadata`);
  const prepared = await Promise.all(
    instances.map((instance) => (needsPaletteData(instance) ? withPaletteData(instance, client) : instance)),
  );
  return buildStack(study, seriesUid, prepared);
}

// Modalities whose series hold no images (PS3.3 C.7.3.1.1.1): reports, key objects,
// presentation states, waveforms and RT plans or structure sets. Their thumbnail request
// could only fail, and the browser logs every failed request.
const NON_IMAGE_MODALITIES = new Set(['SR', 'KO', 'PR', 'DOC', 'ECG', 'HD', 'AU', 'RTPLAN', 'RTSTRUCT', 'RTRECORD', 'REG', 'FID']);

/** Tells whether a series of this modality can have a thumbnail. */
export function hasThumbnail(modality: string): boolean {
  return !NON_IMAGE_MODALITIES.has(modality);
}

/** Fetches the series thumbnail through the client and returns an object URL for it. */
export async function fetchThumbnail(client: DicomwebClient, study: StudyRef, seriesUid: string, signal: AbortSignal): Promise<string> {
  const response = await client.fetch(`${seriesPath(study, seriesUid)}/thumbnail`, {
    headers: { Accept: 'image/jpeg, image/png;q=0.9' },
    signal,
  });
  return URL.createObjectURL(await response.blob());
}
