import { test } from "node:test";
import assert from "node:assert/strict";
import { computeLedger, countPeerTimeWait, ledgerPortFilter } from "../../src/remote/report.js";
import { portFilterMatches, type TcpSocket, type TcpState } from "../../src/kernel/parse.js";
import type { HostResult } from "../../src/remote/engine.js";

function result(host: string, localPort: number | null, remotePort: number): HostResult {
  return {
    host,
    state: "done",
    exitCode: 0,
    signal: null,
    durationMs: 1,
    closedBy: "remote",
    localPort,
    ...(localPort !== null ? { remoteAddress: host, remotePort } : {}),
    error: null,
  };
}

function row(localAddress: string, localPort: number, remoteAddress: string, remotePort: number, state: TcpState): TcpSocket {
  return { family: 4, localAddress, localPort, remoteAddress, remotePort, state, txQueue: 0, rxQueue: 0, timer: "none", timerMs: 0, retransmits: 0, uid: 0, inode: 0 };
}

test("the ledger's port filter keeps every row the ledger counts, by the narrower of the local and remote spans", () => {
  const rsh = [result("10.0.0.1", 1023, 514), result("10.0.0.2", 1020, 514), result("10.0.0.3", null, 514)];
  assert.deepEqual(ledgerPortFilter(rsh), { remote: [514, 514] });
  assert.deepEqual(ledgerPortFilter(rsh, true), { local: [1020, 1023], remote: [1020, 1023] });
  const ssh = [result("10.0.0.1", 40001, 22), result("10.0.0.2", 58000, 2222)];
  assert.deepEqual(ledgerPortFilter(ssh), { remote: [22, 2222] });
  const onePort = [result("10.0.0.1", 700, 514), result("10.0.0.2", 700, 2514)];
  assert.deepEqual(ledgerPortFilter(onePort), { local: [700, 700] });
  assert.equal(ledgerPortFilter([result("10.0.0.1", null, 514)]), null, "no connection: nothing to read");
  // Whatever the filter, the rows it drops are rows the ledger would not have counted.
  const rows = [
    row("10.0.0.9", 1023, "10.0.0.1", 514, "TIME_WAIT"),
    row("10.0.0.9", 1020, "10.0.0.2", 514, "TIME_WAIT"),
    row("10.0.0.9", 1021, "10.0.0.2", 514, "TIME_WAIT"),
    row("10.0.0.9", 33000, "10.0.0.5", 80, "TIME_WAIT"),
  ];
  for (const peer of [false, true]) {
    const f = ledgerPortFilter(rsh, peer)!;
    const kept = rows.filter((r) => portFilterMatches(f, r.localPort, r.remotePort));
    assert.equal(computeLedger(rsh, kept).localTimeWait, computeLedger(rsh, rows).localTimeWait);
    assert.equal(computeLedger(rsh, rows).localTimeWait, 2);
  }
});

test("the hosts' TIME_WAIT count is this run's 4-tuples only, not earlier runs' on the same port", () => {
  const run = [result("127.0.0.2", 20001, 5140), result("127.0.0.3", 20002, 5140)];
  const rows = [
    row("127.0.0.2", 5140, "127.0.0.1", 20001, "TIME_WAIT"), // this run
    row("127.0.0.3", 5140, "127.0.0.1", 20002, "TIME_WAIT"), // this run
    row("127.0.0.2", 5140, "127.0.0.1", 20002, "TIME_WAIT"), // an earlier run: other host for that port
    row("127.0.0.4", 5140, "127.0.0.1", 20500, "TIME_WAIT"), // an earlier run
    row("127.0.0.2", 5140, "127.0.0.1", 20001, "ESTABLISHED"),
    row("127.0.0.1", 20001, "127.0.0.2", 5140, "TIME_WAIT"), // our side, not the host's
  ];
  assert.equal(countPeerTimeWait(run, rows, 5140), 2);
});
