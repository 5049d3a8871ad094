import { test } from "node:test";
import assert from "node:assert/strict";
import { main } from "../../src/cli/addrinuse/addrinuse.js";
import { captureIO } from "../helpers/io.js";
import { closeServer, listen, listenInChild, makeServerTimeWait, portOf } from "../helpers/sockets.js";

test("wait returns 0 once the process holding the port exits, without connecting to it", async (t) => {
  const holder = await listenInChild();
  t.after(() => holder.kill());
  const port = holder.port;
  // A terminal, so wait draws its countdown; the first countdown proves it saw the port blocked, and
  // only then is the holder told to exit.
  const io = captureIO({ tty: true });
  let released = false;
  const write = io.stderr.write;
  io.stderr.write = (s: string) => {
    if (!released && /waiting for port/.test(s)) {
      released = true;
      holder.exit();
    }
    return write(s);
  };
  const code = await main(["wait", String(port), "--host", "127.0.0.1", "--timeout", "30"], io);
  assert.equal(code, 0, io.err());
  assert.ok(released, "wait reported the port as held first");
  assert.match(io.err(), /LISTEN/);
  assert.match(io.out(), /bindable after/);
});

test("wait times out with exit 1 while a listener stays", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  const io = captureIO();
  const code = await main(["wait", String(portOf(srv)), "--host", "127.0.0.1", "--timeout", "0.3"], io);
  assert.equal(code, 1);
  assert.match(io.out(), /still not bindable/);
});

test("wait --without-reuseaddr waits out TIME_WAIT; the default (Node's SO_REUSEADDR) does not", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await makeServerTimeWait(srv);
  const port = portOf(srv);
  await closeServer(srv);
  const fast = captureIO();
  assert.equal(await main(["wait", String(port), "--host", "127.0.0.1", "--timeout", "5"], fast), 0);
  const strict = captureIO();
  assert.equal(await main(["wait", String(port), "--host", "127.0.0.1", "--timeout", "0.3", "--without-reuseaddr", "--json"], strict), 1);
  const doc = JSON.parse(strict.out());
  assert.deepEqual(doc.blocking.states, ["TIME_WAIT"]);
  assert.ok(doc.blocking.longestMs > 0 && doc.blocking.longestMs <= 60_000);
});

test("ls counts sockets per port and state, busiest first, and filters by state and port", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await makeServerTimeWait(srv);
  await makeServerTimeWait(srv);
  const port = portOf(srv);
  const io = captureIO();
  assert.equal(await main(["ls", "--port", String(port), "--json"], io), 0);
  const doc = JSON.parse(io.out());
  assert.equal(doc.ports.length, 1);
  assert.equal(doc.ports[0].port, port);
  assert.equal(doc.ports[0].states.LISTEN, 1);
  assert.equal(doc.ports[0].states.TIME_WAIT, 2);
  const tw = captureIO();
  await main(["ls", "--state", "time-wait", "--port", String(port), "--json"], tw);
  assert.equal(JSON.parse(tw.out()).total, 2);
  const text = captureIO();
  await main(["ls", "--port", String(port)], text);
  assert.match(text.out(), new RegExp(`^${port}\\s+3\\s+TIME_WAIT 2, LISTEN 1$`, "m"));
});

test("watch --count N prints N snapshots, as ndjson with --json", async () => {
  const io = captureIO();
  assert.equal(await main(["watch", "--count", "2", "--interval", "0.05", "--json"], io), 0);
  const lines = io.out().trim().split("\n");
  assert.equal(lines.length, 2);
  for (const l of lines) assert.equal(typeof JSON.parse(l).total, "number");
});

test("tune reads every setting, explains it, and changes nothing", async () => {
  const io = captureIO();
  assert.equal(await main(["tune", "--json"], io), 0);
  const doc = JSON.parse(io.out());
  const names = doc.settings.map((s: { name: string }) => s.name);
  for (const n of ["net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_max_tw_buckets", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_timestamps", "net.ipv4.ip_unprivileged_port_start", "net.core.somaxconn"]) {
    assert.ok(names.includes(n), n);
  }
  const fin = doc.settings.find((s: { name: string }) => s.name === "net.ipv4.tcp_fin_timeout");
  assert.match(fin.value, /^\d+$/);
  assert.match(fin.meaning, /FIN_WAIT_2/);
  assert.ok(doc.ephemeral.size > 0);
  const text = captureIO();
  await main(["tune"], text);
  assert.match(text.out(), /Nothing was changed/);
});

test("demo: why on a port it holds, first with the listener, then with only the TIME_WAIT it left", async () => {
  const io = captureIO();
  assert.equal(await main(["demo", "--json"], io), 0);
  const doc = JSON.parse(io.out());
  assert.equal(doc.whileListening.bindable, false);
  assert.ok(doc.whileListening.kinds.includes("listener"));
  assert.equal(doc.afterClose.bindable, true);
  assert.deepEqual(doc.afterClose.kinds, ["time-wait"]);
});

test("--version prints package.json's version on stdout and exits 0, for both commands", async () => {
  const { readFileSync } = await import("node:fs");
  const { main: multiRsh } = await import("../../src/cli/multi-rsh/multi-rsh.js");
  const { version } = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  for (const run of [main, multiRsh]) {
    const io = captureIO();
    assert.equal(await run(["--version"], io), 0, io.err());
    assert.equal(io.out(), `${version}\n`);
    assert.equal(io.err(), "");
  }
});
