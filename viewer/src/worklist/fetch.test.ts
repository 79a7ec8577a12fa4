import { describe, expect, it } from 'vitest';
import { type DicomJson, type DicomwebClient, RequestError } from '../contract';
import { fetchAllStudies, truncationNotice } from './fetch';
import { EMPTY_FILTERS } from './query';

function study(uid: string, retrieveUrl = ''): DicomJson {
  const dataset: DicomJson = { '0020000D': { vr: 'UI', Value: [uid] } };
  if (retrieveUrl) dataset['00081190'] = { vr: 'UR', Value: [retrieveUrl] };
  return dataset;
}

interface Request {
  limit: number;
  offset: number;
}

/**
 * A client whose server contains `matches` in index order and responds as Cirrus does: at most
 * `maxResponse` per response, a "result is cut" Warning when more follow, and `warnings` on
 * every response. `beforeResponse` runs before each response, with the requests so far.
 */
function serverOf(
  matches: DicomJson[],
  { maxResponse = 1000, warnings = [] as string[], beforeResponse = (_: Request[]) => {} } = {},
) {
  const requests: Request[] = [];
  const client: DicomwebClient = {
    baseUrl: '/dicomweb',
    async fetch(path: string, init?: RequestInit) {
      const params = new URL(path, 'http://server.invalid').searchParams;
      const request = { limit: Number(params.get('limit')), offset: Number(params.get('offset')) };
      requests.push(request);
      beforeResponse(requests);
      init?.signal?.throwIfAborted();
      const limit = Math.min(request.limit, maxResponse);
      const page = matches.slice(request.offset, request.offset + limit);
      const texts = [...warnings];
      if (matches.length > request.offset + limit) texts.push(`the result is cut to the first ${limit} of more matches`);
      const headers = new Headers();
      if (texts.length) headers.set('Warning', texts.map((text) => `299 cirrus: "${text}"`).join(', '));
      if (page.length === 0) return new Response(null, { status: 204, headers });
      return new Response(JSON.stringify(page), { status: 200, headers });
    },
    json: () => Promise.reject(new Error('the worklist does not use json()')),
  };
  return { client, requests };
}

const studies = (count: number, prefix = '1.') => Array.from({ length: count }, (_, i) => study(`${prefix}${i}`));
const uidsOf = (datasets: DicomJson[]) => datasets.map((dataset) => dataset['0020000D'].Value?.[0]);

describe('fetchAllStudies', () => {
  it('reads every page until a short one', async () => {
    const { client, requests } = serverOf(studies(23));

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 100 });

    expect(requests).toEqual([
      { limit: 10, offset: 0 },
      { limit: 10, offset: 10 },
      { limit: 10, offset: 20 },
    ]);
    expect(uidsOf(result.datasets)).toEqual(uidsOf(studies(23)));
    expect(result.moreThanMax).toBe(false);
    expect(result.incomplete).toBe(false);
    expect(result.warnings).toEqual([]);
  });

  it('stops at an empty page after full ones', async () => {
    const { client, requests } = serverOf(studies(20));

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 100 });

    expect(requests).toHaveLength(3);
    expect(requests[2]).toEqual({ limit: 10, offset: 20 });
    expect(result.datasets).toHaveLength(20);
    expect(result.moreThanMax).toBe(false);
  });

  it('returns nothing for no match', async () => {
    const { client, requests } = serverOf([]);

    const result = await fetchAllStudies(client, EMPTY_FILTERS);

    expect(requests).toEqual([{ limit: 1000, offset: 0 }]);
    expect(result.datasets).toEqual([]);
    expect(result.moreThanMax).toBe(false);
  });

  it('pages by 1,000 up to 2,000 by default', async () => {
    const { client, requests } = serverOf(studies(2500));

    const result = await fetchAllStudies(client, EMPTY_FILTERS);

    expect(requests).toEqual([
      { limit: 1000, offset: 0 },
      { limit: 1000, offset: 1000 },
      { limit: 1, offset: 2000 },
    ]);
    expect(result.datasets).toHaveLength(2000);
    expect(result.moreThanMax).toBe(true);
  });

  it('stops at the cap and reports more matches', async () => {
    const { client, requests } = serverOf(studies(35));

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 25 });

    expect(requests.map((request) => request.limit)).toEqual([10, 10, 6]);
    expect(uidsOf(result.datasets)).toEqual(uidsOf(studies(25)));
    expect(result.moreThanMax).toBe(true);
  });

  it('does not report exactly the cap as more', async () => {
    const { client } = serverOf(studies(25));

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 25 });

    expect(result.datasets).toHaveLength(25);
    expect(result.moreThanMax).toBe(false);
  });

  it('keeps one copy of a study that moved to the next page', async () => {
    const matches = studies(15);
    // A study stored between the two requests shifts the server's order by one.
    const { client } = serverOf(matches, {
      beforeResponse: (requests) => {
        if (requests.length === 2) matches.unshift(study('new'));
      },
    });

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 100 });

    expect(uidsOf(result.datasets)).toEqual(uidsOf(studies(15)));
  });

  it('keeps one study of two sites twice', async () => {
    const { client } = serverOf([study('1.1', '/dicomweb/sites/a/studies/1.1'), study('1.1', '/dicomweb/sites/b/studies/1.1')]);

    const result = await fetchAllStudies(client, EMPTY_FILTERS);

    expect(result.datasets).toHaveLength(2);
  });

  it('drops the paging warnings and keeps the others once', async () => {
    const { client } = serverOf(studies(25), { warnings: ['fuzzymatching=true is ignored'] });

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 100 });

    expect(result.warnings).toEqual(['fuzzymatching=true is ignored']);
    expect(result.incomplete).toBe(false);
  });

  it('reports a search that the server cut', async () => {
    const cut =
      'no index serves these matching keys, so the search read only the first 2000 study records and the result may be incomplete';
    const { client } = serverOf(studies(5), { warnings: [cut] });

    const result = await fetchAllStudies(client, EMPTY_FILTERS);

    expect(result.incomplete).toBe(true);
    expect(result.moreThanMax).toBe(false);
    expect(result.warnings).toEqual([cut]);
  });

  it('ends at a response shorter than the limit', async () => {
    const { client, requests } = serverOf(studies(25), { maxResponse: 10 });

    const result = await fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 20, maxStudies: 100 });

    // A short response ends the search: this server's own maximum hides the rest.
    expect(requests).toHaveLength(1);
    expect(result.datasets).toHaveLength(10);
  });

  it('stops when the search is cancelled between pages', async () => {
    const controller = new AbortController();
    const { client, requests } = serverOf(studies(50), {
      beforeResponse: (sent) => {
        if (sent.length === 2) controller.abort();
      },
    });

    const search = fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 10, maxStudies: 100, signal: controller.signal });

    await expect(search).rejects.toMatchObject({ name: 'AbortError' });
    expect(requests).toHaveLength(2);
  });

  it('sends nothing for a search cancelled before it starts', async () => {
    const controller = new AbortController();
    controller.abort();
    const { client, requests } = serverOf(studies(5));

    await expect(fetchAllStudies(client, EMPTY_FILTERS, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(requests).toHaveLength(0);
  });

  it('rejects a page size of 0', async () => {
    const { client, requests } = serverOf(studies(5));

    await expect(fetchAllStudies(client, EMPTY_FILTERS, { pageSize: 0 })).rejects.toBeInstanceOf(RangeError);
    expect(requests).toHaveLength(0);
  });

  it('passes a failed request on', async () => {
    const client: DicomwebClient = {
      baseUrl: '/dicomweb',
      fetch: () => Promise.reject(new RequestError(503, 'Service Unavailable')),
      json: () => Promise.reject(new Error('unused')),
    };

    await expect(fetchAllStudies(client, EMPTY_FILTERS)).rejects.toBeInstanceOf(RequestError);
  });
});

describe('truncationNotice', () => {
  it('names the cap when more studies match', () => {
    const notice = truncationNotice({ datasets: studies(2000), moreThanMax: true, incomplete: false });
    expect(notice).toMatch(/^More than 2,000 studies match/);
    expect(notice).toMatch(/narrow the search/);
  });
  it('tells of a search that the server cut', () => {
    expect(truncationNotice({ datasets: studies(3), moreThanMax: false, incomplete: true })).toMatch(/only part of the studies/);
  });
  it('is empty for a whole result', () => {
    expect(truncationNotice({ datasets: studies(3), moreThanMax: false, incomplete: false })).toBe('');
  });
});
