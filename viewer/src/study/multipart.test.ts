import { describe, expect, it } from 'vitest';
import { parseMultipart } from './multipart';

const encoder = new TextEncoder();

function body(...chunks: (string | Uint8Array)[]): Uint8Array {
  const parts = chunks.map((chunk) => (typeof chunk === 'string' ? encoder.encode(chunk) : chunk));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

describe('parseMultipart', () => {
  it('splits two parts with their content types', () => {
    const pixels = new Uint8Array([0, 13, 10, 45, 45, 255]);
    const data = body(
      '--b1\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n',
      pixels,
      '\r\n--b1\r\nContent-Type: image/jp2\r\n\r\nJP2',
      '\r\n--b1--\r\n',
    );
    const parts = parseMultipart(data, 'multipart/related; type="application/octet-stream"; boundary=b1');
    expect(parts).toHaveLength(2);
    expect(parts[0].headers['content-type']).toBe('application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1');
    expect([...parts[0].body]).toEqual([...pixels]);
    expect(new TextDecoder().decode(parts[1].body)).toBe('JP2');
  });

  it('ignores a preamble and a quoted boundary', () => {
    const data = body('preamble\r\n--"x"\r\n', '');
    expect(() => parseMultipart(data, 'multipart/related; boundary="x"')).toThrow();
    const ok = body('preamble\r\n--x y\r\nContent-Type: a/b\r\n\r\nAB\r\n--x y--');
    const parts = parseMultipart(ok, 'multipart/related; boundary="x y"');
    expect(parts).toHaveLength(1);
    expect(new TextDecoder().decode(parts[0].body)).toBe('AB');
  });

  it('accepts a part without headers', () => {
    const parts = parseMultipart(body('--q\r\n\r\nXY\r\n--q--'), 'multipart/related; boundary=q');
    expect(parts[0].headers).toEqual({});
    expect(new TextDecoder().decode(parts[0].body)).toBe('XY');
  });

  it('returns a single-part body whole', () => {
    const data = body('JPEG');
    const parts = parseMultipart(data, 'image/jpeg');
    expect(parts).toHaveLength(1);
    expect(parts[0].headers['content-type']).toBe('image/jpeg');
    expect(parts[0].body).toBe(data);
  });

  it('rejects a body without a closing delimiter', () => {
    expect(() => parseMultipart(body('--q\r\nContent-Type: a/b\r\n\r\nXY'), 'multipart/related; boundary=q')).toThrow(/closing delimiter/);
  });

  it('rejects a multipart type without a boundary', () => {
    expect(() => parseMultipart(body('--q--'), 'multipart/related')).toThrow(/boundary/);
  });
});
