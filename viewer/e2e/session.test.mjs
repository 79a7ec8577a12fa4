// Sign-in with keys against a stack started with --access and --credentials, and the
// rejection of a wrong secret, and the session-expired state once the server rotated the
// secret of the key in use.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { byTestId, openPage, openRoute, uncaughtErrors, waitForAttribute } from './lib/browser.mjs';
import { setUp } from './lib/fixture.mjs';
import { signerFor, startStack, temporaryFolder } from './lib/stack.mjs';
import { search, waitForRows } from './lib/worklist.mjs';

const KEY_ID = 'AKIAE2EREADER0000001';
const SECRET = 'e2e-reader-secret-0000001';
const ROTATED_SECRET = 'e2e-reader-secret-rotated-0000002';
const PRINCIPAL = 'arn:aws:iam::111122223333:role/e2e-reader';

function writeCredentials(file, secret) {
  writeFileSync(file, JSON.stringify({ credentials: { [KEY_ID]: { secret, principal: PRINCIPAL } } }));
}

async function signIn(page, keyId, secret) {
  await byTestId(page, 'sign-in-access-key').fill(keyId);
  await byTestId(page, 'sign-in-secret').fill(secret);
  await byTestId(page, 'sign-in-submit').click();
}

describe('session', { timeout: 240_000 }, () => {
  let world;
  let accessFile;
  let credentialsFile;
  let options;
  let keysFolder;

  // Every page of this file, for the check that none raised an uncaught exception.
  const pages = [];
  /** Restarts the stack on its port with `secret` as the key's only secret. */
  const rotateSecret = async (secret) => {
    const { httpPort } = world.stack;
    await world.stack.stop();
    writeCredentials(credentialsFile, secret);
    world.stack = await startStack(path.join(world.folder.path, 'data'), { options, httpPort });
  };
  const open = async () => {
    const page = await openPage(world.browser);
    pages.push(page);
    return page;
  };

  before(async () => {
    keysFolder = temporaryFolder('cirrus-viewer-e2e-keys-');
    accessFile = path.join(keysFolder.path, 'access.json');
    credentialsFile = path.join(keysFolder.path, 'credentials.json');
    writeFileSync(accessFile, JSON.stringify({ principals: { [PRINCIPAL]: { default: ['query', 'retrieve'] } } }));
    writeCredentials(credentialsFile, SECRET);
    options = ['--access', accessFile, '--credentials', credentialsFile];
    world = await setUp({ options, signer: signerFor(KEY_ID, SECRET) });
  });

  after(async () => {
    await world?.close();
    keysFolder?.remove();
  });

  test('unsigned request is rejected', async () => {
    const response = await fetch(`${world.stack.dicomweb}/studies`);
    assert.equal(response.status, 403);
  });

  test('config asks for keys', async () => {
    const response = await fetch(`${world.stack.baseUrl}/config.json`);
    assert.equal(response.status, 200);
    const config = await response.json();
    assert.equal(config.auth.mode, 'keys');
  });

  test('sign-in with keys lists the studies', async () => {
    const page = await open();
    await openRoute(page, world.stack, '#/');
    await byTestId(page, 'sign-in').waitFor({ state: 'visible' });
    await signIn(page, KEY_ID, SECRET);
    await search(page);
    await waitForRows(page, [...new Set(world.files.map((file) => file.study))]);
    await page.context().close();
  });

  test('signed session loads images', async () => {
    const page = await open();
    await openRoute(page, world.stack, `#/studies/${world.studies.ctSmall.study}`);
    await byTestId(page, 'sign-in').waitFor({ state: 'visible' });
    await signIn(page, KEY_ID, SECRET);
    await waitForAttribute(page, 'viewport', 'data-state', 'loaded', { timeout: 60_000 });
    await page.context().close();
  });

  test('wrong secret is rejected at sign-in', async () => {
    const page = await open();
    await openRoute(page, world.stack, '#/');
    await signIn(page, KEY_ID, 'not-the-secret-of-this-key');
    // The viewer tries the keys with one request before it leaves the sign-in form. Wrong keys
    // keep the form open with the reason, because there is no session to expire yet.
    const message = byTestId(page, 'sign-in').locator('[role="alert"]');
    await message.filter({ hasText: /\S/ }).waitFor({ state: 'visible' });
    assert.match(await message.textContent(), /reject/i);
    assert.equal(await byTestId(page, 'worklist-row').count(), 0);
    assert.equal(await byTestId(page, 'worklist-search').count(), 0);
    await page.context().close();
  });

  test('unknown key gets the wrong-secret message', async () => {
    const messages = [];
    for (const keyId of [KEY_ID, 'AKIAE2ENOTINTHEFILE01']) {
      const page = await open();
      await openRoute(page, world.stack, '#/');
      await signIn(page, keyId, 'not-the-secret-of-this-key');
      const message = byTestId(page, 'sign-in').locator('[role="alert"]');
      await message.filter({ hasText: /\S/ }).waitFor({ state: 'visible' });
      messages.push(await message.textContent());
      await page.context().close();
    }
    assert.match(messages[1], /reject/i);
    assert.equal(messages[1], messages[0]);
    assert.doesNotMatch(messages[1], /AKIAE2ENOTINTHEFILE01/);
  });

  test('rotated secret shows session expired', async () => {
    const page = await open();
    await openRoute(page, world.stack, '#/');
    await signIn(page, KEY_ID, SECRET);
    await search(page);
    await waitForRows(page, [...new Set(world.files.map((file) => file.study))]);

    await rotateSecret(ROTATED_SECRET);
    await byTestId(page, 'worklist-search').click();
    await byTestId(page, 'session-expired').waitFor({ state: 'visible' });
    await byTestId(page, 'sign-in-again').click();
    await byTestId(page, 'sign-in').waitFor({ state: 'visible' });
    await signIn(page, KEY_ID, ROTATED_SECRET);
    await search(page);
    await waitForRows(page, [...new Set(world.files.map((file) => file.study))]);
    await page.context().close();
  });

  test('rotated secret in study view shows session expired', async () => {
    const page = await open();
    await openRoute(page, world.stack, `#/studies/${world.studies.ctSmall.study}`);
    await signIn(page, KEY_ID, ROTATED_SECRET);
    await waitForAttribute(page, 'viewport', 'data-state', 'loaded');

    await rotateSecret(SECRET);
    await openRoute(page, world.stack, `#/studies/${world.studies.mrSmall.study}`);
    await byTestId(page, 'session-expired').waitFor({ state: 'visible' });
    await page.context().close();
  });

  test('pages raised no errors', () => {
    assert.deepEqual(pages.flatMap(uncaughtErrors), []);
  });
});
