/**
 * bench/shutdown: shut an HTTP server down under 1,000 keep-alive clients (half Node's http.Agent
 * configured like Node 20's globalAgent, half an undici Pool) with requests in flight, with
 * addrinuse's `shutdown` and with each peer, in the same run:
 *   http-terminator, stoppable, @godaddy/terminus, close-with-grace (its callback calls Node's
 *   server.close()), Node's server.close() (= closeIdleConnections first) and closeAllConnections().
 *
 * Each strategy gets its own server process (terminus and close-with-grace end the process when done)
 * on a fresh port of one random 127.x.y.z address, so the kernel table can be read per strategy
 * without other programs' sockets: "server TIME_WAIT" is the count of TIME_WAIT rows whose local end
 * is that address and port, read once the closing handshakes are over.
 *
 * Columns: server TIME_WAIT after, requests failed (of those in flight at shutdown), time to drain
 * (shutdown call to the server's 'close': listener and every connection gone), client TIME_WAIT.
 *
 * Run: npm run bench:shutdown [-- --clients 1000 --inflight 500]
 */
import { fork, type ChildProcess } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { release } from "node:os";
import { setTimeout as delay } from "node:timers/promises";
import { Pool } from "undici";
import { createHttpTerminator } from "http-terminator";
import stoppable from "stoppable";
import { createTerminus } from "@godaddy/terminus";
import closeWithGrace from "close-with-grace";
import { listen } from "../src/net/listen.js";
import { shutdown, type ShutdownReport } from "../src/net/shutdown.js";
import { readTcpSockets } from "../src/kernel/read.js";
import { arg } from "./lib/options.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const STRATEGIES = [
  "addrinuse shutdown",
  "http-terminator",
  "stoppable",
  "@godaddy/terminus",
  "close-with-grace",
  "server.close (closeIdleConnections)",
  "closeAllConnections",
] as const;
type Strategy = (typeof STRATEGIES)[number];

const GRACE_MS = 10_000;
const SLOW_MS = 300;
/** The whole of one strategy's run, warm-up to counted, is cut off here. */
const STRATEGY_LIMIT_MS = 40_000;

type ToParent =
  | { type: "port"; port: number }
  | { type: "arrived"; n: number }
  | { type: "connections"; n: number }
  | { type: "drained"; drainMs: number; report?: ShutdownReport };
type ToChild = { type: "count" } | { type: "shutdown" } | { type: "expect"; n: number };

// ---------------------------------------------------------------- the server process

function send(m: ToParent): Promise<void> {
  return new Promise((resolve) => process.send!(m, () => resolve()));
}

async function serve(strategy: Strategy, host: string): Promise<void> {
  let arrived = 0;
  let expect = Infinity;
  const server = http.createServer((req, res) => {
    if (req.url === "/slow") {
      if (++arrived === expect) void send({ type: "arrived", n: arrived });
      setTimeout(() => res.end("slow"), SLOW_MS);
    } else {
      res.end("fast");
    }
  });
  let t0 = 0;
  const drained = () => send({ type: "drained", drainMs: Math.round(performance.now() - t0) });
  let stop: () => Promise<void>;
  switch (strategy) {
    case "addrinuse shutdown":
      await listen(server, { port: 0, host });
      stop = async () => {
        const report = await shutdown(server, { graceMs: GRACE_MS });
        await send({ type: "drained", drainMs: Math.round(performance.now() - t0), report });
      };
      break;
    case "http-terminator": {
      const terminator = createHttpTerminator({ server, gracefulTerminationTimeout: GRACE_MS });
      stop = async () => {
        await terminator.terminate();
        await drained();
      };
      break;
    }
    case "stoppable": {
      const s = stoppable(server, GRACE_MS);
      stop = async () => {
        await new Promise<void>((resolve) => s.stop(() => resolve()));
        await drained();
      };
      break;
    }
    case "@godaddy/terminus":
      createTerminus(server, {
        signals: ["SIGUSR2"],
        timeout: GRACE_MS,
        useExit0: true,
        onShutdown: drained,
      });
      // terminus ends the process itself once done.
      stop = () => {
        process.kill(process.pid, "SIGUSR2");
        return new Promise<void>(() => {});
      };
      break;
    case "close-with-grace": {
      const cwg = closeWithGrace({ delay: GRACE_MS, logger: false }, async () => {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await drained();
      });
      // close-with-grace ends the process itself once done.
      stop = () => {
        void cwg.close();
        return new Promise<void>(() => {});
      };
      break;
    }
    case "server.close (closeIdleConnections)":
      stop = async () => {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await drained();
      };
      break;
    case "closeAllConnections":
      stop = async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
        await drained();
      };
      break;
  }
  if (!server.listening) {
    server.listen({ port: 0, host });
    await once(server, "listening");
  }
  process.on("message", (m: ToChild) => {
    if (m.type === "expect") {
      expect = m.n;
      if (arrived >= expect) void send({ type: "arrived", n: arrived });
    } else if (m.type === "count") {
      server.getConnections((_e, n) => void send({ type: "connections", n }));
    } else if (m.type === "shutdown") {
      t0 = performance.now();
      void stop().then(() => process.exit(0));
    }
  });
  await send({ type: "port", port: (server.address() as net.AddressInfo).port });
}

// ---------------------------------------------------------------- the clients (this process)

interface Row {
  strategy: Strategy;
  connections: number;
  inflight: number;
  failed: number;
  failures: Record<string, number>;
  drainMs: number | null;
  serverTimeWait: number;
  clientTimeWait: number;
  report?: ShutdownReport;
}

function nodeGet(agent: http.Agent, host: string, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, agent }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

async function undiciGet(pool: Pool, path: string): Promise<number> {
  const r = await pool.request({ path, method: "GET" });
  await r.body.text();
  return r.statusCode;
}

function next<T extends ToParent["type"]>(child: ChildProcess, type: T): Promise<Extract<ToParent, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: ToParent) => {
      if (m.type === type) {
        child.removeListener("message", onMsg);
        child.removeListener("close", onExit);
        resolve(m as Extract<ToParent, { type: T }>);
      }
    };
    // 'close', not 'exit': a message sent just before exiting is delivered before 'close'.
    const onExit = (code: number | null, signal: string | null) =>
      reject(new Error(`server exited (${signal ?? code}) before "${type}"`));
    child.on("message", onMsg);
    child.once("close", onExit);
  });
}

/** Rows on host:port once no closing handshake is in the middle (bounded: 3 s). */
async function settled(host: string, port: number) {
  const pick = () =>
    readTcpSockets({ family: 4 }).filter(
      (r) => (r.localAddress === host && r.localPort === port) || (r.remoteAddress === host && r.remotePort === port),
    );
  for (let i = 0; i < 60; i++) {
    const rows = pick();
    if (!rows.some((r) => r.state === "FIN_WAIT_1" || r.state === "LAST_ACK" || r.state === "CLOSING")) return rows;
    await delay(50);
  }
  return pick();
}

async function runOne(strategy: Strategy, host: string, clients: number, inflight: number): Promise<Row> {
  const child = fork(fileURLToPath(import.meta.url), ["--serve", strategy, "--host", host], {
    execArgv: ["--import", "tsx"],
    cwd: ROOT,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), STRATEGY_LIMIT_MS);
  const { port } = await next(child, "port");
  const half = Math.floor(clients / 2);
  // Like Node 20's globalAgent (keepAlive, 5 s idle timeout, lifo), but keeping all its sockets
  // (the default maxFreeSockets of 256 would close the rest after the warm-up).
  const agent = new http.Agent({ keepAlive: true, timeout: 5000, scheduling: "lifo", maxSockets: Infinity, maxFreeSockets: half });
  const pool = new Pool(`http://${host}:${port}`, { connections: clients - half });
  try {
    await Promise.all([
      ...Array.from({ length: half }, () => nodeGet(agent, host, port, "/")),
      ...Array.from({ length: clients - half }, () => undiciGet(pool, "/")),
    ]);
    const arrivedP = next(child, "arrived");
    child.send({ type: "expect", n: inflight } satisfies ToChild);
    const failures: Record<string, number> = {};
    const outcome = (p: Promise<number>) =>
      p.then(
        (status) => (status === 200 ? true : ((failures[`HTTP ${status}`] = (failures[`HTTP ${status}`] ?? 0) + 1), false)),
        (e: NodeJS.ErrnoException) => {
          const k = e.code ?? e.name;
          failures[k] = (failures[k] ?? 0) + 1;
          return false;
        },
      );
    const nodeInflight = Math.floor(inflight / 2);
    const slow = [
      ...Array.from({ length: nodeInflight }, () => outcome(nodeGet(agent, host, port, "/slow"))),
      ...Array.from({ length: inflight - nodeInflight }, () => outcome(undiciGet(pool, "/slow"))),
    ];
    await arrivedP;
    child.send({ type: "count" } satisfies ToChild);
    const { n: connections } = await next(child, "connections");
    const drainedP = next(child, "drained");
    child.send({ type: "shutdown" } satisfies ToChild);
    const results = await Promise.all(slow);
    let drainMs: number | null = null;
    let report: ShutdownReport | undefined;
    try {
      const d = await drainedP;
      drainMs = d.drainMs;
      report = d.report;
    } catch {
      // Killed at the limit: no drain time.
    }
    if (child.exitCode === null && child.signalCode === null) await once(child, "exit");
    const rows = await settled(host, port);
    const row: Row = {
      strategy,
      connections,
      inflight,
      failed: results.filter((ok) => !ok).length,
      failures,
      drainMs,
      serverTimeWait: rows.filter((r) => r.state === "TIME_WAIT" && r.localAddress === host).length,
      clientTimeWait: rows.filter((r) => r.state === "TIME_WAIT" && r.remoteAddress === host).length,
    };
    if (report) row.report = report;
    return row;
  } finally {
    clearTimeout(killer);
    agent.destroy();
    await pool.destroy().catch(() => {});
    if (child.exitCode === null) child.kill("SIGKILL");
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")).join("\n");
}

async function main(): Promise<void> {
  if (process.argv.includes("--serve")) {
    await serve(arg("--serve", "") as Strategy, arg("--host", "127.0.0.1"));
    return;
  }
  if (process.platform !== "linux") {
    console.error("bench/shutdown reads /proc/net/tcp: Linux only");
    process.exit(2);
  }
  const clients = Number(arg("--clients", "1000"));
  const inflight = Number(arg("--inflight", "500"));
  if (!Number.isInteger(clients) || clients < 2 || !Number.isInteger(inflight) || inflight < 1 || inflight > clients) {
    console.error("--clients must be an integer >= 2 and --inflight an integer 1..clients");
    process.exit(2);
  }
  // A loopback address of this run's own, so that no other program's sockets are counted.
  const host = `127.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}.${1 + Math.floor(Math.random() * 254)}`;
  const only = arg("--only", "");
  const rows: Row[] = [];
  for (const s of STRATEGIES) {
    if (only && !s.includes(only)) continue;
    process.stderr.write(`${s} ... `);
    const r = await runOne(s, host, clients, inflight);
    process.stderr.write(`server TIME_WAIT ${r.serverTimeWait}, failed ${r.failed}, drain ${r.drainMs ?? "-"} ms\n`);
    rows.push(r);
  }
  const ours = rows.find((r) => r.strategy === "addrinuse shutdown");
  console.log(
    `\n${clients} keep-alive clients (${Math.floor(clients / 2)} Node http.Agent, ${clients - Math.floor(clients / 2)} undici Pool), ${inflight} requests in flight (${SLOW_MS} ms each) at shutdown, grace ${GRACE_MS} ms, server on ${host}\n`,
  );
  console.log(
    table([
      ["strategy", "connections", "server TIME_WAIT", "requests failed", "drain ms", "client TIME_WAIT"],
      ...rows.map((r) => [
        r.strategy,
        String(r.connections),
        String(r.serverTimeWait),
        `${r.failed}/${r.inflight}`,
        r.drainMs === null ? "-" : String(r.drainMs),
        String(r.clientTimeWait),
      ]),
    ]),
  );
  if (ours) {
    const peers = rows.filter((r) => r !== ours);
    const peerTw = peers.map((r) => r.serverTimeWait);
    console.log(
      `\nServer TIME_WAIT: ours ${ours.serverTimeWait}, peers ${Math.min(...peerTw)}..${Math.max(...peerTw)} ` +
        `(${(Math.min(...peerTw) / ours.connections).toFixed(2)}..${(Math.max(...peerTw) / ours.connections).toFixed(2)} per connection). ` +
        `Drain: ours ${ours.drainMs} ms (clients with a request in flight leave on the hint; idle ones are reset after idleGraceMs, 1 s).`,
    );
    for (const r of rows) if (Object.keys(r.failures).length) console.log(`  ${r.strategy} failures: ${JSON.stringify(r.failures)}`);
  }
  const out = join(ROOT, "bench", "results", "shutdown.json");
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        node: process.version,
        kernel: release(),
        clients,
        inflight,
        slowMs: SLOW_MS,
        graceMs: GRACE_MS,
        host,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`\nwrote ${out}`);
}

await main();
