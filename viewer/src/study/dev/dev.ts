// Development harness of the study view, outside the production build: mounts the view with
// an unsigned client on plain fetch. Query parameters: base (the DICOMweb URL), study, and
// optionally site and mpr (a Series Instance UID).

import { type DicomJson, type DicomwebClient, RequestError, SessionExpiredError } from '../../contract';
import { mountStudyView } from '../index';

const params = new URLSearchParams(location.search);
const baseUrl = params.get('base') ?? '/dicomweb';

const client: DicomwebClient = {
  baseUrl,
  async fetch(pathOrUrl, init) {
    const url = /^https?:/.test(pathOrUrl) ? pathOrUrl : `${baseUrl}${pathOrUrl}`;
    let response: Response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new RequestError(0, `request to ${url} failed: ${String(error)}`);
    }
    if (response.status === 401 || response.status === 403) {
      throw new SessionExpiredError();
    }
    if (!response.ok) {
      throw new RequestError(response.status, `${url} returned ${response.status}`);
    }
    return response;
  },
  async json<T = DicomJson[]>(pathOrUrl: string) {
    const response = await this.fetch(pathOrUrl, { headers: { Accept: 'application/dicom+json' } });
    return (response.status === 204 ? [] : await response.json()) as T;
  },
};

const container = document.getElementById('app')!;
let unmount = mount();

function mount(): () => void {
  return mountStudyView(
    container,
    client,
    { site: params.get('site'), studyUid: params.get('study') ?? '' },
    {
      mprSeriesUid: params.get('mpr') ?? undefined,
      onClose: () => unmount(),
      onError: (error) => {
        container.dataset.sessionExpired = 'true';
        console.error(error);
      },
    },
  );
}

// For headless checks: unmount the view, or unmount it and mount it again.
Object.assign(window, {
  unmountStudyView: () => unmount(),
  remountStudyView: () => {
    unmount();
    unmount = mount();
  },
});
