import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { readTcpSockets } from "../../src/kernel/read.js";
import { SshRelay, planSshRelay, proxyOptions } from "../../src/remote/ssh/relay.js";
import { execTemplateOptOut, parseSshCommandLine } from "../../src/remote/ssh/argv.js";
import { needsSshG, planFromSshConfig, planFromSshG, type SshTarget } from "../../src/remote/ssh/config.js";
import { parseSshConfigs } from "../../src/remote/ssh/config.js";
import { closeServer, listen, portOf } from "../helpers/sockets.js";

const G = ["user root", "hostname 10.0.0.7", "port 2222", "addressfamily inet", "controlmaster false", "connecttimeout 3", "proxyusefdpass no", ""].join("\n");

test("planFromSshG: ssh -G's host name, port, family and ConnectTimeout are the relay's target", () => {
  assert.deepEqual(planFromSshG(G), {
    relay: true,
    target: { hostName: "10.0.0.7", port: 2222, family: 4, localAddress: null, connectTimeoutMs: 3000 },
  });
  const any = planFromSshG("hostname example.org\nport 22\naddressfamily any\nconnecttimeout none\nbindaddress 10.0.0.1\n");
  assert.deepEqual(any, { relay: true, target: { hostName: "example.org", port: 22, family: 0, localAddress: "10.0.0.1", connectTimeoutMs: 0 } });
});

test("planFromSshG: the configuration's own ProxyCommand, ProxyJump, shared connections or BindInterface mean no relay", () => {
  const base = G.replace("controlmaster false\n", "");
  for (const extra of ["proxycommand nc %h %p", "proxyjump bastion", "controlmaster auto\ncontrolpath /tmp/cm-%C", "bindinterface eth1"]) {
    const p = planFromSshG(`${base}${extra}\n`);
    assert.equal(p.relay, false, extra);
  }
  // ControlMaster without a ControlPath shares nothing.
  assert.equal(planFromSshG(`${base}controlmaster auto\n`).relay, true);
  assert.equal(planFromSshG("port 22\n").relay, false);
});

test("planFromSshConfig: in-process, the same plan ssh -G gives (first value wins, %h in HostName, -p and ConnectTimeout from the command line)", () => {
  const texts = [
    ["Host web*", "  HostName %h.example.org", "  Port 2200", "  AddressFamily inet6", "Host *", "  Port 22", "  ConnectTimeout 7", "Host jump-*", "  ProxyJump bastion", ""].join("\n"),
    ["Host *", "  BindAddress 10.0.0.9", "  Port 2300", ""].join("\n"),
  ];
  assert.equal(needsSshG(texts), false);
  const configs = parseSshConfigs(texts);
  assert.deepEqual(planFromSshConfig(configs, "web1", { connectTimeoutMs: 0 }), {
    relay: true,
    target: { hostName: "web1.example.org", port: 2200, family: 6, localAddress: "10.0.0.9", connectTimeoutMs: 7000 },
  });
  assert.deepEqual(planFromSshConfig(configs, "10.0.0.1", { port: 2222, connectTimeoutMs: 2500 }), {
    relay: true,
    target: { hostName: "10.0.0.1", port: 2222, family: 0, localAddress: "10.0.0.9", connectTimeoutMs: 3000 },
  });
  assert.equal(planFromSshConfig(configs, "jump-1", { connectTimeoutMs: 0 }).relay, false);
  assert.deepEqual(planFromSshConfig([], "h", { connectTimeoutMs: 0 }), { relay: true, target: { hostName: "h", port: 22, family: 0, localAddress: null, connectTimeoutMs: 0 } });
});

test("planFromSshConfig agrees with the real ssh -G on the same file", { skip: existsSync("/usr/bin/ssh") ? false : "no /usr/bin/ssh" }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "aissh-relay-cfg-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "config");
  const text = ["Host web*", "  HostName %h.example.org", "  Port 2200", "  AddressFamily inet6", "Host *", "  Port 22", "  ConnectTimeout 7", "  BindAddress 127.0.0.1", "Host jump-*", "  ProxyJump bastion", ""].join("\n");
  writeFileSync(file, text);
  const configs = parseSshConfigs([text]);
  for (const host of ["web1", "10.0.0.1", "jump-1"]) {
    for (const cmdline of [{ connectTimeoutMs: 0 }, { port: 2222, connectTimeoutMs: 2500 }]) {
      const argv = ["ssh", "-F", file, ...(cmdline.port ? ["-p", String(cmdline.port)] : []), ...(cmdline.connectTimeoutMs ? ["-o", "ConnectTimeout=3"] : []), "--", host, "true"];
      const byG = await planSshRelay(argv, new AbortController().signal);
      assert.deepEqual(planFromSshConfig(configs, host, cmdline), byG, `${host} ${JSON.stringify(cmdline)}`);
    }
  }
});

test("parseSshCommandLine: ssh's own reading of a template, or null for an option that may change the target", () => {
  assert.deepEqual(parseSshCommandLine(["ssh", "-F", "/c", "-o", "BatchMode=yes", "-oConnectTimeout 3", "-4Tp", "2222", "-b", "10.0.0.2", "--", "h", "cmd", "-p", "1"]), {
    host: "h",
    configFile: "/c",
    port: 2222,
    configLines: ["BatchMode yes", "ConnectTimeout 3", "AddressFamily inet", "BindAddress 10.0.0.2"],
  });
  // Options after the host count (ssh restarts getopt there); the command's own words do not.
  assert.deepEqual(parseSshCommandLine(["ssh", "h", "-p", "2200", "echo", "-p", "9"]), { host: "h", port: 2200, configLines: [] });
  for (const odd of [["ssh", "-S", "/tmp/cm", "h"], ["ssh", "-B", "eth0", "h"], ["ssh", "-M", "h"], ["ssh", "-Z", "h"], ["ssh", "-p", "x", "h"], ["ssh", "-F"]]) {
    assert.equal(parseSshCommandLine(odd), null, odd.join(" "));
  }
});

test("an ssh template planned in-process agrees with the real ssh -G", { skip: existsSync("/usr/bin/ssh") ? false : "no /usr/bin/ssh" }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "aissh-relay-tpl-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "config");
  const text = ["Host web*", "  HostName %h.example.org", "  Port 2200", "Host *", "  ConnectTimeout 7", ""].join("\n");
  writeFileSync(file, text);
  const templates = [
    ["ssh", "-F", file, "web1", "true"],
    ["ssh", "-F", file, "-o", "Port=2300", "-4", "web1", "true"],
    ["ssh", "-F", file, "-oConnectTimeout=2", "-b", "127.0.0.1", "-p", "2222", "10.0.0.1", "true"],
    ["ssh", "-F", file, "-o", "HostName 10.9.9.9", "web2", "-6", "true"],
  ];
  for (const argv of templates) {
    const line = parseSshCommandLine(argv)!;
    const configs = parseSshConfigs([line.configLines.join("\n"), text]);
    const ours = planFromSshConfig(configs, line.host, { ...(line.port !== undefined ? { port: line.port } : {}), connectTimeoutMs: 0 });
    assert.deepEqual(ours, await planSshRelay(argv, new AbortController().signal), argv.join(" "));
  }
});

test("needsSshG: Match blocks and canonicalisation are left to ssh -G", () => {
  assert.equal(needsSshG(["Host a\n  Port 1\n", "Match host x exec \"true\"\n  Port 2\n"]), true);
  assert.equal(needsSshG(["  CanonicalizeHostname yes\n"]), true);
  assert.equal(needsSshG(["Host a\n  # Match is only a comment here\n"]), false);
});

test("proxyOptions: the shuttle under nohup on the socket, quoted for the shell, % doubled for ssh's tokens", () => {
  assert.deepEqual(proxyOptions({ nohup: "/usr/bin/nohup", nc: "/usr/bin/nc.openbsd" }, "/tmp/a%b/it's"), [
    "-o",
    "ProxyCommand='/usr/bin/nohup' '/usr/bin/nc.openbsd' '-U' '/tmp/a%%b/it'\\''s'",
    "-o",
    "ProxyUseFdpass=no",
  ]);
});

test("execTemplateOptOut: only ssh, and not when the template proxies or is not a command run", () => {
  const cmd = ["hostname"];
  assert.equal(execTemplateOptOut(["ssh", "-F", "/c", "10.0.0.1", ...cmd]), null);
  assert.equal(execTemplateOptOut(["/usr/bin/ssh", "-oBatchMode=yes", "-p", "22", "--", "10.0.0.1", ...cmd]), null);
  assert.match(execTemplateOptOut(["docker", "exec", "h", "sh", "-c", ...cmd])!, /not ssh/);
  assert.match(execTemplateOptOut(["sshpass", "ssh", "h", ...cmd])!, /not ssh/);
  assert.match(execTemplateOptOut(["ssh", "-J", "bastion", "h", ...cmd])!, /-J/);
  assert.match(execTemplateOptOut(["ssh", "-Jbastion", "h", ...cmd])!, /-J/);
  assert.match(execTemplateOptOut(["ssh", "-W", "h:22", "h"])!, /-W/);
  assert.match(execTemplateOptOut(["ssh", "-o", "ProxyCommand=nc %h %p", "h", ...cmd])!, /ProxyCommand/);
  assert.match(execTemplateOptOut(["ssh", "-oProxyJump=b", "h", ...cmd])!, /ProxyJump/);
  // ssh reads options after the host too (it restarts getopt there).
  assert.match(execTemplateOptOut(["ssh", "h", "-J", "b", ...cmd])!, /-J/);
  // ... but not in the remote command, and not inside another option's value.
  assert.equal(execTemplateOptOut(["ssh", "h", "echo", "-J"]), null);
  assert.equal(execTemplateOptOut(["ssh", "-l", "-J", "h", ...cmd]), null);
  assert.match(execTemplateOptOut(["ssh", "-G", "h"])!, /-G/);
  assert.match(execTemplateOptOut(["ssh", "-TN", "h"])!, /-N/);
});

/** A shuttle stand-in: what nc -U does with ssh's bytes, on the relay's Unix socket. */
async function shuttle(relay: SshRelay): Promise<net.Socket> {
  const s = net.connect({ path: relay.socketPath, allowHalfOpen: true });
  await once(s, "connect");
  return s;
}

function target(port: number): SshTarget {
  return { hostName: "127.0.0.1", port, family: 4, localAddress: null, connectTimeoutMs: 5000 };
}

/** A relay to 127.0.0.1:port, and a promise of its TCP connection's local port. */
async function openRelay(port: number): Promise<{ relay: SshRelay; up: Promise<number> }> {
  let up!: (p: number) => void;
  const upP = new Promise<number>((r) => (up = r));
  const relay = (await SshRelay.open(target(port), (s) => up(s.localPort)))!;
  return { relay, up: upP };
}

const servers: net.Server[] = [];
/** A host that takes the connection and never closes it (reset by the relay: its error is expected). */
const silent = (c: net.Socket) => void c.on("error", () => {});
after(async () => {
  for (const s of servers) await closeServer(s).catch(() => {});
});

test("the relay's socket lives in a private 0700 directory, removed at the end", async () => {
  const relay = (await SshRelay.open(target(9), () => {}))!;
  assert.equal(statSync(dirname(relay.socketPath)).mode & 0o777, 0o700);
  const o = await relay.finish();
  assert.deepEqual([o.closedBy, o.connectError], [null, null]);
  assert.equal(existsSync(dirname(relay.socketPath)), false);
});

test("ssh's side ends, the host closes after it: closedBy remote, and no TIME_WAIT on our port", async () => {
  // The host answers what it got and closes once the client is done, as sshd does after DISCONNECT.
  const srv = await listen("127.0.0.1", (c) => {
    let got = "";
    c.on("data", (d: Buffer) => {
      got += d.toString();
      if (got.endsWith("bye\n")) {
        c.write(`echo ${got}`);
        c.end();
      }
    });
  });
  servers.push(srv);
  const { relay, up } = await openRelay(portOf(srv));
  const s = await shuttle(relay);
  let back = "";
  s.on("data", (d: Buffer) => (back += d.toString()));
  s.write("hello bye\n");
  // The shuttle ends (ssh exited) only after the answer, like ssh after its last read.
  await once(s, "end");
  s.end();
  const o = await relay.finish();
  assert.equal(back, "echo hello bye\n");
  assert.equal(o.connectError, null);
  assert.equal(o.closedBy, "remote");
  assert.equal(o.localPort, await up);
  const ours = readTcpSockets({ localPort: o.localPort! }).filter((r) => r.remotePort === portOf(srv));
  assert.deepEqual(ours.filter((r) => r.state === "TIME_WAIT"), []);
});

test("the shuttle ends and the host never closes: reset after the grace, so no TIME_WAIT either", async () => {
  const srv = await listen("127.0.0.1", silent);
  servers.push(srv);
  const { relay, up } = await openRelay(portOf(srv));
  const s = await shuttle(relay);
  s.on("error", () => {});
  await up;
  s.end("last words\n");
  const o = await relay.finish();
  assert.equal(o.closedBy, "reset");
  assert.deepEqual(readTcpSockets({ localPort: o.localPort! }).filter((r) => r.remotePort === portOf(srv) && r.state === "TIME_WAIT"), []);
});

test("a refused connect is the relay's error to tell, and the shuttle sees its end", async () => {
  const srv = await listen();
  const port = portOf(srv);
  await closeServer(srv);
  const relay = (await SshRelay.open(target(port), () => {}))!;
  const s = await shuttle(relay);
  s.resume();
  await once(s, "end");
  s.end();
  const o = await relay.finish();
  assert.equal(o.connectError?.code, "HOST_CONNECT_REFUSED");
  assert.equal(o.closedBy, null);
});

test("reset() mid-connection: closedBy reset, no TIME_WAIT", async () => {
  const srv = await listen("127.0.0.1", silent);
  servers.push(srv);
  const { relay, up } = await openRelay(portOf(srv));
  const s = await shuttle(relay);
  s.on("error", () => {});
  s.resume();
  await up;
  relay.reset();
  const o = await relay.finish();
  assert.equal(o.closedBy, "reset");
  assert.deepEqual(readTcpSockets({ localPort: o.localPort! }).filter((r) => r.remotePort === portOf(srv) && r.state === "TIME_WAIT"), []);
});
