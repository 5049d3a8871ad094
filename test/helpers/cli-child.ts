/** The installed CLI as a child process, as an operator's pipeline runs it, and what it leaves behind. */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const MULTI_RSH = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));
export const ADDRINUSE = fileURLToPath(new URL("../../bin/addrinuse.js", import.meta.url));

export interface CliChild {
  child: ChildProcess;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
  out(): string;
  err(): string;
}

/** Start `bin` with stdout and stderr piped and read (unless `readStdout` is false). */
export function startCli(bin: string, args: string[], opts: { env?: Record<string, string>; readStdout?: boolean } = {}): CliChild {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...(opts.env ?? {}) } });
  let out = "";
  let err = "";
  if (opts.readStdout !== false) child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  return { child, exited, out: () => out, err: () => err };
}

/** Resolves once `test` holds for what the child wrote so far (bounded: rejects after `ms`). */
export async function until(what: string, test: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Pids of live processes whose command line contains `marker` (not counting this test process). */
export function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, "latin1");
      const stat = readFileSync(`/proc/${d}/stat`, "latin1");
      // A zombie has exited already; its parent has yet to reap it.
      if (cmd.includes(marker) && !/^\d+ \(.*\) Z /.test(stat)) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Peak RSS (VmHWM) of a live process in kB, or null once it is gone. */
export function peakRssKb(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "latin1"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
