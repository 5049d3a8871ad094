import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import http from "node:http";
import { listen } from "../../src/net/listen.js";
import { ArgumentError, PortInUseError } from "../../src/errors.js";
import { closeServer, listen as listenLoopback, listenInChild, portOf } from "../helpers/sockets.js";

const onLinux = process.platform === "linux";

function hasIPv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen({ port: 0, host: "::1" }, () => s.close(() => resolve(true)));
  });
}

test("listen names the pid of a holder in another process", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const child = await listenInChild();
  t.after(() => child.kill());
  const port = child.port;
  const server = net.createServer();
  t.after(() => server.close());
  await assert.rejects(listen(server, { port, host: "127.0.0.1" }), (e: unknown) => {
    assert.ok(e instanceof PortInUseError);
    assert.equal(e.code, "AIU_PORT_IN_USE");
    assert.equal(e.port, port);
    const h = e.holders.find((x) => x.pid === child.pid);
    assert.ok(h, `holders: ${JSON.stringify(e.holders)}`);
    assert.equal(h.state, "LISTEN");
    assert.equal(h.local, `127.0.0.1:${port}`);
    assert.match(e.message, new RegExp(`pid ${child.pid}`));
    assert.match(e.message, /Stop it|another port/);
    return true;
  });
  // The failed server may listen again.
  const a = await listen(server, { port: 0, host: "127.0.0.1" });
  assert.ok(a.port > 0);
});

test("listen names the more-specific-address case", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const holder = await listenLoopback("0.0.0.0");
  t.after(() => closeServer(holder));
  const server = http.createServer();
  await assert.rejects(listen(server, { port: portOf(holder), host: "127.0.0.1" }), (e: unknown) => {
    assert.ok(e instanceof PortInUseError);
    assert.equal(e.holders[0]?.pid, process.pid);
    assert.match(e.message, /every address/);
    assert.match(e.message, /hijack/);
    return true;
  });
});

test("listen explains EADDRINUSE on IPv6 too, for an http server", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  if (!(await hasIPv6Loopback())) return t.skip("no ::1 on this machine");
  const holder = await listenLoopback("::1");
  t.after(() => closeServer(holder));
  await assert.rejects(listen(http.createServer(), { port: portOf(holder), host: "::1" }), (e: unknown) => {
    assert.ok(e instanceof PortInUseError);
    assert.equal(e.holders[0]?.local, `[::1]:${portOf(holder)}`);
    return true;
  });
});

test("listen resolves with the bound address", async (t) => {
  const server = http.createServer();
  const a = await listen(server, { port: 0, host: "127.0.0.1" });
  t.after(() => server.close());
  assert.equal(a.address, "127.0.0.1");
  assert.equal(a.port, portOf(server));
});

test("listen rejects bad arguments at the call", () => {
  const s = net.createServer();
  assert.throws(() => listen(s, { port: -1 }), ArgumentError);
  assert.throws(() => listen(s, { port: 65536 }), ArgumentError);
  assert.throws(() => listen(s, { port: 80, host: "localhost" }), ArgumentError);
});
