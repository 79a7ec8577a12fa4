// The interfaces that join the viewer's parts: configuration, the DICOMweb client that every
// request goes through, and the entry point of the study view.

/** The signing mode of the viewer's requests, from /config.json. */
export type AuthConfig =
  // The local stack's open mode: requests are not signed.
  | { mode: 'none' }
  // A local stack with an access document: the user types an access key id and its secret,
  // kept in sessionStorage, and requests are signed with SigV4 (service execute-api).
  | { mode: 'keys'; region: string }
  // AWS: Cognito hosted UI sign-in (authorization code with PKCE), then identity pool
  // credentials that sign requests with SigV4.
  | {
      mode: 'cognito';
      region: string;
      userPoolId: string;
      clientId: string;
      // Hosted UI base URL, such as https://cirrus-prod.auth.eu-west-1.amazoncognito.com
      domain: string;
      identityPoolId: string;
    };

/** /config.json, served by `cirrus dev` and deployed beside the viewer by the stack. */
export interface ViewerConfig {
  // DICOMweb base URL without a trailing slash: "/dicomweb" locally, the API's URL on AWS.
  dicomweb: string;
  auth: AuthConfig;
}

/** Raised by the client when the server rejects the session's credentials (401, 403 with an
 * expired or invalid signature, or credentials that can no longer be refreshed). */
export class SessionExpiredError extends Error {
  constructor(message = 'Your session has expired. Sign in again.') {
    super(message);
    this.name = 'SessionExpiredError';
  }
}

/** Raised for any other failed request: status is 0 for a network error. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

export interface DicomwebClient {
  /** The DICOMweb base URL, as in ViewerConfig.dicomweb. */
  readonly baseUrl: string;
  /** Send a request to `path` (relative to baseUrl, starting with "/") or to an absolute URL,
   * signed as the session requires. Throws SessionExpiredError or RequestError for a failed
   * response; returns the response otherwise. */
  fetch(pathOrUrl: string, init?: RequestInit): Promise<Response>;
  /** GET with Accept: application/dicom+json; 204 gives []. */
  json<T = DicomJson[]>(pathOrUrl: string): Promise<T>;
}

/** One data set in the DICOM JSON model (PS3.18 F.2): tag "00100010" to its attribute. */
export type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string; InlineBinary?: string }>;

/** A study as the worklist found it. site is null when the search named no site. */
export interface StudyRef {
  site: string | null;
  studyUid: string;
}

/** Mounts the study view into `container`; the returned function unmounts it and releases
 * its viewports, caches and requests. `mprSeriesUid` opens the MPR layout of that series
 * directly. `onClose` runs when the user goes back to the worklist. `onError` receives a
 * SessionExpiredError from any request of the view, so the shell can show its sign-in state.
 * Without `onError`, the view shows the message as a study error. */
export type MountStudyView = (
  container: HTMLElement,
  client: DicomwebClient,
  study: StudyRef,
  options?: { mprSeriesUid?: string; onClose?: () => void; onError?: (error: SessionExpiredError) => void },
) => () => void;
