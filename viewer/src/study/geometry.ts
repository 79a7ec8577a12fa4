// Slice ordering and volume detection from Image Position and Image Orientation (Patient),
// PS3.3 C.7.6.2.

export type Vec3 = [number, number, number];

/** The attributes of one image that ordering and volume detection read. */
export interface SliceGeometry {
  instanceNumber?: number;
  // ImagePositionPatient, mm.
  position?: number[];
  // ImageOrientationPatient: the row direction cosines, then the column direction cosines.
  orientation?: number[];
  rows?: number;
  columns?: number;
}

// Direction cosines that differ by less than this are the same orientation.
const ORIENTATION_TOLERANCE = 1e-3;
// Gaps between neighbouring slices may differ from their mean by this fraction.
const SPACING_TOLERANCE = 0.1;

export function cross(a: Vec3, b: Vec3): Vec3 {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

export function dot(a: number[], b: number[]): number {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

/** Returns the slice normal (row cosines x column cosines), or undefined for a malformed value. */
export function sliceNormal(orientation: number[] | undefined): Vec3 | undefined {
  if (!orientation || orientation.length !== 6) {
    return undefined;
  }
  const row: Vec3 = [orientation[0], orientation[1], orientation[2]];
  const column: Vec3 = [orientation[3], orientation[4], orientation[5]];
  const normal = cross(row, column);
  const length = Math.hypot(...normal);
  return length > 0 ? [normal[0] / length, normal[1] / length, normal[2] / length] : undefined;
}

function sameOrientation(a: number[], b: number[]): boolean {
  return a.every((value, i) => Math.abs(value - b[i]) < ORIENTATION_TOLERANCE);
}

function hasPlane(slice: SliceGeometry): slice is SliceGeometry & { position: number[]; orientation: number[] } {
  return slice.position?.length === 3 && slice.orientation?.length === 6;
}

/**
 * Sorts slices by their position along the normal of their common orientation, head to feet
 * for axial images in the patient coordinate system. When a slice has no position or
 * orientation, or the orientations differ, sorts by InstanceNumber instead. The sort is stable,
 * so slices with equal keys keep their order.
 */
export function sortSlices<T>(items: readonly T[], geometryOf: (item: T) => SliceGeometry): T[] {
  const geometries = items.map(geometryOf);
  const first = geometries[0];
  const planar =
    geometries.length > 0 &&
    geometries.every(hasPlane) &&
    geometries.every((g) => sameOrientation(g.orientation!, first.orientation!));
  const normal = planar ? sliceNormal(first.orientation) : undefined;
  const keyed = items.map((item, index) => {
    const geometry = geometries[index];
    const key = normal
      ? -dot(geometry.position!, normal)
      : (geometry.instanceNumber ?? Number.POSITIVE_INFINITY);
    return { item, key, index };
  });
  keyed.sort((a, b) => a.key - b.key || a.index - b.index);
  return keyed.map((entry) => entry.item);
}

export type VolumeCheck = { volume: true; spacing: number } | { volume: false; reason: string };

/**
 * Tells whether sorted slices form a volume for MPR: CT or MR, at least 3 slices of one size
 * and one orientation, evenly spaced along the normal.
 */
export function checkVolume(modality: string | undefined, slices: readonly SliceGeometry[]): VolumeCheck {
  if (modality !== 'CT' && modality !== 'MR') {
    return { volume: false, reason: `MPR needs a CT or MR series, and this one is ${modality || 'of no modality'}.` };
  }
  if (slices.length < 3) {
    return { volume: false, reason: `MPR needs at least 3 slices, and this series has ${slices.length}.` };
  }

  if (!slices.every(hasPlane)) {
    return { volume: false, reason: 'Some images have no ImagePositionPatient or ImageOrientationPatient.' };
  }
  const first = slices[0];
  if (!slices.every((s) => sameOrientation(s.orientation!, first.orientation!))) {
    return { volume: false, reason: 'The images do not all have the same orientation.' };
  }
  if (!slices.every((s) => s.rows === first.rows && s.columns === first.columns)) {
    return { volume: false, reason: 'The images do not all have the same number of rows and columns.' };
  }

  const normal = sliceNormal(first.orientation);
  if (!normal) {
    return { volume: false, reason: 'ImageOrientationPatient is not a valid pair of directions.' };
  }

  const distances = slices.map((s) => dot(s.position!, normal));
  const gaps = distances.slice(1).map((d, i) => Math.abs(d - distances[i]));
  const mean = gaps.reduce((sum, gap) => sum + gap, 0) / gaps.length;
  if (mean <= 0 || gaps.some((gap) => gap === 0)) {
    return { volume: false, reason: 'Two or more images share one position.' };
  }
  if (gaps.some((gap) => Math.abs(gap - mean) > SPACING_TOLERANCE * mean)) {
    return { volume: false, reason: 'The slices are not evenly spaced.' };
  }
  return { volume: true, spacing: mean };
}

/**
 * Returns why a series cannot be shown as an MPR volume, or undefined when it can. A series
 * with a multi-frame instance is never offered, because its frames are not ordered by their
 * per-frame positions, and a series with images that failed to load would give a volume with
 * empty slices.
 */
export function mprRefusal(
  series: { modality: string; multiframe: boolean; geometry: readonly SliceGeometry[]; images: readonly unknown[] },
  failedCount: number,
): string | undefined {
  if (series.multiframe) {
    return `This series is not offered as a volume: it holds a multi-frame instance (${series.images.length} frames), and MPR needs a series of single-frame slices.`;
  }
  const check = checkVolume(series.modality, series.geometry);
  if (!check.volume) {
    return `This series is not a volume. ${check.reason}`;
  }
  if (failedCount > 0) {
    return `The volume cannot be built: ${failedCount} of ${series.images.length} slices failed to load.`;
  }
  return undefined;
}
