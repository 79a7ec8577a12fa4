// Starts the session of the configured auth mode: unsigned, typed keys or Cognito.

import type { AuthConfig } from '../contract';
import { el, messagePanel, replaceChildren } from '../ui/dom';
import { type CognitoConfig, CognitoTokens } from './cognito';
import { IdentityPoolCredentials } from './identity';
import { startKeysSession } from './keys';
import { signRequest } from './sigv4';
import { type RequestSigner, type Session, forgetSession, unsignedSigner } from './types';

export type { RequestSigner, Session } from './types';

/** Returns the session of `auth`, after the sign-in it needs. In Cognito mode this may leave
 * the page for the hosted UI, and the promise then never settles. */
export async function startSession(
  auth: AuthConfig,
  root: HTMLElement,
  probe: (signer: RequestSigner) => Promise<void>,
): Promise<Session> {
  switch (auth.mode) {
    case 'none':
      return {
        user: null,
        signer: unsignedSigner,
        canSignOut: false,
        signOut: () => undefined,
        signInAgain: () => location.reload(),
      };
    case 'keys':
      return startKeysSession(auth.region, root, probe);
    case 'cognito':
      return startCognitoSession(auth, root);
  }
}

async function startCognitoSession(config: CognitoConfig, root: HTMLElement): Promise<Session> {
  const redirectUri = `${location.origin}${location.pathname}`;
  const tokens = new CognitoTokens(config, redirectUri, { fetchImpl: (input, init) => fetch(input, init), storage: sessionStorage, now: Date.now });
  const signIn = async () => location.assign(await tokens.beginSignIn(location.hash));

  const params = new URLSearchParams(location.search);
  if (params.has('code') || params.has('error')) {
    // Removes the code from the address bar and history before anything else can fail.
    history.replaceState(null, '', location.pathname + location.hash);
    const returnHash = await tokens.completeSignIn(params);
    if (returnHash) history.replaceState(null, '', location.pathname + returnHash);
  }
  if (!tokens.current) {
    const button = el('button', { type: 'button', class: 'primary', 'data-testid': 'sign-in' }, ['Sign in'], {
      click: () => void signIn(),
    });
    replaceChildren(root, messagePanel('sign-in-screen', 'Sign in to Cirrus PACS', 'Sign in with your organization account to open the worklist.', [button], 'status'));
    button.focus();
    return new Promise<Session>(() => undefined);
  }

  const identity = new IdentityPoolCredentials({
    region: config.region,
    identityPoolId: config.identityPoolId,
    userPoolId: config.userPoolId,
    idToken: () => tokens.idToken(),
  });
  const claims = tokens.claims;
  const user = [claims.email, claims['cognito:username'], claims.sub].find((value) => typeof value === 'string');
  return {
    user: (user as string | undefined) ?? null,
    signer: { sign: async (url, init) => signRequest(url, init, await identity.credentials(), config.region) },
    canSignOut: true,
    signOut() {
      forgetSession(sessionStorage);
      identity.clear();
      location.assign(tokens.logoutUrl(redirectUri));
    },
    signInAgain() {
      forgetSession(sessionStorage);
      identity.clear();
      void signIn();
    },
  };
}
