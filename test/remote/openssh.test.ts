import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { readTcpSockets } from "../../src/kernel/read.js";
import { classifySshLog, createOpenSshTransport, opensshArgv } from "../../src/remote/transports/openssh.js";
import { closedByFromStates } from "../../src/remote/ssh/witness.js";
import { findShuttle } from "../../src/remote/ssh/relay.js";
import type { Transport } from "../../src/remote/transport.js";
import { makeKey, runOn, sshdSkipReason, startSshd, type Sshd } from "../helpers/sshd.js";
import { closeServer, listen, portOf } from "../helpers/sockets.js";
import { captureIO } from "../helpers/io.js";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";

const req = { host: "10.0.0.1", user: "root", localUser: "root", command: "uptime; id", connectTimeoutMs: 2500 };

test("argv: BatchMode, no tty, log to a file, ConnectTimeout rounded up, -- before the host", () => {
  const argv = opensshArgv({ sshConfigFile: "/etc/x.conf", hostKeyChecking: "accept-new" }, { ...req, user: "" }, "/tmp/l.log");
  assert.deepEqual(argv, [
    "ssh", "-T", "-o", "BatchMode=yes", "-o", "LogLevel=DEBUG1", "-E", "/tmp/l.log",
    "-F", "/etc/x.conf", "-o", "ConnectTimeout=3", "-o", "StrictHostKeyChecking=accept-new",
    "--", "10.0.0.1", "uptime; id",
  ]);
});

test("argv for ssh -G: the same, without the log file", () => {
  assert.deepEqual(opensshArgv({ port: 2222 }, { ...req, user: "" }, null), ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-p", "2222", "--", "10.0.0.1", "uptime; id"]);
});

test("argv: -l only when -u was given (so the config's User still applies), even -u with the local user's name", () => {
  assert.ok(!opensshArgv({}, { ...req, user: "" }, "/l").includes("-l"));
  assert.ok(opensshArgv({}, req, "/l").includes("-l"));
  const argv = opensshArgv({}, { ...req, user: "alice" }, "/l");
  assert.deepEqual(argv.slice(argv.indexOf("-l"), argv.indexOf("-l") + 2), ["-l", "alice"]);
});

test("argv: a host that looks like an option stays a host", () => {
  const argv = opensshArgv({}, { ...req, host: "-oProxyCommand=evil" }, "/l");
  assert.equal(argv[argv.indexOf("--") + 1], "-oProxyCommand=evil");
});

test("classifySshLog names the cause of an exit 255", () => {
  assert.equal(classifySshLog("debug1: x\nroot@10.0.0.1: Permission denied (publickey).\n").code, "HOST_AUTH");
  assert.equal(classifySshLog("ssh: connect to host 10.0.0.1 port 22: Connection refused\n").code, "HOST_CONNECT_REFUSED");
  assert.equal(classifySshLog("ssh: connect to host 10.0.0.1 port 22: Connection timed out\n").code, "HOST_CONNECT_TIMEOUT");
  const changed = classifySshLog(
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n",
  );
  assert.equal(changed.code, "HOST_KEY_UNTRUSTED");
  assert.equal(changed.message, "ssh: Host key verification failed.");
  assert.equal(classifySshLog("kex_exchange_identification: Connection closed by remote host\n").code, "HOST_CONNECTION_LOST");
  assert.equal(classifySshLog("debug1: only debug\n").code, "HOST_TRANSPORT");
});

test("closedByFromStates: our FIN first leaves FIN_WAIT/TIME_WAIT; none or LAST_ACK means the remote", () => {
  assert.equal(closedByFromStates(["TIME_WAIT"]), "local");
  assert.equal(closedByFromStates(["FIN_WAIT_2"]), "local");
  assert.equal(closedByFromStates([]), "remote");
  assert.equal(closedByFromStates(["LAST_ACK"]), "remote");
});

test("an ssh binary that is not there fails the host with HOST_TRANSPORT", async () => {
  const t = createOpenSshTransport({}, { ssh: "/nonexistent/aissh-ssh" });
  const r = await runOn(t, "127.0.0.1", "true");
  assert.equal(r.result.error?.code, "HOST_TRANSPORT");
  assert.equal(r.connected, 0);
});

const skip = sshdSkipReason() ?? (existsSync("/usr/bin/ssh") ? null : "no /usr/bin/ssh (apt-get install openssh-client)");
const noShuttle = findShuttle() ? null : "no netcat-openbsd (apt-get install netcat-openbsd): no relay";

describe("openssh transport against a real sshd", { skip: skip ?? false }, () => {
  let sshd: Sshd;
  let dir: string;
  let t: Transport;

  before(async () => {
    sshd = await startSshd();
    dir = mkdtempSync(join(tmpdir(), "aissh-openssh-"));
    t = createOpenSshTransport({ sshConfigFile: sshd.clientConfigPath });
  });
  after(async () => {
    await sshd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("output, exit code, and ssh's own messages kept out of the host's stderr", async () => {
    const r = await runOn(t, sshd.address, "echo out; echo err >&2; exit 3", { separateStderr: true });
    assert.equal(r.result.error, null);
    assert.equal(r.result.exitCode, 3);
    assert.equal(r.out, "out\n");
    assert.equal(r.err, "err\n");
    assert.equal(r.connected, 1);
    assert.equal(r.result.connected, true);
  });

  test("a remote exit 255 is the remote's code, not an ssh failure", async () => {
    const r = await runOn(t, sshd.address, "exit 255");
    assert.equal(r.result.error, null);
    assert.equal(r.result.exitCode, 255);
  });

  test("the remote stdin is at EOF at once", async () => {
    const r = await runOn(t, sshd.address, "cat; echo after-cat");
    assert.equal(r.out, "after-cat\n");
  });

  test("through the relay the host closes first: closedBy remote, and no TIME_WAIT here", { skip: noShuttle ?? false }, async () => {
    const r = await runOn(t, sshd.address, "sleep 0; echo x");
    assert.equal(r.result.error, null);
    assert.equal(r.out, "x\n");
    const port = r.result.localPort;
    assert.ok(port !== null, "the relay's own socket gives the local port");
    assert.equal(r.result.remotePort, sshd.port);
    assert.equal(r.result.closedBy, "remote");
    const ours = readTcpSockets({ localPort: port }).filter((s) => s.remotePort === sshd.port);
    assert.deepEqual(ours.filter((s) => ["TIME_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING"].includes(s.state)), []);
  });

  test("without the relay, close order is reported as the kernel table shows it (ssh closes first: local, a TIME_WAIT here)", async () => {
    const direct = createOpenSshTransport({ sshConfigFile: sshd.clientConfigPath }, { shuttle: null });
    const r = await runOn(direct, sshd.address, "sleep 0; echo x");
    assert.equal(r.result.error, null);
    const port = r.result.localPort;
    assert.ok(port !== null, "the local port is learned from the kernel table while ssh runs");
    const ours = readTcpSockets({ localPort: port }).filter((s) => s.remotePort === sshd.port);
    const weClosedFirst = ours.some((s) => ["TIME_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING"].includes(s.state));
    assert.equal(r.result.closedBy, weClosedFirst ? "local" : "remote");
  });

  test("a configuration with its own ProxyCommand is left alone: no relay, ssh's own connection", { skip: noShuttle ?? false }, async () => {
    const cfg = join(dir, "proxied.conf");
    writeFileSync(cfg, `Host *\n  ProxyCommand nc.openbsd %h %p\n` + readFileSync(sshd.clientConfigPath, "utf8"));
    const r = await runOn(createOpenSshTransport({ sshConfigFile: cfg }), sshd.address, "echo proxied");
    assert.equal(r.result.error, null);
    assert.equal(r.out, "proxied\n");
    // The TCP connection is nc's, not ssh's and not ours: nothing of ours to report on.
    assert.equal(r.result.localPort, null);
    assert.equal(r.result.closedBy, null);
  });

  test("multi-rsh -R openssh end to end: the result and the ledger agree on the close order", async () => {
    const io = captureIO();
    const code = await main(["-R", "openssh", "-F", sshd.clientConfigPath, "--json", "-w", sshd.address, "echo via-cli"], io);
    assert.equal(code, 0, io.err());
    const doc = JSON.parse(io.out()) as { results: { state: string; closedBy: string }[]; ledger: Record<string, number> };
    assert.equal(doc.results[0]!.state, "done");
    // Whatever the close order was, the ledger and the result agree with each other.
    assert.equal(doc.ledger["localClosed"], doc.results[0]!.closedBy === "local" ? 1 : 0);
    if (doc.results[0]!.closedBy === "remote") assert.equal(doc.ledger["localTimeWait"], 0);
    if (!noShuttle) assert.deepEqual([doc.results[0]!.closedBy, doc.ledger["localTimeWait"]], ["remote", 0]);
  });

  test("without netcat-openbsd on PATH: the run goes on without the relay, and says so once (stderr, and --json)", () => {
    // A PATH with ssh and nohup only.
    const bin = join(dir, "path-without-nc");
    mkdirSync(bin, { recursive: true });
    for (const p of ["ssh", "nohup"]) if (!existsSync(join(bin, p))) symlinkSync(`/usr/bin/${p}`, join(bin, p));
    const cli = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));
    const run = (extra: string[]) =>
      spawnSync(process.execPath, [cli, "-R", "openssh", "-F", sshd.clientConfigPath, ...extra, "-w", sshd.address, "echo x"], {
        env: { ...process.env, PATH: bin },
        encoding: "utf8",
        timeout: 60_000,
      });
    const json = run(["--json"]);
    assert.equal(json.status, 0, json.stderr);
    const doc = JSON.parse(json.stdout) as { notices?: string[]; results: { state: string }[] };
    assert.equal(doc.results[0]!.state, "done");
    assert.equal(doc.notices?.length, 1);
    assert.match(doc.notices![0]!, /netcat-openbsd/);
    const text = run([]);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stderr.split("\n").filter((l) => /netcat-openbsd/.test(l)).length, 1, text.stderr);
  });

  test("the sshd session killed mid-command: HOST_CONNECTION_LOST, with ssh's own words", async () => {
    const r = await runOn(t, sshd.address, "kill -9 $PPID; sleep 5", { separateStderr: true });
    assert.equal(r.result.connected, true);
    assert.equal(r.result.error?.code, "HOST_CONNECTION_LOST");
    // Killed with unread data in its socket, the server's kernel answers with RST instead of FIN; which
    // one comes, and which of ssh's loops notices it first, is a race, and ssh names each its own way.
    assert.match(r.result.error!.message, /^ssh: (Connection to \S+ closed by remote host|Connection (reset|closed) by |Read from remote host|client_loop: send disconnect)/);
  });

  test("an unauthorised key: HOST_AUTH", async () => {
    const other = makeKey(dir, "not_authorized");
    const cfg = join(dir, "badkey.conf");
    writeFileSync(cfg, readFileSync(sshd.clientConfigPath, "utf8").replace(sshd.clientKey.privatePath, other.privatePath));
    const r = await runOn(createOpenSshTransport({ sshConfigFile: cfg }), sshd.address, "true");
    assert.equal(r.result.error?.code, "HOST_AUTH");
    assert.match(r.result.error!.message, /Permission denied/);
    assert.equal(r.connected, 0);
  });

  test("a changed host key: HOST_KEY_UNTRUSTED, and the command does not run", async () => {
    const impostor = makeKey(dir, "impostor");
    const kh = join(dir, "changed_kh");
    const [type, blob] = impostor.publicLine.split(" ");
    writeFileSync(kh, `[${sshd.address}]:${sshd.port} ${type} ${blob}\n`);
    const cfg = join(dir, "changed.conf");
    writeFileSync(cfg, `Host *\n  UserKnownHostsFile ${kh}\n` + readFileSync(sshd.clientConfigPath, "utf8"));
    const r = await runOn(createOpenSshTransport({ sshConfigFile: cfg }), sshd.address, "echo must-not-run");
    assert.equal(r.result.error?.code, "HOST_KEY_UNTRUSTED");
    assert.equal(r.out, "");
  });

  test("a refused port: HOST_CONNECT_REFUSED", async () => {
    const srv = await listen();
    const port = portOf(srv);
    await closeServer(srv);
    const r = await runOn(createOpenSshTransport({ sshConfigFile: sshd.clientConfigPath, port }), "127.0.0.1", "true");
    assert.equal(r.result.error?.code, "HOST_CONNECT_REFUSED");
    assert.equal(r.result.closedBy, null);
  });

  test("abort resets the relay's connection, then kills ssh: closedBy reset, no TIME_WAIT", { skip: noShuttle ?? false }, async () => {
    const ac = new AbortController();
    const r = await runOn(t, sshd.address, "echo started; sleep 30", {
      signal: ac.signal,
      onStdout: () => ac.abort("timeout"),
    });
    assert.equal(r.result.error?.code, "HOST_COMMAND_TIMEOUT");
    assert.equal(r.connected, 1);
    assert.equal(r.result.closedBy, "reset");
    const port = r.result.localPort!;
    assert.equal(readTcpSockets({ localPort: port }).filter((s) => s.remotePort === sshd.port && s.state === "TIME_WAIT").length, 0);
  });

  test("abort without the relay resets ssh's connection (ss -K, as root), then kills it: closedBy reset, no TIME_WAIT", async () => {
    const ac = new AbortController();
    const direct = createOpenSshTransport({ sshConfigFile: sshd.clientConfigPath }, { shuttle: null });
    const r = await runOn(direct, sshd.address, "echo started; sleep 30", {
      signal: ac.signal,
      onStdout: () => ac.abort("timeout"),
    });
    assert.equal(r.result.error?.code, "HOST_COMMAND_TIMEOUT");
    assert.equal(r.connected, 1);
    assert.equal(r.result.closedBy, "reset");
    const port = r.result.localPort!;
    assert.equal(readTcpSockets({ localPort: port }).filter((s) => s.remotePort === sshd.port && s.state === "TIME_WAIT").length, 0);
  });
});
