import { test } from "node:test";
import assert from "node:assert/strict";
import { SinkParser, StatusReader, dirRecord, errorStatus, fileRecord, isSafeName, shellQuote, timeRecord } from "../../../src/remote/rcmd/rcp.js";

test("records are what rcp and scp send: octal mode, decimal size, one name", () => {
  assert.equal(fileRecord(0o100644, 10, "a b"), "C0644 10 a b\n");
  assert.equal(dirRecord(0o40751, "d"), "D0751 0 d\n");
  assert.equal(timeRecord(1700000000.9, 1600000000), "T1700000000 0 1600000000 0\n");
  assert.deepEqual(errorStatus("disk\nfull", true), Buffer.from("\x02disk full\n"));
});

test("the status reader splits \\0, \\1 and \\2 answers across chunk boundaries", () => {
  const r = new StatusReader();
  assert.deepEqual(r.push(Buffer.from("\0\x01rcp: x: No sp")), [{ ok: true }]);
  assert.deepEqual(r.push(Buffer.from("ace left on device\n\0\x02bye\n")), [
    { ok: false, fatal: false, message: "rcp: x: No space left on device" },
    { ok: true },
    { ok: false, fatal: true, message: "bye" },
  ]);
});

test("anything but a status is garbage, kept as text for the error (a missing rcp)", () => {
  const r = new StatusReader();
  const ev = r.push(Buffer.from("sh: 1: rcp: not "));
  assert.deepEqual(ev, [{ garbage: "" }]);
  r.push(Buffer.from("found\n\x1b[31m"));
  assert.equal(r.garbageText(), "sh: 1: rcp: not found\n?[31m");
});

test("the sink parser gives records, the data in pieces, then the file's end", () => {
  const p = new SinkParser();
  const evs = [...p.push(Buffer.from("T1 0 2 0\nC0644 5 f")), ...p.push(Buffer.from("\nhel")), ...p.push(Buffer.from("lo\0D0755 0 d\nE\n"))];
  assert.deepEqual(
    evs.map((e) => (e.kind === "data" ? { kind: "data", text: e.chunk.toString() } : e)),
    [
      { kind: "time", mtime: 1, atime: 2 },
      { kind: "file", mode: 0o644, size: 5, name: "f" },
      { kind: "data", text: "hel" },
      { kind: "data", text: "lo" },
      { kind: "fileEnd", error: null },
      { kind: "dir", mode: 0o755, name: "d" },
      { kind: "end" },
    ],
  );
});

test("the sink parser refuses names with a slash or dot-dot, setuid bits and long lines (CVE-2019-6111's class)", () => {
  for (const bad of ["C0644 1 ../x\n", "C0644 1 a/b\n", "D0755 0 ..\n", "C0644 1 .\n", "C06441 x\n", "X\n", "C0644 -1 a\n"]) {
    const evs = new SinkParser().push(Buffer.from(bad));
    assert.equal(evs.at(-1)?.kind, "violation", bad);
  }
  const setuid = new SinkParser().push(Buffer.from("C4755 0 a\n"));
  assert.deepEqual(setuid[0], { kind: "file", mode: 0o755, size: 0, name: "a" });
  assert.equal(new SinkParser().push(Buffer.alloc(10_000, 0x41)).at(-1)?.kind, "violation");
  assert.equal(isSafeName("ok.txt"), true);
});

test("a zero-length file ends at its status byte; a source read error comes as the file's error", () => {
  const p = new SinkParser();
  const evs = p.push(Buffer.from("C0600 0 empty\n\0C0600 2 b\nxy\x01b: read error\n"));
  assert.deepEqual(
    evs.map((e) => e.kind),
    ["file", "fileEnd", "file", "data", "fileEnd"],
  );
  assert.deepEqual(evs.at(-1), { kind: "fileEnd", error: "b: read error" });
});

test("a file the sink refused is skipped: the next bytes are records again", () => {
  const p = new SinkParser();
  assert.equal(p.push(Buffer.from("C0644 100 big\n"))[0]?.kind, "file");
  p.skipData();
  assert.deepEqual(p.push(Buffer.from("E\n")), [{ kind: "end" }]);
});

test("shell quoting keeps spaces and quotes in one word", () => {
  assert.equal(shellQuote("/tmp/x"), "/tmp/x");
  assert.equal(shellQuote("it's here"), `'it'\\''s here'`);
});
