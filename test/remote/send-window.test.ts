/**
 * How much input the built-in ssh client keeps in flight (src/remote/ssh/send-window.ts): the rule,
 * the cap against ssh2's own server, which credits only at half its window (the cap must give way),
 * and against a real sshd, which credits early (the cap must hold without giving way).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import ssh2 from "ssh2";
import { HOST_RATE, MIN_IN_FLIGHT, capInFlight, inFlightCap, serverSoftware } from "../../src/remote/ssh/send-window.js";
import { stdinInput } from "../../src/remote/copy.js";
import { createSshTransport } from "../../src/remote/transports/ssh.js";
import { generateEd25519, runOn, sshdSkipReason, startFaultSshServer, startSshd, writeClientFiles, type Sshd } from "../helpers/sshd.js";
import { tmpdir } from "node:os";
import { join } from "node:path";

const WINDOW = 2 * 1024 * 1024;

describe("the in-flight rule", () => {
  test("the server's software comes from its identification line, after any lines before it", () => {
    assert.equal(serverSoftware(Buffer.from("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n")), "OpenSSH_9.2p1");
    assert.equal(serverSoftware(Buffer.from("hello there\r\nSSH-2.0-OpenSSH_8.4\r\n")), "OpenSSH_8.4");
    assert.equal(serverSoftware(Buffer.from("SSH-2.0-ssh2js1.17.0\r\n")), "ssh2js1.17.0");
    // Cut before its end: not known, so no cap.
    assert.equal(serverSoftware(Buffer.from("SSH-2.0-OpenSS")), null);
    assert.equal(serverSoftware(Buffer.from("HTTP/1.1 400 Bad Request\r\n")), null);
  });

  test("OpenSSH on a short round trip: the least in flight; longer: enough for HOST_RATE; long: no cap", () => {
    const s = "OpenSSH_9.2p1";
    assert.equal(inFlightCap({ window: WINDOW, rttMs: 0.02, server: s }), MIN_IN_FLIGHT);
    assert.equal(inFlightCap({ window: WINDOW, rttMs: 4, server: s }), Math.ceil(0.004 * HOST_RATE));
    assert.equal(inFlightCap({ window: WINDOW, rttMs: 8, server: s }), null);
    assert.equal(inFlightCap({ window: WINDOW, rttMs: 50, server: s }), null);
    // A window no bigger than the cap: nothing to hide.
    assert.equal(inFlightCap({ window: MIN_IN_FLIGHT, rttMs: 0.02, server: s }), null);
  });

  test("no cap for a server whose credit rule is unknown, or when the round trip was not measured", () => {
    assert.equal(inFlightCap({ window: WINDOW, rttMs: 0.02, server: "ssh2js1.17.0" }), null);
    assert.equal(inFlightCap({ window: WINDOW, rttMs: 0.02, server: null }), null);
    assert.equal(inFlightCap({ window: WINDOW, rttMs: null, server: "OpenSSH_9.2p1" }), null);
    assert.equal(inFlightCap({ window: WINDOW, rttMs: Number.NaN, server: "OpenSSH_9.2p1" }), null);
  });
});

describe("the cap against servers", { skip: process.platform === "linux" ? false : "measures round trips with the kernel (Linux only)" }, () => {
  let dir: string;
  let identity: string;
  const cleanups: (() => Promise<void>)[] = [];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "aissh-window-"));
    identity = join(dir, "id_ed25519");
    writeFileSync(identity, generateEd25519().private, { mode: 0o600 });
  });
  after(async () => {
    for (const c of cleanups) await c();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a server that says OpenSSH but credits only at half its window: the cap gives way and every byte arrives", { timeout: 30_000 }, async () => {
    const size = 3 * 1024 * 1024;
    // Arrival runs: bytes received before each pause of 250 ms or more.
    const runs: number[] = [];
    const srv = await startFaultSshServer({
      ident: "OpenSSH_9.9",
      onExec: ({ channel }) => {
        let got = 0;
        let last = Date.now();
        channel.on("data", (d: Buffer) => {
          if (Date.now() - last >= 250) runs.push(got);
          last = Date.now();
          got += d.length;
          if (got === size) {
            runs.push(got);
            channel.exit(0);
            channel.end();
          }
        });
      },
    });
    cleanups.push(() => srv.close());
    const { clientConfigPath } = writeClientFiles(dir, srv.address, srv.port, identity, srv.hostKeyLine);
    const t = createSshTransport({ sshConfigFile: clientConfigPath }, { home: dir, agentSocket: "", systemConfigFile: null, graceMs: 2000 });
    const r = await runOn(t, "127.0.0.1", "cat", { input: stdinInput(Buffer.alloc(size, 1)) });
    assert.equal(r.result.error, null, r.result.error?.message);
    assert.equal(r.result.exitCode, 0);
    // Held at the cap until the guard gave the window back, then the rest in one go.
    assert.equal(runs[0], MIN_IN_FLIGHT, `arrival runs: ${runs.join(", ")}`);
    assert.equal(runs.at(-1), size);
  });

  const noSshd = sshdSkipReason();
  test("a real sshd credits before the cap runs out: 8 MiB through `cat` with 128 KiB in flight, never given way", { skip: noSshd ?? false, timeout: 30_000 }, async () => {
    const sshd: Sshd = await startSshd();
    cleanups.push(() => sshd.stop());
    const client = new ssh2.Client();
    const sock = net.connect(sshd.port, sshd.address);
    await once(sock, "connect");
    client.connect({ sock, username: "root", privateKey: readFileSync(sshd.clientKey.privatePath), hostVerifier: () => true });
    await once(client, "ready");
    try {
      const ch = await new Promise<ssh2.ClientChannel>((res, rej) => client.exec("wc -c", (e, c) => (e ? rej(e) : res(c))));
      const cap = capInFlight(ch, sock, 128 * 1024);
      let out = "";
      ch.on("data", (d: Buffer) => (out += d.toString()));
      const closed = once(ch, "close");
      const chunk = Buffer.alloc(1024 * 1024, 2);
      for (let i = 0; i < 8; i++) if (!ch.write(chunk)) await once(ch, "drain");
      ch.end();
      await closed;
      assert.equal(out.trim(), String(8 * 1024 * 1024));
      assert.equal(cap.released, false, "sshd stopped crediting at 128 KiB in flight");
    } finally {
      client.end();
      sock.destroy();
    }
  });
});
