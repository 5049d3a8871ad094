import { test } from "node:test";
import assert from "node:assert/strict";
import { main } from "../../src/cli/addrinuse/addrinuse.js";
import { captureIO } from "../helpers/io.js";
import { closeServer, listen, listenInChild, makeServerTimeWait, portOf } from "../helpers/sockets.js";
import { netlinkAvailable } from "../../src/kernel/netlink.js";

async function why(args: string[], env: Record<string, string> = {}) {
  const io = captureIO({ env });
  const code = await main(["why", ...args], io);
  return { code, out: io.out(), err: io.err() };
}

test("a listener held by another process is named by pid, and the port is not bindable (exit 1)", async (t) => {
  const child = await listenInChild();
  t.after(() => child.kill());
  const port = child.port;
  const r = await why([String(port), "--host", "127.0.0.1", "--json"]);
  assert.equal(r.code, 1);
  const doc = JSON.parse(r.out);
  assert.equal(doc.bindable, false);
  assert.ok(doc.kinds.includes("listener"));
  const listenGroup = doc.groups.find((g: { state: string }) => g.state === "LISTEN");
  assert.equal(listenGroup.count, 1);
  assert.equal(listenGroup.sockets[0].owners[0].pid, child.pid);
  const text = await why([String(port), "--host", "127.0.0.1"]);
  assert.match(text.out, new RegExp(`pid ${child.pid}`));
  assert.match(text.out, /kill/);
});

test("a closed listener's port is reported bindable (exit 0)", async () => {
  const srv = await listen();
  const port = portOf(srv);
  await closeServer(srv);
  const r = await why([String(port), "--json"]);
  assert.equal(r.code, 0);
  assert.equal(JSON.parse(r.out).bindable, true);
});

test("a TIME_WAIT left by a server that closed first is listed with time left in (0, 60] s", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await makeServerTimeWait(srv);
  const port = portOf(srv);
  await closeServer(srv);
  const r = await why([String(port), "--host", "127.0.0.1", "--json"]);
  const doc = JSON.parse(r.out);
  assert.equal(r.code, 0, "a Node server (SO_REUSEADDR) binds over TIME_WAIT");
  assert.equal(doc.withoutReuseAddr, "EADDRINUSE");
  assert.ok(doc.kinds.includes("time-wait"));
  const tw = doc.groups.find((g: { state: string }) => g.state === "TIME_WAIT");
  assert.equal(tw.count, 1);
  assert.ok(tw.longestTimerMs > 0 && tw.longestTimerMs <= 60_000, `time left ${tw.longestTimerMs} ms`);
  assert.equal(tw.sockets[0].owners.length, 0);
});

test("more TIME_WAIT than the text lists: 20 shown and the rest counted; --json lists every one", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  for (let i = 0; i < 23; i++) await makeServerTimeWait(srv);
  const port = String(portOf(srv));
  const text = await why([port, "--host", "127.0.0.1"]);
  assert.match(text.out, /TIME_WAIT \(23, longest \d+ s left\)/);
  assert.equal(text.out.split("\n").filter((l) => /^  127\.0\.0\.1:\d+ +127\.0\.0\.1:\d+ +no owner/.test(l)).length, 20);
  assert.match(text.out, /\.\.\. and 3 more/);
  assert.match(text.out, /23 connections on this port are in TIME_WAIT/);
  const doc = JSON.parse((await why([port, "--host", "127.0.0.1", "--json"])).out);
  const tw = doc.groups.find((g: { state: string }) => g.state === "TIME_WAIT");
  assert.equal(tw.count, 23);
  assert.equal(tw.sockets.length, 23);
});

test("ADDRINUSE_TABLE=procfs reads /proc/net/tcp and comes to the same diagnosis as netlink", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await makeServerTimeWait(srv);
  const port = String(portOf(srv));
  const procfs = JSON.parse((await why([port, "--json"], { ADDRINUSE_TABLE: "procfs" })).out);
  const auto = JSON.parse((await why([port, "--json"])).out);
  assert.equal(procfs.source, "procfs");
  if (netlinkAvailable()) assert.equal(auto.source, "netlink");
  const summary = (d: { kinds: string[]; bindable: boolean; groups: { state: string; count: number; sockets: { owners: { pid: number }[] }[] }[] }) => ({
    kinds: d.kinds,
    bindable: d.bindable,
    groups: d.groups.map((g) => [g.state, g.count, g.sockets.map((s) => s.owners.map((o) => o.pid).join())]),
  });
  assert.deepEqual(summary(auto), summary(procfs));
});

test("IPv6: a listener on ::1 blocks ::1 and the wildcard, and is found by its v6 address", async (t) => {
  const srv = await listen("::1");
  t.after(() => closeServer(srv));
  const port = portOf(srv);
  const r = await why([String(port), "--host", "::1", "--json"]);
  assert.equal(r.code, 1);
  assert.equal(JSON.parse(r.out).groups[0].sockets[0].localAddress, "::1");
  const wild = await why([String(port), "--json"]);
  assert.equal(wild.code, 1);
  assert.ok(JSON.parse(wild.out).kinds.includes("wildcard-over-specific"));
});

test("a specific address over a wildcard listener is refused and named as the hijack case", async (t) => {
  const srv = await listen("0.0.0.0");
  t.after(() => closeServer(srv));
  const port = portOf(srv);
  const r = await why([String(port), "--host", "127.0.0.5", "--json"]);
  assert.equal(r.code, 1);
  const doc = JSON.parse(r.out);
  assert.ok(doc.kinds.includes("specific-over-wildcard"), doc.kinds.join());
  assert.match(doc.advice.join(" "), /hijack/);
});

test("a specific-address listener leaves other specific addresses free", async (t) => {
  const srv = await listen("127.0.0.6");
  t.after(() => closeServer(srv));
  const port = portOf(srv);
  assert.equal((await why([String(port), "--host", "127.0.0.7"])).code, 0);
  assert.equal((await why([String(port), "--host", "0.0.0.0"])).code, 1);
});

test("bad input: one line naming the problem, exit 2", async () => {
  for (const args of [["why", "0"], ["why", "70000"], ["why", "abc"], ["why", "80", "--host", "example.com"], ["nosuch"], ["why", "80", "--bogus"], ["ls", "--state", "dancing"], ["wait", "80", "--timeout", "-1"]]) {
    const io = captureIO();
    const code = await main(args, io);
    assert.equal(code, 2, args.join(" "));
    const lines = io.err().trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: ${io.err()}`);
    assert.match(lines[0]!, /^addrinuse: /);
    assert.doesNotMatch(io.err(), /at .*\.ts:\d+/, "no stack trace");
  }
});
