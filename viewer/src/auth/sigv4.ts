// SigV4 signing of DICOMweb requests, as API Gateway's IAM authorization checks them.

import { AwsV4Signer } from 'aws4fetch';

/** AWS credentials: long-lived keys, or temporary ones with a session token. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export const SERVICE = 'execute-api';

/** Returns `init` with the SigV4 headers (Authorization, X-Amz-Date and, for temporary
 * credentials, X-Amz-Security-Token) for a request to `url`. The body must be absent, a
 * string or an ArrayBuffer(View), because aws4fetch hashes it whole. `datetime`
 * (YYYYMMDDTHHMMSSZ) fixes the signing time, for tests. */
export async function signRequest(
  url: string,
  init: RequestInit,
  credentials: AwsCredentials,
  region: string,
  datetime?: string,
): Promise<RequestInit> {
  const signer = new AwsV4Signer({
    method: init.method ?? 'GET',
    url,
    headers: init.headers,
    body: init.body ?? undefined,
    accessKeyId: credentials.accessKeyId,
    secretAccessKey: credentials.secretAccessKey,
    sessionToken: credentials.sessionToken,
    service: SERVICE,
    region,
    datetime,
  });
  const signed = await signer.sign();
  return { ...init, headers: signed.headers };
}
