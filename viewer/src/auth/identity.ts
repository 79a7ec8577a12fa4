// Temporary AWS credentials from a Cognito identity pool, in exchange for a user pool ID token.

import { RequestError, SessionExpiredError } from '../contract';
import type { AwsCredentials } from './sigv4';

export interface IdentityPoolOptions {
  region: string;
  identityPoolId: string;
  userPoolId: string;
  /** Returns a valid user pool ID token, renewing it when needed. */
  idToken: () => Promise<string>;
  fetchImpl?: typeof fetch;
  now?: () => number;
}

interface Credentials extends AwsCredentials {
  /** Expiry in ms since the epoch. */
  expiration: number;
}

// Credentials are renewed this long before they expire, so that no request is signed with
// credentials that expire on their way.
export const CREDENTIALS_RENEWAL_MARGIN_MS = 5 * 60 * 1000;

/** Credentials of the identity pool, fetched with GetId and GetCredentialsForIdentity and
 * renewed before they expire. */
export class IdentityPoolCredentials {
  private identityId: string | null = null;
  private cached: Credentials | null = null;
  private renewing: Promise<Credentials> | null = null;
  private readonly fetchImpl: typeof fetch;
  private readonly now: () => number;

  constructor(private readonly options: IdentityPoolOptions) {
    this.fetchImpl = options.fetchImpl ?? ((input, init) => fetch(input, init));
    this.now = options.now ?? Date.now;
  }

  /** Returns credentials valid for at least the renewal margin. Raises SessionExpiredError
   * when the identity pool rejects the ID token. */
  async credentials(): Promise<AwsCredentials> {
    if (this.cached && this.cached.expiration - CREDENTIALS_RENEWAL_MARGIN_MS > this.now()) return this.cached;
    this.renewing ??= this.renew().finally(() => {
      this.renewing = null;
    });
    this.cached = await this.renewing;
    return this.cached;
  }

  clear(): void {
    this.identityId = null;
    this.cached = null;
  }

  private async renew(): Promise<Credentials> {
    const logins = {
      [`cognito-idp.${this.options.region}.amazonaws.com/${this.options.userPoolId}`]: await this.options.idToken(),
    };
    if (!this.identityId) {
      const { IdentityId } = await this.call('GetId', { IdentityPoolId: this.options.identityPoolId, Logins: logins });
      if (typeof IdentityId !== 'string') throw new RequestError(500, 'The identity pool returned no IdentityId.');
      this.identityId = IdentityId;
    }
    const { Credentials: issued } = await this.call('GetCredentialsForIdentity', { IdentityId: this.identityId, Logins: logins });
    const fields = (issued ?? {}) as Record<string, unknown>;
    const { AccessKeyId, SecretKey, SessionToken, Expiration } = fields;
    if (typeof AccessKeyId !== 'string' || typeof SecretKey !== 'string' || typeof SessionToken !== 'string') {
      throw new RequestError(500, 'The identity pool returned no credentials.');
    }
    // Expiration is a timestamp in seconds since the epoch, as a JSON number.
    const expiration = typeof Expiration === 'number' ? Expiration * 1000 : this.now();
    return { accessKeyId: AccessKeyId, secretAccessKey: SecretKey, sessionToken: SessionToken, expiration };
  }

  /** Calls one action of the Cognito Identity JSON API. These actions need no signature. */
  private async call(action: string, payload: object): Promise<Record<string, unknown>> {
    let response: Response;
    try {
      response = await this.fetchImpl(`https://cognito-identity.${this.options.region}.amazonaws.com/`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/x-amz-json-1.1',
          'X-Amz-Target': `AWSCognitoIdentityService.${action}`,
        },
        body: JSON.stringify(payload),
      });
    } catch (error) {
      throw new RequestError(0, `The identity service could not be reached (${String(error)}).`);
    }
    const body = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (response.ok) return body;
    // Errors are {"__type": "NotAuthorizedException", "message": "..."}; __type may be
    // prefixed with a namespace and '#'.
    const type = String(body.__type ?? '').split('#').pop();
    const message = String(body.message ?? body.Message ?? `HTTP ${response.status}`);
    if (type === 'NotAuthorizedException') {
      this.clear();
      throw new SessionExpiredError(`The identity pool rejected the sign-in (${message}). Sign in again.`);
    }
    throw new RequestError(response.status, `${action} failed: ${type || 'error'}: ${message}`);
  }
}
