import { readFile } from 'node:fs/promises';
import { defineConfig, type Options } from 'tsup';

type EsbuildPlugin = NonNullable<Options['esbuildPlugins']>[number];

// The banner below gives dist/bin.js its hashbang. If src/bin.ts carries one
// too, blank that line (keeping line numbers for source maps) so the output
// never starts with two, which Node rejects as a syntax error.
const stripSourceHashbang: EsbuildPlugin = {
  name: 'strip-source-hashbang',
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/]bin\.ts$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      return { contents: source.replace(/^#![^\r\n]*/, ''), loader: 'ts' };
    });
  },
};

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    bin: 'src/bin.ts',
  },
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  banner: {
    js: '#!/usr/bin/env node',
  },
  esbuildPlugins: [stripSourceHashbang],
});
