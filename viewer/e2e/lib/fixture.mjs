// One test file's world: the test files written, a local stack that has indexed them, and a
// headless browser. `close` stops the browser and the stack and removes the data folder.

import path from 'node:path';
import { launchBrowser } from './browser.mjs';
import { makeSeries, startStack, storeFiles, temporaryFolder, waitForStudies } from './stack.mjs';

/** Returns the studies of make_series.py's `fixtures` by the names that the tests use. */
export function studiesOf(files) {
  const studyOf = (match) => {
    const file = files.find((item) => match(item.path));
    if (!file) throw new Error('make_series.py listed no such file');
    return { study: file.study, series: file.series, count: files.filter((item) => item.series === file.series).length };
  };
  return {
    phantom: studyOf((file) => path.basename(path.dirname(file)) === 'phantom'),
    cine: studyOf((file) => path.basename(file) === 'cine.dcm'),
    ctSmall: studyOf((file) => path.basename(file) === 'CT_small.dcm'),
    mrSmall: studyOf((file) => path.basename(file) === 'MR_small.dcm'),
    jpeg2000: studyOf((file) => path.basename(file) === 'examples_jpeg2k.dcm'),
    rle: studyOf((file) => path.basename(file) === 'SC_rgb_rle_2frame.dcm'),
  };
}

/**
 * Writes the test files, starts a stack with `options`, sends the files and waits until QIDO
 * lists them (signed by `signer` on a closed stack), then launches the browser.
 */
export async function setUp({ options = [], signer = null } = {}) {
  const folder = temporaryFolder('cirrus-viewer-e2e-');
  const files = await makeSeries(path.join(folder.path, 'files'), 'fixtures');
  let stack = null;
  let browser = null;
  try {
    stack = await startStack(path.join(folder.path, 'data'), { options });
    await storeFiles(stack, files);
    await waitForStudies(stack, files, { signer });
    browser = await launchBrowser();
  } catch (error) {
    // node --test's spec reporter does not print the error of a failed `before` hook of a
    // suite, so it goes to stderr, which the reporter shows.
    process.stderr.write(`setting up the local stack failed: ${error.stack}\n`);
    await stack?.stop();
    folder.remove();
    throw error;
  }
  return {
    folder,
    files,
    studies: studiesOf(files),
    stack,
    browser,
    /** Stops the browser and the stack; throws if the stack exited with an error or logged a
     * traceback, with its output. */
    async close() {
      await browser.close();
      const code = await this.stack.stop();
      folder.remove();
      const tracebacks = this.stack.lines.filter((line) => line.includes('Traceback')).length;
      if (code !== 0 || tracebacks > 0) {
        const output = this.stack.lines.slice(-40).join('\n');
        throw new Error(`cirrus dev exited with ${code} after ${tracebacks} tracebacks; its last output:\n${output}`);
      }
      return code;
    },
  };
}
