/**
 * bench/shutdown-idle: idle keep-alive clients at shutdown. Clients that keep their connection
 * between requests, with no idle timeout of their own (`new http.Agent({ keepAlive: true })`, the
 * most common one, and undici's Pool), each sending a request now and then (think time uniform in
 * 0..--think ms), while the server shuts down. For each way of ending the idle ones, and for the
 * peers, in the same run:
 *
 *   addrinuse shutdown, idle "reset" (the default), "close", "wait" (the grace, then our FIN);
 *   Node's server.close() (= closeIdleConnections() first); http-terminator.
 *
 * Columns: server TIME_WAIT after (kernel rows on the server's own 127.x address and port), requests
 * lost (sent on a connection the client already had, and failed: the race an idle close or reset has
 * with a request on its way in), requests refused (a new connection to the closed listener: every
 * strategy has those, and a client may retry them elsewhere), and drain time.
 *
 * Run: npm run bench:shutdown-idle [-- --clients 200 --think 2000]
 */
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
import { listen } from "../src/net/listen.js";
import { shutdown, type ShutdownReport } from "../src/net/shutdown.js";
import { readTcpSockets } from "../src/kernel/read.js";
import { arg } from "./lib/options.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const STRATEGIES = ['addrinuse idle "reset"', 'addrinuse idle "close"', 'addrinuse idle "wait"', "server.close (closeIdleConnections)", "http-terminator"] as const;
type Strategy = (typeof STRATEGIES)[number];
const GRACE_MS = 10_000;
/** Clients run this long before the shutdown starts. */
const BEFORE_MS = 1000;

interface Row {
  strategy: Strategy;
  connections: number;
  served: number;
  lost: number;
  refused: number;
  lostBy: Record<string, number>;
  drainMs: number;
  serverTimeWait: number;
  report?: ShutdownReport;
}

type Outcome = "ok" | "lost" | "refused";

/** One client: its own agent (one connection) or its own one-connection undici pool. */
function makeClient(kind: "agent" | "undici", host: string, port: number) {
  if (kind === "undici") {
    const pool = new Pool(`http://${host}:${port}`, { connections: 1 });
    return {
      async get(): Promise<[Outcome, string]> {
        try {
          const r = await pool.request({ path: "/", method: "GET" });
          await r.body.text();
          return ["ok", ""];
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code ?? "error";
          return [code === "ECONNREFUSED" ? "refused" : "lost", `undici ${code}`];
        }
      },
      close: () => pool.destroy().catch(() => {}),
    };
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  return {
    get: () =>
      new Promise<[Outcome, string]>((resolve) => {
        const req = http.get({ host, port, path: "/", agent }, (res) => {
          res.resume();
          res.on("end", () => resolve(["ok", ""]));
          res.on("error", (e: NodeJS.ErrnoException) => resolve(["lost", `agent ${e.code ?? e.message}`]));
        });
        req.on("error", (e: NodeJS.ErrnoException) =>
          resolve([req.reusedSocket ? "lost" : "refused", `agent ${e.code ?? e.message}`]),
        );
      }),
    close: async () => agent.destroy(),
  };
}

async function settledRows(host: string, port: number) {
  const pick = () => readTcpSockets({ family: 4 }).filter((r) => r.localAddress === host && r.localPort === port);
  for (let i = 0; i < 60; i++) {
    const rows = pick();
    if (!rows.some((r) => r.state === "FIN_WAIT_1" || r.state === "LAST_ACK" || r.state === "CLOSING")) return rows;
    await delay(50);
  }
  return pick();
}

async function runOne(strategy: Strategy, host: string, clients: number, thinkMs: number): Promise<Row> {
  const server = http.createServer((_req, res) => res.end("ok"));
  let stop: () => Promise<ShutdownReport | undefined>;
  if (strategy.startsWith("addrinuse")) {
    await listen(server, { port: 0, host });
    const idle = strategy.includes('"reset"') ? "reset" : strategy.includes('"close"') ? "close" : "wait";
    stop = () => shutdown(server, { graceMs: GRACE_MS, idle });
  } else {
    server.listen({ port: 0, host });
    await once(server, "listening");
    if (strategy === "http-terminator") {
      const term = createHttpTerminator({ server, gracefulTerminationTimeout: GRACE_MS });
      stop = async () => (await term.terminate(), undefined);
    } else {
      stop = () => new Promise((resolve) => server.close(() => resolve(undefined)));
    }
  }
  const port = (server.address() as net.AddressInfo).port;
  const all = Array.from({ length: clients }, (_, i) => makeClient(i % 2 ? "undici" : "agent", host, port));
  let served = 0;
  let lost = 0;
  let refused = 0;
  const lostBy: Record<string, number> = {};
  let shuttingDown = false;
  const deadline = performance.now() + BEFORE_MS + GRACE_MS + 2000;
  try {
    await Promise.all(all.map((c) => c.get()));
    const connections = await new Promise<number>((r) => server.getConnections((_e, n) => r(n)));
    // Each client sends now and then until a request fails or the run is over.
    const loops = all.map(async (c) => {
      while (performance.now() < deadline) {
        await delay(Math.random() * thinkMs);
        if (performance.now() >= deadline) return;
        const [o, why] = await c.get();
        if (o === "ok") {
          if (shuttingDown) served++;
          continue;
        }
        if (o === "lost") {
          lost++;
          lostBy[why] = (lostBy[why] ?? 0) + 1;
        } else refused++;
        return;
      }
    });
    await delay(BEFORE_MS);
    shuttingDown = true;
    const t0 = performance.now();
    const report = await stop();
    const drainMs = Math.round(performance.now() - t0);
    await Promise.all(loops);
    const rows = await settledRows(host, port);
    const row: Row = {
      strategy,
      connections,
      served,
      lost,
      refused,
      lostBy,
      drainMs,
      serverTimeWait: rows.filter((r) => r.state === "TIME_WAIT").length,
    };
    if (report) row.report = report;
    return row;
  } finally {
    await Promise.all(all.map((c) => c.close()));
    server.closeAllConnections();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")).join("\n");
}

async function main(): Promise<void> {
  if (process.platform !== "linux") {
    console.error("bench/shutdown-idle reads the kernel's socket table: Linux only");
    process.exit(2);
  }
  const clients = Number(arg("--clients", "200"));
  const thinkMs = Number(arg("--think", "2000"));
  if (!Number.isInteger(clients) || clients < 2 || clients > 2000 || !Number.isInteger(thinkMs) || thinkMs < 1) {
    console.error("--clients must be an integer 2..2000 and --think a positive integer (ms)");
    process.exit(2);
  }
  const rows: Row[] = [];
  for (const s of STRATEGIES) {
    // A loopback address of this strategy's own: no other program's sockets are counted.
    const host = `127.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}.${1 + Math.floor(Math.random() * 254)}`;
    process.stderr.write(`${s} ... `);
    const r = await runOne(s, host, clients, thinkMs);
    process.stderr.write(`server TIME_WAIT ${r.serverTimeWait}, lost ${r.lost}, refused ${r.refused}, drain ${r.drainMs} ms\n`);
    rows.push(r);
  }
  console.log(
    `\n${clients} keep-alive clients without an idle timeout (${Math.ceil(clients / 2)} http.Agent, ${Math.floor(clients / 2)} undici Pool), ` +
      `one connection each, a request every 0..${thinkMs} ms; shutdown ${BEFORE_MS} ms in, grace ${GRACE_MS} ms\n`,
  );
  console.log(
    table([
      ["strategy", "connections", "server TIME_WAIT", "lost", "refused", "served during", "drain ms"],
      ...rows.map((r) => [r.strategy, String(r.connections), String(r.serverTimeWait), String(r.lost), String(r.refused), String(r.served), String(r.drainMs)]),
    ]),
  );
  for (const r of rows) if (r.lost) console.log(`  ${r.strategy} lost: ${JSON.stringify(r.lostBy)}`);
  const out = join(ROOT, "bench", "results", "shutdown-idle.json");
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, kernel: release(), clients, thinkMs, graceMs: GRACE_MS, rows }, null, 2) + "\n");
  console.log(`\nwrote ${out}`);
}

await main();
