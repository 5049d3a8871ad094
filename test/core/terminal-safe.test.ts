import { test } from "node:test";
import assert from "node:assert/strict";
import { escapeForTerminal, escapeTextForTerminal, isTerminalSafe } from "../../src/core/terminal-safe.js";
import { LineSplitter } from "../../src/remote/output/lines.js";
import { ExitMarkerFilter, newMarker } from "../../src/remote/rcmd/exit-marker.js";
import { formatGathered, gatherOutputs } from "../../src/remote/output/gather.js";
import { randomHex } from "../../src/kernel/random.js";

const esc = (s: string | Buffer) => escapeForTerminal(typeof s === "string" ? Buffer.from(s, "utf8") : s);

/** A byte a terminal acts on instead of drawing: C0 but tab/newline, DEL, or an 8-bit C1 in UTF-8. */
function hasActiveByte(text: string): boolean {
  return /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/.test(text);
}

test("every kind of escape sequence a host may send is shown, not obeyed", () => {
  const kinds: [string, string][] = [
    ["OSC 52 clipboard write", "\x1b]52;c;cm0gLXJmIH4K\x07"],
    ["window title", "\x1b]0;owned\x1b\\"],
    ["cursor move", "\x1b[1;1H\x1b[2A\x1b[10C"],
    ["hidden text", "\x1b[8msecret\x1b[0m"],
    ["clear screen", "\x1b[2J\x1bc"],
    ["8-bit CSI (U+009B)", "\u009b31m"],
    ["bidi override", "abc\u202edcba"],
    ["backspace over text", "rm -rf /\b\b\b\b\b\b\b\bls     "],
  ];
  for (const [name, seq] of kinds) {
    const shown = esc(`ok ${seq} ok`);
    assert.ok(!hasActiveByte(shown), `${name}: ${JSON.stringify(shown)}`);
    assert.ok(!/[\u202a-\u202e\u2066-\u2069]/.test(shown), name);
    assert.ok(shown.startsWith("ok ") && shown.endsWith(" ok"), name);
    assert.equal(isTerminalSafe(Buffer.from(seq)), false, name);
  }
  assert.equal(esc("\x1b[8mhidden"), "^[[8mhidden");
  assert.equal(esc("\u009b2J"), "\\u009b2J");
});

test("a carriage return cannot forge another host's line: it is shown as ^M", () => {
  const shown = esc("harmless\r127.0.0.99: forged");
  assert.equal(shown, "harmless^M127.0.0.99: forged");
});

test("invalid UTF-8 is shown byte by byte; valid text, tabs and emoji pass unchanged", () => {
  assert.equal(esc(Buffer.from([0x61, 0xff, 0x62, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xe2, 0x82])), "a\\xffb\\xc3(\\xed\\xa0\\x80\\xe2\\x82");
  assert.equal(esc(Buffer.from([0xc0, 0xaf])), "\\xc0\\xaf"); // overlong "/"
  assert.equal(esc(Buffer.from([0xf4, 0x90, 0x80, 0x80])), "\\xf4\\x90\\x80\\x80"); // above U+10FFFF
  assert.equal(esc("é\x1b€\r日本"), "é^[€^M日本"); // text before and after an escape stays UTF-8
  const text = "tab\there, é, €, 𝄞, 日本語, 🙂";
  assert.equal(esc(text), text);
  assert.equal(isTerminalSafe(Buffer.from(text)), true);
});

test("escaping is linear: 8 MB of control bytes and of text take the same order of time", () => {
  // Not a timing assertion: the output length proves every byte was looked at once.
  const ctl = Buffer.alloc(8 << 20, 0x1b);
  assert.equal(esc(ctl).length, 2 * ctl.length);
  const plain = Buffer.alloc(8 << 20, 0x61);
  assert.equal(esc(plain).length, plain.length);
});

test("an error message from a host is escaped for the summary line", () => {
  assert.equal(escapeTextForTerminal("permission denied\x1b]0;x\x07"), "permission denied^[]0;x^G");
  assert.equal(escapeTextForTerminal("plain"), "plain");
});

test("a line without newline is delivered in pieces of at most the bound, cut between UTF-8 sequences", () => {
  const pieces: [Buffer, boolean][] = [];
  const s = new LineSplitter((l, nl) => pieces.push([Buffer.from(l), nl]), 10);
  s.push(Buffer.from("aaaaaaaa€€€")); // 8 + 9 bytes
  s.push(Buffer.from("b\nshort\n"));
  s.end();
  const joined = Buffer.concat(pieces.filter(([, nl]) => !nl).map(([b]) => b));
  for (const [b] of pieces) assert.ok(b.length <= 10);
  assert.equal(pieces[0]![0].toString(), "aaaaaaaa"); // backed off before the €'s first byte
  assert.equal(joined.toString() + pieces.find(([, nl]) => nl)![0].toString(), "aaaaaaaa€€€b");
  assert.deepEqual(pieces.slice(-1).map(([b, nl]) => [b.toString(), nl]), [["short", true]]);
});

test("50 MB without a newline is split once per chunk: linear, and whole at the end", () => {
  let total = 0;
  let calls = 0;
  const s = new LineSplitter((l) => {
    total += l.length;
    calls++;
  });
  const chunk = Buffer.alloc(64 * 1024, 0x78);
  for (let i = 0; i < 800; i++) s.push(chunk);
  s.end();
  assert.equal(calls, 1);
  assert.equal(total, 800 * chunk.length);
});

function filterAll(marker: string, chunks: Buffer[]): { out: string; code: number | null } {
  const out: Buffer[] = [];
  const f = new ExitMarkerFilter(marker, (b) => out.push(Buffer.from(b)));
  for (const c of chunks) f.push(c);
  f.end();
  return { out: Buffer.concat(out).toString("latin1"), code: f.exitCode };
}

function everySplit(marker: string, stream: string): { out: string; code: number | null }[] {
  const b = Buffer.from(stream, "latin1");
  const res: { out: string; code: number | null }[] = [filterAll(marker, [b])];
  for (let cut = 1; cut < b.length; cut++) res.push(filterAll(marker, [b.subarray(0, cut), b.subarray(cut)]));
  return res;
}

test("a look-alike marker, another run's marker, or the marker without a status changes neither the code nor the output", () => {
  const m = newMarker(randomHex(8));
  const other = newMarker(randomHex(8));
  const forged = [
    `${other.marker}0\n`, // another run's marker
    `${m.head}${"0".repeat(16)}__0\n`, // a guess
    `${m.marker}\n`, // no digits
    `${m.marker}abc\n`, // not a status
    `${m.marker}1234\n`, // more digits than $? has
    `${m.marker}256\n`, // above 255
    `${m.marker}7 trailing\n`,
    `${m.marker.slice(0, -1)}3\n`, // cut short
  ].join("");
  for (const r of everySplit(m.marker, `${forged}${m.marker}42\n`)) {
    assert.equal(r.code, 42);
    assert.equal(r.out, forged);
  }
});

test("the marker followed by 100 MB of digits is output, in linear time, and the true status still counts", () => {
  const m = newMarker(randomHex(8));
  const out: number[] = [0];
  const f = new ExitMarkerFilter(m.marker, (b) => (out[0]! += b.length));
  f.push(Buffer.from(m.marker));
  const digits = Buffer.alloc(1 << 20, 0x37);
  for (let i = 0; i < 100; i++) f.push(digits);
  f.push(Buffer.from(`\n${m.marker}3\n`));
  f.end();
  assert.equal(f.exitCode, 3);
  assert.equal(out[0], m.marker.length + 100 * digits.length + 1);
});

test("-b compares the exact bytes and shows them escaped", () => {
  const a = Buffer.from([0x78, 0xff]);
  const b = Buffer.from([0x78, 0xfe]); // same text once decoded (both U+FFFD), different bytes
  const blocks = gatherOutputs(
    new Map([
      ["n1", [a]],
      ["n2", [b]],
      ["n3", [Buffer.from("\x1b]52;c;eA==\x07")]],
    ]),
    ["n1", "n2", "n3"],
  );
  assert.equal(blocks.length, 3);
  const shown = formatGathered(blocks);
  assert.match(shown, /x\\xff/);
  assert.match(shown, /x\\xfe/);
  assert.ok(!hasActiveByte(shown));
});
