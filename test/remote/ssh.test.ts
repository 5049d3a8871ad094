import { after, before, describe, test } from "node:test";
import ssh2 from "ssh2";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTcpSockets } from "../../src/kernel/read.js";
import { createSshTransport, type SshEnvironment } from "../../src/remote/transports/ssh.js";
import { signWithKeyObject } from "../../src/remote/ssh/identities.js";
import type { Transport, TransportOptions } from "../../src/remote/transport.js";
import { makeKey, runOn, sshdSkipReason, startSshd, type Sshd } from "../helpers/sshd.js";
import { closeServer, listen, portOf } from "../helpers/sockets.js";
import { captureIO } from "../helpers/io.js";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";

const skip = sshdSkipReason();

test("signWithKeyObject: the same signatures as ssh2's own sign, for ed25519, ECDSA and RSA keys", { skip: existsSync("/usr/bin/ssh-keygen") ? false : "no ssh-keygen" }, () => {
  const dir = mkdtempSync(join(tmpdir(), "aissh-sign-"));
  try {
    for (const type of ["ed25519", "ecdsa", "rsa"] as const) {
      const file = readFileSync(makeKey(dir, `k_${type}`, type).privatePath);
      const parse = () => {
        const k = ssh2.utils.parseKey(file);
        assert.ok(!(k instanceof Error));
        return Array.isArray(k) ? k[0]! : k;
      };
      const theirs = parse();
      const ours = signWithKeyObject(parse());
      const data = Buffer.from(`data to sign with ${type}`);
      for (const algo of type === "rsa" ? ["sha512", "sha256", undefined] : [undefined]) {
        const sig = ours.sign(data, algo);
        assert.ok(Buffer.isBuffer(sig), `${type} ${algo}: ${String(sig)}`);
        assert.equal(theirs.verify(data, sig, algo), true, `${type} ${algo}`);
        // ed25519 and RSA PKCS#1 v1.5 are deterministic: byte for byte what ssh2 would have sent.
        if (type !== "ecdsa") assert.deepEqual(sig, theirs.sign(data, algo), `${type} ${algo}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** TIME_WAIT sockets whose local port is `localPort` and whose peer is the server's port. */
function timeWaits(localPort: number, remotePort: number): number {
  return readTcpSockets({ localPort }).filter((s) => s.state === "TIME_WAIT" && s.remotePort === remotePort).length;
}

describe("ssh transport against a real sshd", { skip: skip ?? false }, () => {
  let sshd: Sshd;
  let dir: string;
  const env: SshEnvironment = { agentSocket: "", systemConfigFile: null, graceMs: 2000 };
  let t: Transport;

  before(async () => {
    sshd = await startSshd();
    dir = mkdtempSync(join(tmpdir(), "aissh-client-"));
    env.home = dir;
    t = createSshTransport({ sshConfigFile: sshd.clientConfigPath }, env);
  });
  after(async () => {
    await sshd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const fresh = (options: TransportOptions = {}, e: SshEnvironment = {}) =>
    createSshTransport({ sshConfigFile: sshd.clientConfigPath, ...options }, { ...env, ...e });

  test("runs the command: output, merged stderr, exit code, one onConnected", async () => {
    const r = await runOn(t, sshd.address, "echo out; echo err >&2; exit 3");
    assert.equal(r.result.error, null);
    assert.equal(r.result.exitCode, 3);
    assert.equal(r.result.signal, null);
    assert.equal(r.result.connected, true);
    assert.equal(r.connected, 1);
    assert.equal(r.out, "out\nerr\n");
    assert.equal(r.err, "");
  });

  test("separateStderr keeps the remote stderr apart", async () => {
    const r = await runOn(t, sshd.address, "echo out; echo err >&2", { separateStderr: true });
    assert.equal(r.result.exitCode, 0);
    assert.equal(r.out, "out\n");
    assert.equal(r.err, "err\n");
  });

  test("a command killed by a signal reports the signal, not an exit code", async () => {
    const r = await runOn(t, sshd.address, "kill -TERM $$");
    assert.equal(r.result.error, null);
    assert.equal(r.result.exitCode, null);
    assert.equal(r.result.signal, "SIGTERM");
  });

  test("the remote stdin is at EOF at once, so a command reading it does not hang", async () => {
    const r = await runOn(t, sshd.address, "cat; echo after-cat");
    assert.equal(r.result.exitCode, 0);
    assert.equal(r.out, "after-cat\n");
  });

  test("a large output arrives whole, last line without newline included", async () => {
    const r = await runOn(t, sshd.address, "seq 1 200000; printf tail");
    assert.equal(r.result.exitCode, 0);
    const lines = r.out.split("\n");
    assert.equal(lines.length, 200001);
    assert.equal(lines[199999], "200000");
    assert.equal(lines[200000], "tail");
  });

  test("remote closes first, so the client keeps no TIME_WAIT (kernel table)", async () => {
    const r = await runOn(t, sshd.address, "true");
    assert.equal(r.result.error, null);
    assert.equal(r.result.closedBy, "remote");
    const port = r.result.localPort;
    assert.ok(port !== null && port > 0);
    assert.equal(timeWaits(port, sshd.port), 0, "no TIME_WAIT on the client's port");
    // The server sent the first FIN, so the TIME_WAIT (or the FIN_WAIT_2 before it) is on its side.
    const serverSide = readTcpSockets({ localPort: sshd.port }).filter((s) => s.remotePort === port);
    assert.ok(
      serverSide.some((s) => s.state === "TIME_WAIT" || s.state === "FIN_WAIT_2"),
      `server side: ${serverSide.map((s) => s.state).join(",") || "none"}`,
    );
  });

  test("twenty hosts at once on one event loop, none leaving a client TIME_WAIT", async () => {
    const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => runOn(t, sshd.address, `echo ${i}`)));
    runs.forEach((r, i) => {
      assert.equal(r.result.error, null, r.result.error?.message);
      assert.equal(r.out, `${i}\n`);
      assert.equal(r.result.closedBy, "remote");
      assert.equal(timeWaits(r.result.localPort!, sshd.port), 0);
    });
  });

  test("abort while the command runs resets the connection: closedBy reset, no TIME_WAIT either side", async () => {
    const ac = new AbortController();
    const r = await runOn(t, sshd.address, "sleep 30", {
      signal: ac.signal,
      onConnectedHook: () => ac.abort("timeout"),
    });
    assert.equal(r.result.closedBy, "reset");
    assert.equal(r.result.error?.code, "HOST_COMMAND_TIMEOUT");
    assert.equal(r.result.connected, true);
    const port = r.result.localPort!;
    assert.equal(timeWaits(port, sshd.port), 0);
    assert.equal(
      readTcpSockets({ localPort: sshd.port }).filter((s) => s.remotePort === port && s.state === "TIME_WAIT").length,
      0,
    );
  });

  test("the sshd session killed mid-command: HOST_CONNECTION_LOST, the remote ended it, no local TIME_WAIT", async () => {
    const r = await runOn(t, sshd.address, "kill -9 $PPID; sleep 5");
    assert.equal(r.result.connected, true);
    assert.equal(r.result.error?.code, "HOST_CONNECTION_LOST");
    // FIN or RST from the killed end is a race (RST when it had unread data); never our close.
    assert.ok(r.result.closedBy === "remote" || r.result.closedBy === "reset", String(r.result.closedBy));
    assert.equal(timeWaits(r.result.localPort!, sshd.port), 0);
  });

  test("an already aborted signal resolves at once with a cancellation", async () => {
    const ac = new AbortController();
    ac.abort("cancel");
    const r = await runOn(t, sshd.address, "true", { signal: ac.signal });
    assert.equal(r.result.error?.code, "HOST_CANCELLED");
    assert.equal(r.connected, 0);
    assert.equal(r.result.closedBy, null);
  });

  test("a refused port fails with HOST_CONNECT_REFUSED (--port beats the config's Port)", async () => {
    const srv = await listen();
    const port = portOf(srv);
    await closeServer(srv);
    const r = await runOn(createSshTransport({ sshConfigFile: sshd.clientConfigPath, port }, env), "127.0.0.1", "true");
    assert.equal(r.result.error?.code, "HOST_CONNECT_REFUSED");
    assert.equal(r.result.closedBy, null);
    assert.equal(r.connected, 0);
  });

  test("a key the server does not accept fails with HOST_AUTH and says what was tried", async () => {
    const other = makeKey(dir, "not_authorized");
    const cfg = join(dir, "badkey.conf");
    writeFileSync(
      cfg,
      readFileSync(sshd.clientConfigPath, "utf8").replace(sshd.clientKey.privatePath, other.privatePath),
    );
    const r = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "true");
    assert.equal(r.result.error?.code, "HOST_AUTH");
    assert.match(r.result.error!.message, /permission denied/);
    assert.match(r.result.error!.message, /not_authorized/);
    assert.equal(r.connected, 0);
    // After our DISCONNECT the server closes first here too.
    assert.equal(r.result.closedBy, "remote");
    assert.equal(timeWaits(r.result.localPort!, sshd.port), 0);
  });

  test("a passphrase-protected key is never prompted for: HOST_AUTH naming it", async () => {
    const locked = makeKey(dir, "locked", "ed25519", "secret-passphrase");
    const cfg = join(dir, "locked.conf");
    writeFileSync(
      cfg,
      readFileSync(sshd.clientConfigPath, "utf8").replace(sshd.clientKey.privatePath, locked.privatePath),
    );
    const r = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "true");
    assert.equal(r.result.error?.code, "HOST_AUTH");
    assert.match(r.result.error!.message, /passphrase-protected .*locked/);
  });

  test("a changed host key fails with HOST_KEY_UNTRUSTED and never runs the command", async () => {
    const impostor = makeKey(dir, "impostor_host");
    const kh = join(dir, "changed_known_hosts");
    const [type, blob] = impostor.publicLine.split(" ");
    writeFileSync(kh, `[${sshd.address}]:${sshd.port} ${type} ${blob}\n`);
    const cfg = join(dir, "changed.conf");
    writeFileSync(cfg, `Host *\n  UserKnownHostsFile ${kh}\n` + readFileSync(sshd.clientConfigPath, "utf8"));
    const r = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "touch /tmp/aissh-must-not-exist");
    assert.equal(r.result.error?.code, "HOST_KEY_UNTRUSTED");
    assert.match(r.result.error!.message, /HOST KEY CHANGED/);
    assert.equal(r.connected, 0);
    assert.equal(existsSync("/tmp/aissh-must-not-exist"), false);
    // Even --host-key-checking accept-new does not accept a changed key.
    const r2 = await runOn(createSshTransport({ sshConfigFile: cfg, hostKeyChecking: "accept-new" }, env), sshd.address, "true");
    assert.equal(r2.result.error?.code, "HOST_KEY_UNTRUSTED");
    // --host-key-checking off is the user's explicit choice to skip the check.
    const r3 = await runOn(createSshTransport({ sshConfigFile: cfg, hostKeyChecking: "off" }, env), sshd.address, "echo unchecked");
    assert.equal(r3.result.error, null);
    assert.equal(r3.out, "unchecked\n");
  });

  test("an unknown host: strict fails, accept-new files the key, then strict accepts it", async () => {
    const kh = join(dir, "empty_known_hosts");
    writeFileSync(kh, "");
    const cfg = join(dir, "unknown.conf");
    writeFileSync(cfg, `Host *\n  UserKnownHostsFile ${kh}\n` + readFileSync(sshd.clientConfigPath, "utf8"));
    const strict = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "true");
    assert.equal(strict.result.error?.code, "HOST_KEY_UNTRUSTED");
    assert.match(strict.result.error!.message, /unknown host key/);

    const accept = await runOn(createSshTransport({ sshConfigFile: cfg, hostKeyChecking: "accept-new" }, env), sshd.address, "echo ok");
    assert.equal(accept.result.error, null);
    assert.equal(accept.out, "ok\n");
    assert.match(readFileSync(kh, "utf8"), new RegExp(`^\\[${sshd.address}\\]:${sshd.port} ssh-ed25519 `));

    const again = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "echo ok");
    assert.equal(again.result.error, null);
  });

  test("a hashed known_hosts entry (ssh-keygen -H) is matched", async () => {
    const kh = join(dir, "hashed_known_hosts");
    writeFileSync(kh, readFileSync(sshd.knownHostsPath));
    execFileSync("ssh-keygen", ["-H", "-f", kh], { stdio: "ignore" });
    assert.match(readFileSync(kh, "utf8"), /^\|1\|/);
    const cfg = join(dir, "hashed.conf");
    writeFileSync(cfg, `Host *\n  UserKnownHostsFile ${kh}\n` + readFileSync(sshd.clientConfigPath, "utf8"));
    const r = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "echo hashed");
    assert.equal(r.result.error, null);
    assert.equal(r.out, "hashed\n");
  });

  test("ssh_config Host alias with HostName, Port and User is followed", async () => {
    const cfg = join(dir, "alias.conf");
    writeFileSync(
      cfg,
      `Host web1\n  HostName ${sshd.address}\n  User root\n` + readFileSync(sshd.clientConfigPath, "utf8"),
    );
    const r = await runOn(createSshTransport({ sshConfigFile: cfg }, env), "web1", "id -un", { user: "", localUser: "nobody-local" });
    assert.equal(r.result.error, null, r.result.error?.message);
    assert.equal(r.out, "root\n");
  });

  test("ProxyJump in the config fails the host with a pointer to -R openssh", async () => {
    const cfg = join(dir, "jump.conf");
    writeFileSync(cfg, "Host *\n  ProxyJump bastion\n");
    const r = await runOn(createSshTransport({ sshConfigFile: cfg }, env), sshd.address, "true");
    assert.equal(r.result.error?.code, "HOST_TRANSPORT");
    assert.match(r.result.error!.message, /openssh/);
  });

  test("ECDSA and RSA identity files sign too (ssh2's key, signing through a KeyObject made once)", async () => {
    // The helper's sshd reads this authorized_keys on every connection: keys added now count.
    const authorized = join(sshd.dir, `authorized_keys-${sshd.address}-${sshd.port}`);
    assert.ok(existsSync(authorized));
    for (const type of ["ecdsa", "rsa"] as const) {
      const key = makeKey(dir, `client_${type}`, type);
      writeFileSync(authorized, `${readFileSync(authorized, "utf8")}${key.publicLine}\n`);
      const cfg = join(dir, `${type}.conf`);
      writeFileSync(cfg, `Host *\n  Port ${sshd.port}\n  IdentityFile ${key.privatePath}\n  IdentitiesOnly yes\n  UserKnownHostsFile ${sshd.knownHostsPath}\n`);
      const tr = createSshTransport({ sshConfigFile: cfg }, env);
      for (let i = 0; i < 2; i++) {
        const r = await runOn(tr, sshd.address, `echo ${type}`);
        assert.equal(r.result.error, null, r.result.error?.message);
        assert.equal(r.out, `${type}\n`);
      }
    }
  });

  test("the config's Ciphers and KexAlgorithms are followed; a list with nothing we speak fails the host", async () => {
    const base = readFileSync(sshd.clientConfigPath, "utf8");
    const ok = join(dir, "algos.conf");
    writeFileSync(ok, `Host *\n  Ciphers aes256-ctr\n  MACs hmac-sha2-512-etm@openssh.com\n  KexAlgorithms ecdh-sha2-nistp256\n` + base);
    const r = await runOn(createSshTransport({ sshConfigFile: ok }, env), sshd.address, "echo ok");
    assert.equal(r.result.error, null, r.result.error?.message);
    assert.equal(r.out, "ok\n");
    // OpenSSH 9's sshd offers no CBC cipher: asking for one alone must fail the key exchange.
    const cbc = join(dir, "algos-cbc.conf");
    writeFileSync(cbc, `Host *\n  Ciphers aes128-cbc\n` + base);
    const refused = await runOn(createSshTransport({ sshConfigFile: cbc }, env), sshd.address, "true");
    assert.equal(refused.result.error?.code, "HOST_PROTOCOL", refused.result.error?.message);
    assert.equal(refused.result.connected, false);
    const none = join(dir, "algos-none.conf");
    writeFileSync(none, `Host *\n  KexAlgorithms sntrup761x25519-sha512@openssh.com\n` + base);
    const bad = await runOn(createSshTransport({ sshConfigFile: none }, env), sshd.address, "true");
    assert.equal(bad.result.error?.code, "HOST_TRANSPORT");
    assert.match(bad.result.error!.message, /KexAlgorithms.*-R openssh/);
  });

  test("a missing -F file is a usage error at creation", () => {
    assert.throws(() => createSshTransport({ sshConfigFile: join(dir, "nope.conf") }, env), { code: "AIU_USAGE" });
  });

  test("multi-rsh -R ssh end to end: done, closed by the remote, a ledger with 0 local TIME_WAIT", async () => {
    const io = captureIO();
    const code = await main(["-R", "ssh", "-F", sshd.clientConfigPath, "--json", "-w", sshd.address, "echo via-cli"], io);
    assert.equal(code, 0, io.err());
    const doc = JSON.parse(io.out()) as { transport: string; results: { state: string; closedBy: string }[]; ledger: Record<string, number> };
    assert.equal(doc.transport, "ssh");
    assert.equal(doc.results[0]!.state, "done");
    assert.equal(doc.results[0]!.closedBy, "remote");
    assert.equal(doc.ledger["remoteClosed"], 1);
    assert.equal(doc.ledger["localTimeWait"], 0);
  });

  test("Ctrl-\\ (SIGQUIT) in the built CLI resets the running ssh connection: exit 130, 0 local TIME_WAIT", async (t) => {
    const bin = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));
    const built = fileURLToPath(new URL("../../dist/remote/transports/ssh.js", import.meta.url));
    if (!existsSync(built)) return t.skip("dist/ has no ssh transport (npm run build)");
    const child = spawn(process.execPath, [bin, "-R", "ssh", "-F", sshd.clientConfigPath, "-t", "60", "-w", sshd.address, "echo started; sleep 30"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    t.after(() => child.kill("SIGKILL"));
    let err = "";
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const exited = once(child, "exit") as Promise<[number | null]>;
    // Bounded by the -t 60 of the run itself and the test runner's timeout.
    await new Promise<void>((resolve) => {
      let out = "";
      child.stdout.on("data", (b: Buffer) => {
        out += b.toString();
        if (out.includes("started")) resolve();
      });
    });
    // One signal, not two SIGINTs back to back: the kernel may merge two pending SIGINTs into one.
    child.kill("SIGQUIT");
    const [code] = await exited;
    assert.equal(code, 130);
    assert.match(err, /1 cancelled/);
    assert.match(err, /1 reset; local TIME_WAIT left by this run: 0/);
  });

  test("keys from ssh-agent (SSH_AUTH_SOCK) are used", { skip: existsSync("/usr/bin/ssh-agent") ? false : "no ssh-agent" }, async () => {
    const sock = join(dir, "agent.sock");
    // Without -D the agent forks and its parent exits once the socket is listening: no wait needed.
    const started = execFileSync("ssh-agent", ["-s", "-a", sock], { encoding: "utf8" });
    const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(started)?.[1]);
    assert.ok(pid > 0);
    try {
      execFileSync("ssh-add", [sshd.clientKey.privatePath], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: "ignore" });
      const cfg = join(dir, "agent.conf");
      // No IdentityFile, and a home without keys: only the agent can authenticate.
      writeFileSync(cfg, `Host *\n  Port ${sshd.port}\n  UserKnownHostsFile ${sshd.knownHostsPath}\n`);
      const r = await runOn(createSshTransport({ sshConfigFile: cfg }, { ...env, agentSocket: sock }), sshd.address, "echo agent");
      assert.equal(r.result.error, null, r.result.error?.message);
      assert.equal(r.out, "agent\n");
    } finally {
      process.kill(pid, "SIGTERM");
    }
  });
});
