// Cine frame rate from the Cine module (PS3.3 C.7.6.5).

import type { DicomJson } from '../contract';
import { Tag, getNumber } from './dicomJson';

export const DEFAULT_FRAME_RATE = 10;

/**
 * Returns frames per second for cine: CineRate, else 1000 / FrameTime (ms), else
 * RecommendedDisplayFrameRate, else 10.
 */
export function cineFrameRate(instance: DicomJson | undefined): number {
  const cineRate = getNumber(instance, Tag.CineRate);
  if (cineRate !== undefined && cineRate > 0) {
    return cineRate;
  }
  const frameTime = getNumber(instance, Tag.FrameTime);
  if (frameTime !== undefined && frameTime > 0) {
    return 1000 / frameTime;
  }
  const recommended = getNumber(instance, Tag.RecommendedDisplayFrameRate);
  if (recommended !== undefined && recommended > 0) {
    return recommended;
  }
  return DEFAULT_FRAME_RATE;
}
