import { init as coreInit, RenderingEngine, Enums } from '@cornerstonejs/core';
import { init as toolsInit } from '@cornerstonejs/tools';
import { init as loaderInit } from '@cornerstonejs/dicom-image-loader';
coreInit(); toolsInit(); loaderInit({ maxWebWorkers: 1 });
console.log(RenderingEngine, Enums.ViewportType.STACK);
