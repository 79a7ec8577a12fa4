// Worklist steps shared by the test files.

import { byTestId } from './browser.mjs';

const FILTERS = {
  patientName: 'worklist-patient-name',
  patientId: 'worklist-patient-id',
  modality: 'worklist-modality',
  accession: 'worklist-accession',
  dateFrom: 'worklist-date-from',
  dateTo: 'worklist-date-to',
};

/** Sets the worklist's filters (other filters are cleared) and presses the search button. */
export async function search(page, filters = {}) {
  for (const [key, testId] of Object.entries(FILTERS)) {
    const input = byTestId(page, testId);
    if ((await input.count()) === 0) continue;
    const value = filters[key] ?? '';
    const tagName = await input.evaluate((element) => element.tagName);
    if (tagName === 'SELECT') {
      await input.selectOption(value);
    } else {
      await input.fill(value);
    }
  }
  await byTestId(page, 'worklist-search').click();
}

export async function rowUids(page) {
  return byTestId(page, 'worklist-row').evaluateAll((rows) => rows.map((row) => row.dataset.studyUid));
}

/** Waits until the worklist shows exactly the studies `expected` (in any order); returns the
 * UIDs shown, sorted. Throws with the rows seen last after `timeout` ms. */
export async function waitForRows(page, expected, { timeout = 30_000 } = {}) {
  const wanted = [...expected].sort();
  const deadline = Date.now() + timeout;
  let shown = [];
  while (Date.now() < deadline) {
    shown = (await rowUids(page)).sort();
    const settled = (await byTestId(page, 'worklist-loading').count()) === 0 || !(await byTestId(page, 'worklist-loading').isVisible());
    if (settled && JSON.stringify(shown) === JSON.stringify(wanted)) return shown;
    await page.waitForTimeout(100);
  }
  const error = await byTestId(page, 'worklist-error').allTextContents();
  throw new Error(
    `worklist showed ${JSON.stringify(shown)}, expected ${JSON.stringify(wanted)}${error.length ? `; worklist-error: ${error.join(' ')}` : ''}`,
  );
}
