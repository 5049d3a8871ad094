/**
 * multi-rsh over the testbed's real daemons (Debian in.rshd under openbsd-inetd, OpenSSH sshd), one
 * suite run for every transport that exists, the same cases for each: rsh (native rcmd), ssh (the
 * built-in client), openssh (the system ssh) and exec (a local command template, here the system ssh
 * with the testbed's ssh_config: `-R exec -- ssh -F CFG %h CMD`). The testbed is brought up once
 * for the whole file.
 *
 * Every transport supports --stderr (rsh's second channel, ssh's extended data, the child's stderr
 * for openssh and exec), so that case runs for all four.
 *
 * The kernel is the judge of who closed first. rsh and ssh wait for the remote's FIN, so this machine
 * keeps no TIME_WAIT towards the testbed, whatever a case did. The system ssh closes first by
 * itself, so openssh and exec (an ssh template) go through the relay (src/remote/ssh/relay.ts): the
 * TCP connection is ours, and the same holds for them. Without netcat-openbsd there is no relay:
 * openssh then reads the close order from the kernel table and says so per host (closedBy "local"),
 * which the test checks against the table; exec has no connection of its own (closedBy null, the
 * ledger claims nothing), and the TIME_WAIT its ssh leaves is only reported.
 *
 * ADDRINUSE_TESTBED_PREFIX / ADDRINUSE_TESTBED_NET move the testbed (default aitbm, 10.248), so that
 * two people working in one tree can run it at once.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { expandHostList } from "../../src/remote/hosts/hostlist.js";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import type { TcpSocket } from "../../src/kernel/parse.js";
import { readTcpSockets } from "../../src/kernel/read.js";
import { findShuttle } from "../../src/remote/ssh/relay.js";
import { captureIO } from "../helpers/io.js";
import { assertRouteOverBridge, down, missingRequirement, up, type Testbed } from "../../testbed/testbed.js";

const PREFIX = process.env.ADDRINUSE_TESTBED_PREFIX ?? "aitbm";
const NET = process.env.ADDRINUSE_TESTBED_NET ?? "10.248";
const HOSTS = 3;
/** -t for every run: bounds a run that goes wrong; no case comes near it. */
const TIMEOUT_S = "30";
/** Longer than one read of the kernel's pipe or socket buffer (64 KiB), so a line spans many chunks. */
const LONG = 200_000;

const TRANSPORTS = ["rsh", "ssh", "openssh", "exec"] as const;
type Transport = (typeof TRANSPORTS)[number];
/** The transports whose TCP connection is ours: they wait for the remote's FIN. */
const RELAYED = findShuttle() !== null;
const remoteFirst = (t: Transport) => t === "rsh" || t === "ssh" || RELAYED;

const needs = missingRequirement();
let tb: Testbed | null = null;

before(async () => {
  if (needs) return;
  tb = await up({ hosts: HOSTS, prefix: PREFIX, net: NET });
  assertRouteOverBridge(tb.hosts.map((h) => h.address), tb.bridge);
});

after(async () => {
  if (!needs) await down({ prefix: PREFIX });
});

interface Result {
  host: string;
  state: string;
  exitCode: number | null;
  error: { code: string; message: string } | null;
  closedBy: "remote" | "local" | "reset" | null;
  localPort: number | null;
  output: string[];
  stderr?: string[];
}
interface Doc {
  results: Result[];
  counts: Record<string, number>;
  ledger: { connections: number; remoteClosed: number; localClosed: number; reset: number; localTimeWait: number };
  exitCode: number;
}

/** The argument vector for one run: options first, then (exec) the template, then the command. */
function argv(transport: Transport, options: string[], command: string): string[] {
  const tbed = tb!;
  const hosts = ["-w", tbed.hosts.map((h) => h.address).join(","), "-t", TIMEOUT_S];
  if (transport === "exec") return ["-R", "exec", ...hosts, ...options, "--", "ssh", "-F", tbed.files.sshConfig, "%h", command];
  const config = transport === "rsh" ? [] : ["-F", tbed.files.sshConfig];
  return ["-R", transport, ...config, ...hosts, ...options, command];
}

/** Runs of each transport so far: the most TIME_WAIT its ssh can leave is one per host and run. */
const runs: Record<Transport, number> = { rsh: 0, ssh: 0, openssh: 0, exec: 0 };

async function multi(transport: Transport, options: string[], command: string): Promise<{ code: number; out: string; err: string }> {
  runs[transport]++;
  const io = captureIO();
  const code = await main(argv(transport, options, command), io);
  return { code, out: io.out(), err: io.err() };
}

async function json(transport: Transport, options: string[], command: string): Promise<{ code: number; doc: Doc; err: string }> {
  const r = await multi(transport, ["--json", ...options], command);
  return { code: r.code, doc: JSON.parse(r.out) as Doc, err: r.err };
}

/** "ADDR: text" lines grouped by host; a line that names no testbed host fails the test. */
function byHost(text: string): Map<string, string[]> {
  const addrs = new Set(tb!.hosts.map((h) => h.address));
  const out = new Map<string, string[]>();
  assert.ok(text === "" || text.endsWith("\n"), "the output ends with a newline");
  for (const line of text.split("\n").slice(0, -1)) {
    const i = line.indexOf(": ");
    const host = i < 0 ? "" : line.slice(0, i);
    assert.ok(addrs.has(host), `a line without its host: ${JSON.stringify(line.slice(0, 80))}`);
    out.set(host, [...(out.get(host) ?? []), line.slice(i + 2)]);
  }
  return out;
}

/** TIME_WAIT sockets of this machine towards a testbed host, as "localPort remoteAddress remotePort". */
function timeWaitTowardsTestbed(rows: readonly TcpSocket[] = readTcpSockets()): Set<string> {
  const addrs = new Set(tb!.hosts.map((h) => h.address));
  return new Set(rows.filter((s) => s.state === "TIME_WAIT" && addrs.has(s.remoteAddress)).map((s) => `${s.localPort} ${s.remoteAddress} ${s.remotePort}`));
}

for (const transport of TRANSPORTS) {
  describe(`multi-rsh -R ${transport} over the testbed`, { skip: needs ?? false }, () => {
    // Every TIME_WAIT towards the testbed that predates this transport's cases (an earlier
    // transport's), so that what its cases leave can be told apart.
    let before: Set<string> = new Set();
    test("starts from a testbed that answers", async () => {
      before = timeWaitTowardsTestbed();
      const r = await multi(transport, [], "hostname");
      assert.equal(r.code, 0, r.err);
    });

    test("every output line carries its host; a long line arrives whole; a last line without a newline is printed", async () => {
      const cmd = `hostname; head -c ${LONG} /dev/zero | tr '\\0' x; echo; printf 'no newline on %s' "$(hostname)"`;
      const r = await multi(transport, [], cmd);
      assert.equal(r.code, 0, r.err);
      const out = byHost(r.out);
      for (const h of tb!.hosts) assert.deepEqual(out.get(h.address), [h.name, "x".repeat(LONG), `no newline on ${h.name}`], h.name);
    });

    test("-N prints the lines without the host", async () => {
      const r = await multi(transport, ["-N"], "hostname");
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(r.out.split("\n").sort(), ["", ...tb!.hosts.map((h) => h.name)].sort());
    });

    test("each host's exit code is its own; the run exits 1, and with -S the largest code", async () => {
      // Host PREFIX-hN exits N.
      const cmd = 'n=$(hostname); exit "${n##*-h}"';
      const r = await json(transport, [], cmd);
      assert.equal(r.code, 1, r.err);
      for (const h of tb!.hosts) {
        const res = r.doc.results.find((x) => x.host === h.address);
        assert.equal(res?.state, "done", JSON.stringify(res?.error));
        assert.equal(res?.exitCode, h.index, h.name);
      }
      const s = await multi(transport, ["-S"], cmd);
      assert.equal(s.code, HOSTS, s.err);
    });

    test("-b gathers identical outputs under their folded host list", async () => {
      const odd = tb!.hosts[HOSTS - 1]!;
      const r = await multi(transport, ["-b"], `echo same; [ "$(hostname)" = ${odd.name} ] && echo odd; true`);
      assert.equal(r.code, 0, r.err);
      const m = /^(-+)\n(.+) \((\d+)\)\n-+\nsame\n(-+)\n(.+) \((\d+)\)\n-+\nsame\nodd\n$/.exec(r.out);
      assert.ok(m, r.out);
      assert.deepEqual(expandHostList(m[2]!).sort(), tb!.hosts.filter((h) => h !== odd).map((h) => h.address).sort());
      assert.equal(m[3], String(HOSTS - 1));
      assert.deepEqual(expandHostList(m[5]!), [odd.address]);
      assert.equal(m[6], "1");
    });

    test("stdout and stderr arrive merged, and apart with --stderr", async () => {
      const cmd = "echo out; echo err >&2";
      const merged = await json(transport, [], cmd);
      assert.equal(merged.code, 0, merged.err);
      for (const x of merged.doc.results) {
        assert.deepEqual([...x.output].sort(), ["err", "out"], x.host);
        assert.equal(x.stderr, undefined);
      }
      const apart = await json(transport, ["--stderr"], cmd);
      assert.equal(apart.code, 0, apart.err);
      for (const x of apart.doc.results) {
        assert.deepEqual(x.output, ["out"], x.host);
        assert.deepEqual(x.stderr, ["err"], x.host);
      }
      // In text form the remote stderr goes to our stderr, host-prefixed like stdout.
      const text = await multi(transport, ["--stderr"], cmd);
      assert.equal(text.code, 0, text.err);
      for (const h of tb!.hosts) {
        assert.deepEqual(byHost(text.out).get(h.address), ["out"]);
        assert.ok(text.err.split("\n").includes(`${h.address}: err`), text.err);
      }
    });

    test("a command reading stdin gets end-of-file at once", async () => {
      // cat returns at EOF; a read after it fails with 1. A stdin left open would run into -t.
      const r = await json(transport, [], 'cat; read line; echo "stdin closed: $?"');
      assert.equal(r.code, 0, r.err);
      for (const x of r.doc.results) {
        assert.equal(x.state, "done", JSON.stringify(x.error));
        assert.deepEqual(x.output, ["stdin closed: 1"], x.host);
      }
    });

    test("--json has exactly one result per host, and its ledger agrees with the kernel table", async (t) => {
      const r = await json(transport, [], "hostname");
      const rows = readTcpSockets();
      assert.equal(r.code, 0, r.err);
      const doc = r.doc;
      assert.equal(doc.results.length, HOSTS);
      assert.deepEqual(doc.results.map((x) => x.host).sort(), tb!.hosts.map((h) => h.address).sort());
      assert.deepEqual(doc.counts.done, HOSTS);
      for (const h of tb!.hosts) assert.deepEqual(doc.results.find((x) => x.host === h.address)?.output, [h.name]);
      t.diagnostic(`-R ${transport}: ledger ${JSON.stringify(doc.ledger)}`);

      const port = transport === "rsh" ? 514 : 22;
      const key = (x: Result) => `${x.localPort} ${x.host} ${port}`;
      if (transport === "exec" && !RELAYED) {
        // The engine runs a local command: no connection of its own, so no claim either way.
        for (const x of doc.results) assert.deepEqual([x.closedBy, x.localPort], [null, null], x.host);
        assert.deepEqual([doc.ledger.connections, doc.ledger.localTimeWait], [0, 0]);
        return;
      }
      for (const x of doc.results) assert.ok(x.localPort !== null && x.localPort > 0, `${x.host} reports its local port`);
      const tw = timeWaitTowardsTestbed(rows);
      const ourTw = doc.results.filter((x) => tw.has(key(x)));
      if (remoteFirst(transport)) {
        for (const x of doc.results) assert.equal(x.closedBy, "remote", x.host);
        assert.deepEqual(ourTw, []);
        assert.equal(doc.ledger.remoteClosed, HOSTS);
        assert.equal(doc.ledger.localTimeWait, 0);
        return;
      }
      // openssh without the relay: the system ssh closes first, and each host's closedBy must say what the table says:
      // "local" exactly for the sockets the table shows closed by us first.
      const weFirst = new Set(["FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "TIME_WAIT"]);
      const closedHere = new Set(rows.filter((s) => weFirst.has(s.state)).map((s) => `${s.localPort} ${s.remoteAddress} ${s.remotePort}`));
      for (const x of doc.results) assert.equal(x.closedBy === "local", closedHere.has(key(x)), `${x.host}: closedBy ${x.closedBy}, kernel ${closedHere.has(key(x)) ? "closed here first" : "not"}`);
      const local = doc.results.filter((x) => x.closedBy === "local").length;
      assert.equal(doc.ledger.localClosed, local);
      assert.equal(doc.ledger.remoteClosed + doc.ledger.localClosed + doc.ledger.reset, HOSTS);
      // The ledger read the table a moment before this test did: a socket still in FIN_WAIT_2 then
      // may be in TIME_WAIT now, never the other way round within 60 s.
      assert.ok(doc.ledger.localTimeWait <= ourTw.length && ourTw.length <= local, `ledger ${doc.ledger.localTimeWait}, kernel ${ourTw.length}, closed here ${local}`);
      t.diagnostic(`-R openssh: ${local} of ${HOSTS} closed by us first, ${ourTw.length} TIME_WAIT here (the ledger counted ${doc.ledger.localTimeWait})`);
    });

    test("what all the cases left in this machine's TIME_WAIT towards the testbed", (t) => {
      const left = [...timeWaitTowardsTestbed()].filter((k) => !before.has(k));
      t.diagnostic(`-R ${transport}: ${left.length} TIME_WAIT left here by its ${runs[transport]} runs of ${HOSTS} hosts`);
      // rsh (both channels: rshd also closes the stderr connection it made), ssh, and openssh and
      // exec through the relay: none at all.
      if (remoteFirst(transport)) assert.deepEqual(left, []);
      // Without the relay, openssh and exec run the system ssh, which closes first: at most one per connection, to :22.
      else {
        assert.ok(left.every((k) => k.endsWith(" 22")), left.join(", "));
        assert.ok(left.length <= runs[transport] * HOSTS, `${left.length} TIME_WAIT from ${runs[transport]} runs`);
      }
    });
  });
}
