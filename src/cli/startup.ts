/**
 * The one start-up trick the bundled CLIs still need. Everything else in src/cli is imported the
 * plain way: scripts/bundle.mjs makes each CLI one CommonJS file, run from V8's code cache
 * (bin/load.js), so an import costs no file read and little compiling, and the tricks of the ESM
 * days stopped paying. Measured on the bundles: medians of 20-80 interleaved runs, CPU time of the
 * whole process (perf stat task-clock), on a shared 2-core machine where ±5 ms is noise:
 *
 * - kept, here: the group reader (-g, -a, @group) and its YAML parser load only when a run names a
 *   group. Loaded always: `multi-rsh --version` +31 ms, `--demo` +50 ms (yaml is outside the
 *   bundle: a package of its own to resolve, read and compile).
 * - kept, in bin/load.js: V8's code cache. Without it: `--version` +8 ms, `--help` +12 ms, `--demo` +19 ms.
 * - dropped: loading the output sink, report and exit policy only after the first connections went
 *   out, with an `early` queue for what the hosts sent first (`--demo` ±1 ms); loading --copy, -o
 *   and --demo's modules on demand (±1 ms); importing the rsh transport ahead of createTransport
 *   (±4 ms); addrinuse's commander, subcommands and why-more.ts on demand, and its `why PORT` path
 *   around commander (together +1 to +6 ms on `why`: bundle evaluation 9.0 ms instead of 5.3,
 *   building the program 1.2 ms; `ls`, `--help` ±2 ms).
 *
 * Not start-up tricks, kept for what they do: io.ts's stdin getter (touching process.stdin costs
 * 3-4 ms and makes a piped fd 0 non-blocking) and multi-rsh's exit once stdout and stderr have
 * drained (a stray handle cannot hold the prompt; a stop bounds the wait).
 */
import type { groupResolver } from "./multi-rsh/groups-reader.js";

export async function loadGroupResolver(): Promise<typeof groupResolver> {
  return (await import("./multi-rsh/groups-reader.js")).groupResolver;
}
