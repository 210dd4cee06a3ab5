// Builds the committed bundle ../static/scatter.js and records a hash of everything it was built
// from in ../static/build-info.json; tests/test_scatter_component.py recomputes that hash (no node
// needed) to catch a source change without a rebuild.  Run: npm ci && npm run build
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const out = join(here, '..', 'static');

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

// The same recipe as dashboard.components.scatter.source_hash(): sorted relative paths, each
// path and its bytes, separated by NUL.
export function sourceHash() {
  const inputs = [...files(join(here, 'src')), ...['build.mjs', 'package.json', 'package-lock.json'].map((f) => join(here, f))];
  const h = createHash('sha256');
  for (const p of inputs.map((p) => relative(here, p)).sort()) {
    h.update(p);
    h.update('\0');
    h.update(readFileSync(join(here, p)));
    h.update('\0');
  }
  return h.digest('hex');
}

await build({
  entryPoints: [join(here, 'src', 'index.js')],
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2020'],
  legalComments: 'eof',
  outfile: join(out, 'scatter.js'),
});
const bundle = readFileSync(join(out, 'scatter.js'));
const lock = JSON.parse(readFileSync(join(here, 'package-lock.json'), 'utf8'));
const info = {
  source_sha256: sourceHash(),
  bundle_sha256: createHash('sha256').update(bundle).digest('hex'),
  bundle_bytes: bundle.length,
  regl_scatterplot: lock.packages['node_modules/regl-scatterplot'].version,
};
writeFileSync(join(out, 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
console.log(info);
