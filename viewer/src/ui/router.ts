// The hash routes of the viewer. The fragment never reaches a server, and no route carries a
// patient name, ID, accession number or search filter.

export type Route =
  | { kind: 'worklist' }
  | { kind: 'study'; site: string | null; studyUid: string; mprSeriesUid?: string }
  | { kind: 'not-found'; hash: string };

const STUDY_ROUTE = /^#\/(?:sites\/([^/]+)\/)?studies\/([^/]+)(?:\/mpr\/([^/]+))?\/?$/;

/** Returns the route of a location hash such as "#/sites/north/studies/1.2.3". */
export function parseRoute(hash: string): Route {
  if (hash === '' || hash === '#' || hash === '#/') return { kind: 'worklist' };
  const match = STUDY_ROUTE.exec(hash);
  if (!match) return { kind: 'not-found', hash };
  try {
    const route: Route = {
      kind: 'study',
      site: match[1] ? decodeURIComponent(match[1]) : null,
      studyUid: decodeURIComponent(match[2]),
    };
    if (match[3]) route.mprSeriesUid = decodeURIComponent(match[3]);
    return route;
  } catch {
    return { kind: 'not-found', hash };
  }
}
