// Measurements read from the annotations of the length, angle and rectangle ROI tools.

import type { DicomJson } from '../contract';
import { formatNumber } from './dom';
import { pixelValueUnit } from './units';

export type Kind = 'length' | 'angle' | 'rectangle-roi';

// The toolName of LengthTool, AngleTool and RectangleROITool in @cornerstonejs/tools.
const KIND_BY_TOOL: Record<string, Kind> = {
  Length: 'length',
  Angle: 'angle',
  RectangleROI: 'rectangle-roi',
};

// The tools set a statistic to null or NaN while it cannot be computed, such as the angle
// before its third point is placed.
interface Stats {
  Modality?: string;
  length?: number | null;
  angle?: number | null;
  mean?: number | null;
  stdDev?: number | null;
}

/** Returns a statistic when it is a finite number, else undefined. */
function finite(value: number | null | undefined): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** One row of the panel, as its data attributes give it. */
export interface Measurement {
  uid: string;
  kind: Kind;
  imageId: string;
  value?: number;
  std?: number;
  unit: string;
  // A rectangle ROI not wholly inside the image. RectangleROITool 5.14 then leaves out its
  // statistics (a corner outside the image) or sets them to NaN or null.
  outside?: boolean;
}

/** Reads a measurement from an annotation of one of the three tools; undefined for others. */
export function measurementOf(
  item: { annotationUID?: string; metadata: { toolName: string; referencedImageId?: string }; data: { cachedStats?: Record<string, Stats> } },
  instanceOf: (imageId: string) => DicomJson | undefined,
): Measurement | undefined {
  const kind = KIND_BY_TOOL[item.metadata.toolName];
  const imageId = item.metadata.referencedImageId;
  if (!kind || !imageId || !item.annotationUID) {
    return undefined;
  }
  const stats = Object.values(item.data.cachedStats ?? {})[0] ?? {};
  if (kind === 'length') {
    return { uid: item.annotationUID, kind, imageId, value: finite(stats.length), unit: 'mm' };
  }
  if (kind === 'angle') {
    return { uid: item.annotationUID, kind, imageId, value: finite(stats.angle), unit: '°' };
  }
  const instance = instanceOf(imageId);
  const outside = Object.keys(stats).length > 0 && finite(stats.mean) === undefined;
  return {
    ...(outside ? { outside } : {}),
    uid: item.annotationUID,
    kind,
    imageId,
    value: finite(stats.mean),
    std: finite(stats.stdDev),
    unit: instance ? pixelValueUnit(instance) : '',
  };
}

/** Returns the text of a measurement: its value with its unit, and the image it is on. */
export function describeMeasurement(measurement: Measurement, sliceNumber: number): string {
  const at = sliceNumber > 0 ? ` (image ${sliceNumber})` : '';
  if (measurement.outside) {
    return `ROI not inside the image${at}`;
  }
  if (measurement.value === undefined) {
    return `${measurement.kind}: measuring…${at}`;
  }
  if (measurement.kind === 'length') {
    return `Length ${formatNumber(measurement.value, 1)} mm${at}`;
  }
  if (measurement.kind === 'angle') {
    return `Angle ${formatNumber(measurement.value, 1)}°${at}`;
  }
  const unit = measurement.unit ? ` ${measurement.unit}` : '';
  const std = measurement.std === undefined ? '' : ` ± ${formatNumber(measurement.std, 1)}`;
  return `ROI mean ${formatNumber(measurement.value, 1)}${std}${unit}${at}`;
}
