import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import http from "node:http";
import https from "node:https";
import { once } from "node:events";
import { shutdown, trackConnections } from "../../src/net/shutdown.js";
import { ArgumentError } from "../../src/errors.js";
import { listenFresh, timeWaitCount } from "./kernel-judge.js";
import { selfSignedCert } from "../helpers/tls.js";

const onLinux = process.platform === "linux";

interface Reply {
  status: number;
  keepAlive: string;
  body: string;
}

function get(agent: http.Agent, port: number, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, keepAlive: String(res.headers["keep-alive"] ?? ""), body }));
    });
    req.on("error", reject);
  });
}

/** An http server whose /slow requests wait until released; counts the ones that arrived. */
function slowServer() {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let slowArrived = 0;
  let onSlow: (() => void) | undefined;
  const server = http.createServer((req, res) => {
    if (req.url === "/slow") {
      slowArrived++;
      onSlow?.();
      void released.then(() => res.end("slow"));
    } else {
      res.end("fast");
    }
  });
  const slowCount = (n: number) =>
    new Promise<void>((resolve) => {
      if (slowArrived >= n) return resolve();
      onSlow = () => {
        if (slowArrived >= n) resolve();
      };
    });
  return { server, release, slowCount };
}

test("keep-alive clients close first: no server TIME_WAIT, no in-flight request lost", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const { server, release, slowCount } = slowServer();
  const { port } = await listenFresh(server);
  // The agent's idle timeout stands in for a client that leaves idle connections on its own.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20, timeout: 500 });
  t.after(() => {
    agent.destroy();
    server.closeAllConnections();
  });
  const warm = await Promise.all(Array.from({ length: 20 }, () => get(agent, port, "/")));
  assert.ok(warm.every((r) => r.status === 200));
  const slow = Array.from({ length: 10 }, () => get(agent, port, "/slow"));
  await slowCount(10);

  // The idle reset waits longer than these clients take to leave: this test is about clients closing first.
  const done = shutdown(server, { graceMs: 20_000, idleGraceMs: 5000 });
  // A request on a connection that is already open is still served, with a hint to leave.
  const late = await get(agent, port, "/");
  assert.equal(late.status, 200);
  assert.equal(late.keepAlive, "timeout=1");
  release();
  const replies = await Promise.all(slow);
  assert.ok(replies.every((r) => r.status === 200 && r.body === "slow"));
  const report = await done;

  assert.equal(report.timedOut, false);
  assert.equal(report.closedByServer, 0);
  assert.equal(report.reset, 0);
  assert.equal(report.closedByClient + report.resetByClient, report.connections);
  assert.ok(report.connections >= 10);
  assert.equal(report.requestsCutOff, 0);
  assert.equal(report.requestsCompleted, 11);
  assert.equal(await timeWaitCount(port, "local"), 0, "the server keeps no TIME_WAIT");
  assert.equal(await timeWaitCount(port, "remote"), report.closedByClient + 20 - report.connections, "each client that closed first does");
});

/** A raw client that sends one request, reads the reply and then never closes. */
async function stubbornClient(port: number): Promise<net.Socket> {
  const c = net.connect(port, "127.0.0.1");
  c.on("error", () => {});
  await once(c, "connect");
  c.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  await once(c, "data");
  return c;
}

test("a client that never closes is reset at graceMs when asked, leaving no TIME_WAIT", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const server = http.createServer((_req, res) => res.end("x"));
  const { port } = await listenFresh(server);
  const c = await stubbornClient(port);
  t.after(() => c.destroy());
  const report = await shutdown(server, { graceMs: 100, onTimeout: "reset" });
  assert.equal(report.timedOut, true);
  assert.equal(report.connections, 1);
  assert.equal(report.reset, 1);
  assert.equal(await timeWaitCount(port, "local"), 0);
});

test("a client that never closes is closed at graceMs by default, and the TIME_WAIT is ours", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const server = http.createServer((_req, res) => res.end("x"));
  const { port } = await listenFresh(server);
  const c = await stubbornClient(port);
  t.after(() => c.destroy());
  const report = await shutdown(server, { graceMs: 100 });
  assert.equal(report.timedOut, true);
  assert.equal(report.closedByServer, 1);
  assert.equal(await timeWaitCount(port, "local"), 1);
});

test("a request still running at graceMs is counted as cut off", async (t) => {
  const { server, release, slowCount } = slowServer();
  const { port } = await listenFresh(server);
  const agent = new http.Agent({ keepAlive: true });
  t.after(() => {
    release();
    agent.destroy();
  });
  const pending = get(agent, port, "/slow").catch((e: NodeJS.ErrnoException) => e.code);
  await slowCount(1);
  const report = await shutdown(server, { graceMs: 50, onTimeout: "reset" });
  assert.equal(report.requestsCutOff, 1);
  assert.equal(await pending, "ECONNRESET");
});

test("a plain TCP server: clients that hang up first are counted as such", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  let accepted = 0;
  let allAccepted!: () => void;
  const acceptedAll = new Promise<void>((resolve) => (allAccepted = resolve));
  const server = net.createServer((s) => {
    s.resume();
    if (++accepted === 5) allAccepted();
  });
  const { port } = await listenFresh(server);
  const clients = Array.from({ length: 5 }, () => net.connect(port, "127.0.0.1"));
  t.after(() => clients.forEach((c) => c.destroy()));
  // A client's 'connect' comes with the SYN-ACK, before the server accepts; one still in the accept
  // queue when the listener closes would be reset (see accept-queue.test.ts).
  await acceptedAll;
  const done = shutdown(server, { graceMs: 10_000 });
  for (const c of clients) c.end();
  const report = await done;
  assert.equal(report.connections, 5);
  assert.equal(report.closedByClient, 5);
  assert.equal(await timeWaitCount(port, "local"), 0);
});

test("abort of the signal ends the grace period now", async (t) => {
  const server = http.createServer((_req, res) => res.end("x"));
  trackConnections(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const c = await stubbornClient((server.address() as net.AddressInfo).port);
  t.after(() => c.destroy());
  const ac = new AbortController();
  const done = shutdown(server, { graceMs: 60_000, onTimeout: "reset", signal: ac.signal });
  ac.abort();
  const report = await done;
  assert.equal(report.aborted, true);
  assert.equal(report.reset, 1);
});

test("shutdown rejects bad arguments at the call", () => {
  const s = http.createServer();
  assert.throws(() => shutdown(s, { graceMs: -1 }), ArgumentError);
  assert.throws(() => shutdown(s, { graceMs: 1, onTimeout: "kill" as "close" }), ArgumentError);
});

test("https: keep-alive clients close first too", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const creds = selfSignedCert();
  if (!creds) return t.skip("no openssl to make a test certificate");
  const server = https.createServer(creds, (_req, res) => res.end("x"));
  const { port } = await listenFresh(server);
  const agent = new https.Agent({ keepAlive: true, ca: creds.cert, timeout: 5000 });
  t.after(() => agent.destroy());
  const get1 = () =>
    new Promise<string>((resolve, reject) => {
      https
        .get({ host: "127.0.0.1", port, path: "/", agent, ca: creds.cert }, (res) => {
          res.resume();
          res.on("end", () => resolve(String(res.headers["keep-alive"] ?? "")));
        })
        .on("error", reject);
    });
  await Promise.all([get1(), get1(), get1()]);
  // The idle reset waits longer than these clients take to leave: this test is about clients closing first.
  const done = shutdown(server, { graceMs: 20_000, idleGraceMs: 5000 });
  // Each idle connection gets one more request, answered with the hint to leave.
  assert.deepEqual(await Promise.all([get1(), get1(), get1()]), ["timeout=1", "timeout=1", "timeout=1"]);
  const report = await done;
  assert.equal(report.closedByServer, 0);
  assert.equal(report.reset, 0);
  assert.equal(report.closedByClient, report.connections);
  assert.equal(await timeWaitCount(port, "local"), 0);
});
