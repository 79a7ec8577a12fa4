// MPR of the phantom volume, cine of a multi-frame instance, compressed transfer syntaxes
// and the failed-load state of the study view.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { byTestId, numberAttribute, openPage, openRoute, uncaughtErrors, waitForAttribute } from './lib/browser.mjs';
import { setUp } from './lib/fixture.mjs';
import { greyLevels } from './lib/image.mjs';
import { expectScreenshot } from './lib/screenshots.mjs';
import { openStudy } from './lib/study.mjs';

const MISSING_STUDY = '1.2.826.0.1.3680043.8.498.99999999999999999999999999999999999';

describe('study views', { timeout: 280_000 }, () => {
  let world;

  // Every page of this file, for the check that none raised an uncaught exception.
  const pages = [];
  const open = async () => {
    const page = await openPage(world.browser);
    pages.push(page);
    return page;
  };

  before(async () => {
    world = await setUp();
  });

  after(async () => {
    await world?.close();
  });

  describe('MPR', () => {
    let page;

    before(async () => {
      page = await open();
    });

    test('MPR shows three loaded viewports', async () => {
      await openStudy(page, world.stack, world.studies.phantom.study);
      await byTestId(page, 'action-mpr').click();
      await waitForAttribute(page, 'mpr', 'data-state', 'loaded', { timeout: 90_000 });
      for (const name of ['viewport-axial', 'viewport-sagittal', 'viewport-coronal']) {
        const box = await byTestId(page, name).boundingBox();
        assert.ok(box, `${name} is not visible`);
        assert.ok(box.width > 50, `${name} is ${box.width} px wide`);
        assert.ok(box.height > 50, `${name} is ${box.height} px high`);
      }
      assert.match(page.url(), new RegExp(`/mpr/${world.studies.phantom.series.replaceAll('.', '\\.')}$`));
    });

    test('screenshot of MPR', async () => {
      await expectScreenshot(page, byTestId(page, 'mpr'), 'mpr');
    });

    test('MPR closes to the stack view', async () => {
      await byTestId(page, 'mpr-close').click();
      await waitForAttribute(page, 'viewport', 'data-state', 'loaded');
      // The viewer may keep the MPR element, hidden, to reopen it faster.
      await byTestId(page, 'mpr').waitFor({ state: 'hidden' });
      assert.ok(await byTestId(page, 'viewport').isVisible());
    });

    test('MPR route opens directly', async () => {
      const { study, series } = world.studies.phantom;
      await openRoute(page, world.stack, `#/studies/${study}/mpr/${series}`);
      await waitForAttribute(page, 'mpr', 'data-state', 'loaded', { timeout: 90_000 });
    });

    test('MPR of one image is an error', async () => {
      const { study, series } = world.studies.ctSmall;
      await openRoute(page, world.stack, `#/studies/${study}/mpr/${series}`);
      await waitForAttribute(page, 'mpr', 'data-state', 'error');
      assert.ok((await byTestId(page, 'mpr-error').textContent()).trim().length > 0);
    });
  });

  describe('cine', () => {
    test('cine plays and stops the frames', async () => {
      const page = await open();
      await openStudy(page, world.stack, world.studies.cine.study);
      assert.equal(await numberAttribute(page, 'viewport', 'data-slice-count'), 12);
      assert.equal(await byTestId(page, 'viewport').getAttribute('data-cine'), 'stopped');
      await byTestId(page, 'action-cine').click();
      await waitForAttribute(page, 'viewport', 'data-cine', 'playing');
      const seen = new Set();
      for (let reads = 0; reads < 200 && seen.size < 3; reads++) {
        seen.add(await numberAttribute(page, 'viewport', 'data-slice-index'));
        await page.waitForTimeout(50);
      }
      assert.ok(seen.size >= 3, `cine showed only frames ${[...seen]}`);
      await byTestId(page, 'action-cine').click();
      await waitForAttribute(page, 'viewport', 'data-cine', 'stopped');
      await page.context().close();
    });
  });

  describe('transfer syntaxes', () => {
    const cases = {
      ctSmall: 'CT, explicit VR little endian',
      mrSmall: 'MR, explicit VR little endian',
      jpeg2000: 'US, JPEG 2000 lossless, YBR_RCT',
      rle: 'secondary capture, RLE lossless, RGB, 2 frames',
    };
    for (const [name, description] of Object.entries(cases)) {
      test(`${description} is displayed`, async () => {
        const page = await open();
        const { study, count } = world.studies[name];
        await openStudy(page, world.stack, study);
        assert.equal(await byTestId(page, 'series-thumbnail').getAttribute('data-instances'), String(count));
        await page.mouse.move(0, 0);
        const levels = greyLevels(await byTestId(page, 'viewport').screenshot());
        assert.ok(levels > 8, `the viewport shows ${levels} grey levels: blank, or not decoded`);
        await page.context().close();
      });
    }
  });

  describe('routes', () => {
    test('site route opens the study', async () => {
      const page = await open();
      await openRoute(page, world.stack, `#/sites/default/studies/${world.studies.mrSmall.study}`);
      await waitForAttribute(page, 'viewport', 'data-state', 'loaded');
      assert.equal(await byTestId(page, 'series-thumbnail').getAttribute('data-modality'), 'MR');
      await page.context().close();
    });
  });

  describe('failed load', () => {
    test('missing study shows the error state', async () => {
      const page = await open();
      await openRoute(page, world.stack, `#/studies/${MISSING_STUDY}`);
      await waitForAttribute(page, 'study-view', 'data-state', 'error');
      const error = byTestId(page, 'study-error');
      await error.waitFor({ state: 'visible' });
      assert.ok((await error.textContent()).trim().length > 0);
      await byTestId(page, 'study-retry').waitFor({ state: 'visible' });
      await byTestId(page, 'study-back').click();
      await byTestId(page, 'worklist-search').waitFor({ state: 'visible' });
      await page.context().close();
    });
  });

  test('pages raised no errors', () => {
    assert.deepEqual(pages.flatMap(uncaughtErrors), []);
  });
});
