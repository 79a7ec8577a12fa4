import { describe, expect, it, vi } from 'vitest';
import { SessionExpiredError } from '../contract';
import { CREDENTIALS_RENEWAL_MARGIN_MS, IdentityPoolCredentials } from './identity';

const HOUR_MS = 3600 * 1000;

/** Mocks the Cognito Identity API, so no request reaches a real host. Each
 * GetCredentialsForIdentity issues new keys that expire an hour after the mock clock. */
function identityApi(clock: { now: number }) {
  let issued = 0;
  const calls: { url: string; target: string; body: Record<string, unknown> }[] = [];
  const fetchImpl = vi.fn(async (url: RequestInfo | URL, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const target = headers.get('X-Amz-Target') ?? '';
    const body = JSON.parse(String(init?.body)) as Record<string, unknown>;
    calls.push({ url: String(url), target, body });
    if (target.endsWith('.GetId')) return Response.json({ IdentityId: 'eu-west-1:identity-1' });
    issued += 1;
    return Response.json({
      IdentityId: 'eu-west-1:identity-1',
      Credentials: {
        AccessKeyId: `ASIA${issued}`,
        SecretKey: `secret-${issued}`,
        SessionToken: `token-${issued}`,
        Expiration: (clock.now + HOUR_MS) / 1000,
      },
    });
  });
  return { fetchImpl, calls };
}

function provider(clock: { now: number }, fetchImpl: typeof fetch, idToken = vi.fn(async () => 'id-token')) {
  return new IdentityPoolCredentials({
    region: 'eu-west-1',
    identityPoolId: 'eu-west-1:pool',
    userPoolId: 'eu-west-1_Pool',
    idToken,
    fetchImpl,
    now: () => clock.now,
  });
}

describe('IdentityPoolCredentials', () => {
  it('exchanges the ID token for credentials', async () => {
    const clock = { now: 1_700_000_000_000 };
    const { fetchImpl, calls } = identityApi(clock);
    const credentials = await provider(clock, fetchImpl).credentials();
    expect(credentials).toMatchObject({ accessKeyId: 'ASIA1', secretAccessKey: 'secret-1', sessionToken: 'token-1' });
    expect(calls.map((call) => call.target)).toEqual(['AWSCognitoIdentityService.GetId', 'AWSCognitoIdentityService.GetCredentialsForIdentity']);
    expect(calls[0].url).toBe('https://cognito-identity.eu-west-1.amazonaws.com/');
    expect(calls[0].body).toEqual({ IdentityPoolId: 'eu-west-1:pool', Logins: { 'cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Pool': 'id-token' } });
    expect(calls[1].body.IdentityId).toBe('eu-west-1:identity-1');
  });

  it('reuses valid credentials', async () => {
    const clock = { now: 1_700_000_000_000 };
    const { fetchImpl } = identityApi(clock);
    const credentials = provider(clock, fetchImpl);
    await credentials.credentials();
    clock.now += HOUR_MS - CREDENTIALS_RENEWAL_MARGIN_MS - 1000;
    expect((await credentials.credentials()).accessKeyId).toBe('ASIA1');
    expect(fetchImpl).toHaveBeenCalledTimes(2);
  });

  it('renews credentials before they expire', async () => {
    const clock = { now: 1_700_000_000_000 };
    const { fetchImpl, calls } = identityApi(clock);
    const credentials = provider(clock, fetchImpl);
    await credentials.credentials();
    clock.now += HOUR_MS - CREDENTIALS_RENEWAL_MARGIN_MS + 1000;
    expect((await credentials.credentials()).accessKeyId).toBe('ASIA2');
    // The identity id is kept, so the renewal needs only GetCredentialsForIdentity.
    expect(calls.map((call) => call.target.split('.')[1])).toEqual(['GetId', 'GetCredentialsForIdentity', 'GetCredentialsForIdentity']);
  });

  it('renews expired credentials once for concurrent requests', async () => {
    const clock = { now: 1_700_000_000_000 };
    const { fetchImpl } = identityApi(clock);
    const credentials = provider(clock, fetchImpl);
    await credentials.credentials();
    clock.now += 2 * HOUR_MS;
    const renewed = await Promise.all([credentials.credentials(), credentials.credentials()]);
    expect(renewed.map((c) => c.accessKeyId)).toEqual(['ASIA2', 'ASIA2']);
    expect(fetchImpl).toHaveBeenCalledTimes(3);
  });

  it('reads a fresh ID token for each renewal', async () => {
    const clock = { now: 1_700_000_000_000 };
    const { fetchImpl, calls } = identityApi(clock);
    const idToken = vi.fn().mockResolvedValueOnce('first').mockResolvedValueOnce('second');
    const credentials = provider(clock, fetchImpl, idToken);
    await credentials.credentials();
    clock.now += 2 * HOUR_MS;
    await credentials.credentials();
    expect(Object.values(calls[2].body.Logins as object)).toEqual(['second']);
  });

  it('raises SessionExpiredError for a rejected token', async () => {
    const clock = { now: 1_700_000_000_000 };
    const fetchImpl = vi.fn(async () =>
      Response.json({ __type: 'NotAuthorizedException', message: 'Invalid login token. Token expired' }, { status: 400 }),
    );
    await expect(provider(clock, fetchImpl).credentials()).rejects.toBeInstanceOf(SessionExpiredError);
  });

  it('passes on an expired session from the ID token', async () => {
    const clock = { now: 1_700_000_000_000 };
    const { fetchImpl } = identityApi(clock);
    const idToken = vi.fn(async () => {
      throw new SessionExpiredError();
    });
    await expect(provider(clock, fetchImpl, idToken).credentials()).rejects.toBeInstanceOf(SessionExpiredError);
    expect(fetchImpl).not.toHaveBeenCalled();
  });
});
