import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../src/cli/addrinuse/addrinuse.js";
import { captureIO } from "../helpers/io.js";

async function lab(args: string[], opts: { tty?: boolean } = {}) {
  const io = captureIO(opts);
  // --release: the TIME_WAITs these runs leave on loopback are dropped (as root) rather than left 60 s.
  const code = await main(["lab", ...args, ...(args.some((a) => /^\d+$|^all$/.test(a)) ? ["--release"] : [])], io);
  return { code, out: io.out(), err: io.err() };
}

test("a scenario number out of range is one line on stderr and exit 2", async () => {
  for (const bad of ["9", "0", "x", "-1", "1.5"]) {
    const r = await lab([bad]);
    assert.equal(r.code, 2, bad);
    assert.equal(r.out, "");
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
    assert.match(r.err, /^addrinuse: bad scenario/);
  }
});

test("a figure path in a directory that does not exist is refused before the run (exit 2)", async () => {
  const r = await lab(["1", "--svg", "/nonexistent-dir/f.svg"]);
  assert.equal(r.code, 2);
  assert.equal(r.out, "");
  assert.match(r.err, /^addrinuse: cannot write '\/nonexistent-dir\/f.svg': ENOENT/);
});

test("--list names all eight scenarios, as text and as JSON", async () => {
  const text = await lab(["--list"]);
  assert.equal(text.code, 0);
  for (const n of ["simultaneous close", "peer vanishes after our FIN", "abortive close"]) assert.match(text.out, new RegExp(n.replace(/[()]/g, "\\$&")));
  const json = await lab(["--list", "--json"]);
  const doc = JSON.parse(json.out) as { scenarios: { id: number; needs: string | null }[] };
  assert.deepEqual(doc.scenarios.map((s) => s.id), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(doc.scenarios.find((s) => s.id === 3)!.needs, "netns+tc");
  assert.equal((await lab([])).code, 0, "no scenario lists them");
  assert.equal((await lab(["3", "--list"])).code, 2);
});

test("lab 1 prints the timeline and the client's TIME_WAIT with its kernel timer", async () => {
  const r = await lab(["1"]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /lab 1: client closes first \(loopback\) \.\.\. MATCH/);
  assert.match(r.out, /> client close\(\)/);
  assert.match(r.out, /client leftover: TIME_WAIT, held \d+\.\d s in all \(kernel timewait timer/);
  assert.match(r.out, /server leftover: none/);
  assert.equal(r.err, "", "no progress when stderr is not a terminal");
});

test("--json, --svg and --html: one document on stdout, the figure and page written to files", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "addrinuse-lab-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const svg = join(dir, "f.svg");
  const html = join(dir, "f.html");
  const r = await lab(["7", "--json", "--svg", svg, "--html", html]);
  assert.equal(r.code, 0, r.err);
  const doc = JSON.parse(r.out) as { ok: boolean; results: { id: number; status: string; timeline: unknown[]; sides: { client: { observed: string[] } } }[] };
  assert.equal(doc.ok, true);
  assert.equal(doc.results[0]!.status, "match");
  assert.deepEqual(doc.results[0]!.sides.client.observed, ["ESTABLISHED", "CLOSED"]);
  const figure = readFileSync(svg, "utf8");
  assert.match(figure, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(figure, />RST</);
  assert.match(figure, /<\/svg>\n$/);
  const page = readFileSync(html, "utf8");
  assert.match(page, /^<!doctype html>/);
  assert.match(page, /<svg /);
  assert.match(page, /resetAndDestroy/);
});

test("lab all runs every scenario; none mismatches; the summary lists the leftovers", async () => {
  const r = await lab(["all"]);
  assert.equal(r.code, 0, r.out + r.err);
  for (let id = 1; id <= 8; id++) assert.match(r.out, new RegExp(`^lab ${id}: `, "m"));
  assert.doesNotMatch(r.out, /MISMATCH|FAILED/);
  assert.match(r.out, /^1 +client closes first +MATCH +client TIME_WAIT 60\.\d s$/m);
});

test("progress goes to stderr only on a terminal, and stdout stays the same", async () => {
  const r = await lab(["4"], { tty: true });
  assert.equal(r.code, 0);
  assert.match(r.err, /\r\x1b\[Klab 4: /);
  assert.doesNotMatch(r.out, /\x1b/);
});
