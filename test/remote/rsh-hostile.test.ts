/**
 * The rsh transport against hostile servers (test/helpers/rsh-hostile.ts): what it keeps of a
 * refusal, whom it lets in on the stderr channel, and how long it waits for that channel.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createRshTransport } from "../../src/remote/transports/rsh.js";
import { runOn } from "../helpers/sshd.js";
import { startHostileRsh, type HostileOptions, type HostileServer } from "../helpers/rsh-hostile.js";
import { acceptableStderrPeer } from "../../src/remote/transports/rsh-stderr.js";

const isRoot = process.getuid?.() === 0;
const servers: HostileServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

async function against(opts: HostileOptions, separateStderr = false) {
  const srv = await startHostileRsh(opts);
  servers.push(srv);
  const t = createRshTransport({ port: srv.port, ...(isRoot ? {} : { localPorts: [20000, 29999] as [number, number] }) });
  // A bound, so that a transport that hangs fails the test instead of holding it.
  const ac = new AbortController();
  const guard = setTimeout(() => ac.abort("timeout"), 20_000);
  const r = await runOn(t, "127.0.0.1", "cmd", { separateStderr, signal: ac.signal });
  clearTimeout(guard);
  return { ...r, srv };
}

test("a 700 MB refusal: a one-line message of bounded size, and the client stops reading (no ERR_STRING_TOO_LONG)", async () => {
  const { result, srv } = await against({ refusalBytes: 700 * 1024 * 1024 });
  assert.equal(result.error?.code, "HOST_REFUSED");
  assert.match(result.error!.message, /^rshd refused: x{200}\.\.\. \(\d+ more characters\) \(and \d+ more bytes, not shown\)$/);
  assert.ok(result.error!.message.length < 400);
  assert.equal(result.closedBy, "reset");
  // The kernel's buffers hold a few MB at most; the rest was never sent.
  assert.ok(srv.stats.refusalWritten < 64 * 1024 * 1024, `server wrote ${srv.stats.refusalWritten}`);
});

test("a refusal with NULs, escapes and several lines: its first line, control characters escaped", async () => {
  const { result } = await against({ refusalText: "no\u0000 way \u001b[2J\u0007 in\nsecond line\n" });
  assert.equal(result.error?.code, "HOST_REFUSED");
  assert.equal(result.error!.message, "rshd refused: no way \\x1b[2J\\x07 in (and 11 more bytes, not shown)");
});

test("the ordinary refusal is unchanged", async () => {
  const { result } = await against({ refusalText: "permission denied.\n" });
  assert.equal(result.error!.message, "rshd refused: permission denied.");
});

test("--stderr: a back-connection from another address is reset; the host's own one is taken", async () => {
  const r = await against({ stderr: "other-then-normal", stdout: "out\n", stderrText: "real stderr\n", exitCode: 4 }, true);
  assert.equal(r.result.error, null, r.result.error?.message);
  assert.equal(r.result.exitCode, 4);
  assert.equal(r.out, "out\n");
  assert.equal(r.err, "real stderr\n");
  assert.equal(r.srv.stats.stderrConnections, 2);
});

test("--stderr: only an intruder connects back: nothing of it is read, the exit code still arrives", async () => {
  const r = await against({ stderr: "other-address", stdout: "out\n", stderrText: "never read\n" }, true);
  assert.equal(r.result.exitCode, 0);
  assert.equal(r.err, "");
});

test("--stderr from a port that is not reserved is refused, as rcmd(3) does (root: reserved local ports)", { skip: isRoot ? false : "needs root for reserved ports" }, async () => {
  const r = await against({ stderr: "unreserved-port", stdout: "out\n", stderrText: "from a user's port\n" }, true);
  assert.equal(r.result.exitCode, 0);
  assert.equal(r.out, "out\n");
  assert.equal(r.err, "");
});

test("--stderr channel that never closes: the exit code arrives, the channel is reset (no fd kept)", async () => {
  const r = await against({ stderr: "never-close", stdout: "out\n", stderrText: "err\n", exitCode: 3 }, true);
  assert.equal(r.result.error, null, r.result.error?.message);
  assert.equal(r.result.exitCode, 3);
  assert.equal(r.result.closedBy, "remote");
  assert.equal(r.err, "err\n");
  // Our side reset it: the server's end sees the RST and closes.
  for (let i = 0; i < 100 && r.srv.openStderr() > 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(r.srv.openStderr(), 0);
});

test("acceptableStderrPeer: the host's address (v4-mapped too), a reserved port when required", () => {
  assert.equal(acceptableStderrPeer({ remoteAddress: "10.0.0.1", remotePort: 1023 }, "10.0.0.1", true), true);
  assert.equal(acceptableStderrPeer({ remoteAddress: "::ffff:10.0.0.1", remotePort: 512 }, "10.0.0.1", true), true);
  assert.equal(acceptableStderrPeer({ remoteAddress: "10.0.0.1", remotePort: 1024 }, "10.0.0.1", true), false);
  assert.equal(acceptableStderrPeer({ remoteAddress: "10.0.0.1", remotePort: 511 }, "10.0.0.1", true), false);
  assert.equal(acceptableStderrPeer({ remoteAddress: "10.0.0.2", remotePort: 1000 }, "10.0.0.1", true), false);
  assert.equal(acceptableStderrPeer({ remoteAddress: "10.0.0.1", remotePort: 40000 }, "10.0.0.1", false), true);
});
