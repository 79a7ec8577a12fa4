// Reading the phantom back from a screenshot of the viewport, so that the tests can place
// measurements on its known geometry without knowing how the viewer fits the image.

import { PNG } from 'pngjs';

// make_series.py's phantom, in mm from the image centre: the bone rods sit at x = -15 and +15.
export const ROD_DISTANCE_MM = 30;
export const WATER_RADIUS_MM = 25;

/** Mean of the red, green and blue channels of the pixel at (x, y). */
function grey(png, x, y) {
  const offset = (y * png.width + x) * 4;
  return (png.data[offset] + png.data[offset + 1] + png.data[offset + 2]) / 3;
}

/**
 * Finds the two bone rods in a screenshot of the viewport (with a window that shows bone
 * white and water black, such as W 80 L 40) and returns their centres in the screenshot's
 * coordinates, left rod first. Only the central square of the screenshot is searched, so that
 * overlay text in the corners is not taken for bone.
 */
export function findRods(pngBytes, { level = 128 } = {}) {
  const png = PNG.sync.read(pngBytes);
  const centreX = png.width / 2;
  const centreY = png.height / 2;
  const half = Math.min(png.width, png.height) * 0.35;
  const sums = [
    { x: 0, y: 0, n: 0 },
    { x: 0, y: 0, n: 0 },
  ];
  for (let y = Math.floor(centreY - half); y < centreY + half; y++) {
    for (let x = Math.floor(centreX - half); x < centreX + half; x++) {
      if (grey(png, x, y) < level) continue;
      const side = sums[x < centreX ? 0 : 1];
      side.x += x + 0.5;
      side.y += y + 0.5;
      side.n += 1;
    }
  }
  if (sums.some((side) => side.n < 4)) {
    throw new Error(`bone rods not found in the screenshot: ${sums[0].n} and ${sums[1].n} bright pixels left and right of the centre`);
  }
  const [left, right] = sums.map((side) => ({ x: side.x / side.n, y: side.y / side.n, pixels: side.n }));
  return { left, right };
}

/**
 * Maps phantom coordinates (mm from the image centre, x right, y down) to page coordinates,
 * from the rods found in a screenshot taken at `origin` (the element's top-left corner).
 */
export function phantomToPage(rods, origin) {
  const centre = { x: (rods.left.x + rods.right.x) / 2, y: (rods.left.y + rods.right.y) / 2 };
  const pixelsPerMm = Math.hypot(rods.right.x - rods.left.x, rods.right.y - rods.left.y) / ROD_DISTANCE_MM;
  return {
    pixelsPerMm,
    at: (xMm, yMm) => ({ x: origin.x + centre.x + xMm * pixelsPerMm, y: origin.y + centre.y + yMm * pixelsPerMm }),
  };
}

/** Number of distinct grey levels in a screenshot: 1 or 2 for a blank or failed viewport. */
export function greyLevels(pngBytes) {
  const png = PNG.sync.read(pngBytes);
  const levels = new Set();
  for (let y = 0; y < png.height; y += 2) {
    for (let x = 0; x < png.width; x += 2) levels.add(Math.round(grey(png, x, y)));
  }
  return levels.size;
}
