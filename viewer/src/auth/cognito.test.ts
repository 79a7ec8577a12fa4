/// <reference types="node" />
import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { SessionExpiredError } from '../contract';
import { type CognitoConfig, CognitoTokens, SignInError, TOKEN_RENEWAL_MARGIN_MS } from './cognito';
import { forgetSession } from './types';

const CONFIG: CognitoConfig = {
  mode: 'cognito',
  region: 'eu-west-1',
  userPoolId: 'eu-west-1_Pool',
  clientId: 'client123',
  // A reserved name (RFC 2606). The mocks below fulfil every request, so none leaves the test.
  domain: 'https://auth.example.test',
  identityPoolId: 'eu-west-1:pool',
};
const REDIRECT = 'http://127.0.0.1:8080/';

class MemoryStorage implements Storage {
  private items = new Map<string, string>();
  get length() {
    return this.items.size;
  }
  clear() {
    this.items.clear();
  }
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  key(index: number) {
    return [...this.items.keys()][index] ?? null;
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
}

function jwt(claims: object): string {
  return `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
}

function setup(tokenResponses: Response[], now = 1_700_000_000_000) {
  const storage = new MemoryStorage();
  const requests: { url: string; body: URLSearchParams }[] = [];
  const fetchImpl = vi.fn(async (url: RequestInfo | URL, init?: RequestInit) => {
    requests.push({ url: String(url), body: new URLSearchParams(String(init?.body)) });
    const response = tokenResponses.shift();
    if (!response) throw new Error('unexpected request');
    return response;
  });
  const clock = { now };
  const tokens = new CognitoTokens(CONFIG, REDIRECT, { fetchImpl, storage, now: () => clock.now });
  return { tokens, storage, requests, clock };
}

async function signIn(setupResult: ReturnType<typeof setup>) {
  const authorize = new URL(await setupResult.tokens.beginSignIn('#/studies/1.2'));
  const state = authorize.searchParams.get('state') ?? '';
  const verifier = setupResult.storage.getItem('cirrus.oauth.verifier');
  const returnHash = await setupResult.tokens.completeSignIn(new URLSearchParams({ code: 'the-code', state }));
  return { returnHash, verifier };
}

describe('CognitoTokens', () => {
  it('builds the authorize URL with an S256 challenge', async () => {
    const { tokens, storage } = setup([]);
    const url = new URL(await tokens.beginSignIn(''));
    expect(url.origin + url.pathname).toBe('https://auth.example.test/oauth2/authorize');
    expect(url.searchParams.get('response_type')).toBe('code');
    expect(url.searchParams.get('client_id')).toBe('client123');
    expect(url.searchParams.get('redirect_uri')).toBe(REDIRECT);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    const verifier = storage.getItem('cirrus.oauth.verifier') ?? '';
    expect(url.searchParams.get('code_challenge')).toBe(createHash('sha256').update(verifier).digest('base64url'));
    expect(url.searchParams.get('state')).toBe(storage.getItem('cirrus.oauth.state'));
  });

  it('exchanges the code with the verifier', async () => {
    const idToken = jwt({ email: 'a@example.org', exp: 1_700_003_600 });
    const context = setup([Response.json({ id_token: idToken, refresh_token: 'refresh-1', expires_in: 3600 })]);
    const { returnHash, verifier } = await signIn(context);
    expect(returnHash).toBe('#/studies/1.2');
    expect(context.requests[0].url).toBe('https://auth.example.test/oauth2/token');
    expect(Object.fromEntries(context.requests[0].body)).toEqual({
      grant_type: 'authorization_code',
      client_id: 'client123',
      code: 'the-code',
      redirect_uri: REDIRECT,
      code_verifier: verifier,
    });
    expect(context.tokens.current).toEqual({ idToken, refreshToken: 'refresh-1', expiresAt: 1_700_003_600_000 });
    expect(context.storage.getItem('cirrus.oauth.verifier')).toBeNull();
    expect(context.tokens.claims.email).toBe('a@example.org');
  });

  it('rejects a reply with another state', async () => {
    const { tokens, requests } = setup([]);
    await tokens.beginSignIn('');
    await expect(tokens.completeSignIn(new URLSearchParams({ code: 'c', state: 'forged' }))).rejects.toBeInstanceOf(SignInError);
    expect(requests).toHaveLength(0);
  });

  it('reports an error of the hosted UI', async () => {
    const { tokens } = setup([]);
    await tokens.beginSignIn('');
    await expect(tokens.completeSignIn(new URLSearchParams({ error: 'access_denied', error_description: 'user cancelled' }))).rejects.toThrow(
      /user cancelled/,
    );
  });

  it('returns the ID token while it is valid', async () => {
    const idToken = jwt({ exp: 1_700_003_600 });
    const context = setup([Response.json({ id_token: idToken, refresh_token: 'refresh-1' })]);
    await signIn(context);
    expect(await context.tokens.idToken()).toBe(idToken);
    expect(context.requests).toHaveLength(1);
  });

  it('renews an expiring ID token with the refresh token', async () => {
    const first = jwt({ exp: 1_700_003_600 });
    const second = jwt({ exp: 1_700_007_200 });
    const context = setup([Response.json({ id_token: first, refresh_token: 'refresh-1' }), Response.json({ id_token: second })]);
    await signIn(context);
    context.clock.now = 1_700_003_600_000 - TOKEN_RENEWAL_MARGIN_MS + 1000;
    expect(await context.tokens.idToken()).toBe(second);
    expect(Object.fromEntries(context.requests[1].body)).toEqual({
      grant_type: 'refresh_token',
      client_id: 'client123',
      refresh_token: 'refresh-1',
    });
    // The refresh token is kept for the next renewal.
    expect(context.tokens.current?.refreshToken).toBe('refresh-1');
  });

  it('raises SessionExpiredError when the refresh is rejected', async () => {
    const context = setup([
      Response.json({ id_token: jwt({ exp: 1_700_003_600 }), refresh_token: 'refresh-1' }),
      Response.json({ error: 'invalid_grant' }, { status: 400 }),
    ]);
    await signIn(context);
    context.clock.now = 1_700_010_000_000;
    await expect(context.tokens.idToken()).rejects.toBeInstanceOf(SessionExpiredError);
  });

  it('raises SessionExpiredError when signed out', async () => {
    const { tokens } = setup([]);
    await expect(tokens.idToken()).rejects.toBeInstanceOf(SessionExpiredError);
  });

  it('builds the logout URL', () => {
    const { tokens } = setup([]);
    expect(tokens.logoutUrl(REDIRECT)).toBe(
      'https://auth.example.test/logout?client_id=client123&logout_uri=http%3A%2F%2F127.0.0.1%3A8080%2F',
    );
  });
});

describe('forgetSession', () => {
  it('removes the viewer keys only', async () => {
    const context = setup([Response.json({ id_token: jwt({ exp: 1_700_003_600 }), refresh_token: 'refresh-1' })]);
    await signIn(context);
    context.storage.setItem('cirrus.worklist.filters', '{"patientName":"doe"}');
    context.storage.setItem('other.app', 'kept');
    forgetSession(context.storage);
    expect(context.tokens.current).toBeNull();
    expect(context.storage.getItem('cirrus.worklist.filters')).toBeNull();
    expect(context.storage.getItem('other.app')).toBe('kept');
  });
});
