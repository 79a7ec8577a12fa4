// Screenshot comparison with the stored references in viewer/e2e/references/*.png.
//
// UPDATE_REFERENCES=1 writes the screenshot as the new reference and passes. Otherwise a
// screenshot passes when pixelmatch finds at most `maxDiffRatio` of its pixels different
// beyond `threshold` (pixelmatch's per-pixel colour distance, 0 to 1). On failure the
// screenshot and a diff image go to CIRRUS_E2E_OUTPUT (default: a folder in the system's
// temporary directory) and the error names them.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pixelmatch from 'pixelmatch';
import { PNG } from 'pngjs';

export const referencesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'references');
export const outputDir = process.env.CIRRUS_E2E_OUTPUT ?? path.join(tmpdir(), 'cirrus-viewer-e2e');

// Repeated runs on one machine gave identical screenshots (0 pixels changed). Another CPU or
// Chromium build may make SwiftShader and the font rasterizer round antialiased edges
// differently. pixelmatch's threshold 0.05 ignores a grey shift of up to about 13 of 255
// levels, and the ratio (4,800 pixels of a 1280x750 screenshot) allows a thin band of changed
// edges and text. A moved or missing image, or another preset, changes far more.
// NOTE: the ratio is an estimate; no second machine has been compared yet.
export const DEFAULT_THRESHOLD = 0.05;
export const DEFAULT_MAX_DIFF_RATIO = 0.005;

/**
 * Takes a screenshot of `locator` and compares it with the reference `name`.png. Throws when
 * they differ. The mouse is parked at the page's top-left corner first, away from hover styles.
 */
export async function expectScreenshot(page, locator, name, options = {}) {
  await page.mouse.move(0, 0);
  // Two animation frames, so that hover styles and canvases have been redrawn.
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  // Headless Chromium draws no mouse pointer in screenshots, and these options stop CSS
  // animations and hide the text caret. The viewer's Content Security Policy rejects injected
  // style elements, so neither page.addStyleTag nor the screenshot's `style` option applies.
  const png = await locator.screenshot({ animations: 'disabled', caret: 'hide' });
  const changed = compareWithReference(png, name, options);
  console.log(`screenshot ${name}: ${changed} pixels differ from the reference`);
  return changed;
}

/** Compares the PNG bytes `png` with the reference `name`.png; returns the changed pixels. */
export function compareWithReference(png, name, options = {}) {
  const {
    threshold = DEFAULT_THRESHOLD,
    maxDiffRatio = DEFAULT_MAX_DIFF_RATIO,
    directory = referencesDir,
    update = process.env.UPDATE_REFERENCES === '1',
  } = options;
  const referencePath = path.join(directory, `${name}.png`);
  if (update) {
    mkdirSync(directory, { recursive: true });
    writeFileSync(referencePath, png);
    return 0;
  }

  if (!existsSync(referencePath)) {
    const saved = saveOutput(`${name}-actual.png`, png);
    throw new Error(`reference ${referencePath} is missing; screenshot in ${saved}. Run the tests with UPDATE_REFERENCES=1 to store it`);
  }
  const actual = PNG.sync.read(png);
  const expected = PNG.sync.read(readFileSync(referencePath));
  if (actual.width !== expected.width || actual.height !== expected.height) {
    const saved = saveOutput(`${name}-actual.png`, png);
    const sizes = `${actual.width}x${actual.height}, the reference ${expected.width}x${expected.height}`;
    throw new Error(`screenshot ${name} is ${sizes}; screenshot in ${saved}`);
  }

  const { width, height } = actual;
  const diff = new PNG({ width, height });
  const changed = pixelmatch(actual.data, expected.data, diff.data, width, height, { threshold });
  const allowed = Math.floor(maxDiffRatio * width * height);
  if (changed > allowed) {
    const saved = saveOutput(`${name}-actual.png`, png);
    const diffPath = saveOutput(`${name}-diff.png`, PNG.sync.write(diff));
    throw new Error(
      `screenshot ${name} differs from ${referencePath} in ${changed} pixels (at most ${allowed} allowed); diff in ${diffPath}, screenshot in ${saved}`,
    );
  }
  return changed;
}

function saveOutput(fileName, bytes) {
  mkdirSync(outputDir, { recursive: true });
  const target = path.join(outputDir, fileName);
  writeFileSync(target, bytes);
  return target;
}
