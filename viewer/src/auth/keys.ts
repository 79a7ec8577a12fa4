// The 'keys' mode: an access key id and secret typed by the user, kept in sessionStorage.

import { SessionExpiredError } from '../contract';
import { CredentialsRejectedError } from '../dicomweb';
import { el, replaceChildren } from '../ui/dom';
import { type AwsCredentials, signRequest } from './sigv4';
import { type RequestSigner, type Session, forgetSession } from './types';

const KEYS_KEY = 'cirrus.keys';
// The local stack's rule for access key ids (cirrus.local.sigv4); AWS keys follow it too.
const ACCESS_KEY_ID = /^[A-Z0-9]{16,128}$/;

/** Returns the keys stored in `storage`, or null. */
export function storedKeys(storage: Storage): AwsCredentials | null {
  try {
    const keys = JSON.parse(storage.getItem(KEYS_KEY) ?? 'null') as AwsCredentials | null;
    return keys && typeof keys.accessKeyId === 'string' && typeof keys.secretAccessKey === 'string' ? keys : null;
  } catch {
    return null;
  }
}

/** Returns a signer that signs with the stored keys, read at each request. */
export function keysSigner(region: string, storage: Storage): RequestSigner {
  return {
    async sign(url, init) {
      const keys = storedKeys(storage);
      if (!keys) throw new SessionExpiredError('You are signed out. Sign in again.');
      return signRequest(url, init, keys, region);
    },
  };
}

/** Returns the session of the stored keys, or shows the sign-in form in `root` until the user
 * enters keys that `probe` accepts. `probe` sends one request signed by the given signer and
 * raises SessionExpiredError when the server rejects the signature. */
export async function startKeysSession(
  region: string,
  root: HTMLElement,
  probe: (signer: RequestSigner) => Promise<void>,
  storage: Storage = sessionStorage,
): Promise<Session> {
  if (!storedKeys(storage)) await showSignInForm(root, region, probe, storage);
  const signOut = () => {
    forgetSession(storage);
    location.reload();
  };
  return {
    user: storedKeys(storage)?.accessKeyId ?? null,
    signer: keysSigner(region, storage),
    canSignOut: true,
    signOut,
    signInAgain: signOut,
  };
}

function showSignInForm(
  root: HTMLElement,
  region: string,
  probe: (signer: RequestSigner) => Promise<void>,
  storage: Storage,
): Promise<void> {
  return new Promise((resolve) => {
    const accessKey = el('input', {
      id: 'sign-in-access-key', 'data-testid': 'sign-in-access-key', name: 'access-key-id',
      autocomplete: 'username', spellcheck: 'false', required: true,
    });
    const secret = el('input', {
      id: 'sign-in-secret', 'data-testid': 'sign-in-secret', name: 'secret-access-key',
      type: 'password', autocomplete: 'current-password', required: true,
    });
    const message = el('p', { class: 'form-error', role: 'alert', id: 'sign-in-message' });
    const submit = el('button', { type: 'submit', class: 'primary', 'data-testid': 'sign-in-submit' }, ['Sign in']);

    const onSubmit = async (event: Event) => {
      event.preventDefault();
      const keys = { accessKeyId: accessKey.value.trim(), secretAccessKey: secret.value };
      if (!ACCESS_KEY_ID.test(keys.accessKeyId)) {
        message.textContent = 'The access key id is 16 to 128 uppercase letters and digits.';
        accessKey.focus();
        return;
      }
      submit.disabled = true;
      message.textContent = '';
      storage.setItem(KEYS_KEY, JSON.stringify(keys));
      try {
        await probe(keysSigner(region, storage));
      } catch (error) {
        if (error instanceof SessionExpiredError) {
          storage.removeItem(KEYS_KEY);
          const reason = error instanceof CredentialsRejectedError && error.reason ? error.reason : error.message;
          message.textContent = `These keys were rejected: ${reason}.`;
          submit.disabled = false;
          secret.focus();
          return;
        }
        // Any other failure, such as a missing grant, is shown by the worklist.
      }
      resolve();
    };

    const form = el('form', { class: 'panel sign-in', 'data-testid': 'sign-in', 'aria-describedby': 'sign-in-message' }, [
      el('h1', {}, ['Sign in to Cirrus PACS']),
      el('p', {}, ['Enter the access key id and secret that your administrator gave you. They are kept in this browser tab only.']),
      el('label', { for: 'sign-in-access-key' }, ['Access key id']),
      accessKey,
      el('label', { for: 'sign-in-secret' }, ['Secret access key']),
      secret,
      message,
      submit,
    ], { submit: (event) => void onSubmit(event) });
    replaceChildren(root, form);
    accessKey.focus();
  });
}
