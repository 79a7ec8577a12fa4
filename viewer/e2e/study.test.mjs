// The stack viewport on the phantom CT volume (64 slices, 128x128, 0.5 mm pixels): scrolling,
// window/level by drag and presets, and a length and a rectangle ROI with known results.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attribute, byTestId, centreOf, drag, numberAttribute, openPage, uncaughtErrors, waitForAttribute } from './lib/browser.mjs';
import { setUp } from './lib/fixture.mjs';
import { findRods, phantomToPage, ROD_DISTANCE_MM } from './lib/image.mjs';
import { expectScreenshot } from './lib/screenshots.mjs';
import { goToSlice, lastMeasurement, openStudy, selectTool, settledValue } from './lib/study.mjs';

// A slice inside the water cylinder, which make_series.py ends 4 slices before each end.
const MIDDLE_SLICE = 32;

// Each end of the length line is placed at a rod centre found in a screenshot. A rod is 5 mm
// wide (10 image pixels of 0.5 mm), so its centre is found within about one screen pixel,
// under 0.15 mm at the fitted size. The pixelated edges of a rendered disk may shift it by half
// an image pixel more. 1 mm, two image pixels, covers both ends with room.
const LENGTH_TOLERANCE_MM = 1.0;

const PRESETS = {
  'preset-ct-soft-tissue': [[400, 40]],
  'preset-ct-lung': [[1500, -600]],
  'preset-ct-bone': [
    [2000, 300],
    [1800, 400],
  ],
  'preset-ct-brain': [[80, 40]],
};

async function windowOf(page) {
  return [await numberAttribute(page, 'viewport', 'data-window-width'), await numberAttribute(page, 'viewport', 'data-window-center')];
}

describe('stack viewport', { timeout: 240_000 }, () => {
  let world;
  let page;

  before(async () => {
    world = await setUp();
    page = await openPage(world.browser);
  });

  after(async () => {
    await world?.close();
  });

  test('phantom opens with every slice', async () => {
    await openStudy(page, world.stack, world.studies.phantom.study);
    assert.equal(await numberAttribute(page, 'viewport', 'data-slice-count'), 64);
    assert.equal(await numberAttribute(page, 'viewport', 'data-loaded-count'), 64);
    const thumbnails = byTestId(page, 'series-thumbnail');
    assert.equal(await thumbnails.count(), 1);
    assert.equal(await thumbnails.getAttribute('data-series-uid'), world.studies.phantom.series);
    assert.equal(await thumbnails.getAttribute('data-modality'), 'CT');
    assert.equal(await thumbnails.getAttribute('data-instances'), '64');
    assert.equal(await thumbnails.getAttribute('aria-selected'), 'true');
  });

  test('wheel scrolls slices', async () => {
    await selectTool(page, 'tool-window-level');
    const { x, y } = await centreOf(byTestId(page, 'viewport'));
    await page.mouse.move(x, y);
    const start = await numberAttribute(page, 'viewport', 'data-slice-index');
    // Scroll towards the middle from whichever end the viewer opened at.
    const delta = start < MIDDLE_SLICE ? 100 : -100;
    await page.mouse.wheel(0, delta);
    const first = Number(await waitForAttribute(page, 'viewport', 'data-slice-index', (value) => Number(value) !== start));
    await page.mouse.wheel(0, delta);
    const second = Number(await waitForAttribute(page, 'viewport', 'data-slice-index', (value) => Number(value) !== first));
    assert.equal(Math.sign(second - first), Math.sign(first - start), 'two wheel turns the same way scroll the same way');
    assert.ok(second >= 0, `slice index ${second} is negative`);
    assert.ok(second < 64, `slice index ${second} is past the last slice`);
  });

  test('arrow keys scroll slices', async () => {
    await goToSlice(page, MIDDLE_SLICE);
    assert.equal(await numberAttribute(page, 'viewport', 'data-slice-index'), MIDDLE_SLICE);
    await goToSlice(page, MIDDLE_SLICE - 3);
    await goToSlice(page, MIDDLE_SLICE);
  });

  test('drag changes window/level', async () => {
    await selectTool(page, 'tool-window-level');
    const [width, center] = await windowOf(page);
    const { x, y } = await centreOf(byTestId(page, 'viewport'));
    await drag(page, { x, y }, { x: x + 80, y: y + 60 });
    await waitForAttribute(page, 'viewport', 'data-window-width', (value) => Number(value) !== width);
    const [newWidth, newCenter] = await windowOf(page);
    assert.notEqual(newWidth, width);
    assert.notEqual(newCenter, center);
  });

  for (const [preset, accepted] of Object.entries(PRESETS)) {
    test(`${preset} sets its window`, async () => {
      await byTestId(page, preset).click();
      const isAccepted = () => windowOf(page).then((window) => accepted.some(([w, c]) => w === window[0] && c === window[1]));
      for (let tries = 0; tries < 50 && !(await isAccepted()); tries++) await page.waitForTimeout(100);
      assert.ok(await isAccepted(), `${preset} gave W/L ${await windowOf(page)}, expected one of ${JSON.stringify(accepted)}`);
    });
  }

  test('screenshot after soft tissue preset', async () => {
    await byTestId(page, 'preset-ct-soft-tissue').click();
    await waitForAttribute(page, 'viewport', 'data-window-width', '400');
    await expectScreenshot(page, byTestId(page, 'viewport'), 'stack-soft-tissue');
  });

  test('length between rods is 30 mm', async () => {
    // W 80 L 40 shows the rods (1000 HU) white and water (0 HU) black.
    await byTestId(page, 'preset-ct-brain').click();
    await waitForAttribute(page, 'viewport', 'data-window-width', '80');
    const viewport = byTestId(page, 'viewport');
    await page.mouse.move(0, 0);
    const rods = findRods(await viewport.screenshot());
    const { box } = await centreOf(viewport);
    const map = phantomToPage(rods, box);
    await selectTool(page, 'tool-length');
    await drag(page, map.at(-ROD_DISTANCE_MM / 2, 0), map.at(ROD_DISTANCE_MM / 2, 0), 20);
    const length = await lastMeasurement(page, 'length');
    const value = await settledValue(length, (mm) => Math.abs(mm - ROD_DISTANCE_MM) <= LENGTH_TOLERANCE_MM);
    assert.ok(Math.abs(value - ROD_DISTANCE_MM) <= LENGTH_TOLERANCE_MM, `length ${value} mm, expected ${ROD_DISTANCE_MM} ± ${LENGTH_TOLERANCE_MM}`);
    assert.match(await length.textContent(), /mm/);
  });

  test('rectangle ROI on water has mean 0 HU', async () => {
    const viewport = byTestId(page, 'viewport');
    await page.mouse.move(0, 0);
    const rods = findRods(await viewport.screenshot());
    const { box } = await centreOf(viewport);
    const map = phantomToPage(rods, box);
    await selectTool(page, 'tool-rectangle-roi');
    // 16 x 12 mm of water above the rods: every corner is within 22 mm of the centre, inside
    // the 25 mm cylinder, and 5.5 mm or more away from the rods.
    await drag(page, map.at(-8, -20), map.at(8, -8), 20);
    const roi = await lastMeasurement(page, 'rectangle-roi');
    const mean = await settledValue(roi, (hu) => Math.abs(hu) <= 1);
    const std = Number(await roi.getAttribute('data-std'));
    assert.ok(Math.abs(mean) <= 1, `ROI mean ${mean}, expected 0 HU`);
    assert.ok(std <= 1, `ROI standard deviation ${std}, expected 0 in uniform water`);
    assert.equal(await roi.getAttribute('data-unit'), 'HU');
    assert.match(await roi.textContent(), /HU/);
    const docsImages = process.env.CIRRUS_E2E_DOCS_IMAGES;
    if (docsImages) {
      await byTestId(page, 'preset-ct-soft-tissue').click();
      await waitForAttribute(page, 'viewport', 'data-window-width', '400');
      await page.mouse.move(0, 0);
      mkdirSync(docsImages, { recursive: true });
      await page.screenshot({ path: path.join(docsImages, 'viewer-study.png') });
    }
  });

  test('reset restores the window', async () => {
    await byTestId(page, 'preset-ct-brain').click();
    await waitForAttribute(page, 'viewport', 'data-window-width', '80');
    await byTestId(page, 'action-reset').click();
    // The phantom's own window (W 400 L 40) is the one to return to.
    await waitForAttribute(page, 'viewport', 'data-window-width', '400');
    assert.equal(await numberAttribute(page, 'viewport', 'data-window-center'), 40);
  });

  test('invert toggles', async () => {
    assert.equal(await attribute(page, 'viewport', 'data-inverted'), 'false');
    await byTestId(page, 'action-invert').click();
    await waitForAttribute(page, 'viewport', 'data-inverted', 'true');
    await byTestId(page, 'action-invert').click();
    await waitForAttribute(page, 'viewport', 'data-inverted', 'false');
  });

  test('zoom tool changes the zoom', async () => {
    await selectTool(page, 'tool-zoom');
    const zoom = await numberAttribute(page, 'viewport', 'data-zoom');
    // Left of and below the phantom, away from the measurements, which would take the drag.
    const { x, y, box } = await centreOf(byTestId(page, 'viewport'));
    const start = { x: x - box.width * 0.3, y: y + box.height * 0.3 };
    await drag(page, start, { x: start.x, y: start.y - 100 });
    await waitForAttribute(page, 'viewport', 'data-zoom', (value) => Number(value) !== zoom);
    await byTestId(page, 'action-reset').click();
    await waitForAttribute(page, 'viewport', 'data-zoom', (value) => Number(value) === zoom);
  });

  test('angle of a right angle is 90°', async () => {
    await selectTool(page, 'tool-angle');
    // The first arm by a drag, the end of the second arm by a click, all in the air below the
    // phantom so that no earlier measurement takes the mouse. Screen pixels are square on the
    // image, so a right angle on screen is one on the image; 1° allows a pixel at each end.
    const { x, y, box } = await centreOf(byTestId(page, 'viewport'));
    const vertex = { x: x + box.width * 0.3, y: y + box.height * 0.4 };
    await drag(page, { x: vertex.x - 150, y: vertex.y }, vertex, 15);
    await page.mouse.move(vertex.x, vertex.y - 150, { steps: 15 });
    await page.mouse.click(vertex.x, vertex.y - 150);
    const angle = await lastMeasurement(page, 'angle');
    const degrees = await settledValue(angle, (value) => Math.abs(value - 90) <= 1);
    assert.ok(Math.abs(degrees - 90) <= 1, `angle ${degrees}°, expected 90 ± 1`);
    assert.match(await angle.textContent(), /°/);
    // A finished angle keeps its value when the mouse moves on; one still being drawn follows
    // the mouse with its third point.
    await page.mouse.move(x - box.width * 0.3, y - box.height * 0.3, { steps: 10 });
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    assert.equal(Number(await angle.getAttribute('data-value')), degrees, 'the angle changed after its last click');
  });

  test('page raised no errors', () => {
    assert.deepEqual(uncaughtErrors(page), []);
  });
});
