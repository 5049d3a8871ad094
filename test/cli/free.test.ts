/**
 * `addrinuse free PORT`, live, through the installed CLI: nothing is done without --yes; with it a
 * TIME_WAIT that blocks a Node bind is destroyed (SOCK_DESTROY, checked with ss and a Node bind),
 * and a holding process gets TERM (or KILL after the grace), its clients listed first.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { closeServer, listen, portOf } from "../helpers/sockets.js";
import { nodeBind, ssPort } from "./held-sockets.js";
import { freePlan } from "../../src/diagnosis/free-plan.js";
import { kernelConfigOption } from "../../src/kernel/sysctl.js";
import { netlinkAvailable } from "../../src/kernel/netlink.js";

const CLI = join(import.meta.dirname, "..", "..", "bin", "addrinuse.js");
const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
const canDestroy = process.getuid?.() === 0 && netlinkAvailable() && kernelConfigOption("CONFIG_INET_DIAG_DESTROY") !== "n";

async function clientTimeWait(t: { after(fn: () => unknown): void }): Promise<{ port: number; server: number }> {
  const srv = await listen("127.0.0.1", (s) => s.on("end", () => s.end()));
  t.after(() => closeServer(srv));
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  const local = c.localPort!;
  c.end();
  await once(c, "close");
  return { port: local, server: portOf(srv) };
}

test("free: a dry run changes nothing; --yes destroys the TIME_WAIT that blocked a Node bind", { skip: !canDestroy && "needs root, netlink and CONFIG_INET_DIAG_DESTROY" }, async (t) => {
  const { port, server } = await clientTimeWait(t);
  // This one 4-tuple, in ss's words (other tests may leave TIME_WAIT on the same local port).
  const ours = () => ssPort(port, ["state", "time-wait", "dport", "=", `:${server}`]);
  assert.equal(await nodeBind(port, "127.0.0.1"), "EADDRINUSE");
  const dry = cli(["free", String(port), "--host", "127.0.0.1", "--json"]);
  assert.equal(dry.status, 1, dry.stderr);
  const plan = JSON.parse(dry.stdout);
  assert.equal(plan.dryRun, true);
  assert.ok(plan.plan.destroy.some((r: { remotePort: number; state: string }) => r.remotePort === server && r.state === "TIME_WAIT"));
  assert.equal(plan.destroySupported === false, false);
  assert.match(ours(), new RegExp(`127\\.0\\.0\\.1:${server}`), "still there after a dry run");
  assert.equal(await nodeBind(port, "127.0.0.1"), "EADDRINUSE");
  const text = cli(["free", String(port), "--host", "127.0.0.1"]);
  assert.match(text.stdout, /nothing done \(add --yes to do it\)/);
  assert.match(text.stdout, /RFC 9293/);

  const done = cli(["free", String(port), "--host", "127.0.0.1", "--yes", "--json"]);
  assert.equal(done.status, 0, done.stdout + done.stderr);
  const r = JSON.parse(done.stdout);
  assert.ok(r.destroyed.ok >= 1, JSON.stringify(r.destroyed));
  assert.equal(r.destroyed.failed, 0);
  assert.equal(r.bindableAfter, true);
  assert.doesNotMatch(ours(), new RegExp(`127\\.0\\.0\\.1:${server}`), "ss: gone");
  assert.equal(await nodeBind(port, "127.0.0.1"), "ok", "Node: bindable");
});

const HOLDER = (ignoreTerm: boolean) => `
const net = require("net");
${ignoreTerm ? 'process.on("SIGTERM", () => {});' : ""}
const s = net.createServer(() => {}).listen(0, "127.0.0.1", () => console.log(s.address().port));`;

for (const ignoreTerm of [false, true]) {
  test(`free --yes: the holder gets TERM${ignoreTerm ? ", ignores it, and gets KILL after the grace" : " and exits"}; its clients are listed first`, { skip: process.getuid?.() !== 0 && "needs root" }, async (t) => {
    const child = spawn(process.execPath, ["-e", HOLDER(ignoreTerm)], { stdio: ["ignore", "pipe", "inherit"] });
    t.after(() => child.kill("SIGKILL"));
    const [chunk] = (await once(child.stdout!, "data")) as [Buffer];
    const port = Number(chunk.toString().trim());
    const client = net.connect(port, "127.0.0.1");
    await once(client, "connect");
    client.on("error", () => {});
    t.after(() => client.destroy());

    const dry = JSON.parse(cli(["free", String(port), "--host", "127.0.0.1", "--json"]).stdout);
    assert.equal(dry.plan.signal.length, 1);
    assert.equal(dry.plan.signal[0].pid, child.pid);
    assert.deepEqual(dry.plan.signal[0].clients, [`127.0.0.1:${client.localPort} (ESTABLISHED)`]);
    assert.equal(child.exitCode, null, "a dry run signals nothing");
    assert.equal(await nodeBind(port, "127.0.0.1"), "EADDRINUSE");

    const exited = once(child, "exit");
    const r = cli(["free", String(port), "--host", "127.0.0.1", "--yes", "--grace", "0.5", "--json"]);
    const doc = JSON.parse(r.stdout);
    const [, signal] = await exited;
    assert.equal(signal, ignoreTerm ? "SIGKILL" : "SIGTERM");
    assert.equal(doc.signalled[0].killed, ignoreTerm);
    assert.equal(doc.signalled[0].exited, true);
    assert.equal(r.status, doc.bindableAfter ? 0 : 1);
    assert.equal(await nodeBind(port, "127.0.0.1"), doc.bindableAfter ? "ok" : "EADDRINUSE");
  });
}

test("free's plan never signals PID 1 or itself, and leaves request sockets to their listener", () => {
  const row = (state: string, inode: number, pid: number | null) => ({
    family: 4 as const, localAddress: "127.0.0.1", localPort: 80, remoteAddress: "127.0.0.1", remotePort: 5000, state, inode,
    owners: pid === null ? [] : [{ pid, command: "x", user: "root" }],
  });
  const p = freePlan([row("LISTEN", 1, 1), row("ESTABLISHED", 2, 99), row("SYN_RECV", 0, null), row("TIME_WAIT", 0, null), row("ESTABLISHED", 3, null)], 99);
  assert.deepEqual(p.refused.map((r) => r.pid).sort(), [1, 99]);
  assert.match(p.refused.find((r) => r.pid === 1)!.reason, /systemctl stop/);
  assert.equal(p.signal.length, 0);
  assert.equal(p.destroy.length, 1);
  assert.equal(p.hidden, 1);
});

test("free: bad input is one line and exit 2", () => {
  for (const args of [["free"], ["free", "0"], ["free", "80", "--grace", "x"], ["free", "80", "--host", "nohost"]]) {
    const r = cli(args);
    assert.equal(r.status, 2, args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});
