// Units of pixel values, for ROI statistics.

import type { DicomJson } from '../contract';
import { Tag, getNumber, getString } from './dicomJson';

/**
 * Returns the unit of the values that ROI statistics report for an image. That is "HU" for CT
 * with a rescale, because the loader applies RescaleSlope and RescaleIntercept before the
 * tools read pixels. Otherwise it is PET Units (0054,1001), a RescaleType (0028,1054) other
 * than "US" (unspecified), or "" when the values have no unit.
 */
export function pixelValueUnit(instance: DicomJson): string {
  const modality = getString(instance, Tag.Modality);
  const rescaled =
    getNumber(instance, Tag.RescaleIntercept) !== undefined || getNumber(instance, Tag.RescaleSlope) !== undefined;
  if (modality === 'CT') {
    return rescaled ? 'HU' : '';
  }
  if (modality === 'PT') {
    return getString(instance, Tag.Units) ?? '';
  }
  const rescaleType = getString(instance, Tag.RescaleType);
  return rescaled && rescaleType && rescaleType !== 'US' ? rescaleType : '';
}
