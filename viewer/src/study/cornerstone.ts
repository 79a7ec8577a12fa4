// One-time initialisation of cornerstone3D, its tools and the DICOM image loader.

import { init as initCore } from '@cornerstonejs/core';
import {
  AngleTool,
  CrosshairsTool,
  LengthTool,
  PanTool,
  RectangleROITool,
  StackScrollTool,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as initTools,
} from '@cornerstonejs/tools';
import { init as initDicomImageLoader } from '@cornerstonejs/dicom-image-loader';
import { registerImageLoader } from './loader';

let initialized = false;

/** Initialises cornerstone3D, its tools and the image loaders, once per page. */
export function ensureCornerstone(): void {
  if (initialized) {
    return;
  }
  initCore();
  initTools();
  // Decoding runs in web workers: half the cores, at least 1 and at most 4.
  const cores = navigator.hardwareConcurrency || 2;
  initDicomImageLoader({ maxWebWorkers: Math.min(4, Math.max(1, Math.floor(cores / 2))) });
  registerImageLoader();
  for (const tool of [WindowLevelTool, ZoomTool, PanTool, StackScrollTool, LengthTool, AngleTool, RectangleROITool, CrosshairsTool]) {
    addTool(tool);
  }
  initialized = true;
}
