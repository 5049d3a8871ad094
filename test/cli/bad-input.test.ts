/** Hostile or mistaken input reaches the user as one bounded line and an exit code, never a crash. */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { captureIO } from "../helpers/io.js";
import { startHostileRsh, type HostileServer } from "../helpers/rsh-hostile.js";
import { MULTI_RSH, startCli } from "../helpers/cli-child.js";

const isRoot = process.getuid?.() === 0;
const dir = mkdtempSync(join(tmpdir(), "aibad-"));
const servers: HostileServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function run(args: string[]) {
  const io = captureIO();
  const code = await main(args, io);
  return { code, out: io.out(), err: io.err() };
}

test("-l /dev/zero: exit 2, one line, no crash (it used to be read whole: std::bad_alloc)", async () => {
  const c = startCli(MULTI_RSH, ["-R", "exec", "-l", "/dev/zero", "--", "sh", "-c", "true"]);
  const [code] = await c.exited;
  assert.equal(code, 2);
  assert.equal(c.err(), "multi-rsh: host file '/dev/zero' is larger than 64 MiB: not a host list\n");
});

test("-l of a file that is not a host list: file:line and the column, not the line (NULs, secrets)", async () => {
  const file = join(dir, "shadow");
  writeFileSync(file, "root:$6$s3cr3tSALT$hash\u0000\u001b[2J:19000:0:99999:7:::\n");
  const r = await run(["-R", "exec", "-l", file, "--", "sh", "-c", "true"]);
  assert.equal(r.code, 2);
  assert.equal(r.err, `multi-rsh: ${file}:1: bad host: unexpected character '$' at column 6 (the line is not shown)\n`);
  const nul = join(dir, "nul");
  writeFileSync(nul, "ok-host\nbad\u0000host\n");
  const n = await run(["-R", "exec", "-l", nul, "--", "sh", "-c", "true"]);
  assert.equal(n.code, 2);
  assert.equal(n.err, `multi-rsh: ${nul}:2: bad host: unexpected character '\\x00' at column 4 (the line is not shown)\n`);
});

test("-R ssh -F with 'Port abc' in any block: exit 2 before the run (it was the same failure for every host)", async () => {
  const cfg = join(dir, "ssh_config");
  writeFileSync(cfg, "Host good\n  Port 2222\nHost web*\n  Port abc\n");
  const r = await run(["--json", "-R", "ssh", "-F", cfg, "-w", "web1,web2", "true"]);
  assert.equal(r.code, 2);
  assert.equal(r.out, "");
  assert.equal(r.err, "multi-rsh: ssh config: Port 'abc' is not a port number\n");
});

test("a 50 MB rshd refusal through the CLI: every host's result, the message one bounded line", async () => {
  const srv = await startHostileRsh({ refusalBytes: 50 * 1024 * 1024 });
  servers.push(srv);
  const args = ["--port", String(srv.port), ...(isRoot ? [] : ["--local-ports", "20000-29999"])];
  const r = await run([...args, "-w", "127.0.0.1", "true"]);
  assert.equal(r.code, 1);
  const line = r.err.split("\n").find((l) => l.includes("HOST_REFUSED"));
  assert.ok(line, r.err.slice(0, 500));
  assert.ok(line.length < 500, `${line.length} characters`);
  assert.ok(r.err.length < 2000);
  assert.match(r.err, /1 host in [\d.]+ s: 1 failed/);
});
