/**
 * Throwaway network namespaces for the `why` tests, named with this worktree's prefix and the test
 * process's pid so that parallel runs never share one. Each is deleted in t.after; the processes
 * started inside are killed there too.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";

export const NS_PREFIX = process.env.ADDRINUSE_TESTBED_PREFIX ?? "aih15";

export function canUseNetns(): string | false {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  if (spawnSync("ip", ["netns", "list"]).status !== 0) return "no ip netns (iproute2)";
  return false;
}

export function sh(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

let n = 0;
export function makeNetns(t: { after(fn: () => void): void }, sysctls: Record<string, string> = {}): string {
  const name = `${NS_PREFIX}-why-${process.pid}-${n++}`;
  sh(["ip", "netns", "add", name]);
  t.after(() => {
    spawnSync("ip", ["netns", "del", name]);
  });
  sh(["ip", "-n", name, "link", "set", "lo", "up"]);
  for (const [k, v] of Object.entries(sysctls)) sh(["ip", "netns", "exec", name, "sysctl", "-q", "-w", `${k}=${v}`]);
  return name;
}

/** A node script run inside the namespace; resolves with its first stdout line, parsed as JSON. */
export async function nodeInNetns(
  t: { after(fn: () => void): void },
  ns: string,
  script: string,
  args: string[] = [],
): Promise<{ child: ChildProcess; first: Record<string, unknown>; next(): Promise<Record<string, unknown>> }> {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  t.after(() => {
    child.kill("SIGKILL");
  });
  let buffered = "";
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (d: string) => {
    buffered += d;
    let i;
    while ((i = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  const next = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(JSON.parse(l));
      waiters.push((line) => resolve(JSON.parse(line)));
      once(child, "exit").then(() => reject(new Error("the script in the namespace exited")), reject);
    });
  const first = await next();
  return { child, first, next };
}

/** The installed CLI inside the namespace, as a user runs it there. */
export function cliInNetns(ns: string, cli: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync("ip", ["netns", "exec", ns, process.execPath, cli, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
