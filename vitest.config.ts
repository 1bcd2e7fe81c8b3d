import { defineConfig } from 'vitest/config';

// Resolve @kvmts/* workspace imports to their TypeScript sources (the
// "@kvmts/source" export condition), so tests never need a prior build.
// Vite replaces its default conditions when these are set, so they are
// repeated after the custom one. Node-environment tests resolve through
// the SSR settings, hence both blocks.
const conditions = ['@kvmts/source', 'module', 'node', 'development|production'];

export default defineConfig({
  resolve: {
    conditions,
  },
  ssr: {
    resolve: {
      conditions,
    },
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    testTimeout: 120_000,
    // In CI, also write a JSON report so .ci/run can print a plain "N passed, N failed" line.
    reporters: process.env.CI ? ['default', 'json'] : ['default'],
    outputFile: process.env.CI ? { json: 'vitest-report.json' } : undefined,
  },
});
