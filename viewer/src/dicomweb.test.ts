import { describe, expect, it, vi } from 'vitest';
import type { RequestSigner } from './auth/types';
import { RequestError, SessionExpiredError } from './contract';
import { CredentialsRejectedError, HttpDicomwebClient, warningTexts, dicomNumber, dicomString, dicomStrings, formatPersonName, personName } from './dicomweb';

const ORIGIN = 'http://127.0.0.1:8080';
// SIGNATURE_REJECTED of cirrus.local.sigv4: a wrong secret and an unknown access key get it.
const LOCAL_SIGNATURE_REJECTED =
  'the signature does not match the request, or its access key is unknown; check the key id and secret, and sign the request again';

function client(response: Response | Error, signer?: RequestSigner, onSessionExpired = vi.fn()) {
  const fetchImpl = vi.fn(async () => {
    if (response instanceof Error) throw response;
    return response;
  });
  const instance = new HttpDicomwebClient('/dicomweb/', signer ?? { sign: async (_url, init) => init }, {
    fetchImpl,
    origin: ORIGIN,
    onSessionExpired,
  });
  return { instance, fetchImpl, onSessionExpired };
}

async function failure(response: Response | Error): Promise<unknown> {
  return client(response).instance.fetch('/studies').then(
    () => expect.unreachable(),
    (error: unknown) => error,
  );
}

describe('HttpDicomwebClient', () => {
  it('joins relative paths to the base URL', () => {
    const { instance } = client(new Response());
    expect(instance.baseUrl).toBe('/dicomweb');
    expect(instance.resolve('/studies?limit=1')).toBe(`${ORIGIN}/dicomweb/studies?limit=1`);
    expect(instance.resolve('https://api.example/prod/studies')).toBe('https://api.example/prod/studies');
  });

  it('sends the signed request', async () => {
    const signer: RequestSigner = {
      sign: vi.fn(async (_url: string, init: RequestInit) => ({ ...init, headers: { Authorization: 'signed' } })),
    };
    const { instance, fetchImpl } = client(new Response('[]'), signer);
    await instance.fetch('/studies', { method: 'GET' });
    expect(signer.sign).toHaveBeenCalledWith(`${ORIGIN}/dicomweb/studies`, { method: 'GET' });
    expect(fetchImpl).toHaveBeenCalledWith(`${ORIGIN}/dicomweb/studies`, { method: 'GET', headers: { Authorization: 'signed' } });
  });

  it('maps 204 to an empty list', async () => {
    const { instance, fetchImpl } = client(new Response(null, { status: 204 }));
    expect(await instance.json('/studies')).toEqual([]);
    const init = fetchImpl.mock.calls[0] as unknown as [string, RequestInit];
    expect(new Headers(init[1].headers).get('accept')).toBe('application/dicom+json');
  });

  it('parses JSON', async () => {
    const { instance } = client(Response.json([{ '0020000D': { vr: 'UI', Value: ['1.2'] } }]));
    expect(await instance.json('/studies')).toEqual([{ '0020000D': { vr: 'UI', Value: ['1.2'] } }]);
  });

  it('maps 401 to SessionExpiredError', async () => {
    expect(await failure(new Response('', { status: 401 }))).toBeInstanceOf(SessionExpiredError);
  });

  it('maps a rejected local signature to SessionExpiredError', async () => {
    const error = await failure(Response.json({ error: `access denied: ${LOCAL_SIGNATURE_REJECTED}` }, { status: 403 }));
    expect(error).toBeInstanceOf(SessionExpiredError);
    expect((error as CredentialsRejectedError).reason).toBe(`access denied: ${LOCAL_SIGNATURE_REJECTED}`);
  });

  it.each([
    'access denied: X-Amz-Date is 900 s away from the server\'s clock; at most 300 s are accepted',
    'access denied: the credential scope must be for region us-east-1, service execute-api and aws4_request',
    'access denied: the request is not signed; sign it with SigV4 for execute-api',
  ])('maps the local reason %j to SessionExpiredError', async (reason) => {
    expect(await failure(Response.json({ error: reason }, { status: 403 }))).toBeInstanceOf(SessionExpiredError);
  });

  it('maps an expired token of API Gateway to SessionExpiredError', async () => {
    const response = Response.json({ message: 'The security token included in the request is expired' }, { status: 403 });
    expect(await failure(response)).toBeInstanceOf(SessionExpiredError);
  });

  it('reads the error type header of API Gateway', async () => {
    const response = new Response('', { status: 403, headers: { 'x-amzn-ErrorType': 'InvalidSignatureException:http://internal' } });
    expect(await failure(response)).toBeInstanceOf(SessionExpiredError);
  });

  it('keeps a missing grant a RequestError', async () => {
    const error = await failure(
      Response.json({ error: 'access denied: this caller has no grant for query on any site' }, { status: 403 }),
    );
    expect(error).toBeInstanceOf(RequestError);
    expect(error).not.toBeInstanceOf(SessionExpiredError);
    expect((error as RequestError).status).toBe(403);
    expect((error as Error).message).toBe('Access denied: this caller has no grant for query on any site. Ask your administrator for access.');
  });

  it('uses the server error message', async () => {
    const error = await failure(Response.json({ error: 'StudyDate: DA range ends before it starts' }, { status: 400 }));
    expect(error).toBeInstanceOf(RequestError);
    expect((error as RequestError).status).toBe(400);
    expect((error as Error).message).toBe('StudyDate: DA range ends before it starts (HTTP 400)');
  });

  it('describes a failure without a JSON body', async () => {
    const error = await failure(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
    expect((error as RequestError).status).toBe(502);
    expect((error as Error).message).toBe('The request failed with HTTP 502 Bad Gateway.');
  });

  it('maps a network error to status 0', async () => {
    const error = await failure(new TypeError('Failed to fetch'));
    expect(error).toBeInstanceOf(RequestError);
    expect((error as RequestError).status).toBe(0);
  });

  it('passes an abort on as it is', async () => {
    const abort = new DOMException('aborted', 'AbortError');
    expect(await failure(abort)).toBe(abort);
  });

  it('reports an expired session to the app', async () => {
    const { instance, onSessionExpired } = client(new Response('', { status: 401 }));
    await expect(instance.fetch('/studies')).rejects.toBeInstanceOf(SessionExpiredError);
    expect(onSessionExpired).toHaveBeenCalledTimes(1);
  });

  it('reports a signer that cannot renew the session', async () => {
    const signer: RequestSigner = {
      sign: async () => {
        throw new SessionExpiredError();
      },
    };
    const { instance, fetchImpl, onSessionExpired } = client(new Response(), signer);
    await expect(instance.fetch('/studies')).rejects.toBeInstanceOf(SessionExpiredError);
    expect(fetchImpl).not.toHaveBeenCalled();
    expect(onSessionExpired).toHaveBeenCalledTimes(1);
  });
});

describe('DICOM JSON readers', () => {
  const dataset = {
    '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane^A^Dr^MD', Ideographic: '…' }] },
    '00080061': { vr: 'CS', Value: ['CT', 'MR'] },
    '00201208': { vr: 'IS', Value: ['42'] },
    '00280030': { vr: 'DS', Value: [0.5] },
    '00081030': { vr: 'LO' },
  };

  it('reads strings', () => {
    expect(dicomString(dataset, '00080061')).toBe('CT');
    expect(dicomString(dataset, '00081030')).toBe('');
    expect(dicomString(dataset, '00200010')).toBe('');
    expect(dicomStrings(dataset, '00080061')).toEqual(['CT', 'MR']);
  });

  it('reads numbers given as strings or numbers', () => {
    expect(dicomNumber(dataset, '00201208')).toBe(42);
    expect(dicomNumber(dataset, '00280030')).toBe(0.5);
    expect(dicomNumber(dataset, '00081030')).toBeNull();
  });

  it('reads the Alphabetic person name', () => {
    expect(personName(dataset, '00100010')).toBe('Doe^Jane^A^Dr^MD');
    expect(personName(dataset, '00081030')).toBe('');
  });

  it('formats person names', () => {
    expect(formatPersonName('Doe^Jane^A^Dr^MD')).toBe('Doe, Jane A, Dr, MD');
    expect(formatPersonName('Doe^Jane')).toBe('Doe, Jane');
    expect(formatPersonName('Doe')).toBe('Doe');
    expect(formatPersonName('')).toBe('');
  });
});

describe('warningTexts', () => {
  it('reads several fields', () => {
    const header = '299 cirrus: "the result is cut, ask again", 299 cirrus: "unknown parameter \\"Foo\\" ignored"';
    expect(warningTexts(header)).toEqual(['the result is cut, ask again', 'unknown parameter "Foo" ignored']);
  });
  it('is empty without a header', () => {
    expect(warningTexts(null)).toEqual([]);
  });
});
