// Progressive loading of a large CT series in the web viewer, in headless Chromium.
//
// Generates the phantom CT volume of viewer/e2e/make_series.py at --slices slices of --size
// pixels square (16 bit, explicit VR little endian). Starts `cirrus dev` as a child process,
// with its own data folder in a temporary directory and free ports on 127.0.0.1, sends it the
// series with storescu over --associations associations and waits until QIDO lists every
// instance. It then opens the study in the viewer --runs times, each time in a new browser
// context with an empty HTTP cache. From the viewer's performance marks it reads the time to
// the first image (cirrus:first-image minus cirrus:study-open) and to the whole series loaded
// (cirrus:all-loaded minus cirrus:study-open). It also counts the requests and the bytes
// received (headers and bodies as sent, from the DevTools protocol) and the time spent on
// metadata requests. It prints each run and the medians, and stops the stack by its PID.
//
//     node bench/viewer_load.mjs --slices 500 --size 512 --runs 5
//
// Needs the viewer built (cd viewer && npm run build), viewer/node_modules, dcmtk and
// /usr/bin/chromium, as the end-to-end tests do.

import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { launchBrowser, openPage, openRoute } from '../viewer/e2e/lib/browser.mjs';
import { makeSeries, startStack, storeFiles, temporaryFolder, waitForStudies } from '../viewer/e2e/lib/stack.mjs';

const MARKS = ['cirrus:study-open', 'cirrus:first-image', 'cirrus:all-loaded'];

const { values: options } = parseArgs({
  options: {
    slices: { type: 'string', default: '500' },
    size: { type: 'string', default: '512' },
    runs: { type: 'string', default: '5' },
    associations: { type: 'string', default: '2' },
    timeout: { type: 'string', default: '600' },
    help: { type: 'boolean', default: false },
  },
});
if (options.help) {
  console.log(
    'usage: node bench/viewer_load.mjs [--slices 500] [--size 512] [--runs 5] [--associations 2] [--timeout 600]\n' +
      '  --slices, --size: the CT series (slices of size x size pixels, 16 bit)\n' +
      '  --runs: study openings, each in a new browser context\n' +
      '  --associations: parallel storescu processes that send the series\n' +
      '  --timeout: seconds to wait for cirrus:all-loaded in each run',
  );
  process.exit(0);
}
const slices = Number(options.slices);
const size = Number(options.size);
const runs = Number(options.runs);
const associations = Number(options.associations);
const timeoutMs = Number(options.timeout) * 1000;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Opens the study in a new context and returns its marks and traffic, or throws. */
async function measure(browser, stack, study) {
  const page = await openPage(browser);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  let bytes = 0;
  let requests = 0;
  let metadataMs = 0;
  const metadataStarts = new Map();
  cdp.on('Network.requestWillBeSent', (event) => {
    if (event.request.url.endsWith('/metadata')) metadataStarts.set(event.requestId, event.timestamp);
  });
  cdp.on('Network.loadingFinished', (event) => {
    bytes += event.encodedDataLength;
    requests += 1;
    const start = metadataStarts.get(event.requestId);
    if (start !== undefined) metadataMs += (event.timestamp - start) * 1000;
  });
  try {
    await openRoute(page, stack, `#/studies/${study}`);
    const marks = await page.waitForFunction(
      (names) => {
        const found = names.map((name) => performance.getEntriesByName(name, 'mark')[0]?.startTime);
        return found.every((time) => time !== undefined) ? found : null;
      },
      MARKS,
      { timeout: timeoutMs, polling: 100 },
    );
    const [open, first, all] = await marks.jsonValue();
    return { studyOpen: open, firstImage: first - open, allLoaded: all - open, bytes, requests, metadataMs };
  } catch (error) {
    const present = await page.evaluate((names) => names.filter((name) => performance.getEntriesByName(name, 'mark').length), MARKS);
    const problems = page.problems.slice(-5).join('\n');
    throw new Error(`${error.message}; marks set: ${present.join(', ') || 'none'}${problems ? `\npage problems:\n${problems}` : ''}`);
  } finally {
    await page.context().close();
  }
}

async function main() {
  const folder = temporaryFolder('cirrus-viewer-load-');
  console.log(`writing ${slices} slices of ${size}x${size}`);
  const files = await makeSeries(path.join(folder.path, 'files'), 'phantom', '--slices', String(slices), '--size', String(size), '--seed', 'bench-viewer-load');
  const stack = await startStack(path.join(folder.path, 'data'));
  let browser = null;
  try {
    let started = performance.now();
    const chunks = Array.from({ length: associations }, (_, index) => files.filter((_, position) => position % associations === index));
    await Promise.all(chunks.map((chunk) => storeFiles(stack, chunk)));
    const stored = (performance.now() - started) / 1000;
    started = performance.now();
    await waitForStudies(stack, files, { timeoutMs: 900_000 });
    const indexed = (performance.now() - started) / 1000;
    console.log(`stored in ${stored.toFixed(1)} s, listed by QIDO ${indexed.toFixed(1)} s later`);

    browser = await launchBrowser();
    const results = [];
    for (let run = 1; run <= runs; run++) {
      const result = await measure(browser, stack, files[0].study);
      results.push(result);
      console.log(
        `run ${run}: study-open at ${result.studyOpen.toFixed(0)} ms after navigation, first image ${result.firstImage.toFixed(0)} ms, ` +
          `all loaded ${result.allLoaded.toFixed(0)} ms, ${result.requests} requests, ${(result.bytes / 1e6).toFixed(1)} MB received, ` +
          `series metadata ${result.metadataMs.toFixed(0)} ms`,
      );
    }
    console.log(
      `median of ${runs}: first image ${median(results.map((r) => r.firstImage)).toFixed(0)} ms, ` +
        `all loaded ${median(results.map((r) => r.allLoaded)).toFixed(0)} ms, ` +
        `${(median(results.map((r) => r.bytes)) / 1e6).toFixed(1)} MB, ${median(results.map((r) => r.requests))} requests`,
    );
    console.log(
      `machine: ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ` +
        `Chromium ${browser.version()}, Node.js ${process.versions.node}`,
    );
  } finally {
    await browser?.close();
    const code = await stack.stop();
    console.log(`stack exit code ${code}`);
    folder.remove();
  }
}

await main();
