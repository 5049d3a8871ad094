/**
 * After tsc: one CommonJS file per CLI (dist/bundle/multi-rsh.cjs, dist/bundle/addrinuse.cjs), which
 * bin/*.js load. Start-up is part of every run: Node 20 takes ~30 ms to resolve, link and evaluate the
 * ESM tree of ~30 modules behind a CLI, and ~10 ms for the same code as one CommonJS file (measured
 * with `--version`, `node -e 0` being ~20 ms). Modules the CLI imports lazily stay lazy: esbuild wraps
 * them in functions that run on first import. Native and heavy packages (ssh2, netlink, yaml for -g) stay outside,
 * required when a transport or reader first needs them.
 */
import { build } from "esbuild";
import { readFileSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
rmSync(`${root}/dist/bundle`, { recursive: true, force: true });

for (const cli of ["multi-rsh", "addrinuse"]) {
  await build({
    absWorkingDir: root,
    entryPoints: [`src/cli/${cli}/${cli}.ts`],
    outfile: `dist/bundle/${cli}.cjs`,
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    external: ["ssh2", "netlink", "cpu-features", "yaml"],
    // No import() may be left in the bundle: bin/load.js compiles it with vm.Script, and a script
    // compiled from V8's code cache has no dynamic-import callback ("A dynamic import callback was
    // not specified"), whatever importModuleDynamically says. esbuild turns each import() into a
    // require() inside a promise, which keeps the lazy loading.
    supported: { "dynamic-import": false },
    // The sources locate package.json and optional packages from import.meta.url, which CommonJS
    // lacks; the bundle sits two levels below the root, as dist/cli/version.js does.
    define: { "import.meta.url": "__bundleUrl" },
    banner: { js: 'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;' },
    logLevel: "warning",
  });
  const left = /\bimport\(/.exec(readFileSync(`${root}/dist/bundle/${cli}.cjs`, "utf8"));
  if (left) throw new Error(`dist/bundle/${cli}.cjs still has an import() (bin/load.js cannot run it from the code cache)`);
}
