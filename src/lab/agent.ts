/**
 * An agent is a small Node child process that holds one end of a lab connection and does exactly what
 * it is told, one JSON command per stdin line, one JSON reply per stdout line.
 *
 * Why a child process and not sockets in the lab's own process: scenarios 5 and 6 SIGKILL the owner
 * of a socket, scenario 4 needs a listener whose program does not accept (a Node program accepts as
 * soon as its event loop turns, so the agent blocks its loop on purpose), and the namespace scenarios
 * need the socket inside another network namespace (`ip netns exec NS node ...`, which execs, so the
 * agent's pid is a process in that namespace and /proc/PID/net/tcp is that namespace's table).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { createInterface } from "node:readline";
import { AddrinuseError } from "../errors.js";

const AGENT_SOURCE = String.raw`
"use strict";
const net = require("net");
const fs = require("fs");
const socks = new Map();
let server = null;
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sock = (name) => {
  const s = socks.get(name);
  if (!s) throw new Error("no socket named " + name);
  return s;
};
const watch = (name, s) => {
  s.on("error", (e) => out({ ev: "error", name, code: e.code || String(e) }));
  s.on("end", () => out({ ev: "end", name }));
  s.on("close", () => out({ ev: "close", name }));
};
function closeListener() {
  if (server) server.close();
}
function freeze() {
  // Block the event loop so libuv cannot accept() what arrives on the listener; wait for the next
  // command line on stdin and run it before the loop turns again. Bounded: 30 s.
  const buf = Buffer.alloc(4096);
  const until = Date.now() + 30000;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  let line = "";
  while (Date.now() < until && !line.includes("\n")) {
    try {
      const n = fs.readSync(0, buf, 0, buf.length, null);
      if (n === 0) break;
      line += buf.toString("utf8", 0, n);
    } catch (e) {
      if (e.code !== "EAGAIN") throw e;
      Atomics.wait(nap, 0, 0, 1);
    }
  }
  const c = JSON.parse(line.split("\n")[0]);
  if (c.cmd === "close-listener") closeListener();
  out({ id: c.id, ok: true });
}
const handlers = {
  listen(c, done) {
    server = net.createServer({ allowHalfOpen: true, pauseOnConnect: !!c.paused }, (s) => {
      socks.set(c.name, s);
      watch(c.name, s);
      if (!c.paused) s.on("data", () => {});
      out({ ev: "accepted", name: c.name, remotePort: s.remotePort });
    });
    server.on("error", (e) => done({ error: e.code || String(e) }));
    server.listen({ port: 0, host: c.host, backlog: 8 }, () => done({ port: server.address().port }));
  },
  connect(c, done) {
    const s = net.connect({ host: c.host, port: c.port, allowHalfOpen: true });
    watch(c.name, s);
    s.on("data", () => {});
    s.once("connect", () => {
      socks.set(c.name, s);
      done({ localPort: s.localPort });
    });
    s.once("error", (e) => done({ error: e.code || String(e) }));
  },
  send(c, done) {
    sock(c.name).write(Buffer.alloc(c.bytes, 120), () => done({}));
  },
  end(c, done) {
    sock(c.name).end();
    done({});
  },
  close(c, done) {
    sock(c.name).destroy();
    done({});
  },
  reset(c, done) {
    sock(c.name).resetAndDestroy();
    done({});
  },
  "close-listener"(c, done) {
    closeListener();
    done({});
  },
  "end-both"(c, done) {
    // Same tick on purpose: both shutdown() calls land in one turn of the loop.
    const [a, b] = c.names.map(sock);
    if (c.filler) a.write(Buffer.alloc(c.filler, 120));
    a.end();
    b.end();
    done({});
  },
  freeze(c, done) {
    // Reply (stdout pipes are synchronous on Linux), then block before the loop can turn again.
    done({});
    freeze();
  },
};
require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
  let c;
  try {
    c = JSON.parse(line);
    handlers[c.cmd](c, (r) => out({ id: c.id, ok: !r.error, ...r }));
  } catch (e) {
    out({ id: c && c.id, ok: false, error: String(e && e.message) });
  }
});
out({ ev: "ready" });
`;

export interface AgentReply {
  id: number;
  ok: boolean;
  error?: string;
  port?: number;
  localPort?: number;
}

export interface AgentEvent {
  ev: string;
  name?: string;
  code?: string;
  remotePort?: number;
}

export class Agent {
  readonly pid: number;
  readonly events: AgentEvent[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, (r: AgentReply) => void>();
  private stderr = "";
  private exited = false;
  private readonly signal = new EventEmitter();

  private constructor(private readonly child: ChildProcess, readonly netns: string | undefined) {
    this.pid = child.pid ?? -1;
    child.stderr?.on("data", (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    child.once("exit", () => {
      this.exited = true;
      this.signal.emit("exit");
      for (const [id, resolve] of this.pending) resolve({ id, ok: false, error: "agent exited" });
      this.pending.clear();
    });
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let msg: AgentReply & AgentEvent;
      try {
        msg = JSON.parse(line) as AgentReply & AgentEvent;
      } catch {
        return;
      }
      if (typeof msg.id === "number" && this.pending.has(msg.id)) {
        this.pending.get(msg.id)!(msg);
        this.pending.delete(msg.id);
      } else if (msg.ev) {
        this.events.push(msg);
        this.signal.emit("event", msg);
      }
    });
  }

  /** Every agent of this process still running: killAll() ends them on a signal or a closed stdout. */
  private static readonly running = new Set<Agent>();

  static killAll(): void {
    for (const a of Agent.running) a.kill();
  }

  /** Starts an agent, inside network namespace `netns` if given; resolves once it is ready. */
  static async start(netns?: string, timeoutMs = 10_000): Promise<Agent> {
    const args = ["-e", AGENT_SOURCE];
    const child = netns
      ? spawn("ip", ["netns", "exec", netns, process.execPath, ...args], { stdio: ["pipe", "pipe", "pipe"] })
      : spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"] });
    const agent = new Agent(child, netns);
    Agent.running.add(agent);
    child.once("exit", () => Agent.running.delete(agent));
    const ready = await agent.until((e) => e.ev === "ready", timeoutMs);
    if (!ready) {
      agent.kill();
      throw new AddrinuseError("AIU_LAB", `lab agent did not start${netns ? ` in ${netns}` : ""}: ${agent.stderr.trim().split("\n").pop() ?? "no output"}`);
    }
    return agent;
  }

  /** Resolves true when an event matching `pred` has arrived, false after `timeoutMs`. */
  until(pred: (e: AgentEvent) => boolean, timeoutMs: number): Promise<boolean> {
    if (this.events.some(pred)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (v: boolean) => {
        clearTimeout(timer);
        this.signal.off("event", onEvent);
        this.signal.off("exit", onExit);
        resolve(v);
      };
      const onEvent = (e: AgentEvent) => pred(e) && finish(true);
      const onExit = () => finish(false);
      const timer = setTimeout(() => finish(false), timeoutMs);
      this.signal.on("event", onEvent);
      this.signal.on("exit", onExit);
    });
  }

  /** Sends one command; rejects with AIU_LAB on an error reply or after `timeoutMs`. */
  request(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<AgentReply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.exited) return reject(new AddrinuseError("AIU_LAB", `lab agent ${this.pid} has exited (${cmd})`));
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new AddrinuseError("AIU_LAB", `lab agent did not answer '${cmd}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        if (r.ok) resolve(r);
        else reject(new AddrinuseError("AIU_LAB", `lab agent: ${cmd} failed: ${r.error ?? "unknown"}${this.stderr ? ` (${this.stderr.trim().split("\n").pop()})` : ""}`));
      });
      this.child.stdin!.write(JSON.stringify({ id, cmd, ...args }) + "\n");
    });
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (!this.exited) this.child.kill(signal);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.child, "exit");
    this.child.kill("SIGKILL");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000).unref())]);
  }
}
