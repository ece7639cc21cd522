// Builds browser.js, the bundle the server serves at OTEL_PERF_BROWSER_PATH.
// Reproducible: pinned versions (package-lock.json, `npm ci`), esbuild's deterministic output,
// no timestamps or absolute paths. `node build.mjs --check` rebuilds in memory and fails
// when the committed bundle differs (run by tests/test_browser_bundle.py in CI).
import { readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'browser.js');
const lock = JSON.parse(readFileSync(join(here, 'package-lock.json'), 'utf8'));
const version = (name) => lock.packages['node_modules/' + name].version;
const shipped = ['@opentelemetry/api', '@opentelemetry/core', '@opentelemetry/sdk-trace', '@opentelemetry/sdk-metrics',
  '@opentelemetry/instrumentation-fetch', '@opentelemetry/instrumentation-xml-http-request',
  '@opentelemetry/otlp-transformer', 'web-vitals'];
const banner = '/*! otel-perf-instrument browser script. Bundles (Apache-2.0): '
  + shipped.map((n) => n + '@' + version(n)).join(', ') + ' */';

const result = await build({
  entryPoints: [join(here, 'src', 'index.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  platform: 'browser',
  legalComments: 'none',
  charset: 'utf8',
  banner: { js: banner },
  write: false,
  logLevel: 'warning',
  absWorkingDir: here,
});
const code = result.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
if (process.argv.includes('--check')) {
  let committed = Buffer.alloc(0);
  try { committed = readFileSync(out); } catch { /* missing: differs */ }
  if (!Buffer.from(code).equals(committed)) {
    console.error('browser.js differs from what build.mjs builds: run `npm ci && npm run build` in ' + here);
    process.exit(1);
  }
  console.log('browser.js is up to date: ' + code.length + ' bytes, ' + gz + ' gzipped');
} else {
  writeFileSync(out, code);
  console.log('wrote browser.js: ' + code.length + ' bytes, ' + gz + ' gzipped');
}
