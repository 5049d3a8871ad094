import { test } from "node:test";
import assert from "node:assert/strict";
import { DiagAnswerError, DiagDecoder, encodeDumpRequest } from "../../src/kernel/inet-diag.js";
import { portFilterMatches, type TcpSocket } from "../../src/kernel/parse.js";

// Captured on this project's machine (Linux 6.18, x86_64) with a TCPDIAG_GETSOCK dump filtered on one
// port, then NLMSG_DONE. Port 43315: a listener on 127.0.0.1, a TIME_WAIT the server closed first, an
// ESTABLISHED connection. Port 36327: a dual-stack listener on ::, a TIME_WAIT and an ESTABLISHED
// from 127.0.0.1 (v4-mapped), an ESTABLISHED from ::1. Full sockets carry attributes (shutdown, mark,
// cgroup id, sockopt) that the decoder steps over.
const V4_DUMP = Buffer.from(
  "7c00000012000200070000008b520008020a0000a93300007f0000010000000000000000000000000000000000000000" +
  "0000000000000000000000008e6d0a00000000000000000000000000ff01000000000000867f4e000500080000000000" +
  "08000f00000000000c001500010000000000000006001600520000006000000012000200070000008b52000802060300" +
  "a933e87e7f0000010000000000000000000000007f000001000000000000000000000000000000008f6d0a0000000000" +
  "5cea00000000000000000000000000000000000008000f00000000007c00000012000200070000008b52000802010000" +
  "a933e8867f0000010000000000000000000000007f00000100000000000000000000000000000000906d0a0000000000" +
  "000000000000000000000000000000008d7f4e00050008000000000008000f00000000000c0015000100000000000000" +
  "06001600520000001400000003000200070000008b52000800000000",
  "hex",
);
const V6_DUMP = Buffer.from(
  "8400000012000200070000008b5240080a0a00008de70000000000000000000000000000000000000000000000000000" +
  "000000000000000000000000916d0a00000000000000000000000000ff01000000000000877f4e000500080000000000" +
  "05000b000000000008000f00000000000c00150001000000000000000600160012000000600000001200020007000000" +
  "8b5240080a0603008de7d1ee00000000000000000000ffff7f00000100000000000000000000ffff7f00000100000000" +
  "926d0a000000000058ea00000000000000000000000000000000000008000f00000000007c0000001200020007000000" +
  "8b5240080a0100008de7b5b8000000000000000000000000000000010000000000000000000000000000000100000000" +
  "936d0a000000000000000000000000000000000000000000917f4e00050008000000000008000f00000000000c001500" +
  "010000000000000006001600120000007c00000012000200070000008b5240080a0100008de7d1fc0000000000000000" +
  "0000ffff7f00000100000000000000000000ffff7f00000100000000946d0a0000000000000000000000000000000000" +
  "000000008f7f4e00050008000000000008000f00000000000c0015000100000000000000060016001200000014000000" +
  "03000200070000008b52400800000000",
  "hex",
);

function decode(bytes: Uint8Array, options: ConstructorParameters<typeof DiagDecoder>[0] = {}): { rows: TcpSocket[]; done: boolean } {
  const d = new DiagDecoder(options);
  const done = d.push(bytes);
  return { rows: d.rows, done };
}

test("an IPv4 dump decodes to the records procfs gives: listener, TIME_WAIT, ESTABLISHED", () => {
  const { rows, done } = decode(V4_DUMP);
  assert.equal(done, true, "NLMSG_DONE ends the dump");
  assert.deepEqual(rows, [
    { family: 4, localAddress: "127.0.0.1", localPort: 43315, remoteAddress: "0.0.0.0", remotePort: 0, state: "LISTEN", txQueue: 0, rxQueue: 0, timer: "none", timerMs: 0, retransmits: 0, uid: 0, inode: 5144454 },
    { family: 4, localAddress: "127.0.0.1", localPort: 43315, remoteAddress: "127.0.0.1", remotePort: 59518, state: "TIME_WAIT", txQueue: 0, rxQueue: 0, timer: "timewait", timerMs: 59996, retransmits: 0, uid: 0, inode: 0 },
    { family: 4, localAddress: "127.0.0.1", localPort: 43315, remoteAddress: "127.0.0.1", remotePort: 59526, state: "ESTABLISHED", txQueue: 0, rxQueue: 0, timer: "none", timerMs: 0, retransmits: 0, uid: 0, inode: 5144461 },
  ]);
});

test("a listener's wqueue (its backlog limit over netlink) is not reported as a send queue", () => {
  // The capture's listener has idiag_wqueue 511 (0x1ff); procfs prints 0 there.
  assert.equal(V4_DUMP.readUInt32LE(16 + 60), 511);
  assert.equal(decode(V4_DUMP).rows[0]!.txQueue, 0);
});

test("an IPv6 dump: the wildcard, v4-mapped and ::1 addresses in RFC 5952 form", () => {
  const { rows } = decode(V6_DUMP);
  assert.deepEqual(
    rows.map((r) => [r.family, r.localAddress, r.remoteAddress, r.state, r.timer]),
    [
      [6, "::", "::", "LISTEN", "none"],
      [6, "::ffff:127.0.0.1", "::ffff:127.0.0.1", "TIME_WAIT", "timewait"],
      [6, "::1", "::1", "ESTABLISHED", "none"],
      [6, "::ffff:127.0.0.1", "::ffff:127.0.0.1", "ESTABLISHED", "none"],
    ],
  );
  assert.deepEqual(rows.map((r) => r.inode), [5144455, 0, 5144465, 5144463]);
  assert.equal(rows[1]!.timerMs, 59992);
});

test("a dump split across datagrams decodes the same as one, and is done only at NLMSG_DONE", () => {
  const d = new DiagDecoder();
  // Message boundaries: 124 + 96 + 124 bytes, then the 20-byte NLMSG_DONE.
  assert.equal(d.push(V4_DUMP.subarray(0, 220)), false);
  assert.equal(d.push(V4_DUMP.subarray(220, 344)), false);
  assert.equal(d.push(V4_DUMP.subarray(344)), true);
  assert.deepEqual(d.rows, decode(V4_DUMP).rows);
});

test("a datagram at an odd offset in its buffer decodes the same (copied to align its words)", () => {
  const shifted = Buffer.alloc(V6_DUMP.length + 1);
  V6_DUMP.copy(shifted, 1);
  assert.deepEqual(decode(shifted.subarray(1)).rows, decode(V6_DUMP).rows);
});

test("the decoder keeps only the family and local port asked for, whatever the kernel sent", () => {
  assert.equal(decode(V4_DUMP, { localPort: 1 }).rows.length, 0);
  assert.equal(decode(V4_DUMP, { localPort: 43315 }).rows.length, 3);
  assert.equal(decode(V6_DUMP, { family: 4 }).rows.length, 0);
});

/** Host-order fields written in `endian`, network-order fields big-endian, as the kernel lays them out. */
function diagMessage(
  r: { state: number; timer: number; expiresMs: number; inode: number; local: [number, number, number, number]; port: number; remotePort: number },
  endian: "LE" | "BE" = "LE",
): Buffer {
  const b = Buffer.alloc(16 + 72);
  const u32 = (v: number, at: number) => (endian === "LE" ? b.writeUInt32LE(v, at) : b.writeUInt32BE(v, at));
  const u16 = (v: number, at: number) => (endian === "LE" ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
  u32(b.length, 0);
  u16(18, 4); // TCPDIAG_GETSOCK
  u16(2, 6); // NLM_F_MULTI
  const m = 16;
  b[m] = 2; // AF_INET
  b[m + 1] = r.state;
  b[m + 2] = r.timer;
  b.writeUInt16BE(r.port, m + 4);
  b.writeUInt16BE(r.remotePort, m + 6);
  b.set(r.local, m + 8);
  b.set([127, 0, 0, 1], m + 24);
  u32(r.expiresMs, m + 52);
  u32(r.inode, m + 68);
  return b;
}

function doneMessage(endian: "LE" | "BE" = "LE"): Buffer {
  const b = Buffer.alloc(20);
  if (endian === "LE") {
    b.writeUInt32LE(20, 0);
    b.writeUInt16LE(3, 4);
  } else {
    b.writeUInt32BE(20, 0);
    b.writeUInt16BE(3, 4);
  }
  return b;
}

test("bytes from a big-endian host decode with endian BE", () => {
  const bytes = Buffer.concat([
    diagMessage({ state: 6, timer: 3, expiresMs: 41_000, inode: 0, local: [10, 0, 0, 7], port: 8080, remotePort: 50000 }, "BE"),
    doneMessage("BE"),
  ]);
  const d = new DiagDecoder({ endian: "BE" });
  assert.equal(d.push(bytes), true);
  assert.deepEqual(
    d.rows.map((r) => [r.localAddress, r.localPort, r.remotePort, r.state, r.timerMs]),
    [["10.0.0.7", 8080, 50000, "TIME_WAIT", 41_000]],
  );
});

test("a summarising decoder keeps the first N ownerless sockets per state and address, and counts the rest", () => {
  const msgs: Buffer[] = [];
  // 30 TIME_WAIT on 127.0.0.2, 5 on 127.0.0.3, 25 orphaned FIN_WAIT_2 on 127.0.0.2, one owned ESTABLISHED.
  for (let i = 0; i < 30; i++) msgs.push(diagMessage({ state: 6, timer: 3, expiresMs: 1000 + i, inode: 0, local: [127, 0, 0, 2], port: 9000, remotePort: 40000 + i }));
  for (let i = 0; i < 5; i++) msgs.push(diagMessage({ state: 6, timer: 3, expiresMs: 90_000, inode: 0, local: [127, 0, 0, 3], port: 9000, remotePort: 41000 + i }));
  for (let i = 0; i < 25; i++) msgs.push(diagMessage({ state: 5, timer: 2, expiresMs: 500 * i, inode: 0, local: [127, 0, 0, 2], port: 9000, remotePort: 42000 + i }));
  msgs.push(diagMessage({ state: 1, timer: 0, expiresMs: 0, inode: 77, local: [127, 0, 0, 2], port: 9000, remotePort: 43000 }));
  msgs.push(doneMessage());
  const d = new DiagDecoder({ ownerlessSample: 10 });
  assert.equal(d.push(Buffer.concat(msgs)), true);
  const kept = (state: string, addr: string) => d.rows.filter((r) => r.state === state && r.localAddress === addr).length;
  assert.equal(kept("TIME_WAIT", "127.0.0.2"), 10);
  assert.equal(kept("TIME_WAIT", "127.0.0.3"), 5);
  assert.equal(kept("FIN_WAIT_2", "127.0.0.2"), 10);
  assert.equal(kept("ESTABLISHED", "127.0.0.2"), 1, "a socket with an owner is always kept");
  assert.deepEqual(
    d.omitted().sort((a, b) => a.state.localeCompare(b.state)),
    [
      { family: 4, state: "FIN_WAIT_2", localAddress: "127.0.0.2", localPort: 9000, count: 15, longestTimerMs: 500 * 24 },
      { family: 4, state: "TIME_WAIT", localAddress: "127.0.0.2", localPort: 9000, count: 20, longestTimerMs: 1029 },
    ],
  );
});

test("NLMSG_ERROR becomes a DiagAnswerError carrying the errno", () => {
  const b = Buffer.alloc(36);
  b.writeUInt32LE(36, 0);
  b.writeUInt16LE(2, 4);
  b.writeInt32LE(-95, 16); // -EOPNOTSUPP
  assert.throws(() => new DiagDecoder().push(b), (e: unknown) => e instanceof DiagAnswerError && e.errno === 95);
});

test("a message that claims more bytes than the datagram holds is an error, not a read past the end", () => {
  const b = Buffer.from(V4_DUMP.subarray(0, 124));
  b.writeUInt32LE(4000, 0);
  assert.throws(() => new DiagDecoder().push(b), (e: unknown) => e instanceof DiagAnswerError && e.errno === 0);
});

test("a compat request: TCPDIAG_GETSOCK, dump flags, all states but BOUND_INACTIVE, the port as S_GE/S_LE bytecode", () => {
  const b = encodeDumpRequest({ form: "compat", localPort: 8080, seq: 42 });
  assert.equal(b.length, 16 + 60 + 4 + 16);
  assert.equal(b.readUInt32LE(0), b.length);
  assert.equal(b.readUInt16LE(4), 18);
  assert.equal(b.readUInt16LE(6), 0x301);
  assert.equal(b.readUInt32LE(8), 42);
  assert.equal(b[16], 0, "AF_UNSPEC: both families in one walk");
  assert.equal(b.readUInt32LE(16 + 52), 0x1ffe);
  assert.equal(b.readUInt32LE(16 + 4 + 40), 0xffffffff, "INET_DIAG_NOCOOKIE");
  // nlattr INET_DIAG_REQ_BYTECODE, then {S_GE, yes 8, no 20} {0, 0, 8080} {S_LE, yes 8, no 12} {0, 0, 8080}.
  const at = 16 + 60;
  assert.deepEqual([b.readUInt16LE(at), b.readUInt16LE(at + 2)], [20, 1]);
  const ops = b.subarray(at + 4);
  assert.deepEqual([ops[0], ops[1], ops.readUInt16LE(2), ops.readUInt16LE(6)], [2, 8, 20, 8080]);
  assert.deepEqual([ops[8], ops[9], ops.readUInt16LE(10), ops.readUInt16LE(14)], [3, 8, 12, 8080]);
});

test("a per-family request: SOCK_DIAG_BY_FAMILY with inet_diag_req_v2, no bytecode without a port", () => {
  const b = encodeDumpRequest({ form: "by-family", family: 6, seq: 1 });
  assert.equal(b.length, 16 + 56);
  assert.equal(b.readUInt16LE(4), 20);
  assert.deepEqual([b[16], b[17]], [10, 6], "AF_INET6, IPPROTO_TCP");
  assert.equal(b.readUInt32LE(16 + 4), 0x1ffe);
  assert.equal(encodeDumpRequest({ form: "by-family", family: 4, seq: 1 })[16], 2);
});

/**
 * The kernel's checks and interpreter for inet_diag bytecode (net/ipv4/inet_diag.c:
 * inet_diag_bc_audit, valid_cc, inet_diag_bc_run), reduced to the ops the encoder emits, so that a
 * filter's meaning is tested here and not only on whatever kernel runs the live tests.
 */
function kernelAudit(bc: Buffer): boolean {
  const validCc = (len: number, cc: number): boolean => {
    let at = 0;
    while (len >= 0) {
      if (cc > len) return false;
      if (cc === len) return true;
      const yes = bc[at + 1]!;
      if (yes < 4 || yes & 3) return false;
      len -= yes;
      at += yes;
    }
    return false;
  };
  let len = bc.length;
  let at = 0;
  while (len > 0) {
    const code = bc[at]!;
    let minLen = 4;
    if (code >= 2 && code <= 5) {
      minLen += 4;
      if (len < minLen) return false;
    } else if (code !== 1) return false;
    const no = bc.readUInt16LE(at + 2);
    if (no < minLen || no > len + 4 || no & 3) return false;
    if (no < len && !validCc(bc.length, len - no)) return false;
    const yes = bc[at + 1]!;
    if (yes < minLen || yes > len + 4 || yes & 3) return false;
    at += yes;
    len -= yes;
  }
  return len === 0;
}

function kernelRun(bc: Buffer, sport: number, dport: number): boolean {
  let len = bc.length;
  let at = 0;
  while (len > 0) {
    const code = bc[at]!;
    const port = bc.readUInt16LE(at + 6);
    const yes = code === 1 ? false : code === 2 ? sport >= port : code === 3 ? sport <= port : code === 4 ? dport >= port : dport <= port;
    const step = yes ? bc[at + 1]! : bc.readUInt16LE(at + 2);
    len -= step;
    at += step;
  }
  return len === 0;
}

function bytecodeOf(b: Buffer, bodyLen: number): Buffer {
  const at = 16 + bodyLen;
  assert.equal(b.readUInt16LE(at + 2), 1, "INET_DIAG_REQ_BYTECODE");
  return b.subarray(at + 4, at + b.readUInt16LE(at));
}

test("a port-range filter is bytecode the kernel's audit accepts, keeping exactly the rows in range", () => {
  const cases = [
    { local: [512, 1023] as const, remote: [512, 1023] as const },
    { local: [20000, 29999] as const },
    { remote: [22, 22] as const },
  ];
  for (const ports of cases) {
    for (const form of ["compat", "by-family"] as const) {
      const bc = bytecodeOf(encodeDumpRequest({ form, family: 4, ports, seq: 1 }), form === "compat" ? 60 : 56);
      assert.ok(kernelAudit(bc), `audit ${JSON.stringify(ports)}`);
      for (const sport of [1, 22, 511, 512, 700, 1023, 1024, 19999, 20000, 29999, 30000, 65535]) {
        for (const dport of [0, 22, 23, 511, 512, 1023, 1024, 20000, 65535]) {
          const want = portFilterMatches(ports, sport, dport);
          assert.equal(kernelRun(bc, sport, dport), want, `${JSON.stringify(ports)} sport ${sport} dport ${dport}`);
        }
      }
    }
  }
  // The one-port filter is the same bytes as before the ranges came.
  const one = bytecodeOf(encodeDumpRequest({ form: "compat", localPort: 8080, seq: 1 }), 60);
  assert.ok(kernelAudit(one));
  assert.equal(kernelRun(one, 8080, 1), true);
  assert.equal(kernelRun(one, 8081, 8080), false);
});

test("the decoder keeps only rows passing the port filter, whatever the kernel sent", () => {
  // V4_DUMP: all on local port 43315, remote ports 0, 59518, 59526.
  assert.equal(decode(V4_DUMP, { ports: { local: [43316, 65535] } }).rows.length, 0);
  assert.equal(decode(V4_DUMP, { ports: { local: [43315, 43315] } }).rows.length, 3);
  assert.deepEqual(decode(V4_DUMP, { ports: { remote: [59500, 59520] } }).rows.map((r) => r.remotePort), [59518]);
  assert.deepEqual(decode(V4_DUMP, { ports: { local: [1, 2], remote: [59526, 59526] } }).rows.map((r) => r.remotePort), [59526]);
  assert.equal(decode(V4_DUMP, { ports: {} }).rows.length, 0);
});
