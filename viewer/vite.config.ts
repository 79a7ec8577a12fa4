import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  // The dicom-image-loader is left out of dependency prebundling, so the dev server needs its
  // codecs, which are CommonJS, prebundled on their own to import their default exports.
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: [
      'dicom-parser',
      '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs',
      '@cornerstonejs/codec-charls/decodewasmjs',
      '@cornerstonejs/codec-openjpeg/decodewasmjs',
      '@cornerstonejs/codec-openjph/wasmjs',
      '@cornerstonejs/codec-libjxl/decodewasmjs',
    ],
  },
  resolve: {
    alias: { xmlbuilder2: fileURLToPath(new URL('./src/study/shims/xmlbuilder2.ts', import.meta.url)) },
  },
  worker: { format: 'es' },
});
