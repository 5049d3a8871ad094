/**
 * Sockets that Node cannot make, held by a real python3 process for the length of a test: a socket
 * bound and never listened, a SO_REUSEPORT group, a listener without SO_REUSEADDR. The child prints
 * one JSON line (its port and pid) and holds its sockets until its stdin closes or it is killed.
 */
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { once } from "node:events";
import net from "node:net";

export function havePython(): boolean {
  return spawnSync("python3", ["-c", "0"]).status === 0;
}

export interface Held {
  pid: number;
  port: number;
  kill(): void;
}

/** Runs `body` (python; `s` sockets get made there) and waits for it to print {"port": N}. */
export async function holdInPython(body: string, args: string[] = []): Promise<Held> {
  const script = `import socket, sys, json\n${body}\nprint(json.dumps({"port": port}), flush=True)\nsys.stdin.read()\n`;
  const child = spawn("python3", ["-c", script, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const [chunk] = (await once(child.stdout!, "data")) as [Buffer];
  const { port } = JSON.parse(chunk.toString()) as { port: number };
  return { pid: child.pid!, port, kill: () => child.kill("SIGKILL") };
}

export const BOUND_ONLY = (reuseaddr: boolean) => `
s = socket.socket()
${reuseaddr ? "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)" : ""}
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]`;

export const REUSEPORT_GROUP = `
a = socket.socket(); a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); a.bind(("127.0.0.1", 0)); a.listen()
port = a.getsockname()[1]
b = socket.socket(); b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); b.bind(("127.0.0.1", port)); b.listen()`;

/** What an actual Node server gets binding this (the probe `why` makes, made independently here). */
export function nodeBind(port: number, host?: string, extra: Partial<net.ListenOptions> = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "ERROR"));
    s.listen({ port, host, exclusive: true, ...extra }, () => s.close(() => resolve("ok")));
  });
}

/** `ss -tanpe` for one local port, as text: the peer tool's view, to check ours against. */
export function ssPort(port: number, extra: string[] = []): string {
  try {
    return execFileSync("ss", ["-tanpe", ...extra, `sport = :${port}`], { encoding: "utf8" });
  } catch {
    return "";
  }
}

export function haveSs(): boolean {
  return spawnSync("ss", ["-V"]).status === 0;
}

/** A free port outside [lo, hi] (the ephemeral range), found by binding; not fixed, not from the range. */
export async function freePortOutside(range: readonly [number, number]): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = 10000 + Math.floor(Math.random() * 20000);
    if (p >= range[0] && p <= range[1]) continue;
    if ((await nodeBind(p, "127.0.0.1")) === "ok" && (await nodeBind(p)) === "ok" && ssPort(p).split("\n").length <= 2) return p;
  }
  throw new Error("no free port outside the ephemeral range");
}
