// Reader of multipart/related bodies (RFC 2387) of WADO-RS frame responses.

import { parseMediaType } from './paths';

export interface Part {
  // Header field names in lower case.
  headers: Record<string, string>;
  body: Uint8Array;
}

const CRLF = [13, 10];

function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const last = haystack.length - needle.length;
  outer: for (let i = from; i <= last; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) {
        continue outer;
      }
    }
    return i;
  }
  return -1;
}

function parseHeaders(text: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) {
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
  return headers;
}

/**
 * Splits a multipart/related body into its parts. A body with another Content-Type is one
 * part. Throws for a multipart body without a boundary parameter or a closing delimiter.
 */
export function parseMultipart(body: Uint8Array, contentType: string | null): Part[] {
  const { essence, params } = parseMediaType(contentType ?? '');
  if (!essence.startsWith('multipart/')) {
    return [{ headers: contentType ? { 'content-type': contentType } : {}, body }];
  }
  const boundary = params.boundary;
  if (!boundary) {
    throw new Error(`multipart response has no boundary parameter: ${contentType}`);
  }
  const encoder = new TextEncoder();
  const delimiter = encoder.encode(`--${boundary}`);
  const bodyDelimiter = encoder.encode(`\r\n--${boundary}`);
  const headerEnd = encoder.encode('\r\n\r\n');
  const decoder = new TextDecoder();

  let start = indexOf(body, delimiter, 0);
  if (start < 0) {
    throw new Error('multipart response has no part: the boundary never occurs');
  }
  const parts: Part[] = [];
  let cursor = start + delimiter.length;
  for (;;) {
    // After a delimiter comes "--" (the close delimiter) or CRLF and the part's headers.
    if (body[cursor] === 45 && body[cursor + 1] === 45) {
      return parts;
    }
    if (body[cursor] !== CRLF[0] || body[cursor + 1] !== CRLF[1]) {
      // Transport padding (spaces or tabs) may follow a delimiter, RFC 2046 5.1.1.
      const lineEnd = indexOf(body, new Uint8Array(CRLF), cursor);
      if (lineEnd < 0) {
        break;
      }
      cursor = lineEnd;
    }
    const headersStart = cursor + 2;
    let contentStart: number;
    let headers: Record<string, string>;
    if (body[headersStart] === CRLF[0] && body[headersStart + 1] === CRLF[1]) {
      headers = {};
      contentStart = headersStart + 2;
    } else {
      const end = indexOf(body, headerEnd, headersStart);
      if (end < 0) {
        throw new Error('multipart part has no blank line after its headers');
      }
      headers = parseHeaders(decoder.decode(body.subarray(headersStart, end)));
      contentStart = end + headerEnd.length;
    }
    const next = indexOf(body, bodyDelimiter, contentStart);
    if (next < 0) {
      break;
    }
    parts.push({ headers, body: body.subarray(contentStart, next) });
    cursor = next + bodyDelimiter.length;
  }
  throw new Error('multipart response ends before its closing delimiter');
}
