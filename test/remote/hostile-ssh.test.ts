/**
 * A hostile ssh host (ssh2's server, test/helpers/sshd.ts) whose command output and stderr carry
 * escape sequences, carriage returns and invalid UTF-8, through multi-rsh -R ssh: escaped on a
 * terminal, kept as bytes on a pipe, exact in --json. No root needed.
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { captureIO } from "../helpers/io.js";
import { generateEd25519, startFaultSshServer, writeClientFiles, type FaultServer } from "../helpers/sshd.js";

const OUT = Buffer.from("\x1b]0;owned\x07a\rb\n\x1b[8mhidden\xff\n", "latin1");
const ERR = Buffer.from("err \x1b]52;c;eA==\x07\n", "latin1");
const ACTIVE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

let srv: FaultServer;
let dir: string;
let config: string;
let identityPath: string;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "aiu-hostile-ssh-"));
  const identity = join(dir, "id_ed25519");
  identityPath = identity;
  writeFileSync(identity, generateEd25519().private, { mode: 0o600 });
  srv = await startFaultSshServer({
    onExec: ({ channel }) => {
      channel.write(OUT);
      channel.stderr.write(ERR);
      channel.exit(3);
      channel.end();
    },
  });
  config = writeClientFiles(dir, srv.address, srv.port, identity, srv.hostKeyLine).clientConfigPath;
});
after(async () => {
  await srv?.close();
  rmSync(dir, { recursive: true, force: true });
});

const args = () => ["-R", "ssh", "-F", config, "-w", "127.0.0.1"];

test("-R ssh on a terminal: the host's escapes, \\r and bad bytes are shown escaped, on stdout and stderr", async () => {
  const io = captureIO({ tty: true, env: { NO_PROGRESS: "1", SSH_AUTH_SOCK: "" } });
  const code = await main([...args(), "--stderr", "x"], io);
  assert.equal(code, 1);
  assert.ok(!ACTIVE.test(io.out()), JSON.stringify(io.out()));
  assert.ok(!ACTIVE.test(io.err()), JSON.stringify(io.err()));
  assert.match(io.out(), /^127\.0\.0\.1: \^\[\]0;owned\^Ga\^Mb\n127\.0\.0\.1: \^\[\[8mhidden\\xff\n$/);
  assert.match(io.err(), /127\.0\.0\.1: err \^\[\]52;c;eA==\^G\n/);
});

test("-R ssh piped: bytes kept after the prefix; --json exact with base64", async () => {
  const piped = captureIO({ env: { NO_PROGRESS: "1", SSH_AUTH_SOCK: "" } });
  await main([...args(), "x"], piped);
  assert.ok(piped.outBytes().includes(Buffer.concat([Buffer.from("127.0.0.1: "), OUT.subarray(0, OUT.indexOf(0x0a) + 1)])));
  const io = captureIO({ env: { SSH_AUTH_SOCK: "" } });
  await main([...args(), "--json", "--stderr", "x"], io);
  const r = JSON.parse(io.out()).results[0];
  assert.equal(r.exitCode, 3);
  assert.deepEqual(Buffer.concat(r.outputBase64.map((b: string) => Buffer.concat([Buffer.from(b, "base64"), Buffer.from("\n")]))), OUT);
  assert.deepEqual(r.stderr, [ERR.subarray(0, -1).toString("utf8")]);
  assert.equal(r.stderrBase64, undefined);
});

test("a host whose sshd drops the first two handshakes before its banner: retried, done, counted in --json and the summary", async () => {
  let accepted = 0;
  const front = net.createServer((s) => {
    s.on("error", () => {});
    if (++accepted <= 2) return void s.end(); // as sshd past MaxStartups: close at once, no banner
    const back = net.connect({ host: srv.address, port: srv.port });
    back.on("error", () => s.destroy());
    s.pipe(back).pipe(s);
  });
  front.listen({ port: 0, host: "127.0.0.1" });
  await once(front, "listening");
  try {
    const port = (front.address() as net.AddressInfo).port;
    const cfg = writeClientFiles(dir, "127.0.0.1", port, identityPath, srv.hostKeyLine).clientConfigPath;
    const io = captureIO({ env: { SSH_AUTH_SOCK: "" } });
    await main(["-R", "ssh", "-F", cfg, "--json", "-w", "127.0.0.1", "x"], io);
    const doc = JSON.parse(io.out());
    assert.equal(doc.results[0].exitCode, 3);
    assert.equal(doc.results[0].retries, 2);
    assert.deepEqual(doc.retries, { attempts: 2, hosts: 1 });
    accepted = 0;
    const text = captureIO({ env: { NO_PROGRESS: "1", SSH_AUTH_SOCK: "" } });
    await main(["-R", "ssh", "-F", cfg, "-w", "127.0.0.1", "x"], text);
    assert.match(text.err(), /retried: 2 connections on 1 host \(dropped by the server before its banner\)/);
  } finally {
    front.close();
  }
});
