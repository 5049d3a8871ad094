/**
 * `why`'s verdicts on the bind pairs that proved it wrong (issue 17) and the causes it now names
 * (issue 15), each made live and checked three ways: our report, `ss -tanpe`, and an actual bind by
 * Node made in the same test.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { main } from "../../src/cli/addrinuse/addrinuse.js";
import { readPortSettings } from "../../src/kernel/sysctl.js";
import { netlinkAvailable } from "../../src/kernel/netlink.js";
import { printableCommand } from "../../src/diagnosis/diagnose.js";
import { captureIO } from "../helpers/io.js";
import { closeServer, listen, makeServerTimeWait, portOf } from "../helpers/sockets.js";
import { BOUND_ONLY, freePortOutside, havePython, holdInPython, nodeBind, REUSEPORT_GROUP, ssPort } from "./held-sockets.js";

const CLI = join(import.meta.dirname, "..", "..", "bin", "addrinuse.js");
const range = readPortSettings().ephemeralRange ?? [32768, 60999];
const isRoot = process.getuid?.() === 0;

async function why(args: string[], env: Record<string, string> = {}) {
  const io = captureIO({ env });
  const code = await main(["why", ...args], io);
  const json = args.includes("--json") ? JSON.parse(io.out()) : undefined;
  return { code, out: io.out(), err: io.err(), json };
}

test("an IPV6_V6ONLY [::] listener leaves 127.0.0.1 and 0.0.0.0 bindable, and why agrees with Node and ss", async (t) => {
  const srv = net.createServer();
  srv.listen({ port: 0, host: "::", ipv6Only: true });
  await once(srv, "listening");
  t.after(() => closeServer(srv));
  const port = portOf(srv);
  assert.match(ssPort(port), /v6only:1/, "ss sees the flag");
  for (const host of ["127.0.0.1", "0.0.0.0"]) {
    assert.equal(await nodeBind(port, host), "ok", `Node binds ${host}`);
    const r = await why([String(port), "--host", host, "--json"]);
    if (!netlinkAvailable()) continue; // procfs cannot tell v6only; the bind alone decides there
    assert.equal(r.code, 0, host);
    assert.equal(r.json.bindable, true);
    assert.ok(!r.json.kinds.includes("specific-over-wildcard"), r.json.kinds.join());
    assert.match(r.json.advice.join(" "), /IPV6_V6ONLY: IPv6 only/);
  }
  // Node's default, dual-stack [::], does collide with it.
  assert.equal(await nodeBind(port), "EADDRINUSE");
  const wild = await why([String(port), "--json"]);
  assert.equal(wild.code, 1);
  assert.ok(wild.json.kinds.includes("listener"));
});

test("a dual-stack [::] listener blocks 127.0.0.1 and says it covers IPv4; a 0.0.0.0 one blocks Node's default [::]", async (t) => {
  const dual = await listen("::");
  t.after(() => closeServer(dual));
  const p = portOf(dual);
  assert.equal(await nodeBind(p, "127.0.0.1"), "EADDRINUSE");
  const r = await why([String(p), "--host", "127.0.0.1", "--json"]);
  assert.equal(r.code, 1);
  assert.ok(r.json.kinds.includes("dual-stack") && r.json.kinds.includes("specific-over-wildcard"), r.json.kinds.join());
  assert.match(r.json.advice.join(" "), /without IPV6_V6ONLY covers IPv4/);

  const v4 = await listen("0.0.0.0");
  t.after(() => closeServer(v4));
  const q = portOf(v4);
  assert.equal(await nodeBind(q), "EADDRINUSE", "Node's listen() with no host");
  assert.equal(await nodeBind(q, "::", { ipv6Only: true }), "ok", "the advice's remedy works");
  const w = await why([String(q), "--json"]);
  assert.equal(w.code, 1);
  assert.ok(w.json.kinds.includes("dual-stack") && w.json.kinds.includes("listener"), w.json.kinds.join());
  assert.match(w.json.advice.join(" "), /ipv6Only: true/);
});

test("a TIME_WAIT left by an outgoing connection (no SO_REUSEADDR) blocks even a Node server, and why says so", async (t) => {
  const srv = await listen("127.0.0.1", (s) => s.on("end", () => s.end()));
  t.after(() => closeServer(srv));
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  const local = c.localPort!;
  c.end(); // the client closes first: its end, on an ephemeral port, goes to TIME_WAIT
  await once(c, "close");
  assert.match(ssPort(local), /TIME-WAIT/);
  assert.equal(await nodeBind(local, "127.0.0.1"), "EADDRINUSE", "the kernel's verdict");
  const r = await why([String(local), "--host", "127.0.0.1", "--json"]);
  assert.equal(r.code, 1);
  assert.equal(r.json.bindable, false);
  assert.deepEqual(r.json.kinds, ["time-wait"]);
  const advice = r.json.advice.join(" ");
  assert.match(advice, /Even a Node server \(SO_REUSEADDR\) gets EADDRINUSE/);
  assert.doesNotMatch(advice, /binds anyway|can bind anyway/);
  if (local >= range[0] && local <= range[1]) assert.match(advice, new RegExp(`ip_local_reserved_ports=${local}`), "the port is in the ephemeral range");
  const text = await why([String(local), "--host", "127.0.0.1"]);
  assert.match(text.out, /NOT bindable: EADDRINUSE/);
  assert.match(text.out, /cause: +1 TIME_WAIT socket left by a socket without SO_REUSEADDR/);
});

test("a TIME_WAIT left by a Node server (SO_REUSEADDR) does not block a Node server, and why says so", async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  await makeServerTimeWait(srv);
  const port = portOf(srv);
  await closeServer(srv);
  assert.equal(await nodeBind(port, "127.0.0.1"), "ok");
  const r = await why([String(port), "--host", "127.0.0.1", "--json"]);
  assert.equal(r.code, 0);
  assert.match(r.json.advice.join(" "), /A Node server binds anyway/);
});

test("a connection accepted by a server that has stopped listening is named accepted, with no ephemeral-range advice", async (t) => {
  const port = await freePortOutside(range);
  const accepted: net.Socket[] = [];
  const srv = net.createServer((s) => accepted.push(s));
  srv.listen({ port, host: "127.0.0.1" });
  await once(srv, "listening");
  const c = net.connect(port, "127.0.0.1");
  await once(srv, "connection");
  t.after(() => {
    c.destroy();
    for (const s of accepted) s.destroy();
  });
  // close() stops listening at once; its callback would wait for the connections, so it is not awaited.
  srv.close();
  await new Promise((resolve) => setImmediate(resolve));
  const text = ssPort(port);
  assert.doesNotMatch(text, /LISTEN/);
  assert.match(text, /ESTAB/);
  const r = await why([String(port), "--host", "127.0.0.1", "--json"]);
  assert.ok(r.json.kinds.includes("accepted"), r.json.kinds.join());
  assert.ok(!r.json.kinds.includes("outgoing"));
  const advice = r.json.advice.join(" ");
  assert.match(advice, /accepted by a server that has since stopped listening/);
  assert.doesNotMatch(advice, /ip_local_reserved_ports|ip_local_port_range/);
  assert.match(advice, new RegExp(`pid ${process.pid}`));
  // The accepted socket inherits the listener's SO_REUSEADDR: a Node server may bind beside it.
  assert.equal(await nodeBind(port, "127.0.0.1"), r.json.bindable ? "ok" : "EADDRINUSE");
});

test("an outgoing connection on a port inside ip_local_port_range gets the ip_local_reserved_ports remedy", async (t) => {
  const port = await freePortOutside(range);
  const accepted: net.Socket[] = [];
  const srv = await listen("127.0.0.1", (s) => accepted.push(s));
  const c = net.connect(portOf(srv), "127.0.0.1");
  await once(c, "connect");
  t.after(() => {
    c.destroy();
    for (const s of accepted) s.destroy();
    return closeServer(srv);
  });
  const local = c.localPort!;
  assert.ok(local >= range[0] && local <= range[1]);
  const r = await why([String(local), "--host", "127.0.0.1", "--json"]);
  assert.ok(r.json.kinds.includes("outgoing") || r.json.kinds.includes("connection"), r.json.kinds.join());
  assert.match(r.json.advice.join(" "), new RegExp(`ip_local_reserved_ports=${local}`));
  assert.equal(await nodeBind(local, "127.0.0.1"), r.json.bindable ? "ok" : "EADDRINUSE", "the verdict is the kernel's");
  // Outside the range the same advice would be wrong, so it is not given (the port is free there).
  const free = await why([String(port), "--json"]);
  assert.doesNotMatch(free.json.advice.join(" "), /ip_local_reserved_ports/);
});

test("a socket bound and never listened is named bound, not unknown, when it blocks; its SO_REUSEADDR decides, as for Node", { skip: !havePython() && "python3 not installed" }, async (t) => {
  for (const reuse of [false, true]) {
    const held = await holdInPython(BOUND_ONLY(reuse));
    t.after(() => held.kill());
    const nodeSays = await nodeBind(held.port, "127.0.0.1");
    assert.equal(nodeSays, reuse ? "ok" : "EADDRINUSE", `Node's bind, holder SO_REUSEADDR=${reuse}`);
    const r = await why([String(held.port), "--host", "127.0.0.1", "--json"]);
    assert.equal(r.json.bindable, nodeSays === "ok");
    if (!netlinkAvailable()) {
      if (!reuse) assert.ok(r.json.kinds.includes("unknown"));
      continue;
    }
    if (reuse) {
      // Bindable: the kernel's bind-hash walk for such sockets is asked only when a bind fails.
      assert.equal(r.code, 0);
      continue;
    }
    assert.ok(r.json.kinds.includes("bound"), `${reuse}: ${r.json.kinds.join()}`);
    assert.match(r.json.advice.join(" "), new RegExp(`pid ${held.pid} \\(\\S*python3`));
    if (!reuse) assert.match(r.json.advice.join(" "), /Even a Node server/);
    const text = await why([String(held.port), "--host", "127.0.0.1"]);
    assert.match(text.out, /BOUND \(not listening, not connected\) \(1\)/);
  }
});

test("a SO_REUSEPORT group is named as one, with who may join it; Node 20's bind is refused", { skip: !havePython() && "python3 not installed" }, async (t) => {
  const held = await holdInPython(REUSEPORT_GROUP);
  t.after(() => held.kill());
  assert.equal(ssPort(held.port).split("\n").filter((l) => l.startsWith("LISTEN")).length, 2, "ss: two listeners");
  assert.equal(await nodeBind(held.port, "127.0.0.1"), "EADDRINUSE");
  const r = await why([String(held.port), "--host", "127.0.0.1", "--json"]);
  assert.equal(r.code, 1);
  assert.deepEqual(r.json.kinds, ["reuseport-group"]);
  const advice = r.json.advice.join(" ");
  assert.match(advice, /2 listening sockets share 127\.0\.0\.1:\d+ .*SO_REUSEPORT group/);
  assert.match(advice, /same effective user \(uid \d+\)/);
  assert.match(advice, new RegExp(`kill ${held.pid}`));
  // What the advice says of a third bind, checked against the kernel: SO_REUSEPORT as the same user
  // joins the group; the same as another user (nobody) is refused.
  const join3 = (uid?: number) =>
    spawnSync("python3", ["-c", `import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)\ntry:\n s.bind(("127.0.0.1",${held.port}));s.listen();print("joined")\nexcept OSError as e:\n print(e.errno)`], {
      encoding: "utf8",
      ...(uid === undefined ? {} : { uid, gid: uid }),
    }).stdout.trim();
  assert.equal(join3(), "joined");
  if (isRoot) assert.equal(join3(65534), "98", "EADDRINUSE for another effective user");
});

test("EADDRNOTAVAIL on an address this machine lacks is told apart from EADDRINUSE (no packet is sent)", async () => {
  // A documentation address (RFC 5737): only bound, never sent to.
  assert.equal(await nodeBind(8080, "192.0.2.1"), "EADDRNOTAVAIL");
  const r = await why(["8080", "--host", "192.0.2.1", "--json"]);
  assert.equal(r.code, 1);
  assert.ok(r.json.kinds.includes("address-not-available"));
  assert.ok(!r.json.kinds.includes("unknown"));
  assert.match(r.json.summary.cause, /not an address of this machine/);
  const text = await why(["8080", "--host", "192.0.2.1"]);
  assert.match(text.out.split("\n")[0]!, /NOT bindable: EADDRNOTAVAIL/);
  assert.match(text.out, /ip_nonlocal_bind/);
});

test("argv with a newline and a long tail: one table row, escaped, cut at a word with a mark", async (t) => {
  const tail = "--listen :: 18080 ".repeat(5).trim();
  const dir = mkdtempSync(join(tmpdir(), "why-argv-"));
  const script = join(dir, "s.js");
  writeFileSync(script, "const s=require('net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port))");
  const child = spawn(process.execPath, [script, "line1\nline2", tail], { stdio: ["ignore", "pipe", "inherit"] });
  t.after(() => {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const [chunk] = (await once(child.stdout!, "data")) as [Buffer];
  const port = Number(chunk.toString().trim());
  const r = await why([String(port), "--host", "127.0.0.1"]);
  const rows = r.out.split("\n").filter((l) => l.includes(`pid ${child.pid}`) && l.startsWith("  127.0.0.1"));
  assert.equal(rows.length, 1, r.out);
  assert.match(rows[0]!, /line1\\nline2/);
  assert.match(rows[0]!, / …$/);
  assert.doesNotMatch(rows[0]!, /:: 1808 …|:: 1808$/, "never cut inside a number");
  assert.equal(printableCommand("a\x1b[2Jb"), "a\\x1b[2Jb");
  assert.equal(printableCommand("x".repeat(70), 60), `${"x".repeat(60)}…`, "a cut inside a word is marked where it is");
});

test("as a user who cannot see the holder: owner hidden, not 'no owner'; a privileged port is EACCES", { skip: !isRoot && "needs root to run a child as nobody" }, async (t) => {
  const srv = await listen("127.0.0.1");
  t.after(() => closeServer(srv));
  const port = portOf(srv);
  const asNobody = (args: string[]) => spawnSync(process.execPath, [CLI, "why", ...args], { uid: 65534, gid: 65534, encoding: "utf8", env: { PATH: process.env.PATH ?? "" } });
  const r = asNobody([String(port), "--host", "127.0.0.1", "--json"]);
  assert.equal(r.status, 1, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.ok(doc.unreadableProcesses > 0);
  assert.match(doc.advice.join(" "), /owner hidden \(run as root to see it\)/);
  const text = asNobody([String(port), "--host", "127.0.0.1"]);
  assert.match(text.stdout, /owner hidden/);
  assert.doesNotMatch(text.stdout, /no owner/);
  const start = Number(spawnSync("cat", ["/proc/sys/net/ipv4/ip_unprivileged_port_start"], { encoding: "utf8" }).stdout.trim());
  if (start > 1) {
    const low = asNobody([String(start - 1), "--host", "127.0.0.1", "--json"]);
    assert.equal(low.status, 1);
    const d = JSON.parse(low.stdout);
    assert.ok(d.kinds.includes("permission"), d.kinds.join());
    assert.match(d.summary.cause, /EACCES/);
  }
});

test("an unknown ADDRINUSE_TABLE is one line and exit 2, in-process and from the installed CLI", async () => {
  const r = await why(["80"], { ADDRINUSE_TABLE: "procsf" });
  assert.equal(r.code, 2);
  assert.equal(r.err, "addrinuse: bad ADDRINUSE_TABLE 'procsf': expected procfs, netlink or auto\n");
  const bin = spawnSync(process.execPath, [CLI, "ls"], { encoding: "utf8", env: { ...process.env, ADDRINUSE_TABLE: "nl" } });
  assert.equal(bin.status, 2);
  assert.equal(bin.stderr.trim().split("\n").length, 1);
  assert.equal(bin.stdout, "");
});

test("--host localhost: why checks the address Node's listen() binds (the first lookup answer), and names the other", { skip: !isRoot && "needs root (a mount namespace with its own /etc/hosts)" }, async (t) => {
  // This machine's /etc/hosts may name only 127.0.0.1; a private mount namespace gives localhost
  // both addresses, ::1 first, as many distributions do.
  const dir = mkdtempSync(join(tmpdir(), "why-hosts-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const hosts = join(dir, "hosts");
  writeFileSync(hosts, "::1 localhost ip6-localhost\n127.0.0.1 localhost\n");
  const script = join(dir, "probe.js");
  writeFileSync(
    script,
    `const { execFileSync } = require("child_process");
const s = require("net").createServer().listen(0, "localhost", () => {
  const a = s.address();
  let out; try { out = execFileSync(process.execPath, [${JSON.stringify(CLI)}, "why", String(a.port), "--host", "localhost", "--json"], { encoding: "utf8" }); } catch (e) { out = e.stdout; }
  console.log(JSON.stringify({ node: a.address, why: JSON.parse(out) }));
  s.close();
});`,
  );
  const r = spawnSync("unshare", ["--mount", "sh", "-c", `mount --bind ${hosts} /etc/hosts && exec ${process.execPath} ${script}`], { encoding: "utf8", timeout: 30_000 });
  if (r.status !== 0 && /mount|unshare/.test(r.stderr)) {
    t.skip(`no private mount namespace here: ${r.stderr.trim().split("\n")[0]}`);
    return;
  }
  assert.equal(r.status, 0, r.stderr);
  const { node, why: doc } = JSON.parse(r.stdout);
  assert.equal(node, "::1", "Node's listen('localhost') took the first answer");
  assert.deepEqual(doc.localhost, { resolvesTo: ["::1", "127.0.0.1"], nodeBinds: "::1" });
  assert.equal(doc.host, "::1");
  assert.ok(doc.kinds.includes("listener"), doc.kinds.join());
  assert.match(doc.advice.join(" "), /A client that tries 127\.0\.0\.1 first does not reach it/);
});
