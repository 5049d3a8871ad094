"use strict";
/**
 * Runs a CLI from dist/bundle/NAME.cjs (scripts/bundle.mjs), compiled with V8's code cache when one is
 * there, or from the ESM build in dist/cli/NAME/NAME.js when no bundle was built (a plain `tsc`).
 *
 * Start-up is part of every run: a 100-host multi-rsh run lasts ~0.5 s and `addrinuse why` ~0.1 s.
 * The code cache holds the bytecode of every function the last real run compiled, so the next run
 * skips parsing and compiling them (~6-10 ms of CPU). It is written next to the bundle, after a run
 * that did work, when there was none or V8 refused it (another Node, other flags); where that
 * directory is not writable there is simply no cache. Its name carries the bundle's size and mtime:
 * V8 checks a cache against the source's length only, and a stale cache must never run. Never in a
 * shared temporary directory: a code cache is code.
 */
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const Module = require("node:module");
const { pathToFileURL } = require("node:url");

module.exports = function load(name) {
  const dir = path.join(__dirname, "..", "dist", "bundle");
  const file = path.join(dir, `${name}.cjs`);
  let source;
  let stat;
  try {
    source = fs.readFileSync(file, "utf8");
    stat = fs.statSync(file);
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
    import(pathToFileURL(path.join(__dirname, "..", "dist", "cli", name, `${name}.js`)).href).then((m) => m.run());
    return;
  }
  const cacheFile = path.join(dir, `${name}.${stat.size}-${Math.trunc(stat.mtimeMs)}.v8cache`);
  let cachedData;
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {
    // none yet
  }
  const script = new vm.Script(Module.wrap(source), {
    filename: file,
    cachedData,
    // No importModuleDynamically: the bundle has no import() (scripts/bundle.mjs checks), and the
    // option is lost when V8 takes the code cache anyway.
  });
  const mod = { exports: {} };
  script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(file), mod, file, dir);
  if (cachedData === undefined || script.cachedDataRejected) {
    const args = process.argv.slice(2);
    process.once("exit", (code) => {
      // Only after real work: --version or a usage error compiles little worth keeping.
      if (code === 2 || args.length === 0 || args.some((a) => a === "--version" || a === "--help" || a === "-h")) return;
      try {
        const tmp = `${cacheFile}.${process.pid}`;
        fs.writeFileSync(tmp, script.createCachedData());
        fs.renameSync(tmp, cacheFile);
      } catch {
        // read-only install, full disk: run without a cache
      }
    });
  }
  mod.exports.run();
};
