import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  checkHostKey,
  fingerprint,
  formatKnownHostsLine,
  knownHostsName,
  knownKeyTypes,
  KnownHostsIndex,
  matchHostPatterns,
  matchPattern,
  parseKnownHosts,
} from "../../src/remote/ssh/known-hosts.js";

/** An SSH public key blob: string type, then some bytes (RFC 4253 §6.6). */
function blob(type: string, fill: number): Buffer {
  const t = Buffer.from(type, "latin1");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(t.length);
  return Buffer.concat([len, t, Buffer.alloc(32, fill)]);
}
const ED_A = blob("ssh-ed25519", 1);
const ED_B = blob("ssh-ed25519", 2);
const EC_A = blob("ecdsa-sha2-nistp256", 3);
const line = (names: string, key: Buffer, marker = "") =>
  `${marker ? `${marker} ` : ""}${names} ${key.subarray(4, 4 + key.readUInt32BE(0)).toString()} ${key.toString("base64")} comment`;

test("knownHostsName brackets non-22 ports, as OpenSSH files them", () => {
  assert.equal(knownHostsName("10.0.0.1", 22), "10.0.0.1");
  assert.equal(knownHostsName("10.0.0.1", 2222), "[10.0.0.1]:2222");
  assert.equal(knownHostsName("::1", 2222), "[::1]:2222");
});

test("patterns: * and ?, case-insensitive, negation vetoes", () => {
  assert.ok(matchPattern("node07.example", "node??.example"));
  assert.ok(matchPattern("NODE07", "node*"));
  assert.ok(!matchPattern("node7", "node??"));
  assert.ok(matchPattern("[10.0.0.1]:2222", "[10.0.0.*]:2222"));
  assert.ok(matchHostPatterns("web1", ["web*", "db*"]));
  assert.ok(!matchHostPatterns("web1", ["web*", "!web1"]));
  assert.ok(!matchHostPatterns("web1", ["!web2"]), "a negation alone matches nothing");
});

test("parse skips comments, blanks, bad base64 and unknown markers; keeps line numbers", () => {
  const text = ["# comment", "", line("a,b", ED_A), "bad line", "@weird x ssh-ed25519 AAAA", line("c", EC_A, "@revoked"), "h ssh-ed25519 !!!"].join("\n");
  const e = parseKnownHosts(text, "kh");
  assert.equal(e.length, 2);
  assert.deepEqual(e[0]!.patterns, ["a", "b"]);
  assert.equal(e[0]!.line, 3);
  assert.equal(e[1]!.marker, "revoked");
  assert.equal(e[1]!.line, 6);
});

test("match, changed (same type, other key), unknown (no key of that type)", () => {
  const e = parseKnownHosts([line("[10.0.0.1]:2222", ED_A), line("10.0.0.2", EC_A)].join("\n"));
  assert.equal(checkHostKey(e, "[10.0.0.1]:2222", ED_A).kind, "match");
  assert.equal(checkHostKey(e, "[10.0.0.1]:2222", ED_B).kind, "changed");
  assert.equal(checkHostKey(e, "10.0.0.1", ED_A).kind, "unknown", "port 22 is another name");
  const v = checkHostKey(e, "10.0.0.2", ED_A);
  assert.deepEqual(v, { kind: "unknown", otherTypes: ["ecdsa-sha2-nistp256"] });
});

test("a revoked key is refused for any host name", () => {
  const e = parseKnownHosts([line("*", ED_A), line("nothing-matches", ED_A, "@revoked")].join("\n"));
  assert.equal(checkHostKey(e, "10.0.0.1", ED_A).kind, "revoked");
});

test("hashed names match by HMAC-SHA1(salt, name), as ssh-keygen -H writes them", () => {
  const salt = Buffer.alloc(20, 7);
  const hash = createHmac("sha1", salt).update("[10.0.0.1]:2222").digest("base64");
  const e = parseKnownHosts(line(`|1|${salt.toString("base64")}|${hash}`, ED_A));
  assert.equal(e[0]!.hashed !== null, true);
  assert.equal(checkHostKey(e, "[10.0.0.1]:2222", ED_A).kind, "match");
  assert.equal(checkHostKey(e, "10.0.0.1", ED_A).kind, "unknown");
});

test("formatKnownHostsLine round-trips, hashed or not", () => {
  for (const hash of [false, true]) {
    const text = formatKnownHostsLine("[127.0.0.1]:2022", ED_A, hash);
    assert.equal(text.startsWith("|1|"), hash);
    const e = parseKnownHosts(text);
    assert.equal(checkHostKey(e, "[127.0.0.1]:2022", ED_A).kind, "match");
  }
});

test("knownKeyTypes lists the types filed for a host, once each, in file order", () => {
  const e = parseKnownHosts([line("h", EC_A), line("h", ED_A), line("h", ED_B), line("other", blob("ssh-rsa", 9))].join("\n"));
  assert.deepEqual(knownKeyTypes(e, "h"), ["ecdsa-sha2-nistp256", "ssh-ed25519"]);
});

test("fingerprint is SHA256 in unpadded base64, like ssh-keygen -l", () => {
  assert.match(fingerprint(ED_A), /^SHA256:[A-Za-z0-9+/]{43}$/);
});

test("KnownHostsIndex.forHost decides as the whole file does: plain, wildcard, negated, hashed, revoked, any case", () => {
  const salt = Buffer.alloc(20, 5);
  const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("hashed.example").digest("base64")}`;
  const text = [
    line("a.example,A2.example", ED_A),
    line("*.wild", ED_B),
    line("*.neg,!bad.neg", ED_A),
    line(hashed, EC_A),
    line("a.example", EC_A),
    line("gone", ED_B, "@revoked"),
    line("b.example", ED_B),
    line("*", ED_B, "@cert-authority"),
  ].join("\n");
  const all = parseKnownHosts(text);
  const index = new KnownHostsIndex(all);
  const names = ["a.example", "A.EXAMPLE", "a2.example", "x.wild", "ok.neg", "bad.neg", "hashed.example", "b.example", "nobody"];
  for (const name of names) {
    const some = index.forHost(name);
    assert.ok(some.length < all.length, `${name}: a subset`);
    assert.deepEqual(knownKeyTypes(some, name), knownKeyTypes(all, name), name);
    for (const key of [ED_A, ED_B, EC_A]) assert.deepEqual(checkHostKey(some, name, key), checkHostKey(all, name, key), `${name}`);
  }
  // A line added later (accept-new) is found for its host.
  index.add(parseKnownHosts(line("nobody", ED_A)));
  assert.equal(checkHostKey(index.forHost("nobody"), "nobody", ED_A).kind, "match");
});
