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
  const expectedUids = [...expected].sort();
  const loading = byTestId(page, 'worklist-loading');
  const deadline = Date.now() + timeout;
  let listed = [];
  while (Date.now() < deadline) {
    listed = (await rowUids(page)).sort();
    const settled = (await loading.count()) === 0 || !(await loading.isVisible());
    if (settled && JSON.stringify(listed) === JSON.stringify(expectedUids)) return listed;
    await page.waitForTimeout(100);
  }
  const error = await byTestId(page, 'worklist-error').allTextContents();
  const reason = error.length ? `; worklist-error: ${error.join(' ')}` : '';
  throw new Error(`worklist listed ${JSON.stringify(listed)}, expected ${JSON.stringify(expectedUids)}${reason}`);
}
