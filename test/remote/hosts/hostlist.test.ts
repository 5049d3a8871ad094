import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  dedupeHosts,
  emptySelection,
  expandHostList,
  foldHosts,
  parseExclusion,
  parseHostFile,
  parseHostSelection,
  selectHosts,
} from "../../../src/remote/hosts/hostlist.js";
import { HostListError } from "../../../src/errors.js";

const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
const havePdsh = has("pdsh");
const haveNodeset = has("nodeset");

/** What pdsh really runs on: `pdsh -R exec ... echo %h %u`, one line per host (no folding). */
function pdshTargets(w: string, x?: string): { hosts: string[]; users: Map<string, string> } {
  const args = ["-R", "exec", "-f", "8", "-w", w, ...(x === undefined ? [] : ["-x", x]), "echo", "%h", "%u"];
  const r = spawnSync("pdsh", args, { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.error, undefined);
  const users = new Map<string, string>();
  const hosts: string[] = [];
  for (const line of r.stdout.split("\n").filter(Boolean)) {
    const m = /^(\S+): (\S+) (\S+)$/.exec(line);
    assert.ok(m, `pdsh printed '${line}'`);
    hosts.push(m[2]!);
    users.set(m[2]!, m[3]!);
  }
  return { hosts: hosts.sort(), users };
}

function nodeset(flag: "-e" | "-f", expr: string): string {
  const r = spawnSync("nodeset", [flag, expr], { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

const readFs = (p: string) => readFileSync(p, "utf8");

/** Ours, as the CLI combines -w and -x. */
function ours(w: string, x?: string) {
  const sel = parseHostSelection(w, readFs);
  if (x !== undefined) parseExclusion(x, readFs, sel);
  return { hosts: selectHosts(sel), users: sel.users };
}

test("ranges expand with pdsh's zero padding, lists and several brackets", () => {
  assert.deepEqual(expandHostList("node[01-03]"), ["node01", "node02", "node03"]);
  assert.deepEqual(expandHostList("10.0.0.[1-3]"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  assert.deepEqual(expandHostList("n[1-2,5],x"), ["n1", "n2", "n5", "x"]);
  assert.deepEqual(expandHostList("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
  assert.deepEqual(expandHostList("n[8-10]"), ["n8", "n9", "n10"]);
});

test("numbers above 2^53 expand and fold exactly, and a huge range is refused, not looped on", () => {
  assert.deepEqual(expandHostList("n[20240101123456789012]"), ["n20240101123456789012"]);
  assert.deepEqual(expandHostList("n[99999999999999999998-99999999999999999999]"), ["n99999999999999999998", "n99999999999999999999"]);
  assert.equal(foldHosts(["x12345678901234567891"]), "x12345678901234567891");
  assert.equal(foldHosts(["x12345678901234567891", "x12345678901234567890"]), "x[12345678901234567890-12345678901234567891]");
  assert.throws(() => expandHostList("n[1-99999999999999999999]"), /more than 100000 hosts/);
});

test("an IPv6 literal in brackets is one host, alone, in a list and after user@", () => {
  assert.deepEqual(expandHostList("[::1]"), ["::1"]);
  assert.deepEqual(expandHostList("[::1],127.0.0.1"), ["::1", "127.0.0.1"]);
  assert.deepEqual(expandHostList("[fe80::1%lo],[2001:db8::2]"), ["fe80::1%lo", "2001:db8::2"]);
  assert.deepEqual(expandHostList("2001:db8::[1-2]"), ["2001:db8::1", "2001:db8::2"]);
  const sel = parseHostSelection("alice@[::1]");
  assert.deepEqual(selectHosts(sel), ["::1"]);
  assert.equal(sel.users.get("::1"), "alice");
  assert.throws(() => expandHostList("n[::1]"), /IPv6 address in brackets must be the whole name/);
});

test("pdsh's forms: -host and -/re/ exclude, /re/ filters, anywhere in the list, user@ per host", () => {
  assert.deepEqual(expandHostList("foo[9-11],-foo10"), ["foo9", "foo11"]);
  assert.deepEqual(expandHostList("-foo10,foo[9-11]"), ["foo9", "foo11"]);
  assert.deepEqual(expandHostList("foo[1-12],/foo1.*/"), ["foo1", "foo10", "foo11", "foo12"]);
  assert.deepEqual(expandHostList("foo[1-12],-/foo1.*/"), ["foo2", "foo3", "foo4", "foo5", "foo6", "foo7", "foo8", "foo9"]);
  assert.deepEqual(expandHostList("foo[1-3],/foo1/,/foo2/"), [], "several /re/ must all match, as in pdsh");
  const sel = parseHostSelection("root@a[1-2],b");
  assert.deepEqual(selectHosts(sel), ["a1", "a2", "b"]);
  assert.deepEqual([...sel.users], [["a1", "root"], ["a2", "root"]]);
  assert.throws(() => parseHostSelection("u1@a,u2@a"), /two users/);
});

test("-x excludes hosts, files and /re/ matches; a '-' inside -x is refused", () => {
  const sel = parseHostSelection("foo[1-5]");
  parseExclusion("foo2,/foo[34]/", undefined, sel);
  assert.deepEqual(selectHosts(sel), ["foo1", "foo5"]);
  assert.throws(() => parseExclusion("-foo1", undefined, emptySelection()), /already excludes/);
});

test("forms we do not take are refused with a hint, never read as a literal host", () => {
  const cases: [string, RegExp][] = [
    ["-", /-l -/],
    ["ssh:host1", /-R chooses the transport/],
    ["exec:u@host1", /-R chooses the transport/],
    ["--foo", /one '-' excludes/],
    ["-u@foo", /without user@/],
    ["u@^file", /user@ takes host names/],
    ["/", /empty regular expression/],
    ["/a(/", /bad regular expression/],
    ["@rack1", /node groups are not available/],
    ["^file", /host files are not allowed here/],
  ];
  for (const [text, why] of cases) assert.throws(() => expandHostList(text), (e: Error) => e instanceof HostListError && why.test(e.message), text);
});

test("a group resolver, when given, expands @NAME and -@NAME", () => {
  const resolveGroup = (name: string) => (name === "rack1" ? ["n1", "n2", "n3"] : []);
  assert.deepEqual(expandHostList("@rack1,-n2,x", { resolveGroup }), ["n1", "n3", "x"]);
  assert.deepEqual(expandHostList("n[1-4],-@rack1", { resolveGroup }), ["n4"]);
});

test("^FILE reads a host file through the reader", () => {
  const hosts = expandHostList("a,^hosts.txt", (p) => (p === "hosts.txt" ? "b\n# c\n\nd[1-2]\n" : ""));
  assert.deepEqual(hosts, ["a", "b", "d1", "d2"]);
});

test("host files: 'a,b' and 'a b' lines, #include next to the file, loops and odd lines refused", () => {
  const files: Record<string, string> = {
    "/h/main": "a1\n#include inc\nb[1-2], c1\nd1 d2\n  #include not-an-include\ne1 # trailing\n",
    "/h/inc": "i1\n#include\t/h/deeper\n",
    "/h/deeper": "z1\n",
    "/h/loop": "#include loop\n",
  };
  const read = (p: string) => {
    const t = files[p];
    if (t === undefined) throw new HostListError(`cannot read host file '${p}'`);
    return t;
  };
  assert.deepEqual(parseHostFile(files["/h/main"]!, "/h/main", read), ["a1", "i1", "z1", "b1", "b2", "c1", "d1", "d2", "e1"]);
  assert.deepEqual(expandHostList("^/h/main,-/^[bcd]/,-i1", read), ["a1", "z1", "e1"]);
  assert.throws(() => parseHostFile(files["/h/loop"]!, "/h/loop", read), /includes itself/);
  assert.throws(() => parseHostFile("#includefoo\n", "f", read), /^HostListError: f:1: bad line '#includefoo'/);
  assert.throws(() => parseHostFile("#include x\n", "f"), /f:1: '\^x': host files are not allowed here/);
  for (const line of ["-a1", "/a/", "^x", "u@a", "@g"]) assert.throws(() => parseHostFile(`ok\n${line}\n`, "f", read), /f:2: bad host .* go in -w/, line);
});

test("bad expressions are one-line errors naming the problem", () => {
  for (const bad of ["n[1-", "n]1", "n[3-1]", "n[a-b]", "n[1-9999999]", "a b", "a;b"]) {
    assert.throws(() => expandHostList(bad), HostListError, bad);
  }
  assert.throws(() => expandHostList("n[1-1000][1-1000]"), /more than/);
});

test("a host file error names the file and the line", () => {
  assert.throws(() => parseHostFile("ok1\n\n# fine\nbad;host\n", "hosts"), /^HostListError: hosts:4: bad host/);
  assert.throws(() => parseHostFile("n[1-\n", "f"), (e: Error) => e.message.startsWith("f:1: "));
  assert.deepEqual(parseHostFile("  a  # comment\r\nb\n", "f"), ["a", "b"]);
});

test("duplicates run once and are reported", () => {
  assert.deepEqual(dedupeHosts(["a", "b", "a", "c", "b"]), { hosts: ["a", "b", "c"], duplicates: ["a", "b"] });
});

test("folding is the inverse of expansion, whatever the input order", () => {
  assert.equal(foldHosts(["node01", "node02", "node03", "node05"]), "node[01-03,05]");
  assert.equal(foldHosts(["10.0.0.1", "10.0.0.2", "other"]), "10.0.0.[1-2],other");
  assert.equal(foldHosts(["a"]), "a");
  assert.equal(foldHosts(["foo10", "foo01"]), "foo[01,10]");
  assert.equal(foldHosts(expandHostList("foo[10-12],foo[01-09]")), "foo[01-12]");
  assert.equal(foldHosts(["n3", "n1", "n2", "n10"]), "n[1-3,10]");
  for (const expr of ["n[1-5,9]", "node[01-10]"]) assert.equal(foldHosts(expandHostList(expr)), expr);
});

// The same cases against the peers themselves, live.
const PDSH_CASES: [string, string?][] = [
  ["node[01-10]"],
  ["n[8-10],r[1-2]n[1,3-4],10.0.0.[1-3]"],
  ["foo[9-11],-foo10"],
  ["-foo10,foo[9-11]"],
  ["foo[1-5],-foo[2-3]"],
  ["foo[1-12],/foo1.*/"],
  ["/foo1.*/,foo[1-12]"],
  ["foo[1-12],-/foo1.*/"],
  ["foo[1-12],/1$/"],
  ["foo[1-3],-/foo1/,-/foo2/"],
  ["alice@host[1-2],bob@x,y"],
  ["foo[1-5]", "foo[2-3]"],
  ["foo[1-5]", "/foo[12]/"],
  ["foo[1-5],-foo5", "foo1"],
];

test("expansions match what pdsh runs on: ranges, -host, /re/, -/re/, user@, -x", { skip: !havePdsh && "pdsh is not installed" }, () => {
  for (const [w, x] of PDSH_CASES) {
    const theirs = pdshTargets(w, x);
    const mine = ours(w, x);
    assert.deepEqual([...mine.hosts].sort(), theirs.hosts, `-w '${w}'${x ? ` -x '${x}'` : ""}`);
    for (const [h, u] of mine.users) assert.equal(theirs.users.get(h), u, `${w}: user of ${h}`);
  }
});

test("host files match pdsh's reading: #include beside the file, 'a,b' and 'a b' lines, ^FILE with -", { skip: !havePdsh && "pdsh is not installed" }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), "aih-hostfile-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "main"), "a1\n#include inc\nb[1-2], c1\nd1 d2\n# comment\n  #include inc\ne1  # trailing\n");
  writeFileSync(join(dir, "inc"), "i[1-2]\n#include\tinc2\n");
  writeFileSync(join(dir, "inc2"), "k1\n");
  for (const w of [`^${dir}/main`, `x,^${dir}/main,-b1,-^${dir}/inc2`, `^${dir}/main,/^[ab]/`]) {
    assert.deepEqual([...ours(w).hosts].sort(), pdshTargets(w).hosts, w);
  }
});

test("expansions and folds match ClusterShell's nodeset where nodeset and pdsh agree", { skip: !haveNodeset && "nodeset is not installed" }, () => {
  for (const e of ["node[01-10]", "n[8-10],r[1-2]n[1,3-4]", "n[20240101123456789012]", "n[99999999999999999998-99999999999999999999]"]) {
    assert.deepEqual([...expandHostList(e)].sort(), nodeset("-e", e).split(" ").sort(), e);
  }
  for (const e of ["foo10,foo01", "foo[10-12],foo[01-09]", "x12345678901234567891,x12345678901234567890", "n3,n1,n2,n10", "node[01-03,05]"]) {
    assert.equal(foldHosts(expandHostList(e)), nodeset("-f", e), e);
  }
});
