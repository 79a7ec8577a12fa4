// DICOMweb paths of the study view, relative to the client's base URL.

import type { StudyRef } from '../contract';

/**
 * Accept header of frame requests. `transfer-syntax=*` gets a compressed frame as stored, so
 * the loader's codecs decode it in the browser and the server transcodes nothing, and an
 * uncompressed frame as Explicit VR Little Endian pixels. Each part's Content-Type names the
 * transfer syntax that it carries (docs/transfer-syntaxes.md, "Negotiation rules"). The type
 * parameter is not quoted, because a quote makes Accept a header that is not CORS-safelisted,
 * so an unsigned request to another origin would need a preflight request.
 */
export const FRAME_ACCEPT = 'multipart/related; type=application/octet-stream; transfer-syntax=*';

const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';

// Transfer syntax of a single-part image media type without a transfer-syntax parameter:
// the defaults of PS3.18 Table 8.7.3-5.
const DEFAULT_SYNTAX_BY_MEDIA_TYPE: Record<string, string> = {
  'application/octet-stream': EXPLICIT_VR_LITTLE_ENDIAN,
  'image/jpeg': '1.2.840.10008.1.2.4.70',
  'image/dicom-rle': '1.2.840.10008.1.2.5',
  'image/jls': '1.2.840.10008.1.2.4.80',
  'image/jp2': '1.2.840.10008.1.2.4.90',
  'image/jpx': '1.2.840.10008.1.2.4.92',
  'image/jphc': '1.2.840.10008.1.2.4.201',
};

export function studyPath(study: StudyRef): string {
  const site = study.site === null ? '' : `/sites/${encodeURIComponent(study.site)}`;
  return `${site}/studies/${encodeURIComponent(study.studyUid)}`;
}

export function seriesPath(study: StudyRef, seriesUid: string): string {
  return `${studyPath(study)}/series/${encodeURIComponent(seriesUid)}`;
}

/** Returns the path of one frame; `frame` counts from 1, as in PS3.18 10.4.1.1.5. */
export function framePath(study: StudyRef, seriesUid: string, sopInstanceUid: string, frame: number): string {
  if (!Number.isInteger(frame) || frame < 1) {
    throw new RangeError(`frame number ${frame} is invalid: frames count from 1`);
  }
  return `${seriesPath(study, seriesUid)}/instances/${encodeURIComponent(sopInstanceUid)}/frames/${frame}`;
}

/** Splits a media type into its lower-case essence and its parameters, unquoted. */
export function parseMediaType(value: string): { essence: string; params: Record<string, string> } {
  const [essence, ...rest] = value.split(';');
  const params: Record<string, string> = {};
  for (const param of rest) {
    const eq = param.indexOf('=');
    if (eq < 0) {
      continue;
    }
    const name = param.slice(0, eq).trim().toLowerCase();
    let paramValue = param.slice(eq + 1).trim();
    if (paramValue.startsWith('"') && paramValue.endsWith('"') && paramValue.length >= 2) {
      paramValue = paramValue.slice(1, -1);
    }
    params[name] = paramValue;
  }
  return { essence: essence.trim().toLowerCase(), params };
}

/** Returns the transfer syntax UID of a frame from its part's Content-Type. */
export function transferSyntaxOf(contentType: string | null | undefined): string {
  if (!contentType) {
    return EXPLICIT_VR_LITTLE_ENDIAN;
  }
  const { essence, params } = parseMediaType(contentType);
  const named = params['transfer-syntax'];
  if (named && named !== '*') {
    return named;
  }
  const syntax = DEFAULT_SYNTAX_BY_MEDIA_TYPE[essence];
  if (!syntax) {
    throw new Error(`frame has the unexpected media type ${essence}`);
  }
  return syntax;
}
