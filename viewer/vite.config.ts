import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// `npx vite` serves the viewer with hot reload and forwards DICOMweb and /config.json to a
// running `cirrus dev` (CIRRUS_DEV_URL, http://127.0.0.1:8080 by default). The Host header is
// kept, because the local stack checks SigV4 signatures that cover it.
const devServer = process.env.CIRRUS_DEV_URL ?? 'http://127.0.0.1:8080';

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
  server: {
    proxy: {
      '/dicomweb': { target: devServer, changeOrigin: false },
      '/config.json': { target: devServer, changeOrigin: false },
    },
  },
});
