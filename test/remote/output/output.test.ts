import { test } from "node:test";
import assert from "node:assert/strict";
import { LineSplitter } from "../../../src/remote/output/lines.js";
import { ExitMarkerFilter, newMarker, wrapCommand } from "../../../src/remote/rcmd/exit-marker.js";
import { randomHex } from "../../../src/kernel/random.js";
import { formatGathered, gatherOutputs } from "../../../src/remote/output/gather.js";
import { runExitCode } from "../../../src/remote/output/exit-policy.js";

test("lines are whole however the bytes arrive; a last line without newline is kept", () => {
  const lines: [string, boolean][] = [];
  const s = new LineSplitter((l, nl) => lines.push([l.toString(), nl]));
  const long = "x".repeat(200_000);
  s.push(Buffer.from("ab"));
  s.push(Buffer.from("c\nde"));
  s.push(Buffer.from(`${long}\n`));
  const euro = Buffer.from("€\n");
  s.push(euro.subarray(0, 1));
  s.push(euro.subarray(1));
  s.push(Buffer.from("tail"));
  s.end();
  assert.deepEqual(lines, [["abc", true], [`de${long}`, true], ["€", true], ["tail", false]]);
});

test("the exit marker is cut out wherever the chunks split it, and the code read", () => {
  const m = newMarker(randomHex(8));
  const stream = Buffer.from(`hello\nno newline${m.marker}42\n`);
  for (let cut = 1; cut < stream.length; cut += 3) {
    const out: Buffer[] = [];
    const f = new ExitMarkerFilter(m.marker, (b) => out.push(b));
    f.push(stream.subarray(0, cut));
    f.push(stream.subarray(cut));
    f.end();
    assert.equal(Buffer.concat(out).toString(), "hello\nno newline", `cut at ${cut}`);
    assert.equal(f.exitCode, 42);
  }
});

test("output that only looks like the marker's start is passed through; no marker means no code", () => {
  const m = newMarker(randomHex(8));
  const out: Buffer[] = [];
  const f = new ExitMarkerFilter(m.marker, (b) => out.push(b));
  f.push(Buffer.from(`x${m.marker.slice(0, 10)}`));
  f.end();
  assert.equal(Buffer.concat(out).toString(), `x${m.marker.slice(0, 10)}`);
  assert.equal(f.exitCode, null);
});

test("the wrapped command never contains the joined marker and reads /dev/null", () => {
  const m = newMarker(randomHex(8));
  const w = wrapCommand("cat # comment", m);
  assert.ok(!w.includes(m.marker));
  assert.match(w, /<\/dev\/null/);
});

test("-b folds hosts with identical output, largest group first", () => {
  const blocks = gatherOutputs(
    new Map([
      ["n1", [Buffer.from("same")]],
      ["n2", [Buffer.from("same")]],
      ["n3", [Buffer.from("odd")]],
      ["n4", [Buffer.from("same")]],
    ]),
    ["n1", "n2", "n3", "n4"],
  );
  assert.deepEqual(blocks.map((b) => b.folded), ["n[1-2,4]", "n3"]);
  assert.match(formatGathered(blocks), /n\[1-2,4\] \(3\)\n-+\nsame\n/);
});

test("exit policy: 0 all ok, 1 any failure or non-zero, -S largest code, 130 interrupted", () => {
  const ok = { state: "done", exitCode: 0 };
  assert.equal(runExitCode([ok, ok], { largestRemote: false, interrupted: false }), 0);
  assert.equal(runExitCode([ok, { state: "done", exitCode: 3 }], { largestRemote: false, interrupted: false }), 1);
  assert.equal(runExitCode([ok, { state: "failed", exitCode: null }], { largestRemote: false, interrupted: false }), 1);
  assert.equal(runExitCode([{ state: "done", exitCode: 3 }, { state: "done", exitCode: 7 }], { largestRemote: true, interrupted: false }), 7);
  assert.equal(runExitCode([ok, { state: "timedout", exitCode: null }], { largestRemote: true, interrupted: false }), 1);
  assert.equal(runExitCode([ok], { largestRemote: false, interrupted: true }), 130);
});

test("output after the status line (a background job's) is passed on, not dropped", () => {
  const m = newMarker(randomHex(8));
  const out: Buffer[] = [];
  const f = new ExitMarkerFilter(m.marker, (b) => out.push(b));
  f.push(Buffer.from(`a\n${m.marker}0\nlate`));
  f.push(Buffer.from(" more\n"));
  f.end();
  assert.equal(f.exitCode, 0);
  assert.equal(Buffer.concat(out).toString(), "a\nlate more\n");
});

test("the wrapper's pid line is cut from the output and its pid kept, wherever it comes; the exit status still found", () => {
  const m = newMarker(randomHex(8));
  const run = (chunks: string[], cut = false) => {
    const out: Buffer[] = [];
    const f = new ExitMarkerFilter(m.marker, (b) => out.push(b));
    for (const c of chunks) f.push(Buffer.from(c, "latin1"));
    f.end(cut);
    return { out: Buffer.concat(out).toString("latin1"), pid: f.pid, exitCode: f.exitCode };
  };
  // Split anywhere, even inside the marker; and after a login shell's own lines.
  for (const before of ["", "motd line\nflood flood\n"]) {
    const whole = `${before}${m.marker}pid4321\nhello\n${m.marker}3\n`;
    for (let i = 0; i <= whole.length; i++) {
      assert.deepEqual(run([whole.slice(0, i), whole.slice(i)]), { out: `${before}hello\n`, pid: 4321, exitCode: 3 }, `split at ${i}`);
    }
  }
  // Not a pid line: passed on as output or read as the status, never taken as a pid.
  assert.deepEqual(run([`${m.marker}pid12x\n`]), { out: `${m.marker}pid12x\n`, pid: null, exitCode: null });
  assert.deepEqual(run([`${m.marker}0\n`]), { out: "", pid: null, exitCode: 0 });
  // A stream cut inside the wrapper's own marker or pid line (a dripping host timed out) shows none of it.
  assert.deepEqual(run([`x${m.marker.slice(0, 5)}`], true), { out: "x", pid: null, exitCode: null });
  assert.deepEqual(run([`${m.marker}pid12`], true), { out: "", pid: null, exitCode: null });
  assert.deepEqual(run(["ends with __"], true), { out: "ends with __", pid: null, exitCode: null });
  // Ended by itself: a look-alike tail is the command's, and passes.
  assert.deepEqual(run([`x${m.marker.slice(0, 5)}`]), { out: `x${m.marker.slice(0, 5)}`, pid: null, exitCode: null });
});
