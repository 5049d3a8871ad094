/** Real sockets on loopback for tests: listeners on port 0 and connections that end in a chosen state. */
import net from "node:net";
import { once } from "node:events";
import { readTcpSockets } from "../../src/kernel/read.js";

export async function listen(host = "127.0.0.1", onConn?: (s: net.Socket) => void): Promise<net.Server> {
  const srv = net.createServer(onConn ?? (() => {}));
  await onFreshPort(srv, async () => {
    srv.listen({ port: 0, host });
    await once(srv, "listening");
    return portOf(srv);
  });
  return srv;
}

/**
 * Listens with `listenOnce` (port 0) until the port has no sockets of earlier tests on it: the kernel
 * hands a listener a port where an earlier server's TIME_WAITs sit (SO_REUSEADDR), and tests count
 * the kernel's rows by port (such a leftover once counted as a test's own, in CI). Bounded: 20
 * tries, then the last port as it is.
 */
export async function onFreshPort(srv: net.Server, listenOnce: () => Promise<number>): Promise<number> {
  for (let tries = 1; ; tries++) {
    const port = await listenOnce();
    if (tries >= 20 || !portHasLeftovers(port)) return port;
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
}

/** Does any socket but a listener sit on `port`: what an earlier test's connections left there? */
export function portHasLeftovers(port: number): boolean {
  try {
    return readTcpSockets().some((r) => r.state !== "LISTEN" && (r.localPort === port || r.remotePort === port));
  } catch {
    return false; // no kernel table to read (not Linux): nothing to judge by either
  }
}

export function portOf(srv: net.Server): number {
  const a = srv.address();
  if (a === null || typeof a === "string") throw new Error("not listening on TCP");
  return a.port;
}

export function closeServer(srv: net.Server): Promise<void> {
  return new Promise((resolve) => srv.close(() => resolve()));
}

/**
 * One connection to a listener on `port` where the server side closes first, so the server's end
 * (local port = `port`) goes to TIME_WAIT. Resolves when both sides are fully closed.
 */
export async function makeServerTimeWait(srv: net.Server, host = "127.0.0.1"): Promise<void> {
  const port = portOf(srv);
  const accepted = new Promise<net.Socket>((resolve) => srv.once("connection", resolve));
  const c = net.connect(port, host);
  const s = await accepted;
  // Server closes first: it sends FIN, the client answers with its own FIN when it sees the end.
  c.on("end", () => c.end());
  const done = Promise.all([once(c, "close"), once(s, "close")]);
  s.end();
  await done;
}

/**
 * A listener on 127.0.0.1 held by another process, so tests can check that its owner is named by pid.
 * `exit()` tells the child to quit (it reads one line on stdin); the test still kills it in t.after.
 */
export interface ChildListener {
  pid: number;
  port: number;
  exit(): void;
  kill(): void;
}

export async function listenInChild(): Promise<ChildListener> {
  const { spawn } = await import("node:child_process");
  const child = spawn(
    process.execPath,
    ["-e", "const s=require('net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port)); process.stdin.on('data',()=>process.exit(0))"],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const [chunk] = (await once(child.stdout!, "data")) as [Buffer];
  return {
    pid: child.pid!,
    port: Number(chunk.toString().trim()),
    exit: () => child.stdin!.write("go\n"),
    kill: () => child.kill("SIGKILL"),
  };
}
