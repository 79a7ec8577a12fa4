// Builds or serves the study view's development harness (dev.html), which the production
// build leaves out: `npx vite --config src/study/dev/vite.harness.config.ts`.
import { fileURLToPath } from 'node:url';
import { defineConfig, mergeConfig } from 'vite';
import base from '../../../vite.config';

export default mergeConfig(
  base,
  defineConfig({
    root: fileURLToPath(new URL('../../..', import.meta.url)),
    build: {
      // Under node_modules, so git ignores it.
      outDir: process.env.HARNESS_OUT_DIR ?? fileURLToPath(new URL('../../../node_modules/.cache/study-harness', import.meta.url)),
      emptyOutDir: true,
      rollupOptions: { input: { harness: fileURLToPath(new URL('./dev.html', import.meta.url)) } },
    },
  }),
);
