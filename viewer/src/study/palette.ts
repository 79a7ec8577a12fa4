// Palette Color Lookup Table Data (PS3.3 C.7.6.3.1.6) as the loader's metadata provider reads
// it: a list of numbers in Value, where DICOM JSON carries OW data as InlineBinary or as a
// BulkDataURI.

import type { DicomJson, DicomwebClient } from '../contract';
import { parseMultipart } from './multipart';
import { FRAME_ACCEPT } from './paths';

const PALETTES = [
  { descriptor: '00281101', data: '00281201' },
  { descriptor: '00281102', data: '00281202' },
  { descriptor: '00281103', data: '00281203' },
] as const;

/**
 * Decodes LUT data bytes into entries. The descriptor's first value is the number of entries
 * (0 means 65536). Data with two bytes an entry is read as little endian 16-bit words, and
 * data with one byte an entry as 8-bit entries.
 */
export function decodeLutData(bytes: Uint8Array, descriptor: number[]): number[] {
  const entries = descriptor[0] === 0 ? 65536 : descriptor[0];
  if (bytes.length >= entries * 2) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Array.from({ length: entries }, (_, i) => view.getUint16(i * 2, true));
  }
  if (bytes.length >= entries) {
    return Array.from(bytes.subarray(0, entries));
  }
  throw new Error(`palette data has ${bytes.length} bytes, too few for ${entries} entries`);
}

function base64ToBytes(text: string): Uint8Array {
  const binary = atob(text);
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

/** Tells whether an instance has palette data that the metadata provider cannot read yet. */
export function needsPaletteData(instance: DicomJson): boolean {
  return PALETTES.some(({ data }) => instance[data] !== undefined && instance[data].Value === undefined);
}

/**
 * Returns a copy of the instance with its palette data as Value numbers, fetching data given
 * by BulkDataURI through the client.
 */
export async function withPaletteData(instance: DicomJson, client: DicomwebClient): Promise<DicomJson> {
  const copy: DicomJson = { ...instance };
  for (const { descriptor, data } of PALETTES) {
    const attribute = instance[data];
    const entries = instance[descriptor]?.Value as number[] | undefined;
    if (!attribute || attribute.Value !== undefined || !entries) {
      continue;
    }
    let bytes: Uint8Array;
    if (attribute.InlineBinary !== undefined) {
      bytes = base64ToBytes(attribute.InlineBinary);
    } else if (attribute.BulkDataURI !== undefined) {
      const response = await client.fetch(attribute.BulkDataURI, {
        headers: { Accept: FRAME_ACCEPT },
      });
      const [part] = parseMultipart(new Uint8Array(await response.arrayBuffer()), response.headers.get('Content-Type'));
      bytes = part.body;
    } else {
      continue;
    }
    copy[data] = { vr: attribute.vr, Value: decodeLutData(bytes, entries) };
  }
  return copy;
}
