// Limits of the stack viewport's zoom, as a factor of the zoom that fits the image.

export const MIN_ZOOM = 0.05;
export const MAX_ZOOM = 40;

/** Returns `zoom` limited to MIN_ZOOM..MAX_ZOOM, or undefined when it is within them. */
export function clampedZoom(zoom: number): number | undefined {
  if (!Number.isFinite(zoom)) {
    return undefined;
  }
  if (zoom < MIN_ZOOM) {
    return MIN_ZOOM;
  }
  if (zoom > MAX_ZOOM) {
    return MAX_ZOOM;
  }
  return undefined;
}
