// Builds the guest package: ES module, CommonJS and declarations in dist-js/, and
// api-iife.js, the script the plugin injects as `window.__TAURI__.sealkv` when the app
// sets `app.withGlobalTauri` (committed, as Tauri's plugins do: the crate embeds it).
//
//   npm run build
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const entry = join(root, 'guest-js/index.ts')
const common = { entryPoints: [entry], target: 'es2021', logLevel: 'warning' }

// The package's own files leave @tauri-apps/api to the app (a peer dependency).
await build({ ...common, format: 'esm', outfile: join(root, 'dist-js/index.js'), external: ['@tauri-apps/api'], bundle: true })
await build({ ...common, format: 'cjs', outfile: join(root, 'dist-js/index.cjs'), external: ['@tauri-apps/api'], bundle: true })
// The global script carries the little of @tauri-apps/api it uses.
await build({
  ...common,
  format: 'iife',
  bundle: true,
  minify: true,
  globalName: '__TAURI_PLUGIN_SEALKV__',
  banner: { js: "if('__TAURI__'in window){" },
  footer: { js: "Object.defineProperty(window.__TAURI__,'sealkv',{value:__TAURI_PLUGIN_SEALKV__})}" },
  outfile: join(root, 'api-iife.js'),
})

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' })
