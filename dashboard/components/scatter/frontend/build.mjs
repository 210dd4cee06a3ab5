// Builds the committed files in ../static: scatter.js (the bundle: the map and the hover preview),
// loader.js (the components' inline JS, which imports the bundle), scatter.css and hover.css; and
// records a hash of everything they were built from, and of each output, in
// ../static/build-info.json. tests/test_scatter_component.py recomputes the source hash (no node
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

const common = { format: 'esm', minify: true, target: ['es2020'], legalComments: 'eof' };
await build({ ...common, entryPoints: [join(here, 'src', 'index.js')], bundle: true, outfile: join(out, 'scatter.js') });
// The loader and the style sheets go to Streamlit as inline strings, which must stay multi-line
// (Streamlit takes a one-line string with a "/" or "[" for a file path). The loader is minified
// like the bundle, src/loader.js being the one readable copy; the banner line keeps it two lines.
const loaderBanner = '// Parallax map loader, built from frontend/src/loader.js (npm run build)';
await build({ ...common, banner: { js: loaderBanner }, entryPoints: [join(here, 'src', 'loader.js')], bundle: false, outfile: join(out, 'loader.js') });
for (const css of ['scatter.css', 'hover.css']) {
  await build({ entryPoints: [join(here, 'src', css)], minify: false, outfile: join(out, css) });
}
const sha = (name) => createHash('sha256').update(readFileSync(join(out, name))).digest('hex');
const bundle = readFileSync(join(out, 'scatter.js'));
const lock = JSON.parse(readFileSync(join(here, 'package-lock.json'), 'utf8'));
const info = {
  source_sha256: sourceHash(),
  bundle_sha256: sha('scatter.js'),
  bundle_bytes: bundle.length,
  outputs: Object.fromEntries(['scatter.js', 'loader.js', 'scatter.css', 'hover.css'].map((f) => [f, sha(f)])),
  regl_scatterplot: lock.packages['node_modules/regl-scatterplot'].version,
};
writeFileSync(join(out, 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
console.log(info);
