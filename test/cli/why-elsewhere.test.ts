/**
 * Causes that are not in the port's own table, made live: a listener in another network namespace
 * (and the container named from the runtime's state), a DNAT rule with no socket at all, and a
 * socket held by PID 1 (systemd socket activation, in a pid namespace where the holder is PID 1).
 * Each is checked against the peer tools (ss, nft) and an actual Node bind.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../src/cli/addrinuse/addrinuse.js";
import { readPortSettings } from "../../src/kernel/sysctl.js";
import { captureIO } from "../helpers/io.js";
import { freePortOutside, nodeBind } from "./held-sockets.js";
import { canUseNetns, cliInNetns, makeNetns, nodeInNetns, sh } from "./netns.js";

const CLI = join(import.meta.dirname, "..", "..", "bin", "addrinuse.js");
const FIXTURE = join(import.meta.dirname, "..", "kernel", "fixtures", "docker-config.v2.json");
const ID = "3f9b2c1d7e8a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";
const range = readPortSettings().ephemeralRange ?? [32768, 60999];
const NET = process.env.ADDRINUSE_TESTBED_NET ?? "10.215";

async function why(args: string[], env: Record<string, string> = {}) {
  const io = captureIO({ env });
  const code = await main(["why", ...args], io);
  return { code, doc: JSON.parse(io.out()), err: io.err() };
}

const LISTEN = `
const port = Number(process.argv[1]);
const s = require("net").createServer().listen(port, process.argv[2] ?? "0.0.0.0", () => console.log(JSON.stringify({ port, pid: process.pid })));`;

test("a listener in another network namespace: named with the namespace and its pid; the bind here is free, as Node finds", { skip: canUseNetns() }, async (t) => {
  const port = await freePortOutside(range);
  const ns = makeNetns(t);
  const held = await nodeInNetns(t, ns, LISTEN, [String(port)]);
  const ss = sh(["ip", "netns", "exec", ns, "ss", "-Htlnpe", `sport = :${port}`]);
  assert.match(ss, new RegExp(`pid=${held.first.pid}\\b`), "ss inside the namespace sees it");
  assert.equal(await nodeBind(port), "ok", "a bind here does not collide with it");
  const r = await why([String(port), "--json"], { ADDRINUSE_NETNS_BUDGET_MS: "20000" });
  assert.equal(r.code, 0);
  assert.equal(r.doc.bindable, true);
  assert.ok(r.doc.kinds.includes("other-namespace"), r.doc.kinds.join());
  const advice = r.doc.advice.join(" ");
  assert.match(advice, new RegExp(`pid ${held.first.pid} \\(\\S*node\\) listens on 0\\.0\\.0\\.0:${port} in network namespace ${ns} `));
  assert.match(advice, /Your bind would be in this process's/);
  assert.match(advice, new RegExp(`ip netns exec ${ns}`));
  assert.match(r.doc.summary.cause, /another network namespace/);
  assert.ok(r.doc.further.ownNamespace.inode > 0);
});

test("the container of that namespace is named from the runtime's state (Docker's SandboxKey points at it)", { skip: canUseNetns() }, async (t) => {
  const port = await freePortOutside(range);
  const ns = makeNetns(t);
  await nodeInNetns(t, ns, LISTEN, [String(port)]);
  const root = mkdtempSync(join(tmpdir(), "why-docker-"));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, "containers", ID), { recursive: true });
  const config = JSON.parse(readFileSync(FIXTURE, "utf8"));
  config.NetworkSettings.SandboxKey = `/run/netns/${ns}`; // the live namespace stands in for the container's
  writeFileSync(join(root, "containers", ID, "config.v2.json"), JSON.stringify(config));
  const r = await why([String(port), "--json"], { ADDRINUSE_DOCKER_ROOT: root, ADDRINUSE_NETNS_BUDGET_MS: "20000" });
  assert.ok(r.doc.kinds.includes("container"), r.doc.kinds.join());
  assert.match(r.doc.advice[0], /docker container web-nginx \(id 3f9b2c1d7e8a, image nginx:1\.27\)/);
  assert.match(r.doc.summary.cause, /web-nginx/);
});

// Inside the namespace: the "container" on ADDR:80; on "go", our server binds 0.0.0.0:PORT (which
// succeeds), a client connects to ADDR:PORT, and the script says which server got the connection.
const DNAT_SCRIPT = `
const net = require("net");
const [port, addr] = [Number(process.argv[1]), process.argv[2]];
const container = net.createServer((s) => { s.end("container\\n"); }).listen(80, addr, () => console.log(JSON.stringify({ ready: true })));
process.stdin.on("data", () => {
  const ours = net.createServer((s) => s.end("ours\\n"));
  ours.once("error", (e) => console.log(JSON.stringify({ bind: e.code })));
  ours.listen(port, "0.0.0.0", () => {
    const c = net.connect(port, addr);
    let got = "";
    c.on("data", (d) => (got += d));
    c.on("close", () => { console.log(JSON.stringify({ bind: "ok", reached: got.trim() })); ours.close(); });
  });
});`;

test("a DNAT rule with no socket: why names it (nft agrees), the bind succeeds, and a connection goes to its target", { skip: canUseNetns() || (spawnSync("nft", ["--version"]).status !== 0 && "nft not installed (nftables)") }, async (t) => {
  const port = 8080;
  const ns = makeNetns(t);
  const addr = `${NET}.250.2`;
  // A veth pair with both ends in the namespace gives it an address of its own (no dummy module here).
  sh(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
  sh(["ip", "-n", ns, "addr", "add", `${addr}/24`, "dev", "v0"]);
  sh(["ip", "-n", ns, "link", "set", "v0", "up"]);
  sh(["ip", "-n", ns, "link", "set", "v1", "up"]);
  const rules = `table ip nat {\n chain output {\n  type nat hook output priority -100; policy accept;\n  tcp dport ${port} dnat to ${addr}:80\n }\n chain prerouting {\n  type nat hook prerouting priority -100; policy accept;\n  tcp dport ${port} dnat to ${addr}:80\n }\n}\n`;
  const r = spawnSync("ip", ["netns", "exec", ns, "nft", "-f", "-"], { input: rules, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(sh(["ip", "netns", "exec", ns, "nft", "list", "ruleset"]), new RegExp(`dnat to ${addr.replace(/\./g, "\\.")}:80`));
  assert.equal(sh(["ip", "netns", "exec", ns, "ss", "-Htan", `sport = :${port}`]).trim(), "", "ss: no socket on the port");

  const box = await nodeInNetns(t, ns, DNAT_SCRIPT, [String(port), addr]);
  assert.deepEqual(box.first, { ready: true });
  const w = cliInNetns(ns, CLI, ["why", String(port), "--json"]);
  assert.equal(w.status, 0, w.stderr);
  const doc = JSON.parse(w.stdout);
  assert.equal(doc.bindable, true);
  assert.ok(doc.kinds.includes("dnat"), doc.kinds.join());
  assert.match(doc.summary.cause, new RegExp(`a DNAT rule sends port ${port} to ${addr.replace(/\./g, "\\.")}:80`));
  const text = cliInNetns(ns, CLI, ["why", String(port)]);
  assert.match(text.stdout, /cause: +a DNAT rule/);

  box.child.stdin!.write("go\n");
  assert.deepEqual(await box.next(), { bind: "ok", reached: "container" }, "Node binds, but the connection goes to the DNAT target");
});

test("PID 1 holding the socket: systemd socket activation, the .socket unit named, and killing the service said not to help", { skip: process.getuid?.() !== 0 && "needs root (pid namespace)" }, async (t) => {
  if (spawnSync("unshare", ["--pid", "--fork", "--mount-proc", "true"]).status !== 0) {
    t.skip("unshare --pid --mount-proc not permitted here");
    return;
  }
  const port = await freePortOutside(range);
  const units = mkdtempSync(join(tmpdir(), "why-units-"));
  t.after(() => rmSync(units, { recursive: true, force: true }));
  writeFileSync(join(units, "demo.socket"), `[Unit]\nDescription=demo\n\n[Socket]\nListenStream=127.0.0.1:${port}\n\n[Install]\nWantedBy=sockets.target\n`);
  // The holder is PID 1 of a new pid namespace, as systemd is of the machine; it runs why itself.
  const script = `
const { execFileSync } = require("child_process");
const s = require("net").createServer().listen(${port}, "127.0.0.1", () => {
  let out;
  try { out = execFileSync(process.execPath, [${JSON.stringify(CLI)}, "why", "${port}", "--host", "127.0.0.1", "--json"], { encoding: "utf8", env: { ...process.env, ADDRINUSE_SYSTEMD_UNIT_PATH: ${JSON.stringify(units)} } }); }
  catch (e) { out = e.stdout; }
  process.stdout.write(JSON.stringify({ pid: process.pid, why: JSON.parse(out) }));
  s.close();
});`;
  const r = spawnSync("unshare", ["--pid", "--fork", "--mount-proc", process.execPath, "-e", script], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const { pid, why: doc } = JSON.parse(r.stdout);
  assert.equal(pid, 1);
  assert.equal(doc.bindable, false);
  assert.ok(doc.kinds.includes("socket-activation"), doc.kinds.join());
  assert.match(doc.advice[0], /unit demo\.socket \(ListenStream=127\.0\.0\.1:\d+, in \S+demo\.socket\)/);
  assert.match(doc.advice[0], /Stopping or killing the service \(demo\.service\) does not free the port/);
  assert.equal(doc.summary.remedy, "systemctl stop demo.socket");
});

test("a listener whose command line is docker-proxy's: the published container is named, and killing the proxy is said not to help", async (t) => {
  // No Docker engine runs here: a real listener started under docker-proxy's argv stands in for it,
  // and the container's state is the fixture in a data root of our own.
  const port = await freePortOutside(range);
  const dir = mkdtempSync(join(tmpdir(), "why-proxy-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "containers", ID), { recursive: true });
  writeFileSync(join(dir, "containers", ID, "config.v2.json"), readFileSync(FIXTURE, "utf8"));
  const script = join(dir, "proxy.js");
  writeFileSync(script, `const s = require("net").createServer().listen(${port}, "0.0.0.0", () => console.log("ready"));`);
  const args = ["-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", String(port), "-container-ip", "172.17.0.2", "-container-port", "80"];
  const child = spawn("bash", ["-c", `exec -a /usr/bin/docker-proxy ${process.execPath} ${script} ${args.join(" ")}`], { stdio: ["ignore", "pipe", "inherit"] });
  t.after(() => child.kill("SIGKILL"));
  await once(child.stdout!, "data");
  assert.equal(await nodeBind(port), "EADDRINUSE");
  const r = await why([String(port), "--json"], { ADDRINUSE_DOCKER_ROOT: dir });
  assert.equal(r.code, 1);
  assert.ok(r.doc.kinds.includes("container") && r.doc.kinds.includes("listener"), r.doc.kinds.join());
  assert.match(r.doc.advice[0], new RegExp(`pid ${child.pid} is docker-proxy: port ${port} is published by docker container web-nginx \\(id 3f9b2c1d7e8a, image nginx:1\\.27\\), forwarded to 172\\.17\\.0\\.2:80`));
  assert.match(r.doc.advice[0], /Killing docker-proxy does not free it/);
  assert.equal(r.doc.summary.holder, `pid ${child.pid} (docker-proxy)`);
});
