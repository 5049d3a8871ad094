/**
 * Timer values from users: past a Node timer's 2^31-1 ms they used to fire after 1 ms (so "wait a
 * very long time" meant "give up at once", and closeAfterPeer closed first); -t 0.0001 rounded to 0,
 * which means no timeout. Each is now refused (exit 2) or honoured.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main as multiRsh } from "../../src/cli/multi-rsh.js";
import { main as addrinuse } from "../../src/cli/addrinuse.js";
import { closeAfterPeer } from "../../src/net/close.js";
import { shutdown } from "../../src/net/shutdown.js";
import { runHosts } from "../../src/remote/engine.js";
import { createExecTransport } from "../../src/remote/transports/exec.js";
import { createSshTransport } from "../../src/remote/transports/ssh.js";
import { MAX_TIMER_MS, secondsToMs, timerDelay } from "../../src/core/timer.js";
import { captureIO } from "../helpers/io.js";
import { closeServer, listen, portOf } from "../helpers/sockets.js";
import { runOn } from "../helpers/sshd.js";

test("timerDelay: 0 stays none, fractions round up, past 2^31-1 ms is clamped, negative and NaN refused", () => {
  assert.equal(timerDelay(0, "x"), 0);
  assert.equal(timerDelay(0.2, "x"), 1);
  assert.equal(timerDelay(3e9, "x"), MAX_TIMER_MS);
  assert.equal(timerDelay(Infinity, "x"), MAX_TIMER_MS);
  assert.throws(() => timerDelay(-1, "x"), { code: "ERR_BAD_ARGUMENT" });
  assert.throws(() => timerDelay(NaN, "x"), { code: "ERR_BAD_ARGUMENT" });
  assert.equal(secondsToMs(0.0001), 1);
  assert.equal(secondsToMs(0.3), 300);
  assert.equal(secondsToMs(0), 0);
});

for (const [cmd, args] of [
  ["multi-rsh -t", ["-t", "3000000", "-R", "exec", "-w", "h", "--", "sh", "-c", "true"]],
  ["multi-rsh --connect-timeout", ["--connect-timeout", "3000000", "-R", "exec", "-w", "h", "--", "sh", "-c", "true"]],
  ["multi-rsh --command-timeout", ["--command-timeout", "1e10", "-R", "exec", "-w", "h", "--", "sh", "-c", "true"]],
] as const) {
  test(`${cmd} past 24.8 days is refused with exit 2 and one line`, async () => {
    const io = captureIO();
    const code = await multiRsh([...args], io);
    assert.equal(code, 2);
    assert.match(io.err(), /^multi-rsh: .*bad .*'(3000000|1e10)': at most 2147483 seconds/);
    assert.equal(io.err().trim().split("\n").length, 1);
    assert.equal(io.out(), "");
  });
}

test("addrinuse watch --interval and wait --timeout past 24.8 days: exit 2", async () => {
  for (const argv of [["watch", "--interval", "3000000", "--count", "2"], ["wait", "1", "--timeout", "3000000"]]) {
    const io = captureIO();
    assert.equal(await addrinuse(argv, io), 2, argv.join(" "));
    assert.match(io.err(), /at most 2147483 seconds/);
  }
});

test("multi-rsh -t 0.0001 is a timeout (of 1 ms), not none: the host times out", async () => {
  const io = captureIO();
  const code = await multiRsh(["--json", "-t", "0.0001", "-R", "exec", "-w", "h", "--", "sh", "-c", "sleep 30"], io);
  assert.equal(code, 1);
  const doc = JSON.parse(io.out());
  assert.equal(doc.results[0].state, "timedout");
});

test("the engine with timeouts of 3e9 ms runs the command to its end (they used to fire after 1 ms)", async () => {
  const run = runHosts({
    hosts: ["h"],
    command: "sleep 0.3; echo finished",
    transport: createExecTransport({ template: ["sh", "-c"] }),
    parallel: 1,
    timeoutMs: 3e9,
    connectTimeoutMs: 3e9,
    commandTimeoutMs: 3e9,
    user: "",
    localUser: "root",
    separateStderr: false,
  });
  const [r] = await run.done;
  assert.equal(r!.state, "done");
  assert.equal(r!.exitCode, 0);
});

test("closeAfterPeer with timeoutMs 3e9 waits for the peer, which closes first (it used to close first after 1 ms)", async (t) => {
  let server!: net.Socket;
  const srv = await listen("127.0.0.1", (s) => (server = s));
  t.after(() => closeServer(srv));
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  const closing = closeAfterPeer(c, { timeoutMs: 3e9 });
  await new Promise((r) => setTimeout(r, 200));
  server.end();
  assert.deepEqual(await closing, { closedBy: "remote" });
});

test("shutdown with graceMs 3e9 lets an open connection finish (it used to be closed after 1 ms)", async (t) => {
  const conns: net.Socket[] = [];
  const srv = await listen("127.0.0.1", (s) => conns.push(s));
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  t.after(() => c.destroy());
  const report = shutdown(srv, { graceMs: 3e9 });
  await new Promise((r) => setTimeout(r, 200));
  // Still open after the first 200 ms: the client closes now, and the report says no one was forced.
  assert.equal(c.destroyed, false);
  c.end();
  const r = await report;
  assert.equal(r.timedOut, false);
});

test("-R ssh with no timeout anywhere still gives up on a server that drips an endless banner", async (t) => {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.resume();
    const drip = setInterval(() => s.write("still greeting you\r\n"), 20);
    s.on("close", () => clearInterval(drip));
  });
  srv.listen({ port: 0, host: "127.0.0.1" });
  await once(srv, "listening");
  const dir = mkdtempSync(join(tmpdir(), "aitimer-"));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await closeServer(srv);
    rmSync(dir, { recursive: true, force: true });
  });
  const config = join(dir, "ssh_config");
  writeFileSync(config, `Host *\n  Port ${portOf(srv)}\n  UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile /dev/null\n`);
  const transport = createSshTransport({ sshConfigFile: config }, { home: dir, agentSocket: "", systemConfigFile: null, handshakeLimitMs: 500 });
  const r = await runOn(transport, "127.0.0.1", "true", { connectTimeoutMs: 0 });
  assert.equal(r.result.error?.code, "ERR_CONNECT_TIMEOUT");
  assert.match(r.result.error!.message, /handshake/);
  assert.equal(r.connected, 0);
});
