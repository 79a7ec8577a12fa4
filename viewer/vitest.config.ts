// vitest runs the unit tests in src/ only: viewer/e2e/*.test.mjs are end-to-end tests for
// `node --test`, which start a local stack and a browser. With no unit test file, vitest
// exits with 1, which the test gate relies on.
import { configDefaults, defineConfig, mergeConfig } from 'vitest/config';
import viteConfig from './vite.config';

export default mergeConfig(
  viteConfig,
  defineConfig({
    test: {
      include: ['src/**/*.test.ts'],
      exclude: [...configDefaults.exclude, 'e2e/**'],
      passWithNoTests: false,
    },
  }),
);
