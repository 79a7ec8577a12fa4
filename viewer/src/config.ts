// Loading and validation of /config.json, which the server writes beside the viewer.

import type { AuthConfig, ViewerConfig } from './contract';

/** /config.json is missing, unreadable or does not have the shape of ViewerConfig. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;
const USER_POOL_ID = /^[a-z]{2}(-[a-z]+)+-\d+_[0-9A-Za-z]+$/;
const IDENTITY_POOL_ID = /^[a-z]{2}(-[a-z]+)+-\d+:[0-9a-f-]+$/;

/** Fetches /config.json and validates it. Raises ConfigError saying what failed. */
export async function loadConfig(url = '/config.json', fetchImpl: typeof fetch = fetch): Promise<ViewerConfig> {
  let response: Response;
  try {
    response = await fetchImpl(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
  } catch (error) {
    throw new ConfigError(`${url} could not be fetched (${String(error)}); check that the server is running`);
  }
  if (!response.ok) {
    throw new ConfigError(`${url} returned HTTP ${response.status}; the server must serve the viewer's configuration`);
  }
  let document: unknown;
  try {
    document = await response.json();
  } catch {
    throw new ConfigError(`${url} is not valid JSON`);
  }
  return parseConfig(document);
}

/** Checks a parsed config document. Raises ConfigError naming the first invalid field. */
export function parseConfig(document: unknown): ViewerConfig {
  if (!isObject(document)) throw new ConfigError('the configuration must be a JSON object');
  const dicomweb = document.dicomweb;
  if (typeof dicomweb !== 'string' || dicomweb === '') {
    throw new ConfigError('"dicomweb" must be the DICOMweb base URL, such as "/dicomweb"');
  }
  if (!dicomweb.startsWith('/') && !/^https?:\/\//.test(dicomweb)) {
    throw new ConfigError(`"dicomweb" must be a path starting with "/" or an http(s) URL, not ${JSON.stringify(dicomweb)}`);
  }
  return { dicomweb: dicomweb.replace(/\/+$/, ''), auth: parseAuth(document.auth) };
}

function parseAuth(auth: unknown): AuthConfig {
  if (!isObject(auth)) throw new ConfigError('"auth" must be an object with a "mode"');
  switch (auth.mode) {
    case 'none':
      return { mode: 'none' };
    case 'keys':
      return { mode: 'keys', region: field(auth, 'region', REGION) };
    case 'cognito': {
      const domain = field(auth, 'domain', /^https:\/\/[^/]+$/);
      return {
        mode: 'cognito',
        region: field(auth, 'region', REGION),
        userPoolId: field(auth, 'userPoolId', USER_POOL_ID),
        clientId: field(auth, 'clientId', /^[0-9A-Za-z]+$/),
        domain,
        identityPoolId: field(auth, 'identityPoolId', IDENTITY_POOL_ID),
      };
    }
    default:
      throw new ConfigError(`"auth.mode" must be "none", "keys" or "cognito", not ${JSON.stringify(auth.mode)}`);
  }
}

function field(auth: Record<string, unknown>, name: string, pattern: RegExp): string {
  const value = auth[name];
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new ConfigError(`"auth.${name}" is missing or invalid: ${JSON.stringify(value ?? null)}`);
  }
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
