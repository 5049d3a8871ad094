import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { abort, closeAfterPeer } from "../../src/net/close.js";
import { ArgumentError } from "../../src/errors.js";
import { closeServer, listen, portOf } from "../helpers/sockets.js";
import { timeWaitCount } from "./kernel-judge.js";
import { selfSignedCert } from "../helpers/tls.js";

const onLinux = process.platform === "linux";

/** A listener and one connection to it: [client, server side]. */
async function pair(t: { after(fn: () => unknown): void }): Promise<[net.Socket, net.Socket, number]> {
  const srv = await listen("127.0.0.1");
  const accepted = new Promise<net.Socket>((resolve) => srv.once("connection", resolve));
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  const s = await accepted;
  t.after(async () => {
    c.destroy();
    s.destroy();
    await closeServer(srv);
  });
  return [c, s, portOf(srv)];
}

test("closeAfterPeer waits for the peer's FIN, so the peer keeps the TIME_WAIT", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const [c, s, port] = await pair(t);
  const closing = closeAfterPeer(s, { timeoutMs: 0 });
  c.on("error", () => {});
  c.resume();
  c.end();
  assert.deepEqual(await closing, { closedBy: "remote" });
  if (!c.closed) await once(c, "close");
  assert.equal(await timeWaitCount(port, "local"), 0, "server side keeps no TIME_WAIT");
  assert.equal(await timeWaitCount(port, "remote"), 1, "the client, which closed first, does");
});

test("closeAfterPeer on a socket that stays open resets at timeoutMs when asked, leaving no TIME_WAIT", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const [c, s, port] = await pair(t);
  c.on("error", () => {});
  const r = await closeAfterPeer(s, { timeoutMs: 50, onTimeout: "reset" });
  assert.deepEqual(r, { closedBy: "reset" });
  if (!c.closed) await once(c, "close");
  assert.equal(await timeWaitCount(port, "local"), 0);
  assert.equal(await timeWaitCount(port, "remote"), 0);
});

test("closeAfterPeer closes first at timeoutMs by default, and says so", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const [c, s, port] = await pair(t);
  c.on("end", () => c.end());
  c.resume();
  const r = await closeAfterPeer(s, { timeoutMs: 50 });
  assert.deepEqual(r, { closedBy: "local" });
  if (!c.closed) await once(c, "close");
  assert.equal(await timeWaitCount(port, "local"), 1, "we closed first, so the TIME_WAIT is ours");
});

test("closeAfterPeer drains unread data to see the FIN behind it", async (t) => {
  const [c, s] = await pair(t);
  s.pause();
  c.end(Buffer.alloc(256 * 1024));
  assert.deepEqual(await closeAfterPeer(s, { timeoutMs: 0 }), { closedBy: "remote" });
});

test("abort ends with RST: the peer sees ECONNRESET and no side keeps TIME_WAIT", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const [c, s, port] = await pair(t);
  const err = once(c, "error");
  abort(s);
  const [e] = (await err) as [NodeJS.ErrnoException];
  assert.equal(e.code, "ECONNRESET");
  assert.equal(await timeWaitCount(port, "local"), 0);
  assert.equal(await timeWaitCount(port, "remote"), 0);
  abort(s); // a second call on a destroyed socket is a no-op
});

test("closeAfterPeer rejects bad arguments at the call", async (t) => {
  const [, s] = await pair(t);
  assert.throws(() => closeAfterPeer(s, { timeoutMs: -1 }), ArgumentError);
  assert.throws(() => closeAfterPeer(s, { timeoutMs: 1.5 }), ArgumentError);
  assert.throws(() => closeAfterPeer(s, { timeoutMs: 1, onTimeout: "kill" as "close" }), ArgumentError);
});

test("abort on a tls.connect({ socket }) client resets its TCP socket: no TIME_WAIT on either side", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const creds = selfSignedCert();
  if (!creds) return t.skip("no openssl to make a test certificate");
  const srv = tls.createServer(creds);
  const serverSide = new Promise<tls.TLSSocket>((resolve) => srv.once("secureConnection", resolve));
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as net.AddressInfo).port;
  const c = tls.connect({ socket: net.connect(port, "127.0.0.1"), ca: creds.cert, checkServerIdentity: () => undefined });
  c.on("error", () => {});
  await once(c, "secureConnect");
  const s = await serverSide;
  t.after(() => srv.close());
  s.on("error", () => {});
  const serverClosed = once(s, "close");
  abort(c);
  await serverClosed;
  // A FIN from the client would have left it the TIME_WAIT (it closed first); an RST leaves none.
  assert.equal(await timeWaitCount(port, "remote"), 0);
  assert.equal(await timeWaitCount(port, "local"), 0);
});
