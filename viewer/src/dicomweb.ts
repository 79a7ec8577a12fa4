// The DicomwebClient that every request of the viewer goes through, and readers of DICOM JSON.

import type { RequestSigner } from './auth/types';
import { type DicomJson, type DicomwebClient, RequestError, SessionExpiredError } from './contract';

export interface ClientOptions {
  /** Called with every SessionExpiredError before it is thrown, so the app can react. */
  onSessionExpired?: (error: SessionExpiredError) => void;
  fetchImpl?: typeof fetch;
  /** The origin that a relative baseUrl is resolved against: the page's origin by default. */
  origin?: string;
}

// 403 reasons that mean "your credentials or signature are not accepted", as opposed to a
// valid caller without a grant. API Gateway names them in x-amzn-ErrorType and in a
// `message` such as "The security token included in the request is expired". The local
// stack returns {"error": "access denied: <reason>"}, with the reasons of cirrus.local.sigv4.
const CREDENTIAL_ERROR_TYPES =
  /^(ExpiredToken|InvalidSignature|IncompleteSignature|UnrecognizedClient|InvalidClientTokenId|MissingAuthenticationToken)/i;
const CREDENTIAL_ERROR_MESSAGES =
  /expired|signature|security token|not signed|X-Amz-Date|credential scope|Authorization header|signed headers/i;
const GRANT_DENIAL = /no grant/i;

/** A SessionExpiredError for a response that rejected the credentials, with the server's
 * reason, such as "access denied: the signature does not match the request, or its access
 * key is unknown; …". */
export class CredentialsRejectedError extends SessionExpiredError {
  constructor(readonly reason: string) {
    super(`Your session has expired or its credentials were rejected${reason ? ` (${reason})` : ''}. Sign in again.`);
  }
}

export class HttpDicomwebClient implements DicomwebClient {
  readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private readonly origin: string;

  constructor(
    baseUrl: string,
    private readonly signer: RequestSigner,
    private readonly options: ClientOptions = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = options.fetchImpl ?? ((input, init) => fetch(input, init));
    this.origin = options.origin ?? globalThis.location?.origin ?? 'http://127.0.0.1';
  }

  /** Returns the absolute URL of a path relative to baseUrl, or `pathOrUrl` if absolute. */
  resolve(pathOrUrl: string): string {
    if (/^https?:\/\//i.test(pathOrUrl)) return pathOrUrl;
    const path = pathOrUrl.startsWith('/') ? pathOrUrl : `/${pathOrUrl}`;
    return new URL(this.baseUrl + path, this.origin).toString();
  }

  async fetch(pathOrUrl: string, init: RequestInit = {}): Promise<Response> {
    const url = this.resolve(pathOrUrl);
    try {
      const signed = await this.signer.sign(url, init);
      let response: Response;
      try {
        response = await this.fetchImpl(url, signed);
      } catch (error) {
        if (isAbort(error)) throw error;
        throw new RequestError(0, `The server could not be reached (${describe(error)}). Check the network and try again.`);
      }
      if (!response.ok) throw await errorOf(response);
      return response;
    } catch (error) {
      if (error instanceof SessionExpiredError) this.options.onSessionExpired?.(error);
      throw error;
    }
  }

  async json<T = DicomJson[]>(pathOrUrl: string): Promise<T> {
    const response = await this.fetch(pathOrUrl, { headers: { Accept: 'application/dicom+json' } });
    if (response.status === 204) return [] as T;
    try {
      return (await response.json()) as T;
    } catch {
      throw new RequestError(response.status, `The server's response to ${pathOrUrl} is not valid JSON.`);
    }
  }
}

/** Turns a failed response into SessionExpiredError or RequestError, with the server's reason. */
export async function errorOf(response: Response): Promise<Error> {
  const reason = await reasonOf(response);
  const errorType = response.headers.get('x-amzn-ErrorType') ?? '';
  const rejectedCredentials =
    response.status === 401 ||
    (response.status === 403 &&
      !GRANT_DENIAL.test(reason) &&
      (CREDENTIAL_ERROR_TYPES.test(errorType) || CREDENTIAL_ERROR_MESSAGES.test(reason)));
  if (rejectedCredentials) return new CredentialsRejectedError(reason);
  if (response.status === 403) {
    const detail = reason.replace(/^access denied:\s*/i, '') || 'the server refused this request';
    return new RequestError(403, `Access denied: ${detail}. Ask your administrator for access.`);
  }
  const statusText = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
  return new RequestError(response.status, reason ? `${reason} (${statusText})` : `The request failed with ${statusText}.`);
}

/** Returns the `error` (Cirrus) or `message` (API Gateway) of a JSON body, else ''. */
async function reasonOf(response: Response): Promise<string> {
  let body: unknown;
  try {
    body = JSON.parse(await response.text());
  } catch {
    return '';
  }
  if (typeof body !== 'object' || body === null) return '';
  const record = body as Record<string, unknown>;
  for (const key of ['error', 'message', 'Message']) {
    if (typeof record[key] === 'string') return record[key];
  }
  return '';
}

/** Returns the texts of a Warning header (RFC 7234 5.5), such as `299 host: "the result is
 * cut"`, in order. Several fields may arrive joined by commas. */
export function warningTexts(header: string | null): string[] {
  const texts: string[] = [];
  for (const match of (header ?? '').matchAll(/\d{3} [^"]*"((?:[^"\\]|\\.)*)"/g)) {
    texts.push(match[1].replace(/\\(.)/g, '$1'));
  }
  return texts;
}

function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError';
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// Readers of DICOM JSON values (PS3.18 F.2). Tags are 8 uppercase hex digits, such as "0020000D".

/** Returns the values of an attribute, or [] when it is absent or empty. */
export function dicomValues(dataset: DicomJson, tag: string): unknown[] {
  return dataset[tag]?.Value ?? [];
}

/** Returns the first value of a string attribute, or '' when it is absent. */
export function dicomString(dataset: DicomJson, tag: string): string {
  const value = dicomValues(dataset, tag)[0];
  return typeof value === 'string' || typeof value === 'number' ? String(value) : '';
}

/** Returns every value of a multi-valued string attribute, such as ModalitiesInStudy. */
export function dicomStrings(dataset: DicomJson, tag: string): string[] {
  return dicomValues(dataset, tag).filter((value) => typeof value === 'string' || typeof value === 'number').map(String);
}

/** Returns the first value of a numeric attribute (IS and DS may come as strings), or null. */
export function dicomNumber(dataset: DicomJson, tag: string): number | null {
  const value = dicomValues(dataset, tag)[0];
  const number = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  return Number.isFinite(number) ? number : null;
}

/** Returns the Alphabetic group of the first person name, such as "Doe^Jane", or ''. */
export function personName(dataset: DicomJson, tag: string): string {
  const value = dicomValues(dataset, tag)[0];
  if (typeof value !== 'object' || value === null) return '';
  const alphabetic = (value as Record<string, unknown>).Alphabetic;
  return typeof alphabetic === 'string' ? alphabetic : '';
}

/** Formats a PN value for reading: "Doe^Jane^A^Dr^MD" becomes "Doe, Jane A, Dr, MD". */
export function formatPersonName(name: string): string {
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = name.split('^').map((part) => part.trim());
  const first = [given, middle].filter(Boolean).join(' ');
  return [family, first, prefix, suffix].filter(Boolean).join(', ');
}
