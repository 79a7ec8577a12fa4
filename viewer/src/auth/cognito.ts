// Cognito user pool sign-in through the hosted UI: authorization code flow with PKCE.

import { type AuthConfig, RequestError, SessionExpiredError } from '../contract';
import { codeChallenge, createCodeVerifier, decodeJwtClaims, randomToken } from './pkce';

export type CognitoConfig = Extract<AuthConfig, { mode: 'cognito' }>;

/** The user pool tokens of a session. expiresAt is the ID token's expiry in ms since the epoch. */
export interface StoredTokens {
  idToken: string;
  refreshToken?: string;
  expiresAt: number;
}

export interface AuthEnvironment {
  fetchImpl: typeof fetch;
  storage: Storage;
  now: () => number;
}

/** Sign-in failed at the hosted UI or at the token endpoint, for a reason other than expiry. */
export class SignInError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SignInError';
  }
}

const STATE_KEY = 'cirrus.oauth.state';
const VERIFIER_KEY = 'cirrus.oauth.verifier';
const RETURN_KEY = 'cirrus.oauth.return';
const TOKENS_KEY = 'cirrus.oauth.tokens';
// ID tokens are renewed this long before they expire, so no request is signed with a token
// that expires on its way.
export const TOKEN_RENEWAL_MARGIN_MS = 5 * 60 * 1000;
const SCOPES = 'openid email profile';

/** The user pool tokens: kept in sessionStorage and renewed with the refresh token. */
export class CognitoTokens {
  private refreshing: Promise<StoredTokens> | null = null;

  constructor(
    private readonly config: CognitoConfig,
    private readonly redirectUri: string,
    private readonly env: AuthEnvironment,
  ) {}

  get current(): StoredTokens | null {
    const text = this.env.storage.getItem(TOKENS_KEY);
    if (!text) return null;
    try {
      const tokens = JSON.parse(text) as StoredTokens;
      return typeof tokens.idToken === 'string' && typeof tokens.expiresAt === 'number' ? tokens : null;
    } catch {
      return null;
    }
  }

  /** Returns the claims of the current ID token, or {} when there is none. */
  get claims(): Record<string, unknown> {
    const tokens = this.current;
    return tokens ? decodeJwtClaims(tokens.idToken) : {};
  }

  /** Stores a new state and code_verifier and returns the hosted UI's authorize URL.
   * `returnHash` is the route to reopen after sign-in. */
  async beginSignIn(returnHash: string): Promise<string> {
    const state = randomToken();
    const verifier = createCodeVerifier();
    this.env.storage.setItem(STATE_KEY, state);
    this.env.storage.setItem(VERIFIER_KEY, verifier);
    this.env.storage.setItem(RETURN_KEY, returnHash);
    const query = new URLSearchParams({
      response_type: 'code',
      client_id: this.config.clientId,
      redirect_uri: this.redirectUri,
      scope: SCOPES,
      state,
      code_challenge: await codeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    return `${this.config.domain}/oauth2/authorize?${query}`;
  }

  /** Checks the state of the hosted UI's redirect, exchanges its code for tokens and stores
   * them. Returns the route to reopen. Raises SignInError for an error or a state mismatch. */
  async completeSignIn(params: URLSearchParams): Promise<string> {
    const expectedState = this.env.storage.getItem(STATE_KEY);
    const verifier = this.env.storage.getItem(VERIFIER_KEY);
    const returnHash = this.env.storage.getItem(RETURN_KEY) ?? '';
    for (const key of [STATE_KEY, VERIFIER_KEY, RETURN_KEY]) this.env.storage.removeItem(key);
    const error = params.get('error');
    if (error) {
      throw new SignInError(`Sign-in failed: ${params.get('error_description') ?? error}.`);
    }
    if (!expectedState || !verifier || params.get('state') !== expectedState) {
      throw new SignInError('Sign-in failed: the reply of the sign-in page does not match the request this page sent. Sign in again.');
    }
    const code = params.get('code');
    if (!code) throw new SignInError('Sign-in failed: the sign-in page returned no authorization code.');
    const tokens = await this.tokenRequest({
      grant_type: 'authorization_code',
      client_id: this.config.clientId,
      code,
      redirect_uri: this.redirectUri,
      code_verifier: verifier,
    });
    this.store(tokens);
    return returnHash;
  }

  /** Returns a valid ID token, renewed with the refresh token when it expires within the
   * margin. Raises SessionExpiredError when there is none or it cannot be renewed. */
  async idToken(): Promise<string> {
    const tokens = this.current;
    if (!tokens) throw new SessionExpiredError('You are signed out. Sign in again.');
    if (tokens.expiresAt - TOKEN_RENEWAL_MARGIN_MS > this.env.now()) return tokens.idToken;
    this.refreshing ??= this.refresh(tokens).finally(() => {
      this.refreshing = null;
    });
    return (await this.refreshing).idToken;
  }

  /** Returns the hosted UI's logout URL, which returns to `logoutUri` afterwards. */
  logoutUrl(logoutUri: string): string {
    const query = new URLSearchParams({ client_id: this.config.clientId, logout_uri: logoutUri });
    return `${this.config.domain}/logout?${query}`;
  }

  private async refresh(tokens: StoredTokens): Promise<StoredTokens> {
    if (!tokens.refreshToken) throw new SessionExpiredError();
    const renewed = await this.tokenRequest({
      grant_type: 'refresh_token',
      client_id: this.config.clientId,
      refresh_token: tokens.refreshToken,
    });
    // The refresh_token grant returns no new refresh token, so the old one is kept.
    return this.store({ ...renewed, refreshToken: renewed.refreshToken ?? tokens.refreshToken });
  }

  private store(tokens: StoredTokens): StoredTokens {
    this.env.storage.setItem(TOKENS_KEY, JSON.stringify(tokens));
    return tokens;
  }

  /** POSTs a grant to the token endpoint. A rejected grant (400 invalid_grant and the like)
   * raises SessionExpiredError, because only a new sign-in can fix it. */
  private async tokenRequest(grant: Record<string, string>): Promise<StoredTokens> {
    let response: Response;
    try {
      response = await this.env.fetchImpl(`${this.config.domain}/oauth2/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(grant).toString(),
      });
    } catch (error) {
      throw new RequestError(0, `The sign-in service could not be reached (${String(error)}).`);
    }
    const body = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (response.status === 400 || response.status === 401) {
      throw new SessionExpiredError(`The sign-in service rejected the session (${String(body.error ?? response.status)}). Sign in again.`);
    }
    if (!response.ok || typeof body.id_token !== 'string') {
      throw new RequestError(response.status, `The sign-in service failed with HTTP ${response.status}: ${String(body.error ?? 'no ID token in the response')}.`);
    }
    return {
      idToken: body.id_token,
      refreshToken: typeof body.refresh_token === 'string' ? body.refresh_token : undefined,
      expiresAt: expiryOf(body.id_token, body.expires_in, this.env.now()),
    };
  }
}

/** Returns the expiry of an ID token in ms: its `exp` claim, else now + expires_in. */
function expiryOf(idToken: string, expiresIn: unknown, now: number): number {
  try {
    const exp = decodeJwtClaims(idToken).exp;
    if (typeof exp === 'number') return exp * 1000;
  } catch {
    // An ID token that is not a readable JWT is sent as it is; AWS decides whether it is valid.
  }
  return now + (typeof expiresIn === 'number' ? expiresIn : 3600) * 1000;
}
