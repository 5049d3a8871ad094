import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { connectFrom, pickLocalPorts, type PortRow } from "../../src/net/connect-from.js";
import { allocatorRows } from "../../src/net/range-snapshot.js";
import { netlinkAvailable } from "../../src/kernel/netlink.js";
import { readTcpSockets } from "../../src/kernel/read.js";
import { AddrinuseError, ArgumentError, PortsExhaustedError } from "../../src/errors.js";
import { closeServer, listen, portOf } from "../helpers/sockets.js";
import { heldListener } from "./held-listener.js";

const isRoot = process.getuid?.() === 0;
const onLinux = process.platform === "linux";

function row(localAddress: string, localPort: number, remoteAddress: string, remotePort: number, state: string): PortRow {
  return { localAddress, localPort, remoteAddress, remotePort, state: state as PortRow["state"] };
}

/**
 * A small block of high ports below the ephemeral range (32768..), so nothing else on the machine is
 * likely to take them by accident; random so that parallel runs do not share one.
 */
function portBlock(size: number): [number, number] {
  const from = 20000 + Math.floor(Math.random() * 10000);
  return [from, from + size - 1];
}

/** A connection from `localPort` that the client closes first, so the client keeps the TIME_WAIT. */
async function clientClosesFirst(srv: net.Server, localPort: number): Promise<void> {
  const accepted = new Promise<net.Socket>((resolve) => srv.once("connection", resolve));
  const c = net.connect({ host: "127.0.0.1", port: portOf(srv), localPort });
  await once(c, "connect");
  const s = await accepted;
  s.on("end", () => s.end());
  const done = Promise.all([once(c, "close"), once(s, "close")]);
  c.end();
  await done;
}

test("pickLocalPorts drops 4-tuples to the destination in the table, TIME_WAIT included", () => {
  const r = pickLocalPorts({
    range: [1000, 1005],
    host: "10.0.0.1",
    port: 514,
    rows: [
      row("10.0.0.9", 1005, "10.0.0.1", 514, "TIME_WAIT"),
      row("10.0.0.9", 1004, "10.0.0.1", 514, "ESTABLISHED"),
      row("0.0.0.0", 1003, "0.0.0.0", 0, "LISTEN"),
      row("10.0.0.9", 1002, "10.0.0.2", 514, "TIME_WAIT"), // other destination: usable
    ],
  });
  assert.deepEqual(r.candidates, [1001, 1000, 1002]);
  assert.deepEqual(r.byState, { TIME_WAIT: 1, ESTABLISHED: 1, LISTEN: 1, shared: 1, free: 2 });
  assert.equal(r.total, 6);
});

test("pickLocalPorts matches v4-mapped rows and only overlapping listeners", () => {
  const r = pickLocalPorts({
    range: [1000, 1002],
    host: "127.0.0.1",
    port: 80,
    localAddress: "127.0.0.1",
    rows: [
      row("::ffff:127.0.0.1", 1002, "::ffff:127.0.0.1", 80, "TIME_WAIT"),
      row("127.0.0.2", 1001, "0.0.0.0", 0, "LISTEN"), // another specific address: no conflict
      row("127.0.0.3", 1000, "127.0.0.1", 80, "ESTABLISHED"), // another local address: another 4-tuple
    ],
  });
  assert.deepEqual(r.candidates, [1001, 1000]);
  assert.deepEqual(r.byState, { TIME_WAIT: 1, free: 1, shared: 1 });
});

test("pickLocalPorts orders the peer's TIME_WAIT last and walks down from a rotating start", () => {
  const r = pickLocalPorts({
    range: [10, 14],
    host: "127.0.0.2",
    port: 514,
    start: 11,
    exclude: new Set([13]),
    rows: [row("127.0.0.2", 514, "127.0.0.1", 12, "TIME_WAIT")],
  });
  assert.deepEqual(r.candidates, [11, 10, 14, 12]);
  assert.deepEqual(r.byState, { free: 3, excluded: 1, "TIME_WAIT at peer": 1 });
});

test("pickLocalPorts tries demoted ports (a bind there was just refused) last", () => {
  const r = pickLocalPorts({ range: [1, 4], host: "127.0.0.1", port: 80, rows: [], demote: new Set([4, 2]) });
  assert.deepEqual(r.candidates, [3, 1, 4, 2]);
  assert.deepEqual(r.byState, { free: 4 });
});

test("bad arguments throw an ArgumentError at the call", () => {
  const base = { host: "127.0.0.1", port: 80 };
  const bad: unknown[] = [
    { ...base, localPorts: [0, 10] },
    { ...base, localPorts: [10, 65536] },
    { ...base, localPorts: [20, 10] },
    { ...base, localPorts: [1.5, 10] },
    { ...base, localPorts: "all" },
    { ...base, port: 0, localPorts: "reserved" },
    { ...base, host: "localhost", localPorts: "reserved" },
    { ...base, localPorts: "reserved", connectTimeoutMs: -1 },
    { ...base, localPorts: "reserved", localAddress: "::1" },
  ];
  for (const o of bad) {
    assert.throws(() => connectFrom(o as Parameters<typeof connectFrom>[0]), ArgumentError, JSON.stringify(o));
  }
});

test("never returns a local port whose 4-tuple to the destination is in TIME_WAIT; a tiny range runs out with counts", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const srv = await listen("127.0.0.1", (s) => s.on("end", () => s.end()));
  const open: net.Socket[] = [];
  t.after(async () => {
    for (const s of open) s.destroy();
    await closeServer(srv);
  });
  const port = portOf(srv);
  const range = portBlock(8);
  const timeWaitPorts = [range[0], range[0] + 2, range[0] + 5, range[1]];
  for (const p of timeWaitPorts) await clientClosesFirst(srv, p);
  const tw = readTcpSockets().filter((r) => r.state === "TIME_WAIT" && r.remotePort === port);
  assert.deepEqual(new Set(tw.map((r) => r.localPort)), new Set(timeWaitPorts), "the kernel shows the TIME_WAITs we made");

  const got: number[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await connectFrom({ host: "127.0.0.1", port, localPorts: range });
    open.push(r.socket);
    assert.equal(r.socket.localPort, r.localPort);
    got.push(r.localPort);
  }
  for (const p of got) assert.ok(!timeWaitPorts.includes(p), `port ${p} has a TIME_WAIT to the destination`);
  assert.equal(new Set(got).size, 4);

  await assert.rejects(connectFrom({ host: "127.0.0.1", port, localPorts: range }), (e: unknown) => {
    assert.ok(e instanceof PortsExhaustedError);
    assert.equal(e.code, "AIU_PORTS_EXHAUSTED");
    assert.deepEqual(e.byState, { TIME_WAIT: 4, ESTABLISHED: 4 });
    assert.match(e.message, /^8 candidate ports .*: none usable: .*4 TIME_WAIT/);
    assert.match(e.message, /4 ESTABLISHED/);
    return true;
  });
});

test("when every port of the range is in the table, one used only towards another destination is still chosen, never the TIME_WAIT", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const other = await listen("127.0.0.1");
  const srv = await listen("127.0.0.1", (s) => s.on("end", () => s.end()));
  const open: net.Socket[] = [];
  t.after(async () => {
    for (const s of open) s.destroy();
    await closeServer(srv);
    await closeServer(other);
  });
  const [a, b] = portBlock(2);
  // a: a live connection to another destination (a shared port); b: a TIME_WAIT to srv itself.
  const held = net.connect({ host: "127.0.0.1", port: portOf(other), localPort: a });
  open.push(held);
  await once(held, "connect");
  await clientClosesFirst(srv, b);
  const r = await connectFrom({ host: "127.0.0.1", port: portOf(srv), localPorts: [a, b], tableMaxAgeMs: 0 });
  open.push(r.socket);
  assert.equal(r.localPort, a);
});

test("netlink and procfs give the allocator the same rows, only its range's, and the same choice", async (t) => {
  if (!onLinux) return t.skip("reads the kernel table");
  if (!netlinkAvailable()) return t.skip("netlink unavailable");
  const srv = await listen("127.0.0.1", (s) => s.on("end", () => s.end()));
  const open: net.Socket[] = [];
  const listener = net.createServer();
  t.after(async () => {
    for (const s of open) s.destroy();
    await closeServer(srv);
    if (listener.listening) await closeServer(listener);
  });
  const range = portBlock(6);
  const [tw, peerTw, live, listening] = [range[0], range[0] + 1, range[0] + 2, range[0] + 3];
  // tw: a TIME_WAIT of ours to srv; peerTw: srv's TIME_WAIT (it closed first) towards that port;
  // live: an open connection; listening: a listener inside the range.
  await clientClosesFirst(srv, tw);
  {
    const accepted = new Promise<net.Socket>((resolve) => srv.once("connection", resolve));
    const c = net.connect({ host: "127.0.0.1", port: portOf(srv), localPort: peerTw });
    c.on("end", () => c.end());
    await once(c, "connect");
    const s = await accepted;
    const done = Promise.all([once(c, "close"), once(s, "close")]);
    s.end();
    await done;
  }
  const held = net.connect({ host: "127.0.0.1", port: portOf(srv), localPort: live });
  open.push(held);
  await once(held, "connect");
  listener.listen(listening, "127.0.0.1");
  await once(listener, "listening");

  const viaNetlink = await allocatorRows(range, 4, "netlink");
  const viaProcfs = await allocatorRows(range, 4, "procfs");
  assert.equal(viaNetlink.source, "netlink");
  assert.equal(viaProcfs.source, "procfs");
  const key = (r: PortRow) => `${r.localAddress}:${r.localPort} ${r.remoteAddress}:${r.remotePort} ${r.state}`;
  assert.deepEqual(viaNetlink.rows.map(key).sort(), viaProcfs.rows.map(key).sort());
  for (const r of viaNetlink.rows) {
    assert.ok((r.localPort >= range[0] && r.localPort <= range[1]) || (r.remotePort >= range[0] && r.remotePort <= range[1]), key(r));
  }
  const pick = (rows: PortRow[]) => pickLocalPorts({ range, rows, host: "127.0.0.1", port: portOf(srv) });
  const a = pick(viaNetlink.rows);
  assert.deepEqual(a, pick(viaProcfs.rows));
  assert.equal(a.byState.TIME_WAIT, 1);
  assert.equal(a.byState.ESTABLISHED, 1);
  assert.equal(a.byState.LISTEN, 1);
  assert.equal(a.byState["TIME_WAIT at peer"], 1);
  assert.ok(!a.candidates.includes(tw) && !a.candidates.includes(live) && !a.candidates.includes(listening));
  assert.equal(a.candidates.at(-1), peerTw, "the peer's TIME_WAIT comes last");
});

test("concurrent calls to one destination get distinct ports", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const srv = await listen("127.0.0.1");
  const open: net.Socket[] = [];
  t.after(async () => {
    for (const s of open) s.destroy();
    await closeServer(srv);
  });
  const range = portBlock(12);
  const results = await Promise.all(
    Array.from({ length: 12 }, () => connectFrom({ host: "127.0.0.1", port: portOf(srv), localPorts: range })),
  );
  for (const r of results) open.push(r.socket);
  const ports = results.map((r) => r.localPort);
  assert.equal(new Set(ports).size, 12, `ports: ${ports.join(" ")}`);
  for (const p of ports) assert.ok(p >= range[0] && p <= range[1]);
});

test("reserved ports: connects from 512..1023 as root", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  if (!isRoot) return t.skip("binding ports below 1024 needs root");
  const srv = await listen("127.0.0.1");
  const r = await connectFrom({ host: "127.0.0.1", port: portOf(srv), localPorts: "reserved" });
  t.after(async () => {
    r.socket.destroy();
    await closeServer(srv);
  });
  assert.ok(r.localPort >= 512 && r.localPort <= 1023, String(r.localPort));
  const mine = readTcpSockets({ localPort: r.localPort }).filter((x) => x.remotePort === portOf(srv));
  assert.equal(mine[0]?.state, "ESTABLISHED");
});

test("reserved ports without root is AIU_NOT_ROOT", async (t) => {
  if (isRoot) return t.skip("runs only without root");
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await assert.rejects(connectFrom({ host: "127.0.0.1", port: portOf(srv), localPorts: "reserved" }), {
    code: "AIU_NOT_ROOT",
  });
});

test("a refused connection is AIU_CONNECT_REFUSED, not a retry", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const srv = await listen("127.0.0.1");
  const port = portOf(srv);
  await closeServer(srv);
  await assert.rejects(connectFrom({ host: "127.0.0.1", port, localPorts: portBlock(4) }), (e: unknown) => {
    assert.ok(e instanceof AddrinuseError);
    assert.equal(e.code, "AIU_CONNECT_REFUSED");
    return true;
  });
});

test("an aborted signal rejects with its reason", async () => {
  const ac = new AbortController();
  const reason = new Error("stop");
  ac.abort(reason);
  await assert.rejects(
    connectFrom({ host: "127.0.0.1", port: 9, localPorts: portBlock(4), signal: ac.signal }),
    (e: unknown) => e === reason,
  );
});

/**
 * Fills a held listener's accept queue so that the next SYN is dropped. Backlog 1 (Node turns 0 into
 * its default of 511): Linux calls the queue full when it holds more than the backlog, so two fit.
 */
async function hangingDestination(t: { after(fn: () => unknown): void }): Promise<number> {
  const held = await heldListener(1);
  const fillers: net.Socket[] = [];
  t.after(() => {
    for (const s of fillers) s.destroy();
    held.dispose();
  });
  for (let i = 0; i < 2; i++) {
    const s = net.connect(held.port, "127.0.0.1");
    s.on("error", () => {});
    fillers.push(s);
    await once(s, "connect");
  }
  return held.port;
}

test("a connect that hangs is AIU_CONNECT_TIMEOUT at connectTimeoutMs", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const port = await hangingDestination(t);
  await assert.rejects(
    connectFrom({ host: "127.0.0.1", port, localPorts: portBlock(4), connectTimeoutMs: 200 }),
    { code: "AIU_CONNECT_TIMEOUT" },
  );
});

test("abort during a hanging connect rejects with the signal's reason", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const port = await hangingDestination(t);
  const ac = new AbortController();
  const reason = new Error("cancelled");
  const p = connectFrom({ host: "127.0.0.1", port, localPorts: portBlock(4), signal: ac.signal });
  setImmediate(() => ac.abort(reason));
  await assert.rejects(p, (e: unknown) => e === reason);
});

test("IPv6: connects from the range to ::1", async (t) => {
  if (!onLinux) return t.skip("reads /proc/net/tcp");
  const srv = await listen("::1").catch(() => undefined);
  if (!srv) return t.skip("no ::1 on this machine");
  const range = portBlock(4);
  const r = await connectFrom({ host: "::1", port: portOf(srv), localPorts: range });
  t.after(async () => {
    r.socket.destroy();
    await closeServer(srv);
  });
  assert.ok(r.localPort >= range[0] && r.localPort <= range[1]);
  assert.equal(r.socket.remoteAddress, "::1");
});
