/**
 * After tsc: one CommonJS file per CLI (dist/bundle/multi-rsh.cjs, dist/bundle/addrinuse.cjs), which
 * bin/*.js load. Start-up is part of every run: Node 20 takes ~30 ms to resolve, link and evaluate the
 * ESM tree of ~30 modules behind a CLI, and ~10 ms for the same code as one CommonJS file (measured
 * with `--version`, `node -e 0` being ~20 ms). Modules the CLI imports lazily stay lazy: esbuild wraps
 * them in functions that run on first import. Native and heavy packages (ssh2, netlink) stay outside,
 * required when a transport or reader first needs them.
 */
import { build } from "esbuild";
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
rmSync(`${root}/dist/bundle`, { recursive: true, force: true });

for (const cli of ["multi-rsh", "addrinuse"]) {
  await build({
    absWorkingDir: root,
    entryPoints: [`src/cli/${cli}.ts`],
    outfile: `dist/bundle/${cli}.cjs`,
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    external: ["ssh2", "netlink", "cpu-features"],
    // The sources locate package.json and optional packages from import.meta.url, which CommonJS
    // lacks; the bundle sits two levels below the root, as dist/cli/*.js does.
    define: { "import.meta.url": "__bundleUrl" },
    banner: { js: 'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;' },
    logLevel: "warning",
  });
}
