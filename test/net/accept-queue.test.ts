/**
 * What Linux does to connections still in a listener's accept queue when the listener closes (the
 * note's "listening sockets" case): the handshake is complete, the client has sent its request, but
 * no process has accepted the socket yet. inet_csk_listen_stop() disconnects each one, which sends
 * an RST: the client gets ECONNRESET, its request was never read, and no TIME_WAIT is left anywhere.
 * docs/library.md quotes this test.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { readTcpSockets } from "../../src/kernel/read.js";
import { timeWaitCount } from "./kernel-judge.js";
import { heldListener } from "./held-listener.js";

const onLinux = process.platform === "linux";

test("connections still in the accept queue are reset when the listener closes", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const held = await heldListener();
  const clients: net.Socket[] = [];
  t.after(() => {
    held.dispose();
    for (const c of clients) c.destroy();
  });
  const { port, seen } = held;

  const outcomes: Promise<string>[] = [];
  for (let i = 0; i < 5; i++) {
    const c = net.connect(port, "127.0.0.1");
    clients.push(c);
    c.resume();
    outcomes.push(
      new Promise((resolve) => {
        c.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
        c.once("end", () => resolve("FIN"));
      }),
    );
    await once(c, "connect");
    // Three of them have sent a request: it sits in the queued socket's receive buffer.
    if (i < 3) c.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  }
  const queued = readTcpSockets({ localPort: port }).filter((r) => r.state === "ESTABLISHED");
  assert.equal(queued.length, 5, "five handshakes completed in the kernel");
  assert.ok(queued.every((r) => r.inode === 0), "no process owns a queued connection yet");

  held.release();
  const results = await Promise.all(outcomes);
  assert.deepEqual(results, ["ECONNRESET", "ECONNRESET", "ECONNRESET", "ECONNRESET", "ECONNRESET"]);
  assert.ok(!seen.includes("accepted"), "the server never accepted any of them");
  assert.equal(await timeWaitCount(port, "local"), 0);
  assert.equal(await timeWaitCount(port, "remote"), 0);
});
