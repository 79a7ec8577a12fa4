// Colour conversion of YBR_FULL_422 pixels sent as stored, in a native (uncompressed) transfer
// syntax, which the image loader of @cornerstonejs/dicom-image-loader 5.14 does not convert.

/**
 * Converts one frame of 8-bit YBR_FULL_422 pixel data to interleaved RGB. Each pair of
 * horizontal pixels is stored as Y1 Y2 Cb Cr, four bytes for two pixels (PS3.3 C.7.6.3.1.2),
 * and the YCbCr to RGB equations are those of YBR_FULL (PS3.3 C.7.6.3.1.2, ITU-R BT.601).
 */
export function ybrFull422ToRgb(pixels: Uint8Array, rows: number, columns: number): Uint8Array<ArrayBuffer> {
  if (columns % 2 !== 0) {
    throw new Error(`YBR_FULL_422 pixel data with an odd number of columns (${columns}) cannot be decoded`);
  }
  const pixelCount = rows * columns;
  if (pixels.length < pixelCount * 2) {
    throw new Error(`YBR_FULL_422 frame has ${pixels.length} bytes, expected ${pixelCount * 2} for ${rows}x${columns} pixels`);
  }
  const rgb = new Uint8Array(pixelCount * 3);
  let out = 0;
  for (let pair = 0; pair < pixelCount / 2; pair++) {
    const offset = pair * 4;
    const cb = pixels[offset + 2] - 128;
    const cr = pixels[offset + 3] - 128;
    for (const y of [pixels[offset], pixels[offset + 1]]) {
      rgb[out++] = clampByte(y + 1.402 * cr);
      rgb[out++] = clampByte(y - 0.344136 * cb - 0.714136 * cr);
      rgb[out++] = clampByte(y + 1.772 * cb);
    }
  }
  return rgb;
}

function clampByte(value: number): number {
  return Math.min(255, Math.max(0, Math.round(value)));
}

const NATIVE_SYNTAXES = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.1.99', '1.2.840.10008.1.2.2']);

/** The attributes of the Image Pixel module that tell whether a frame needs the conversion. */
export interface PixelFormat {
  photometricInterpretation?: string;
  bitsAllocated?: number;
  rows?: number;
  columns?: number;
}

/**
 * Tells whether a frame is YBR_FULL_422 as stored: a native transfer syntax, 8 bits and two
 * bytes a pixel. A frame of a JPEG instance arrives compressed, and its decoder outputs RGB.
 */
export function isNativeYbrFull422(format: PixelFormat, transferSyntax: string, byteLength: number): boolean {
  return (
    format.photometricInterpretation === 'YBR_FULL_422' &&
    NATIVE_SYNTAXES.has(transferSyntax) &&
    format.bitsAllocated === 8 &&
    format.rows !== undefined &&
    format.columns !== undefined &&
    byteLength === format.rows * format.columns * 2
  );
}
