import { test } from "node:test";
import assert from "node:assert/strict";
import { dedupeHosts, expandHostList, foldHosts, parseHostFile } from "../../src/core/hostlist.js";
import { HostListError } from "../../src/errors.js";

test("ranges expand with pdsh's zero padding, lists and several brackets", () => {
  assert.deepEqual(expandHostList("node[01-03]"), ["node01", "node02", "node03"]);
  assert.deepEqual(expandHostList("10.0.0.[1-3]"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  assert.deepEqual(expandHostList("n[1-2,5],x"), ["n1", "n2", "n5", "x"]);
  assert.deepEqual(expandHostList("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
  assert.deepEqual(expandHostList("n[8-10]"), ["n8", "n9", "n10"]);
});

test("^FILE reads a host file through the reader", () => {
  const hosts = expandHostList("a,^hosts.txt", (p) => (p === "hosts.txt" ? "b\n# c\n\nd[1-2]\n" : ""));
  assert.deepEqual(hosts, ["a", "b", "d1", "d2"]);
});

test("bad expressions are one-line errors naming the problem", () => {
  for (const bad of ["n[1-", "n]1", "n[3-1]", "n[a-b]", "n[1-9999999]", "a b", "a;b"]) {
    assert.throws(() => expandHostList(bad), HostListError, bad);
  }
  assert.throws(() => expandHostList("n[1-1000][1-1000]"), /more than/);
});

test("a host file error names the file and the line", () => {
  assert.throws(() => parseHostFile("ok1\n\n# fine\nbad host\n", "hosts"), /^HostListError: hosts:4: bad line/);
  assert.throws(() => parseHostFile("n[1-\n", "f"), (e: Error) => e.message.startsWith("f:1: "));
  assert.deepEqual(parseHostFile("  a  # comment\r\nb\n", "f"), ["a", "b"]);
});

test("duplicates run once and are reported", () => {
  assert.deepEqual(dedupeHosts(["a", "b", "a", "c", "b"]), { hosts: ["a", "b", "c"], duplicates: ["a", "b"] });
});

test("folding is the inverse of expansion", () => {
  assert.equal(foldHosts(["node01", "node02", "node03", "node05"]), "node[01-03,05]");
  assert.equal(foldHosts(["10.0.0.1", "10.0.0.2", "other"]), "10.0.0.[1-2],other");
  assert.equal(foldHosts(["a"]), "a");
  for (const expr of ["n[1-5,9]", "node[01-10]"]) assert.equal(foldHosts(expandHostList(expr)), expr);
});
