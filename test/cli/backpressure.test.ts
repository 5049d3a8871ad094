import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { startDemoHosts, type DemoHosts } from "../../src/remote/demo/rshd.js";
import { MULTI_RSH, peakRssKb, startCli } from "../helpers/cli-child.js";
import { sshdSkipReason, startSshd } from "../helpers/sshd.js";

let demo: DemoHosts;
// An address of its own (127.0.0.121), so another test's demo hosts cannot collide with it.
before(async () => {
  demo = await startDemoHosts({ count: 1, first: 121 });
});
after(async () => {
  await demo?.close();
});

function rshArgs(): string[] {
  const args = ["--port", String(demo.port)];
  if (!demo.reservedOnly) args.push("--local-ports", "20000-29999");
  return args;
}

const MB = 1024 * 1024;
const SENT = 256 * MB;
const LINE = 1024;
// 1024-byte lines: the host's command, in sh.
const FLOOD = `yes $(head -c ${LINE - 1} /dev/zero | tr '\\0' x) | head -c ${SENT}`;
/** Well above what the process needs (~60-90 MB) and well below the 256 MB it would queue without backpressure. */
const RSS_BOUND_KB = 200 * 1024;

/**
 * The slow reader: reads nothing for `stallMs`, then counts every byte (keeping none). The CLI's peak RSS
 * is sampled while it runs.
 */
async function throughSlowReader(args: string[], stallMs = 2000): Promise<{ bytes: number; code: number | null; peakKb: number; err: string }> {
  const c = startCli(MULTI_RSH, args, { readStdout: false });
  let bytes = 0;
  let peakKb = 0;
  const sampler = setInterval(() => (peakKb = Math.max(peakKb, peakRssKb(c.child.pid!) ?? 0)), 50);
  c.child.stdout!.pause();
  const reading = setTimeout(() => {
    c.child.stdout!.on("data", (b: Buffer) => (bytes += b.length));
    c.child.stdout!.resume();
  }, stallMs);
  const [code] = await c.exited;
  clearInterval(sampler);
  clearTimeout(reading);
  await new Promise((r) => setImmediate(r));
  return { bytes, code, peakKb, err: c.err() };
}

test("rsh: every byte of 256 MB arrives through a reader that stalls, with bounded memory (the host waits)", async () => {
  const host = demo.addresses[0]!;
  const r = await throughSlowReader([...rshArgs(), "-t", "0", "-w", host, FLOOD]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.bytes, SENT + (SENT / LINE) * `${host}: `.length);
  assert.ok(r.peakKb < RSS_BOUND_KB, `peak RSS ${r.peakKb} kB`);
});

test("exec: the same through a local command's pipe, two hosts at once", async () => {
  const r = await throughSlowReader(["-t", "0", "-R", "exec", "-w", "h1,h2", "--", "sh", "-c", FLOOD]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.bytes, 2 * (SENT + (SENT / LINE) * "h1: ".length));
  assert.ok(r.peakKb < RSS_BOUND_KB, `peak RSS ${r.peakKb} kB`);
});

test("ssh: the same through a real sshd (the channel's window stays closed while paused)", { skip: sshdSkipReason() ?? false }, async (t) => {
  const sshd = await startSshd();
  t.after(() => sshd.stop());
  // Every byte arrives. (The memory bound does not tell this transport's gate apart here: ssh2's own
  // decryption is slower than the reader, so not much piles up in the stall either way.)
  const r = await throughSlowReader(["-t", "0", "-R", "ssh", "-F", sshd.clientConfigPath, "-w", sshd.address, FLOOD]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.bytes, SENT + (SENT / LINE) * `${sshd.address}: `.length);
  assert.ok(r.peakKb < RSS_BOUND_KB, `peak RSS ${r.peakKb} kB`);
});

test("--json keeps at most 128 MiB of a host's output, says how much it dropped, and still gives every host its result", async () => {
  const c = startCli(MULTI_RSH, ["--json", "-t", "0", "-R", "exec", "-w", "big,small", "--", "env", "H=%h", "sh", "-c",
    `if [ "$H" = big ]; then yes $(head -c 1023 /dev/zero | tr '\\0' x) | head -c ${136 * MB}; else echo small; fi`]);
  const [code] = await c.exited;
  assert.equal(code, 0, c.err());
  const doc = JSON.parse(c.out());
  const [big, small] = doc.results;
  assert.equal(big.state, "done");
  assert.deepEqual(small.output, ["small"]);
  const kept = big.output.length * LINE;
  assert.ok(kept <= 128 * MB && kept > 127 * MB, `kept ${kept}`);
  assert.equal(big.outputDroppedBytes + kept, 136 * MB);
  assert.deepEqual(doc.outputDropped, { hosts: 1, bytes: big.outputDroppedBytes });
});
