// The screenshot comparison itself, on generated images: it must pass equal images and
// small colour shifts, and fail a moved shape with a diff image.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { PNG } from 'pngjs';
import { compareWithReference } from './lib/screenshots.mjs';

const directory = mkdtempSync(path.join(tmpdir(), 'cirrus-references-'));
after(() => rmSync(directory, { recursive: true, force: true }));

/** Returns a 100x100 grey PNG with a white 20x20 square at `left`, its grey raised by `shift`. */
function squarePng(left, shift = 0) {
  const png = new PNG({ width: 100, height: 100 });
  for (let y = 0; y < 100; y++) {
    for (let x = 0; x < 100; x++) {
      const inside = x >= left && x < left + 20 && y >= 40 && y < 60;
      const value = inside ? 255 : 60 + shift;
      const offset = (y * 100 + x) * 4;
      png.data.set([value, value, value, 255], offset);
    }
  }
  return PNG.sync.write(png);
}

test('reference stored on update', () => {
  compareWithReference(squarePng(10), 'square', { directory, update: true });
  assert.ok(existsSync(path.join(directory, 'square.png')));
});

test('equal screenshot passes', () => {
  assert.equal(compareWithReference(squarePng(10), 'square', { directory, update: false }), 0);
});

test('small colour shift passes', () => {
  assert.equal(compareWithReference(squarePng(10, 2), 'square', { directory, update: false }), 0);
});

test('brighter background fails', () => {
  assert.throws(() => compareWithReference(squarePng(10, 30), 'square', { directory, update: false }), /differs from/);
});

test('moved square fails with diff path', () => {
  assert.throws(
    () => compareWithReference(squarePng(30), 'square', { directory, update: false }),
    (error) => {
      assert.match(error.message, /differs from .*square\.png in \d+ pixels/);
      const diffPath = /diff in (\S+),/.exec(error.message)?.[1];
      assert.ok(diffPath, 'the message names no diff image');
      assert.ok(existsSync(diffPath), `diff image ${diffPath} not written`);
      return true;
    },
  );
});

test('missing reference fails', () => {
  assert.throws(
    () => compareWithReference(squarePng(10), 'absent', { directory, update: false }),
    /reference .*absent\.png is missing.*UPDATE_REFERENCES=1/,
  );
});
