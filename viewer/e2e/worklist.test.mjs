// The worklist against a local stack that contains the phantom, the cine loop and four
// pydicom test files: search by name prefix and by modality, the empty state, opening a study.
// Later, 31 dated studies show that sorting spans the pages.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { byTestId, openPage, openRoute, uncaughtErrors } from './lib/browser.mjs';
import { setUp } from './lib/fixture.mjs';
import { expectScreenshot } from './lib/screenshots.mjs';
import { makeSeries, storeFiles, waitForStudies } from './lib/stack.mjs';
import { rowUids, search, waitForRows } from './lib/worklist.mjs';

describe('worklist', { timeout: 240_000 }, () => {
  let world;
  let page;
  let all;

  before(async () => {
    world = await setUp();
    all = [...new Set(world.files.map((file) => file.study))];
    page = await openPage(world.browser);
    await openRoute(page, world.stack, '#/');
  });

  after(async () => {
    await world?.close();
  });

  test('search without filters lists every study', async () => {
    await search(page);
    const listed = await waitForRows(page, all);
    assert.equal(listed.length, 6);
    assert.equal((await byTestId(page, 'worklist-page').textContent()).trim(), '1-6 of 6');
    assert.equal(await byTestId(page, 'worklist-truncated').isVisible(), false);
  });

  test('newest study first by default', async () => {
    const dateHeader = page.locator('th', { has: byTestId(page, 'sort-date') });
    assert.equal(await dateHeader.getAttribute('aria-sort'), 'descending');
    const dates = (await page.locator('[data-testid="worklist-row"] td:nth-child(3)').allTextContents()).map((text) => text.trim());
    const dated = dates.filter(Boolean);
    assert.ok(dated.length > 1, `too few dated studies to check the order: ${dates}`);
    assert.deepEqual(dates, [...dated].sort().reverse().concat(dates.filter((date) => !date)));
  });

  test('screenshot of the worklist', async () => {
    await expectScreenshot(page, page.locator('body'), 'worklist');
    const docsImages = process.env.CIRRUS_E2E_DOCS_IMAGES;
    if (docsImages) {
      mkdirSync(docsImages, { recursive: true });
      await page.screenshot({ path: path.join(docsImages, 'viewer-worklist.png') });
    }
  });

  test('sort by patient name', async () => {
    const names = () => page.locator('[data-testid="worklist-row"] td:first-child').allTextContents();
    const ascending = (list) => list.every((name, index) => index === 0 || list[index - 1].localeCompare(name) <= 0);
    await byTestId(page, 'sort-patient-name').click();
    let first = await names();
    if (!ascending(first)) {
      // The first click may sort descending: the second one then sorts ascending.
      await byTestId(page, 'sort-patient-name').click();
      first = await names();
    }
    assert.ok(ascending(first), `names not in ascending order: ${first}`);
    await byTestId(page, 'sort-patient-name').click();
    const second = await names();
    assert.deepEqual(second, [...first].reverse());
  });

  test('row shows its site and counts', async () => {
    const row = byTestId(page, 'worklist-row').and(page.locator(`[data-study-uid="${world.studies.phantom.study}"]`));
    assert.equal(await row.getAttribute('data-site'), '');
    const cells = (await row.locator('td').allTextContents()).map((text) => text.trim());
    assert.ok(cells.some((text) => text.includes('PHANTOM')), `no patient name in ${cells}`);
    assert.ok(cells.includes('E2E-CT-1'), `no patient ID in ${cells}`);
    assert.ok(cells.includes('CT'), `no modality in ${cells}`);
    assert.ok(cells.includes('64'), `no instance count in ${cells}`);
  });

  test('search by patient name prefix', async () => {
    await search(page, { patientName: 'PHAN' });
    await waitForRows(page, [world.studies.phantom.study]);
    await search(page, { patientName: 'CompressedSamples' });
    const { ctSmall, mrSmall, jpeg2000 } = world.studies;
    await waitForRows(page, [ctSmall.study, mrSmall.study, jpeg2000.study]);
  });

  test('search by modality', async () => {
    await search(page, { modality: 'CT' });
    await waitForRows(page, [world.studies.phantom.study, world.studies.ctSmall.study]);
    await search(page, { modality: 'US' });
    await waitForRows(page, [world.studies.cine.study, world.studies.jpeg2000.study]);
  });

  test('search by patient ID', async () => {
    await search(page, { patientId: 'E2E-US-1' });
    await waitForRows(page, [world.studies.cine.study]);
  });

  test('reversed date range empties the table', async () => {
    await search(page);
    await waitForRows(page, all);
    await search(page, { dateFrom: '2024-12-31', dateTo: '2024-01-01' });
    const message = page.locator('#worklist-form-message');
    assert.match(await message.textContent(), /end date is before the start date/);
    assert.equal(await byTestId(page, 'worklist-row').count(), 0);
    assert.equal((await byTestId(page, 'worklist-page').textContent()).trim(), '');
  });

  test('search without match shows empty state', async () => {
    await search(page, { patientName: 'NOBODY' });
    await byTestId(page, 'worklist-empty').waitFor({ state: 'visible' });
    assert.equal(await byTestId(page, 'worklist-row').count(), 0);
    assert.equal(await byTestId(page, 'worklist-error').count(), 0);
  });

  test('clear resets the filters', async () => {
    await search(page, { patientName: 'NOBODY' });
    await byTestId(page, 'worklist-empty').waitFor({ state: 'visible' });
    await byTestId(page, 'worklist-clear').click();
    assert.equal(await byTestId(page, 'worklist-patient-name').inputValue(), '');
    await byTestId(page, 'worklist-search').click();
    await waitForRows(page, all);
  });

  describe('sorting across pages', () => {
    const COUNT = 31;
    // make_series.py's dated studies, in the order of their dates: the server's order too.
    let dated;
    const pageUids = () => rowUids(page);
    const pageText = async () => (await byTestId(page, 'worklist-page').textContent()).trim();

    before(async () => {
      const files = await makeSeries(path.join(world.folder.path, 'dated'), 'dated', '--count', String(COUNT));
      await storeFiles(world.stack, files);
      await waitForStudies(world.stack, files);
      dated = files.map((file) => file.study);
    });

    test('newest study of a later page comes first', async () => {
      // An earlier test sorted by name, and the order stays for later searches.
      const dateHeader = page.locator('th', { has: byTestId(page, 'sort-date') });
      while ((await dateHeader.getAttribute('aria-sort')) !== 'descending') await byTestId(page, 'sort-date').click();
      await search(page, { dateFrom: '2001-01-01', dateTo: '2001-01-31' });
      const newestFirst = [...dated].reverse();
      // The server returns the oldest 25 first: the newest 6 were on its second page.
      await waitForRows(page, newestFirst.slice(0, 25));
      assert.deepEqual(await pageUids(), newestFirst.slice(0, 25));
      assert.equal(await pageText(), `1-25 of ${COUNT}`);
      assert.equal(await byTestId(page, 'worklist-prev').isDisabled(), true);

      await byTestId(page, 'worklist-next').click();
      assert.deepEqual(await pageUids(), newestFirst.slice(25));
      assert.equal(await pageText(), `26-${COUNT} of ${COUNT}`);
      assert.equal(await byTestId(page, 'worklist-next').isDisabled(), true);

      await byTestId(page, 'worklist-prev').click();
      assert.deepEqual(await pageUids(), newestFirst.slice(0, 25));
    });

    test('sort by patient name spans pages', async () => {
      // Study i is named DATED^{(7i mod 31) + 1}, so names do not follow dates.
      const byName = dated.map((study, index) => ({ study, name: (index * 7) % COUNT })).sort((a, b) => a.name - b.name);
      await byTestId(page, 'sort-patient-name').click();
      const header = page.locator('th', { has: byTestId(page, 'sort-patient-name') });
      assert.equal(await header.getAttribute('aria-sort'), 'ascending');
      assert.equal(await pageText(), `1-25 of ${COUNT}`);
      const first = await pageUids();
      await byTestId(page, 'worklist-next').click();
      const second = await pageUids();
      assert.deepEqual([...first, ...second], byName.map((item) => item.study));
    });
  });

  test('row opens the study without patient data in the URL', async () => {
    await search(page, { patientName: 'PHANTOM' });
    await waitForRows(page, [world.studies.phantom.study]);
    await byTestId(page, 'worklist-row').first().click();
    await byTestId(page, 'study-view').waitFor({ state: 'visible' });
    const url = new URL(page.url());
    assert.match(url.hash, new RegExp(`^#/(sites/[^/]+/)?studies/${world.studies.phantom.study.replaceAll('.', '\\.')}$`));
    assert.doesNotMatch(page.url(), /PHANTOM|E2E-CT-1|E2ECT1/i);
  });

  test('back from the study shows the worklist', async () => {
    await byTestId(page, 'study-back').click();
    await byTestId(page, 'worklist-search').waitFor({ state: 'visible' });
    assert.equal(await byTestId(page, 'study-view').count(), 0);
  });

  test('Enter on a row opens the study', async () => {
    await search(page, { patientName: 'CINE' });
    await waitForRows(page, [world.studies.cine.study]);
    await byTestId(page, 'worklist-row').first().focus();
    await page.keyboard.press('Enter');
    await byTestId(page, 'study-view').waitFor({ state: 'visible' });
    assert.match(page.url(), new RegExp(world.studies.cine.study.replaceAll('.', '\\.')));
  });

  test('stopped server shows the error state', async () => {
    await byTestId(page, 'study-back').click();
    await byTestId(page, 'worklist-search').waitFor({ state: 'visible' });
    await world.stack.stop();
    await byTestId(page, 'worklist-search').click();
    const error = byTestId(page, 'worklist-error');
    await error.waitFor({ state: 'visible' });
    assert.ok((await error.textContent()).trim().length > 0);
    await byTestId(page, 'worklist-retry').waitFor({ state: 'visible' });
  });

  test('page raised no errors', () => {
    assert.deepEqual(uncaughtErrors(page), []);
  });
});
