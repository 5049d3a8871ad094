/**
 * Sampling a running tool from /proc: the peak of a value over its life (RSS of its process tree,
 * its open descriptors). GNU time's %M is only the largest single process, and xargs, parallel and
 * pssh fork one ssh per host, so a tree is summed.
 */
import { readdirSync, readFileSync } from "node:fs";

/**
 * Sum of VmRSS over a process and its descendants, walking only that tree (/proc/PID/task/TID/children):
 * a walk of all of /proc every 50 ms would take CPU from the run it measures.
 */
export function treeRss(rootPid: number): number {
  let total = 0;
  const todo = [rootPid];
  for (let seen = 0; todo.length > 0 && seen < 10_000; seen++) {
    const pid = todo.pop()!;
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "latin1"));
      if (m) total += Number(m[1]) * 1024;
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, "latin1").split(" ")) if (c.trim()) todo.push(Number(c));
      }
    } catch {
      // Exited during the walk.
    }
  }
  return total;
}

/** Open descriptors of a process; 0 when it is gone. */
export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** The first child of `pid` (GNU time's child is the tool), or null before it has one. */
export function firstChild(pid: number): number | null {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/children`, "latin1").trim().split(" ")[0]) || null;
  } catch {
    return null;
  }
}

/** Samples `read` every `everyMs` until `stop()`, which returns the largest value seen. */
export function samplePeak(read: () => number, everyMs: number): { stop(): number } {
  let peak = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, read());
  }, everyMs);
  return {
    stop(): number {
      clearInterval(timer);
      return Math.max(peak, read());
    },
  };
}
