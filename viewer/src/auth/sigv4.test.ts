/// <reference types="node" />
import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signRequest } from './sigv4';

const KEYS = { accessKeyId: 'AKIALOCALNORTH000001', secretAccessKey: 'local-north-secret-0123' };
const DATETIME = '20240102T030405Z';

/** Computes a SigV4 signature from the spec's steps, independently of aws4fetch. */
function expectedSignature(method: string, url: URL, headers: Record<string, string>, secret: string, region: string): string {
  const encode = (text: string) => encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  // SigV4 sorts the encoded parameters by name, then by value.
  const query = [...url.searchParams]
    .map(([name, value]) => `${encode(name)}=${encode(value)}`)
    .sort()
    .join('&');
  const names = Object.keys(headers).sort();
  const canonical = [
    method,
    url.pathname,
    query,
    names.map((name) => `${name}:${headers[name]}\n`).join(''),
    names.join(';'),
    createHash('sha256').update('').digest('hex'),
  ].join('\n');
  const scope = `${DATETIME.slice(0, 8)}/${region}/execute-api/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', DATETIME, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${secret}`).update(DATETIME.slice(0, 8)).digest();
  for (const part of [region, 'execute-api', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}

describe('signRequest', () => {
  const url = 'http://127.0.0.1:8080/dicomweb/studies?PatientName=Doe%5EJ*&limit=26&includefield=A,B';

  it('signs as SigV4 for execute-api', async () => {
    const init = await signRequest(url, { headers: { Accept: 'application/dicom+json' } }, KEYS, 'us-east-1', DATETIME);
    const headers = new Headers(init.headers);
    const signature = expectedSignature(
      'GET',
      new URL(url),
      { accept: 'application/dicom+json', host: '127.0.0.1:8080', 'x-amz-date': DATETIME },
      KEYS.secretAccessKey,
      'us-east-1',
    );
    expect(headers.get('x-amz-date')).toBe(DATETIME);
    expect(headers.get('authorization')).toBe(
      `AWS4-HMAC-SHA256 Credential=AKIALOCALNORTH000001/20240102/us-east-1/execute-api/aws4_request, ` +
        `SignedHeaders=accept;host;x-amz-date, Signature=${signature}`,
    );
  });

  it('signs the session token', async () => {
    const init = await signRequest(url, {}, { ...KEYS, sessionToken: 'token/with+chars' }, 'eu-west-1', DATETIME);
    const headers = new Headers(init.headers);
    expect(headers.get('x-amz-security-token')).toBe('token/with+chars');
    const signature = expectedSignature(
      'GET',
      new URL(url),
      { host: '127.0.0.1:8080', 'x-amz-date': DATETIME, 'x-amz-security-token': 'token/with+chars' },
      KEYS.secretAccessKey,
      'eu-west-1',
    );
    expect(headers.get('authorization')).toContain(`SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=${signature}`);
  });

  it('keeps the other fields of the request', async () => {
    const controller = new AbortController();
    const init = await signRequest(url, { signal: controller.signal, cache: 'no-store' }, KEYS, 'us-east-1', DATETIME);
    expect(init.signal).toBe(controller.signal);
    expect(init.cache).toBe('no-store');
  });

  it('changes the signature with the secret', async () => {
    const first = await signRequest(url, {}, KEYS, 'us-east-1', DATETIME);
    const second = await signRequest(url, {}, { ...KEYS, secretAccessKey: 'another-secret-000000' }, 'us-east-1', DATETIME);
    expect(new Headers(first.headers).get('authorization')).not.toBe(new Headers(second.headers).get('authorization'));
  });
});
