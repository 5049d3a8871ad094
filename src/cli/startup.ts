/**
 * The one start-up trick the bundled CLIs still need. Everything else in src/cli is imported the
 * plain way: scripts/bundle.mjs makes each CLI one CommonJS file, run from V8's code cache
 * (bin/load.js), so an import costs no file read and little compiling, and the tricks of the ESM
 * days stopped paying. Measured on the bundles (medians of 20-60 interleaved runs under perf stat,
 * on a shared 2-core machine, so ±5 ms is noise; /work/notes/startup.md has the table):
 *
 * - kept, here: the group reader (-g, -a, @group) and its YAML parser load only when a run names a
 *   group. Loaded always, they cost `multi-rsh --version` +31 ms and `--demo` +50 ms (yaml is
 *   outside the bundle, a package of its own to resolve, read and compile).
 * - kept, in bin/load.js: V8's code cache: without it `--version` +10 ms, `--help` +12 ms, `--demo` +19 ms.
 * - dropped: output sink, report and exit policy loaded after the first connections were issued
 *   (with an `early` queue for the output that came first): `--demo` ±1 ms. --copy/-o/--demo
 *   modules loaded on demand: ±2 ms (`--version`), -8 ms (`--demo`, noise). The rsh transport
 *   imported ahead of createTransport: ±4 ms. addrinuse's commander and subcommands loaded on demand,
 *   and its `why PORT` path around commander: ±3 ms on `why`, `ls` and `--help`.
 */
import type { groupResolver } from "./multi-rsh/groups-reader.js";

export async function loadGroupResolver(): Promise<typeof groupResolver> {
  return (await import("./multi-rsh/groups-reader.js")).groupResolver;
}
