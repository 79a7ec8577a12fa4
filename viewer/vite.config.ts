import { defineConfig } from 'vite';

// `npx vite` serves the viewer with hot reload and forwards DICOMweb and /config.json to a
// running `cirrus dev` (CIRRUS_DEV_URL, http://127.0.0.1:8080 by default). The Host header is
// kept, because the local stack checks SigV4 signatures that cover it.
const devServer = process.env.CIRRUS_DEV_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  optimizeDeps: { exclude: ['@cornerstonejs/dicom-image-loader'], include: ['dicom-parser'] },
  worker: { format: 'es' },
  server: {
    proxy: {
      '/dicomweb': { target: devServer, changeOrigin: false },
      '/config.json': { target: devServer, changeOrigin: false },
    },
  },
});
