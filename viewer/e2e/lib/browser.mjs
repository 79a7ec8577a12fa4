// Headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser) and the page
// helpers of the tests, which find elements by the data-testid hooks of the viewer contract.

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CIRRUS_CHROMIUM ?? '/usr/bin/chromium';
export const VIEWPORT = { width: 1280, height: 800 };

/** Launches headless Chromium with WebGL on SwiftShader and no background traffic. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--enable-unsafe-swiftshader',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * Opens a page in a new context (empty storage and cache) with a fixed size, locale and time
 * zone, so that screenshots do not depend on the machine. The page's console errors and
 * uncaught exceptions are kept in `page.problems` for failure messages.
 */
export async function openPage(browser, { viewport = VIEWPORT } = {}) {
  const context = await browser.newContext({
    viewport,
    deviceScaleFactor: 1,
    locale: 'en-US',
    timezoneId: 'UTC',
    colorScheme: 'light',
    reducedMotion: 'reduce',
  });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console error: ${message.text()}`);
  });
  page.setDefaultTimeout(30_000);
  return page;
}

export const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Returns the messages of the exceptions that the page's scripts did not catch. */
export function uncaughtErrors(page) {
  return page.problems.filter((problem) => problem.startsWith('page error:'));
}

/** Waits until the attribute `name` of the element `testId` satisfies `accept`; returns it. */
export async function waitForAttribute(page, testId, name, accept, { timeout = 30_000 } = {}) {
  const predicate = typeof accept === 'function' ? accept : (value) => value === String(accept);
  const deadline = Date.now() + timeout;
  let last = null;
  while (Date.now() < deadline) {
    last = await byTestId(page, testId).first().getAttribute(name, { timeout: Math.max(deadline - Date.now(), 1) });
    if (last !== null && predicate(last)) return last;
    await page.waitForTimeout(50);
  }
  const problems = page.problems.length ? `\npage problems:\n${page.problems.slice(-10).join('\n')}` : '';
  throw new Error(`${testId} ${name}=${JSON.stringify(last)} did not become ${accept} within ${timeout / 1000} s${problems}`);
}

export async function attribute(page, testId, name) {
  return byTestId(page, testId).first().getAttribute(name);
}

export async function numberAttribute(page, testId, name) {
  const value = await attribute(page, testId, name);
  const number = Number(value);
  if (value === null || value === '' || Number.isNaN(number)) {
    throw new Error(`${testId} has ${name}=${JSON.stringify(value)}, not a number`);
  }
  return number;
}

/** Opens the viewer at `route` (a hash route such as `#/` or `#/studies/UID`). */
export async function openRoute(page, stack, route) {
  await page.goto(`${stack.baseUrl}/${route}`);
}

/** Drags with the left button from `from` to `to` (page coordinates) in `steps` moves. */
export async function drag(page, from, to, steps = 10) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps });
  await page.mouse.up();
}

/** Centre of an element in page coordinates. */
export async function centreOf(locator) {
  const box = await locator.boundingBox();
  if (!box) throw new Error('element is not visible');
  return { x: box.x + box.width / 2, y: box.y + box.height / 2, box };
}
