// Readers for attributes of a data set in the DICOM JSON model (PS3.18 F.2).

import type { DicomJson } from '../contract';

export const Tag = {
  SOPInstanceUID: '00080018',
  SOPClassUID: '00080016',
  Modality: '00080060',
  SeriesDescription: '0008103E',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  RescaleIntercept: '00281052',
  RescaleSlope: '00281053',
  RescaleType: '00281054',
  FrameTime: '00181063',
  CineRate: '00180040',
  RecommendedDisplayFrameRate: '00082144',
  Units: '00541001',
} as const;

/** Returns the first value of `tag` as a string, or undefined when it is absent or empty. */
export function getString(dataset: DicomJson | undefined, tag: string): string | undefined {
  const value = dataset?.[tag]?.Value?.[0];
  if (value === undefined || value === null) {
    return undefined;
  }
  if (typeof value === 'object' && 'Alphabetic' in value) {
    return String((value as { Alphabetic: unknown }).Alphabetic);
  }
  return String(value);
}

/** Returns every value of `tag` as a finite number, or undefined when any is missing or not numeric. */
export function getNumbers(dataset: DicomJson | undefined, tag: string): number[] | undefined {
  const values = dataset?.[tag]?.Value;
  if (!values || values.length === 0) {
    return undefined;
  }
  const numbers = values.map((value) => (typeof value === 'number' ? value : Number(value)));
  return numbers.every(Number.isFinite) ? numbers : undefined;
}

/** Returns the first value of `tag` as a finite number, or undefined. */
export function getNumber(dataset: DicomJson | undefined, tag: string): number | undefined {
  return getNumbers(dataset, tag)?.[0];
}

/**
 * Returns the instance as the image loader's metadata providers need it. The providers of
 * @cornerstonejs/dicom-image-loader 5.14 call `modality.includes('NM')` on Modality (0008,0060),
 * which throws when it is absent, as in some Secondary Capture instances. A missing Modality
 * becomes an empty value in a copy, and the instance itself is left unchanged.
 */
export function withLoaderDefaults(instance: DicomJson): DicomJson {
  if (getString(instance, Tag.Modality) !== undefined) {
    return instance;
  }
  return { ...instance, [Tag.Modality]: { vr: 'CS', Value: [''] } };
}
