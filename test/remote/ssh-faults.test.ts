/**
 * The built-in ssh transport against servers that misbehave in ways sshd cannot be made to: ssh2's
 * own server with fault flags, and raw TCP servers below the ssh layer. No root needed.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTcpSockets } from "../../src/kernel/read.js";
import { createSshTransport, type SshEnvironment } from "../../src/remote/transports/ssh.js";
import type { ServerChannel } from "ssh2";
import type { Transport, TransportResult } from "../../src/remote/transport.js";
import { generateEd25519, runOn, startFaultSshServer, startRawServer, writeClientFiles, type FaultServerOptions } from "../helpers/sshd.js";

const linux = process.platform === "linux" ? false : "reads /proc/net/tcp (Linux only)";

/** TIME_WAIT rows of this very connection (local port and peer), from the kernel table. */
function clientTimeWaits(r: TransportResult): number {
  if (r.localPort === null) return 0;
  return readTcpSockets({ localPort: r.localPort }).filter((s) => s.state === "TIME_WAIT" && s.remotePort === r.remotePort).length;
}

describe("ssh transport against faulty servers", { skip: linux }, () => {
  let dir: string;
  let identity: string;
  const env: SshEnvironment = { agentSocket: "", systemConfigFile: null, graceMs: 2000 };
  const cleanups: (() => Promise<void>)[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "aissh-faults-"));
    env.home = dir;
    identity = join(dir, "id_ed25519");
    writeFileSync(identity, generateEd25519().private, { mode: 0o600 });
  });
  after(async () => {
    for (const c of cleanups) await c();
    rmSync(dir, { recursive: true, force: true });
  });

  async function faultServer(options: FaultServerOptions, e: SshEnvironment = {}): Promise<{ t: Transport; port: number }> {
    const srv = await startFaultSshServer(options);
    cleanups.push(() => srv.close());
    const { clientConfigPath } = writeClientFiles(dir, srv.address, srv.port, identity, srv.hostKeyLine);
    return { t: createSshTransport({ sshConfigFile: clientConfigPath }, { ...env, ...e }), port: srv.port };
  }

  async function rawServer(banner: string | null, closeAfterBanner = false): Promise<Transport> {
    const srv = await startRawServer(banner, closeAfterBanner);
    cleanups.push(() => srv.close());
    const { clientConfigPath } = writeClientFiles(dir, "127.0.0.1", srv.port, identity, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ");
    return createSshTransport({ sshConfigFile: clientConfigPath }, env);
  }

  test("a well-behaved ssh2 server: exit code and the remote closing first", async () => {
    const { t } = await faultServer({
      onExec: ({ channel, command }) => {
        channel.write(`ran: ${command}\n`);
        channel.exit(7);
        channel.end();
      },
    });
    const r = await runOn(t, "127.0.0.1", "hello");
    assert.equal(r.result.error, null, r.result.error?.message);
    assert.equal(r.out, "ran: hello\n");
    assert.equal(r.result.exitCode, 7);
    assert.equal(r.result.closedBy, "remote");
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("exit-signal from the server is reported as the signal", async () => {
    const { t } = await faultServer({
      onExec: ({ channel }) => {
        channel.exit("KILL", false, "killed");
        channel.end();
      },
    });
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.result.exitCode, null);
    assert.equal(r.result.signal, "SIGKILL");
  });

  test("a server that accepts only passwords: ERR_AUTH saying so, and no prompt", async () => {
    const { t } = await faultServer({ passwordOnly: true });
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.result.error?.code, "ERR_AUTH");
    assert.match(r.result.error!.message, /server accepts: password/);
    assert.equal(r.connected, 0);
  });

  test("a server that refuses the exec request: ERR_REMOTE_REFUSED", async () => {
    const { t } = await faultServer({ rejectExec: true });
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.result.error?.code, "ERR_REMOTE_REFUSED");
    assert.equal(r.connected, 0);
    assert.equal(r.result.closedBy, "remote");
  });

  test("a channel closed without an exit status: ERR_PROTOCOL", async () => {
    const { t } = await faultServer({ onExec: ({ channel }) => channel.close() });
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.result.error?.code, "ERR_PROTOCOL");
    assert.match(r.result.error!.message, /without an exit status/);
  });

  // The faults fire when the client's CHANNEL_EOF arrives: the client sends it only after the exec
  // request succeeded, so the command is known to have started, with no sleep.
  const onClientEof = (channel: ServerChannel, fault: () => void) => {
    channel.on("end", fault);
    channel.resume();
  };

  test("connection dropped (RST) mid-command: ERR_CONNECTION_LOST, closedBy reset", async () => {
    const { t } = await faultServer({
      onExec: ({ channel, socket }) => onClientEof(channel, () => socket.resetAndDestroy()),
    });
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.result.connected, true);
    assert.equal(r.result.error?.code, "ERR_CONNECTION_LOST");
    assert.equal(r.result.closedBy, "reset");
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("connection closed (FIN) mid-command: output so far, ERR_CONNECTION_LOST, closedBy remote", async () => {
    const { t } = await faultServer({
      onExec: ({ channel, socket }) => {
        channel.write("partial\n");
        onClientEof(channel, () => socket.destroy());
      },
    });
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.out, "partial\n");
    assert.equal(r.result.error?.code, "ERR_CONNECTION_LOST");
    assert.equal(r.result.closedBy, "remote");
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("a server that never closes after DISCONNECT is reset after the grace: no TIME_WAIT", async () => {
    const { t } = await faultServer(
      {
        neverClose: true,
        onExec: ({ channel }) => {
          channel.exit(0);
          channel.end();
        },
      },
      { graceMs: 100 },
    );
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.result.error, null);
    assert.equal(r.result.exitCode, 0);
    assert.equal(r.result.closedBy, "reset");
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("a bad banner (SSH-1.5) fails with ERR_PROTOCOL", async () => {
    const t = await rawServer("SSH-1.5-ancient\r\n");
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.connected, 0);
    assert.equal(r.result.error?.code, "ERR_PROTOCOL");
    assert.match(r.result.error!.message, /identification/);
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("not an ssh server (HTTP reply, then close): ERR_CONNECTION_LOST during the handshake", async () => {
    const t = await rawServer("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n", true);
    const r = await runOn(t, "127.0.0.1", "x");
    assert.equal(r.connected, 0);
    assert.equal(r.result.error?.code, "ERR_CONNECTION_LOST");
    assert.match(r.result.error!.message, /handshake/);
    assert.equal(r.result.closedBy, "remote");
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("a server that stalls mid key exchange hits the connect timeout and is reset", async () => {
    const t = await rawServer("SSH-2.0-OpenSSH_9.9 stall\r\n");
    const r = await runOn(t, "127.0.0.1", "x", { connectTimeoutMs: 200 });
    assert.equal(r.connected, 0);
    assert.equal(r.result.error?.code, "ERR_CONNECT_TIMEOUT");
    assert.match(r.result.error!.message, /handshake/);
    assert.equal(r.result.closedBy, "reset");
    assert.equal(clientTimeWaits(r.result), 0);
  });

  test("a server that accepts and says nothing hits the connect timeout", async () => {
    const t = await rawServer(null);
    const r = await runOn(t, "127.0.0.1", "x", { connectTimeoutMs: 200 });
    assert.equal(r.result.error?.code, "ERR_CONNECT_TIMEOUT");
    assert.equal(r.result.closedBy, "reset");
  });

  test("abort during the handshake resets at once with ERR_CANCELLED", async () => {
    const ac = new AbortController();
    const srv = await startRawServer("SSH-2.0-OpenSSH_9.9 stall\r\n", false, () => ac.abort("cancel"));
    cleanups.push(() => srv.close());
    const { clientConfigPath } = writeClientFiles(dir, "127.0.0.1", srv.port, identity, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ");
    const t = createSshTransport({ sshConfigFile: clientConfigPath }, env);
    const r = await runOn(t, "127.0.0.1", "x", { signal: ac.signal, connectTimeoutMs: 0 });
    assert.equal(r.result.error?.code, "ERR_CANCELLED");
    assert.equal(r.connected, 0);
    assert.equal(clientTimeWaits(r.result), 0);
  });
});

describe("ssh handshakes dropped before the banner (sshd MaxStartups)", { skip: linux }, () => {
  let dir: string;
  let identity: string;
  const env: SshEnvironment = { agentSocket: "", systemConfigFile: null, graceMs: 2000 };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "aissh-drop-"));
    env.home = dir;
    identity = join(dir, "id_ed25519");
    writeFileSync(identity, generateEd25519().private, { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("a server that drops the first two handshakes: retried with backoff, done, retries counted", async () => {
    let accepted = 0;
    const srv = await startFaultSshServer({});
    // In front of the real (ssh2) server: the first two connections are closed at once, as sshd
    // does past MaxStartups; the rest are passed through.
    const net = await import("node:net");
    const front = net.createServer((s) => {
      s.on("error", () => {});
      if (++accepted <= 2) return void s.end();
      const back = net.connect({ host: srv.address, port: srv.port });
      back.on("error", () => s.destroy());
      s.pipe(back).pipe(s);
    });
    front.listen({ port: 0, host: "127.0.0.1" });
    await new Promise((r) => front.once("listening", r));
    const port = (front.address() as { port: number }).port;
    try {
      const { clientConfigPath } = writeClientFiles(dir, "127.0.0.1", port, identity, srv.hostKeyLine);
      const t = createSshTransport({ sshConfigFile: clientConfigPath }, env);
      const r = await runOn(t, "127.0.0.1", "x");
      assert.equal(r.result.error, null, r.result.error?.message);
      assert.equal(r.result.exitCode, 0);
      assert.equal(r.result.retries, 2);
      assert.equal(accepted, 3);
    } finally {
      front.close();
      await srv.close();
    }
  });

  test("a server that always drops: ERR_DROPPED_BY_SERVER after the retries, closed by the server each time", async () => {
    const srv = await startRawServer(null, true);
    try {
      const { clientConfigPath } = writeClientFiles(dir, "127.0.0.1", srv.port, identity, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ");
      const t = createSshTransport({ sshConfigFile: clientConfigPath }, env);
      const r = await runOn(t, "127.0.0.1", "x");
      assert.equal(r.result.error?.code, "ERR_DROPPED_BY_SERVER");
      assert.equal(r.result.retries, 4);
      assert.equal(r.result.closedBy, "remote");
      assert.equal(clientTimeWaits(r.result), 0);
    } finally {
      await srv.close();
    }
  });
});
