import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { captureIO } from "../helpers/io.js";
import { startHostileRsh, writeAll, type HostileRsh, type HostileSession } from "../helpers/hostile-rsh.js";

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : "rsh connects from reserved ports: needs root";

// Each kind of hostile output, one host each, on addresses of their own (127.13.0.x).
const KINDS: Record<string, string> = {
  osc52: "copy \x1b]52;c;cm0gLXJmIH4K\x07 done\n",
  title: "\x1b]0;root@prod\x07title\n",
  cursor: "\x1b[2A\x1b[1;1Hmoved\n",
  hidden: "shown \x1b[8mhidden\x1b[0m\n",
  forge: "harmless\r127.0.0.99: forged line\n",
  c1: "\xc2\x9b2Jcsi8\n", // U+009B (8-bit CSI) in UTF-8
  utf8: Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0xc3, 0x0a]).toString("latin1"),
};
const names = Object.keys(KINDS);
const addr = (i: number) => `127.13.0.${10 + i}`;
const hostOf = new Map(names.map((n, i) => [addr(i), n]));

let hostile: HostileRsh;
before(async () => {
  if (!isRoot) return;
  hostile = await startHostileRsh(
    names.map((_, i) => addr(i)),
    (s: HostileSession) => {
      const kind = hostOf.get(s.host)!;
      s.socket.write(Buffer.from(KINDS[kind]!, "latin1"));
      s.exit(names.indexOf(kind));
    },
  );
});
after(async () => {
  await hostile?.close();
});

const hostArgs = () => ["--port", String(hostile.port), "-w", names.map((_, i) => addr(i)).join(",")];

/** A byte a terminal acts on: C0 other than tab and newline, DEL, C1 as UTF-8. */
const ACTIVE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

test("on a terminal, no host's control bytes reach the screen and every line starts with its true host", { skip }, async () => {
  const io = captureIO({ tty: true, env: { NO_PROGRESS: "1" } });
  const code = await main([...hostArgs(), "true"], io);
  assert.equal(code, 1); // non-zero remote codes
  const out = io.out();
  assert.ok(!ACTIVE.test(out), JSON.stringify(out));
  const lines = out.split("\n").filter(Boolean);
  assert.equal(lines.length, names.length);
  for (const l of lines) {
    const host = l.slice(0, l.indexOf(": "));
    assert.ok(hostOf.has(host), l);
  }
  assert.ok(out.includes("harmless^M127.0.0.99: forged line"));
  assert.ok(out.includes("copy ^[]52;c;cm0gLXJmIH4K^G done"));
  assert.ok(out.includes("bad\\xff\\xfe\\xc3"));
  assert.ok(!ACTIVE.test(io.err()));
});

test("piped, the bytes are kept as they are after our prefix; --raw on a terminal too", { skip }, async () => {
  for (const [tty, extra] of [[false, []], [true, ["--raw"]]] as const) {
    const io = captureIO({ tty, env: { NO_PROGRESS: "1" } });
    await main([...hostArgs(), ...extra, "true"], io);
    const bytes = io.outBytes();
    for (const [i, kind] of names.entries()) {
      const want = Buffer.concat([Buffer.from(`${addr(i)}: `), Buffer.from(KINDS[kind]!, "latin1")]);
      assert.ok(bytes.includes(want), `${kind} (tty ${tty})`);
    }
  }
});

test("--json carries every line exactly: strings, and base64 of the bytes for a host with invalid UTF-8", { skip }, async () => {
  const io = captureIO();
  await main([...hostArgs(), "--json", "true"], io);
  const doc = JSON.parse(io.out());
  assert.equal(doc.results.length, names.length);
  for (const r of doc.results as { host: string; output: string[]; outputBase64?: string[]; exitCode: number }[]) {
    const kind = hostOf.get(r.host)!;
    assert.equal(r.exitCode, names.indexOf(kind));
    const sent = Buffer.from(KINDS[kind]!, "latin1");
    if (kind === "utf8") {
      assert.deepEqual(Buffer.from(r.outputBase64![0]!, "base64"), sent.subarray(0, -1));
    } else {
      assert.equal(r.outputBase64, undefined);
      assert.equal(r.output.join("\n") + "\n", sent.toString("utf8"));
    }
  }
});

test("-b compares the bytes and shows them escaped", { skip }, async () => {
  const io = captureIO({ env: { NO_PROGRESS: "1" } });
  await main([...hostArgs(), "-b", "true"], io);
  assert.ok(!ACTIVE.test(io.out()));
  assert.equal((io.out().match(/^-+$/gm) ?? []).length, names.length * 2);
});

test("--ndjson: one record per host, each exact (base64 beside the host with invalid UTF-8)", { skip }, async () => {
  const io = captureIO();
  await main([...hostArgs(), "--ndjson", "true"], io);
  const lines = io.out().trim().split("\n").map((l) => JSON.parse(l) as { host: string; output: string[]; outputBase64?: string[]; summary?: unknown });
  // One record per host, then the run's summary record.
  assert.ok(lines.at(-1)!.summary);
  const recs = lines.slice(0, -1);
  assert.deepEqual(recs.map((r) => r.host).sort(), names.map((_, i) => addr(i)).sort());
  const bad = recs.find((r) => hostOf.get(r.host) === "utf8")!;
  assert.deepEqual(Buffer.from(bad.outputBase64![0]!, "base64"), Buffer.from(KINDS.utf8!, "latin1").subarray(0, -1));
  for (const r of recs) if (r !== bad) assert.equal(r.outputBase64, undefined);
});
