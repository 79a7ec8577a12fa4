import { describe, expect, it } from 'vitest';
import { framePath, parseMediaType, seriesPath, studyPath, transferSyntaxOf } from './paths';

describe('frame paths', () => {
  it('builds a frame path without a site', () => {
    expect(framePath({ site: null, studyUid: '1.2' }, '1.2.3', '1.2.3.4', 1)).toBe('/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1');
  });

  it('builds a frame path with a site', () => {
    expect(framePath({ site: 'north', studyUid: '1.2' }, '1.2.3', '1.2.3.4', 7)).toBe(
      '/sites/north/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/7',
    );
  });

  it('encodes unusual characters of a site', () => {
    expect(studyPath({ site: 'a b/c', studyUid: '1' })).toBe('/sites/a%20b%2Fc/studies/1');
  });

  it('builds a series path', () => {
    expect(seriesPath({ site: null, studyUid: '1' }, '2')).toBe('/studies/1/series/2');
  });

  it('rejects frame 0', () => {
    expect(() => framePath({ site: null, studyUid: '1' }, '2', '3', 0)).toThrow(RangeError);
  });
});

describe('transferSyntaxOf', () => {
  it('reads a quoted transfer-syntax parameter', () => {
    expect(transferSyntaxOf('application/octet-stream; transfer-syntax="1.2.840.10008.1.2.4.90"')).toBe('1.2.840.10008.1.2.4.90');
  });

  it('reads an unquoted transfer-syntax parameter', () => {
    expect(transferSyntaxOf('image/jls;transfer-syntax=1.2.840.10008.1.2.4.80')).toBe('1.2.840.10008.1.2.4.80');
  });

  it('defaults octet-stream to Explicit VR Little Endian', () => {
    expect(transferSyntaxOf('application/octet-stream')).toBe('1.2.840.10008.1.2.1');
  });

  it('defaults image/dicom-rle to RLE Lossless', () => {
    expect(transferSyntaxOf('image/dicom-rle')).toBe('1.2.840.10008.1.2.5');
  });

  it('rejects an unknown media type', () => {
    expect(() => transferSyntaxOf('text/html')).toThrow(/text\/html/);
  });

  it('lower-cases the essence and parameter names', () => {
    expect(parseMediaType('Multipart/Related; Type="application/octet-stream"; BOUNDARY=abc')).toEqual({
      essence: 'multipart/related',
      params: { type: 'application/octet-stream', boundary: 'abc' },
    });
  });
});
