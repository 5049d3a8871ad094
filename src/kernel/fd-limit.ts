/**
 * The soft limit on open files (RLIMIT_NOFILE), checked against what a run needs. Most systems start
 * processes at a soft limit of 1024 with a far higher hard limit; a fan-out of 1,000 connections
 * then dies of EMFILE half way (parallel-ssh #311). Node itself raises its soft limit to the hard one
 * as it starts (node.cc, PlatformInit), so under `ulimit -Sn 1024` the check usually finds enough
 * already. Where it does not (an embedder, a runtime that skips that), the soft limit is raised here
 * up to the hard one. Node has no setrlimit(2), so this runs prlimit(1) from util-linux (Essential on
 * Debian, present wherever `ip` and `ss` are) on our own pid: prlimit(2) applies to another process
 * as to the caller, and the new limit holds for every later open() here. An npm binding (`posix`)
 * would be a native addon built on install for one call; the child costs ~3 ms, only when needed.
 * Past the hard limit nothing can be done without privileges: the run says so, once, and multi-rsh
 * runs fewer hosts at a time (a host that still meets EMFILE fails with cause `local`).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";

export interface FdLimit {
  soft: number;
  hard: number;
}

/** RLIMIT_NOFILE of this process, from /proc/self/limits; null where that cannot be read. */
export function readFdLimit(): FdLimit | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "latin1"));
    if (!m) return null;
    const n = (s: string) => (s === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(s));
    return { soft: n(m[1]!), hard: n(m[2]!) };
  } catch {
    return null;
  }
}

export interface FdLimitOutcome {
  /** The fds the run asked for. */
  needed: number;
  before: FdLimit | null;
  after: FdLimit | null;
  /** raised: soft limit moved up; enough: nothing to do; capped: raised only to the hard limit (less than needed); failed: could not raise. */
  outcome: "enough" | "raised" | "capped" | "failed";
  /** One line for the user when the run may lack fds; null when all is well. */
  notice: string | null;
}

function prlimit(pid: number, soft: number, hard: string): Promise<string | null> {
  return new Promise((resolve) => {
    execFile("prlimit", [`--pid=${pid}`, `--nofile=${soft}:${hard}`], { timeout: 5000 }, (err, _out, stderr) => {
      resolve(err ? (stderr.trim() || (err as NodeJS.ErrnoException).code || err.message).toString() : null);
    });
  });
}

/** Raises this process's soft RLIMIT_NOFILE to `needed` (at most the hard limit). */
export async function ensureFdLimit(needed: number): Promise<FdLimitOutcome> {
  const before = readFdLimit();
  if (!before) return { needed, before, after: null, outcome: "failed", notice: null };
  if (before.soft >= needed) return { needed, before, after: before, outcome: "enough", notice: null };
  const target = Math.min(needed, before.hard);
  const hardText = before.hard === Number.MAX_SAFE_INTEGER ? "unlimited" : String(before.hard);
  const problem = target > before.soft ? await prlimit(process.pid, target, hardText) : null;
  const after = readFdLimit();
  if (problem !== null || !after || after.soft < target) {
    return {
      needed,
      before,
      after,
      outcome: "failed",
      notice: `the run may need ${needed} open files but the soft limit is ${before.soft} and could not be raised (${problem ?? "prlimit had no effect"}): lower -p, or run 'ulimit -n ${needed}' first`,
    };
  }
  if (after.soft < needed) {
    return {
      needed,
      before,
      after,
      outcome: "capped",
      notice: `the run may need ${needed} open files; the soft limit went from ${before.soft} to the hard limit ${hardText}: lower -p, or raise the hard limit (limits.conf, LimitNOFILE=)`,
    };
  }
  return { needed, before, after, outcome: "raised", notice: null };
}
