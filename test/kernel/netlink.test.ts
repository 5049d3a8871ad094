import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { netlinkAvailable, netlinkUnavailableReason, setRequestFormForTests } from "../../src/kernel/netlink.js";
import { execFileSync } from "node:child_process";
import { readTcpSockets, readTcpSocketsAsync, readTcpTableAsync, tcpRoundTripMs } from "../../src/kernel/read.js";
import type { TcpSocket } from "../../src/kernel/parse.js";
import { closeServer, listen, makeServerTimeWait, portOf } from "../helpers/sockets.js";

const skip = process.platform !== "linux" ? "Linux only" : !netlinkAvailable() ? `netlink unavailable: ${netlinkUnavailableReason()}` : false;

const key = (r: TcpSocket) => `${r.family} ${r.localAddress}:${r.localPort} ${r.remoteAddress}:${r.remotePort} ${r.state}`;

/**
 * procfs prints timers in 1/100 s and the two reads are moments apart, so timers are compared
 * within a second; every other field must be equal.
 */
function assertSameRows(viaNetlink: TcpSocket[], viaProcfs: TcpSocket[]): void {
  const byKey = new Map(viaProcfs.map((r) => [key(r), r]));
  assert.deepEqual(viaNetlink.map(key).sort(), viaProcfs.map(key).sort());
  for (const n of viaNetlink) {
    const p = byKey.get(key(n))!;
    assert.deepEqual({ ...n, timerMs: 0 }, { ...p, timerMs: 0 }, key(n));
    assert.ok(Math.abs(n.timerMs - p.timerMs) <= 1000, `${key(n)}: timer ${n.timerMs} ms over netlink, ${p.timerMs} ms in procfs`);
  }
}

/** A listener on `host`, one connection the server closed first (TIME_WAIT) and one left open. */
async function liveSockets(t: { after(fn: () => unknown): void }, host: string): Promise<number> {
  const srv = await listen(host);
  const open: net.Socket[] = [];
  // One hook, in this order: a server closes only once its connections have.
  t.after(() => {
    for (const s of open) s.destroy();
    return closeServer(srv);
  });
  await makeServerTimeWait(srv, host);
  const accepted = once(srv, "connection");
  const c = net.connect(portOf(srv), host);
  open.push(c);
  await once(c, "connect");
  const [s] = (await accepted) as [net.Socket];
  open.push(s);
  return portOf(srv);
}

for (const form of ["compat", "by-family"] as const) {
  test(`netlink (${form} request) and procfs agree on a listener, an ESTABLISHED pair and a TIME_WAIT`, { skip }, async (t) => {
    const before = setRequestFormForTests(form);
    t.after(() => setRequestFormForTests(before));
    const port4 = await liveSockets(t, "127.0.0.1");
    const port6 = await liveSockets(t, "::1");
    for (const port of [port4, port6]) {
      const nl = await readTcpSocketsAsync({ localPort: port, source: "netlink" });
      assert.equal(nl.source, "netlink");
      assert.deepEqual(nl.rows.map((r) => r.state).sort(), ["ESTABLISHED", "LISTEN", "TIME_WAIT"]);
      assertSameRows(nl.rows, readTcpSockets({ localPort: port }));
    }
    // The client's end of the open connection (local port ephemeral), read without a port filter.
    const clientEnd = (rows: TcpSocket[]) => rows.filter((r) => r.remotePort === port4 && r.state === "ESTABLISHED");
    const all = await readTcpSocketsAsync({ source: "netlink" });
    assert.equal(clientEnd(all.rows).length, 1);
    assertSameRows(clientEnd(all.rows), clientEnd(readTcpSockets({ family: 4 })));
  });
}

test("the port filter leaves other ports' sockets in the kernel", { skip }, async (t) => {
  const a = await liveSockets(t, "127.0.0.1");
  const b = await liveSockets(t, "127.0.0.1");
  const rows = (await readTcpSocketsAsync({ localPort: a, source: "netlink" })).rows;
  assert.ok(rows.length === 3 && rows.every((r) => r.localPort === a), `${rows.length} rows on ${a}`);
  assert.ok(!rows.some((r) => r.localPort === b));
});

test("the table over netlink names our own listener's owner, as procfs does", { skip }, async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  const snap = await readTcpTableAsync({ localPort: portOf(srv) });
  assert.equal(snap.source, "netlink");
  const l = snap.sockets.find((s) => s.state === "LISTEN");
  assert.equal(l?.owners[0]?.pid, process.pid);
});

test("a summarising read lists a sample of ownerless sockets and counts the rest", { skip }, async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  for (let i = 0; i < 5; i++) await makeServerTimeWait(srv);
  const snap = await readTcpTableAsync({ localPort: portOf(srv), ownerlessSample: 2 });
  assert.equal(snap.sockets.filter((s) => s.state === "TIME_WAIT").length, 2);
  assert.deepEqual(
    snap.omitted.map((o) => [o.state, o.localAddress, o.count]),
    [["TIME_WAIT", "127.0.0.1", 3]],
  );
  assert.ok(snap.omitted[0]!.longestTimerMs! > 0 && snap.omitted[0]!.longestTimerMs! <= 60_000);
});

test("another namespace's table (procRoot /proc/PID) is read from procfs, which alone can", async () => {
  const r = await readTcpSocketsAsync({ procRoot: `/proc/${process.pid}` });
  assert.equal(r.source, "procfs");
  assert.deepEqual(r.omitted, []);
});

for (const form of ["compat", "by-family"] as const) {
  test(`a port-range filter (${form} request): local OR remote port in range, the same rows as procfs`, { skip }, async (t) => {
    const before = setRequestFormForTests(form);
    t.after(() => setRequestFormForTests(before));
    const a = await liveSockets(t, "127.0.0.1");
    const b = await liveSockets(t, "127.0.0.1");
    // The client's end of the open connection to `a`: remote port a, an ephemeral local port.
    const remoteOnly = await readTcpSocketsAsync({ ports: { remote: [a, a] }, source: "netlink" });
    assert.deepEqual(remoteOnly.rows.map((r) => r.state), ["ESTABLISHED"]);
    assertSameRows(remoteOnly.rows, readTcpSockets({ ports: { remote: [a, a] } }));
    // Listener, server's TIME_WAIT, both ends of the open connection; nothing of b's.
    const both = await readTcpSocketsAsync({ ports: { local: [a, a], remote: [a, a] }, source: "netlink" });
    assert.deepEqual(both.rows.map((r) => r.state).sort(), ["ESTABLISHED", "ESTABLISHED", "LISTEN", "TIME_WAIT"]);
    assert.ok(!both.rows.some((r) => r.localPort === b || r.remotePort === b));
    assertSameRows(both.rows, readTcpSockets({ ports: { local: [a, a], remote: [a, a] } }));
    assert.deepEqual((await readTcpSocketsAsync({ ports: {}, source: "netlink" })).rows, []);
  });
}

test("the library entry reads the table the same way: a listener, its TIME_WAIT and its owner, by either reader", { skip: process.platform !== "linux" ? "Linux only" : false }, async (t) => {
  const lib = await import("../../src/index.js");
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await makeServerTimeWait(srv);
  const port = portOf(srv);
  const sources = lib.netlinkAvailable() ? (["netlink", "procfs"] as const) : (["procfs"] as const);
  for (const source of sources) {
    const snap = await lib.readTcpTableAsync({ localPort: port, source });
    assert.equal(snap.source, source);
    assert.deepEqual(snap.sockets.map((s) => s.state).sort(), ["LISTEN", "TIME_WAIT"], source);
    assert.equal(snap.sockets.find((s) => s.state === "LISTEN")?.owners[0]?.pid, process.pid, source);
    const rows = await lib.readTcpSocketsAsync({ ports: { local: [port, port] }, family: 4, source });
    assert.equal(rows.rows.length, 2, source);
  }
});

test("a connection's least round trip is the kernel's own, as `ss -ti` prints it (minrtt), in both request forms", { skip }, async (t) => {
  const srv = await listen("127.0.0.1");
  const accepted = once(srv, "connection");
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  const [s] = (await accepted) as [net.Socket];
  t.after(() => {
    c.destroy();
    s.destroy();
    return closeServer(srv);
  });
  // A few exchanges, so the kernel has timed some ACKs beyond the handshake's.
  for (let i = 0; i < 3; i++) {
    s.once("data", (d) => s.write(d));
    c.write("ping");
    await once(c, "data");
  }
  const ss = execFileSync("ss", ["-tinH", "state", "established", "sport", "=", `:${c.localPort}`], { encoding: "utf8" });
  const m = /minrtt:([\d.]+)/.exec(ss);
  assert.ok(m, `no minrtt in: ${ss}`);
  const before = setRequestFormForTests("compat");
  try {
    for (const form of ["compat", "by-family"] as const) {
      setRequestFormForTests(form);
      const ms = await tcpRoundTripMs(c.localPort!, portOf(srv));
      assert.ok(ms !== null, form);
      // ss prints milliseconds with three decimals, and the least can only fall between the reads.
      assert.ok(ms <= Number(m[1]) + 0.0005, `${form}: ${ms} ms here, ss says ${m[1]}`);
      assert.ok(ms > 0, form);
    }
  } finally {
    setRequestFormForTests(before);
  }
  // The other direction is another socket; a port with no connection has no round trip.
  assert.equal(await tcpRoundTripMs(c.localPort!, c.localPort!), null);
});
