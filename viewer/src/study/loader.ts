// The image loader of the study view: pixels fetched through DicomwebClient.fetch, decoded by
// @cornerstonejs/dicom-image-loader.
//
// The dicom-image-loader's "wadors:" scheme sends its own XMLHttpRequest, which cannot go
// through DicomwebClient.fetch and so cannot be signed with SigV4 or reported as an expired
// session. This loader registers the "cirrus:" scheme instead. It fetches one frame with the
// client, splits the multipart response and reads the transfer syntax from the part's
// Content-Type. The loader's createImage then decodes the bytes in its web workers (JPEG,
// JPEG-LS, JPEG 2000, HTJ2K and RLE codecs) and applies the rescale. createImage reads the image's modules from cornerstone's metadata providers, which
// the loader's WADO-RS metaDataManager feeds with each instance's DICOM JSON. Frames rather
// than whole instances keep each request small, let the first slice show early, and let a
// multi-frame instance load frame by frame.

import { type Types, imageLoader, cache, metaData } from '@cornerstonejs/core';
import { createImage, wadors } from '@cornerstonejs/dicom-image-loader';
import type { DicomJson, DicomwebClient } from '../contract';
import { withLoaderDefaults } from './dicomJson';
import { parseMultipart } from './multipart';
import { FRAME_ACCEPT, transferSyntaxOf } from './paths';
import { type PixelFormat, isNativeYbrFull422, ybrFull422ToRgb } from './ybr';

export const IMAGE_SCHEME = 'cirrus';

/** The request that fetches one image's pixels, and the callbacks that receive its outcome. */
export interface FrameSource {
  client: DicomwebClient;
  path: string;
  // Aborts the request with every other request of its view.
  signal?: AbortSignal;
  onLoaded?: (imageId: string) => void;
  onFailed?: (imageId: string, error: unknown) => void;
}

const sources = new Map<string, FrameSource>();
let registered = false;

// Errors of image loads that the study view has already reported through FrameSource.onFailed
// or that come from an abort. cornerstone3D 5.14 chains its own promises on every image load
// (cache.putImageLoadObject, the stack viewport's retrieval) without catching them, so each
// failed frame would otherwise also reach the page as an unhandled rejection.
const handledErrors = new WeakSet<object>();

/** Tells whether `reason` is an image load error that the study view has handled. */
export function isHandledLoadError(reason: unknown): boolean {
  return typeof reason === 'object' && reason !== null && handledErrors.has(reason);
}

/** Returns true for the error of an aborted fetch. */
export function isAbortError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { name?: unknown }).name === 'AbortError';
}

/** Returns the image id of a frame path; the metadata manager finds frame 1 of a multi-frame instance by it. */
export function imageIdOf(path: string): string {
  return `${IMAGE_SCHEME}:${path}`;
}

/** Makes an image loadable: stores its metadata for the providers and where to fetch it. */
export function addImage(imageId: string, instance: DicomJson, frame: number, source: FrameSource): void {
  // The manager keys metadata by the image id without its scheme. A multi-frame instance is
  // stored once, under frame 1, and the manager derives each frame's modules from it.
  if (frame === 1) {
    wadors.metaDataManager.add(imageId, withLoaderDefaults(instance) as unknown as Parameters<typeof wadors.metaDataManager.add>[1]);
  }
  sources.set(imageId, source);
}

/** Forgets images: their sources, metadata and cached pixels. */
export function removeImages(imageIds: Iterable<string>): void {
  for (const imageId of imageIds) {
    sources.delete(imageId);
    wadors.metaDataManager.remove(imageId);
    if (cache.getImageLoadObject(imageId)) {
      cache.removeImageLoadObject(imageId, { force: true });
    }
  }
}

// NOTE: createImage of dicom-image-loader 5.14.0 never settles when its post-processing
// throws, such as for a palette image without LUT data. The timeout turns that into an error
// that the viewport shows. It is generous, because a large frame in a busy worker is slow.
const DECODE_TIMEOUT_MS = 60_000;

function withTimeout<T>(promise: Promise<T>, milliseconds: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), milliseconds);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function fetchAndDecode(imageId: string, options: Record<string, unknown>, signal: AbortSignal) {
  const source = sources.get(imageId);
  if (!source) {
    // The study view that added the image has been unmounted, so no one shows this error.
    const error = new Error(`image ${imageId} was not added to the study view's loader`);
    handledErrors.add(error);
    throw error;
  }
  try {
    const signals = source.signal ? [signal, source.signal] : [signal];
    const response = await source.client.fetch(source.path, { headers: { Accept: FRAME_ACCEPT }, signal: AbortSignal.any(signals) });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const parts = parseMultipart(bytes, response.headers.get('Content-Type'));
    if (parts.length !== 1) {
      throw new Error(`frame response has ${parts.length} parts, expected 1`);
    }
    const [part] = parts;
    // slice() copies the part to offset 0 of its own buffer, because the decoders view
    // 16-bit pixels as a Uint16Array of the buffer, which needs an even byte offset.
    let pixelData = part.body.slice();
    const transferSyntax = transferSyntaxOf(part.headers['content-type']);
    const format = imageModule<PixelFormat>('imagePixelModule', imageId);
    if (format && isNativeYbrFull422(format, transferSyntax, pixelData.length)) {
      // createImage treats these three bytes a pixel as RGB, as it does for a decoded JPEG.
      pixelData = ybrFull422ToRgb(pixelData, format.rows!, format.columns!);
    }
    const image = await withTimeout(
      createImage(imageId, pixelData, transferSyntax, options),
      DECODE_TIMEOUT_MS,
      'decoding the image timed out',
    );
    source.onLoaded?.(imageId);
    return image;
  } catch (error) {
    if (sources.get(imageId) === source) {
      source.onFailed?.(imageId, error);
    }
    if (typeof error === 'object' && error !== null) {
      handledErrors.add(error);
    }
    throw error;
  }
}

function loadImage(imageId: string, options: Record<string, unknown> = {}) {
  const controller = new AbortController();
  const promise = fetchAndDecode(imageId, options, controller.signal);
  return {
    promise: promise as Promise<Types.IImage>,
    cancelFn: () => controller.abort(),
  };
}

/** Registers the "cirrus:" image loader once, and silences the rejections that it has reported. */
export function registerImageLoader(): void {
  if (registered) {
    return;
  }
  imageLoader.registerImageLoader(IMAGE_SCHEME, loadImage);
  window.addEventListener('unhandledrejection', (event) => {
    if (isHandledLoadError(event.reason)) {
      event.preventDefault();
    }
  });
  registered = true;
}

/** Returns the value of a cornerstone metadata module for an image, such as "imagePlaneModule". */
export function imageModule<T>(type: string, imageId: string): T | undefined {
  return metaData.get(type, imageId) as T | undefined;
}
