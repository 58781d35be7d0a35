// Runs a wasm32-wasip1 program (the microbenchmark built for the filter's target) in Node.js's V8, the
// engine Envoy runs the filter in. `make bench` calls it as:
//   node --no-liftoff bench/wasi.mjs target/wasm32-wasip1/release/examples/microbench.wasm
// (--no-liftoff: Envoy's V8 compiles wasm with TurboFan only.) The crate's proxy-wasm imports, unused by the
// microbenchmark, are stubbed; the current directory is preopened so that the program reads its inputs.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, cwd, env } from 'node:process';

// Arguments after the module are the program's. The current directory is preopened under its own absolute path
// too: the crate's unit tests, built for wasm32-wasip1 and run with this from the crate's root
// (`node --no-liftoff bench/wasi.mjs target/wasm32-wasip1/release/deps/mcp_policy-*.wasm`), read files by
// `CARGO_MANIFEST_DIR`.
const wasi = new WASI({ version: 'preview1', args: argv.slice(2), env, preopens: { '.': '.', [cwd()]: '.' } });
const module = await WebAssembly.compile(await readFile(argv[2]));
const imports = wasi.getImportObject();
for (const imp of WebAssembly.Module.imports(module)) {
  imports[imp.module] ??= {};
  if (!(imp.name in imports[imp.module])) imports[imp.module][imp.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
// proxy-wasm's `_initialize` export makes this a reactor in WASI's eyes; run it as a command.
const { _initialize, ...exports } = instance.exports;
wasi.start({ exports });
