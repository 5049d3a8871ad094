import { test } from "node:test";
import assert from "node:assert/strict";
import { parseHexAddress, parseTcpLine, parseTcpTable, normaliseStateName } from "../../src/kernel/parse.js";

// Captured on this project's machine (Linux 6.18, x86_64): a dual-stack listener and two TIME_WAITs.
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:86A7 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5180 1 000000003c82cf4d 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:86A7 0000000000000000FFFF00000100007F:D7EA 06 00000000:00000000 03:00001714 00000000     0        0 0 3 0000000026541673
   2: 00000000000000000000000001000000:86A7 00000000000000000000000001000000:99E2 06 00000000:00000000 03:00001714 00000000     0        0 0 3 000000004fe71d3b
`;
const TCP4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 32 1 000000007a392bfb 100 0 0 10 0
   1: 0100007F:0202 0200007F:0016 01 0000002A:00000003 02:000008C9 00000001  1000        0 77123 2 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:1F90 05 00000000:00000000 02:00000BB8 00000000     0        0 0 2 0000000000000000 20 4 30 10 -1
`;

test("IPv4 rows: little-endian address words, hex ports, state, queues, timer and owner fields", () => {
  const rows = parseTcpTable(TCP4, 4);
  assert.equal(rows.length, 3);
  assert.deepEqual(
    { a: rows[0]!.localAddress, p: rows[0]!.localPort, s: rows[0]!.state, i: rows[0]!.inode },
    { a: "0.0.0.0", p: 2024, s: "LISTEN", i: 32 },
  );
  const est = rows[1]!;
  assert.equal(est.localAddress, "127.0.0.1");
  assert.equal(est.remoteAddress, "127.0.0.2");
  assert.equal(est.remotePort, 22);
  assert.equal(est.localPort, 514);
  assert.equal(est.txQueue, 42);
  assert.equal(est.rxQueue, 3);
  assert.equal(est.timer, "keepalive");
  assert.equal(est.timerMs, 0x8c9 * 10);
  assert.equal(est.retransmits, 1);
  assert.equal(est.uid, 1000);
  assert.equal(est.inode, 77123);
});

test("an orphaned FIN_WAIT_2 row has inode 0 and a keepalive-kind timer", () => {
  const row = parseTcpTable(TCP4, 4)[2]!;
  assert.equal(row.state, "FIN_WAIT_2");
  assert.equal(row.inode, 0);
  assert.equal(row.timerMs, 30_000);
});

test("TIME_WAIT rows: timer 3, time left in 1/100 s, no owner; v4-mapped and ::1 addresses", () => {
  const rows = parseTcpTable(TCP6, 6);
  assert.equal(rows.length, 3);
  assert.equal(rows[0]!.localAddress, "::");
  assert.equal(rows[0]!.localPort, 34471);
  const mapped = rows[1]!;
  assert.equal(mapped.localAddress, "::ffff:127.0.0.1");
  assert.equal(mapped.remoteAddress, "::ffff:127.0.0.1");
  assert.equal(mapped.state, "TIME_WAIT");
  assert.equal(mapped.timer, "timewait");
  assert.equal(mapped.timerMs, 0x1714 * 10); // 59.08 s
  assert.equal(mapped.inode, 0);
  assert.equal(rows[2]!.localAddress, "::1");
  assert.equal(rows[2]!.remotePort, 0x99e2);
});

test("IPv6 text form follows RFC 5952: longest zero run folded, lower-case hex", () => {
  // 2001:db8::1 as the kernel prints it on little-endian: each 32-bit word byte-reversed.
  assert.equal(parseHexAddress("B80D0120000000000000000001000000"), "2001:db8::1");
  assert.equal(parseHexAddress("000080FE000000000000000001000000"), "fe80::1");
  assert.equal(parseHexAddress("B80D0120000000000000000001000000", "LE"), "2001:db8::1");
  assert.equal(parseHexAddress("7F000001", "BE"), "127.0.0.1");
});

test("filtering by local port keeps only that port's rows, never a matching remote port", () => {
  const rows = parseTcpTable(TCP4, 4, "LE", 0x1f90);
  assert.equal(rows.length, 0, "0x1F90 is only a remote port in the capture");
  assert.equal(parseTcpTable(TCP4, 4, "LE", 0x9c40).length, 1);
  assert.equal(parseTcpTable(TCP6, 6, "LE", 34471).length, 3);
});

test("a port filter keeps rows whose local port or remote port is in its ranges", () => {
  // TCP4 rows: local 0x07E8 (2024) listener, 514 -> 22, 0x9C40 (40000) -> 0x1F90 (8080).
  const ports = (f: Parameters<typeof parseTcpTable>[4]) => parseTcpTable(TCP4, 4, "LE", undefined, f).map((r) => r.localPort);
  assert.deepEqual(ports({ local: [500, 3000] }), [2024, 514]);
  assert.deepEqual(ports({ remote: [8080, 8080] }), [40000]);
  assert.deepEqual(ports({ local: [514, 514], remote: [8000, 9000] }), [514, 40000]);
  assert.deepEqual(ports({ remote: [0, 0] }), [2024]);
  assert.deepEqual(ports({}), []);
  assert.deepEqual(parseTcpTable(TCP4, 4, "LE", 514, { remote: [8080, 8080] }), [], "with a local port, both must hold");
});

test("header, blank and truncated lines are skipped, not thrown on", () => {
  assert.equal(parseTcpLine("  sl  local_address rem_address   st", 4), null);
  assert.equal(parseTcpLine("", 4), null);
  assert.equal(parseTcpLine("   0: 0100007F:0202 0200007F", 4), null);
  assert.equal(parseTcpTable("garbage\n\n", 4).length, 0);
});

test("state names: kernel, ss and loose spellings", () => {
  assert.equal(normaliseStateName("time-wait"), "TIME_WAIT");
  assert.equal(normaliseStateName("FIN-WAIT-2"), "FIN_WAIT_2");
  assert.equal(normaliseStateName("fin_wait1"), "FIN_WAIT_1");
  assert.equal(normaliseStateName("listen"), "LISTEN");
  assert.equal(normaliseStateName("estab"), "ESTABLISHED");
  assert.equal(normaliseStateName("nonsense"), undefined);
});
