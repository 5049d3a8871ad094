import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { readTcpSockets } from "../../src/kernel/read.js";
import { findShuttle } from "../../src/remote/ssh/relay.js";
import { createExecTransport, expandTemplate } from "../../src/remote/transports/exec.js";
import { runOn, sshdSkipReason, startSshd, type Sshd } from "../helpers/sshd.js";

// sh -c SCRIPT sh %h %u CMD: $1 = host, $2 = user, $3 = the remote command (appended last).
const SHOW = ["sh", "-c", 'printf "host=%s user=%s\\n" "$1" "$2"; eval "$3"', "sh", "%h", "%u"];

test("expandTemplate substitutes %h, %u and %%, and leaves other % sequences alone", () => {
  assert.deepEqual(expandTemplate(["ssh", "%u@%h", "100%%", "%s", "%x%h"], "10.0.0.1", "root"), [
    "ssh",
    "root@10.0.0.1",
    "100%",
    "%s",
    "%x10.0.0.1",
  ]);
});

test("runs the template per host with the command as the last argument; exit code per host", async () => {
  const t = createExecTransport({ template: SHOW });
  const r = await runOn(t, "node01", "echo ran; exit 4", { user: "alice" });
  assert.equal(r.out, "host=node01 user=alice\nran\n");
  assert.equal(r.result.exitCode, 4);
  assert.equal(r.result.error, null);
  assert.equal(r.result.closedBy, null);
  assert.equal(r.result.connected, true);
  assert.equal(r.connected, 1);
});

test("a host name full of shell syntax stays one argument: nothing is injected", async () => {
  const t = createExecTransport({ template: ["sh", "-c", 'printf "%s\\n" "$1"', "sh", "%h"] });
  const evil = "x; touch /tmp/aissh-injected $(touch /tmp/aissh-injected2)";
  const r = await runOn(t, evil, "ignored");
  assert.equal(r.out, `${evil}\n`);
  assert.equal(existsSync("/tmp/aissh-injected"), false);
  assert.equal(existsSync("/tmp/aissh-injected2"), false);
});

test("stderr is merged unless separateStderr; stdin is at EOF", async () => {
  const t = createExecTransport({ template: ["sh", "-c"] });
  const merged = await runOn(t, "h", "cat; echo out; echo err >&2");
  assert.equal(merged.out, "out\nerr\n");
  const apart = await runOn(t, "h", "echo out; echo err >&2", { separateStderr: true });
  assert.equal(apart.out, "out\n");
  assert.equal(apart.err, "err\n");
});

test("a command killed by a signal reports the signal", async () => {
  const r = await runOn(createExecTransport({ template: ["sh", "-c"] }), "h", "kill -TERM $$");
  assert.equal(r.result.exitCode, null);
  assert.equal(r.result.signal, "SIGTERM");
});

test("a program that does not exist fails the host with HOST_TRANSPORT", async () => {
  const r = await runOn(createExecTransport({ template: ["/nonexistent/aissh-prog", "%h"] }), "h", "x");
  assert.equal(r.result.error?.code, "HOST_TRANSPORT");
  assert.match(r.result.error!.message, /not found/);
  assert.equal(r.connected, 0);
});

test("abort kills the whole process group, helpers included", async () => {
  const ac = new AbortController();
  let out = "";
  const t = createExecTransport({ template: ["sh", "-c"] });
  // The background sleep keeps stdout open, so the result (which waits for the pipes) also shows
  // that the helper is gone, not only the shell.
  const r = await runOn(t, "h", "sleep 30 & echo $!; wait", {
    signal: ac.signal,
    onStdout: (b) => {
      out += b.toString();
      if (out.endsWith("\n")) ac.abort("cancel");
    },
  });
  assert.equal(r.result.error?.code, "HOST_CANCELLED");
  const bgPid = Number(out.trim());
  assert.ok(bgPid > 0);
  // Gone, or a zombie waiting for init to reap it: either way no longer running.
  const stat = existsSync(`/proc/${bgPid}/stat`) ? readFileSync(`/proc/${bgPid}/stat`, "utf8") : "";
  assert.ok(stat === "" || / Z /.test(stat), `helper still running: ${stat}`);
});

test("abort also kills a helper the command left behind after its own exit", async () => {
  const ac = new AbortController();
  const t = createExecTransport({ template: ["sh", "-c"] });
  // sh exits at once; the background sleep keeps stdout open, so only the group kill ends the run.
  const r = await runOn(t, "h", "sleep 30 & echo bg", {
    signal: ac.signal,
    onStdout: () => ac.abort("timeout"),
  });
  assert.equal(r.result.error?.code, "HOST_COMMAND_TIMEOUT");
});

test("an empty template is a usage error at creation", () => {
  assert.throws(() => createExecTransport({}), { code: "AIU_USAGE" });
  assert.throws(() => createExecTransport({ template: [] }), { code: "AIU_USAGE" });
});

const relaySkip =
  sshdSkipReason() ??
  (existsSync("/usr/bin/ssh") ? null : "no /usr/bin/ssh (apt-get install openssh-client)") ??
  (findShuttle() ? null : "no netcat-openbsd (apt-get install netcat-openbsd): no relay");

describe("an ssh template goes through the relay", { skip: relaySkip ?? false }, () => {
  let sshd: Sshd;
  before(async () => {
    sshd = await startSshd();
  });
  after(async () => {
    await sshd?.stop();
  });

  test("the host closes first: closedBy remote, the relay's local port, no TIME_WAIT here", async () => {
    const r = await runOn(createExecTransport({ template: ["ssh", "-F", sshd.clientConfigPath, "%h"] }), sshd.address, "echo via-exec; exit 5");
    assert.equal(r.out, "via-exec\n");
    assert.equal(r.result.exitCode, 5);
    assert.equal(r.result.error, null);
    assert.equal(r.result.closedBy, "remote");
    assert.ok(r.result.localPort !== null && r.result.localPort > 0);
    assert.equal(r.result.remotePort, sshd.port);
    const ours = readTcpSockets({ localPort: r.result.localPort }).filter((x) => x.remotePort === sshd.port);
    assert.deepEqual(ours.filter((x) => x.state === "TIME_WAIT"), []);
  });

  test("a template that proxies by itself: ssh's own connection, no claim (closedBy null)", async () => {
    const proxied = createExecTransport({ template: ["ssh", "-F", sshd.clientConfigPath, "-o", "ProxyCommand=nc.openbsd %h %p", "%h"] });
    const a = await runOn(proxied, sshd.address, "echo proxied");
    assert.equal(a.out, "proxied\n");
    assert.deepEqual([a.result.closedBy, a.result.localPort], [null, null]);
  });

  test("no shuttle: ssh's own connection, closed by ssh first; the kernel's TIME_WAIT row is the result's", async () => {
    const direct = createExecTransport({ template: ["ssh", "-F", sshd.clientConfigPath, "%h"] }, { shuttle: null });
    const b = await runOn(direct, sshd.address, "echo direct");
    assert.equal(b.out, "direct\n");
    // ssh closes first, but sshd's close races with it: either way the result says what the kernel shows.
    if (b.result.closedBy === "local") {
      assert.equal(b.result.remotePort, sshd.port);
      const tw = readTcpSockets({ localPort: b.result.localPort! }).filter((x) => x.remotePort === sshd.port && x.state === "TIME_WAIT");
      assert.equal(tw.length, 1, "ssh closed first: one TIME_WAIT here, on the port the result names");
    } else {
      assert.equal(b.result.closedBy, "remote");
    }
  });

  test("abort resets the relay's connection: cancelled, closedBy reset, no TIME_WAIT", async () => {
    const ac = new AbortController();
    const t = createExecTransport({ template: ["ssh", "-F", sshd.clientConfigPath, "%h"] });
    const r = await runOn(t, sshd.address, "echo started; sleep 30", { signal: ac.signal, onStdout: () => ac.abort("cancel") });
    assert.equal(r.result.error?.code, "HOST_CANCELLED");
    assert.equal(r.result.closedBy, "reset");
    const ours = readTcpSockets({ localPort: r.result.localPort! }).filter((x) => x.remotePort === sshd.port);
    assert.deepEqual(ours.filter((x) => x.state === "TIME_WAIT"), []);
  });
});
