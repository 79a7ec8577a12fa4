// Study view steps shared by the test files.

import { byTestId, centreOf, numberAttribute, openRoute, waitForAttribute } from './browser.mjs';

/** Opens `#/studies/{study}` and waits until the viewport reports every image loaded. */
export async function openStudy(page, stack, study, { timeout = 60_000 } = {}) {
  await openRoute(page, stack, `#/studies/${study}`);
  await waitForAttribute(page, 'study-view', 'data-state', 'ready', { timeout });
  await waitForAttribute(page, 'viewport', 'data-state', 'loaded', { timeout });
}

/** Presses the toolbar button `testId` and waits until it reports itself pressed. */
export async function selectTool(page, testId) {
  await byTestId(page, testId).click();
  await waitForAttribute(page, testId, 'aria-pressed', 'true');
}

/**
 * Moves the viewport to slice `target` with the Down and Up arrow keys, whichever way they
 * scroll, after a click on the viewport to give it the keyboard focus. Needs a tool active
 * that a click does not change, such as window/level.
 */
export async function goToSlice(page, target) {
  const { x, y } = await centreOf(byTestId(page, 'viewport'));
  await page.mouse.click(x, y);
  const press = async (key) => {
    const before = await numberAttribute(page, 'viewport', 'data-slice-index');
    await page.keyboard.press(key);
    const changed = (value) => Number(value) !== before;
    await waitForAttribute(page, 'viewport', 'data-slice-index', changed, { timeout: 5_000 }).catch(() => {});
    return (await numberAttribute(page, 'viewport', 'data-slice-index')) - before;
  };
  if ((await numberAttribute(page, 'viewport', 'data-slice-index')) === target) return;
  // Which way Down scrolls: at the last slice it may not move, so Up is tried too.
  let downSign = Math.sign(await press('ArrowDown'));
  if (downSign === 0) downSign = -Math.sign(await press('ArrowUp'));
  if (downSign === 0) throw new Error('neither ArrowDown nor ArrowUp changed data-slice-index');
  for (let presses = 0; presses < 300; presses++) {
    const index = await numberAttribute(page, 'viewport', 'data-slice-index');
    if (index === target) return;
    const moved = await press(Math.sign(target - index) === downSign ? 'ArrowDown' : 'ArrowUp');
    if (moved === 0) throw new Error(`an arrow key left the viewport at slice ${index}, not ${target}`);
  }
  throw new Error(`300 key presses did not reach slice ${target}`);
}

/** Waits for `count` measurements of `kind` in the panel and returns the last one. */
export async function lastMeasurement(page, kind, count = 1) {
  const items = page.locator(`[data-testid="measurement"][data-kind="${kind}"]`);
  await items.nth(count - 1).waitFor({ state: 'attached' });
  return items.nth(count - 1);
}

/**
 * Waits until `accept` holds for the `data-value` of `measurement`, and returns the value as a
 * number: the panel may show the values of an unfinished drag for a moment after the mouse
 * button is released. Throws with the last value after `timeout` ms.
 */
export async function settledValue(measurement, accept, { timeout = 5_000 } = {}) {
  const deadline = Date.now() + timeout;
  let value = Number.NaN;
  while (Date.now() < deadline) {
    value = Number(await measurement.getAttribute('data-value'));
    if (accept(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return value;
}
