/**
 * The kernel's TCP socket table as text (/proc/net/tcp and /proc/net/tcp6) into records. No I/O.
 *
 * Row layout (net/ipv4/tcp_ipv4.c get_tcp4_sock, net/ipv6/tcp_ipv6.c get_tcp6_sock):
 *   sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
 * Addresses are the raw in-memory words printed in hex, so on a little-endian machine each 32-bit
 * word reads backwards: 0100007F is 127.0.0.1. Ports are plain big hex. `tr` is the timer kind
 * (0 none, 1 retransmit/probe, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe) and `when` the time
 * left on it in USER_HZ ticks (1/100 s; the kernel converts from jiffies, see jiffies_delta_to_clock_t).
 * TIME_WAIT rows come from the separate timewait-socket struct and carry uid 0 and inode 0: no
 * process owns them, whatever process made them.
 */

export type TcpState =
  | "ESTABLISHED"
  | "SYN_SENT"
  | "SYN_RECV"
  | "FIN_WAIT_1"
  | "FIN_WAIT_2"
  | "TIME_WAIT"
  | "CLOSE"
  | "CLOSE_WAIT"
  | "LAST_ACK"
  | "LISTEN"
  | "CLOSING"
  | "NEW_SYN_RECV";

/** Index = the kernel's state number (include/net/tcp_states.h). */
export const TCP_STATES: readonly (TcpState | undefined)[] = [
  undefined,
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "FIN_WAIT_1",
  "FIN_WAIT_2",
  "TIME_WAIT",
  "CLOSE",
  "CLOSE_WAIT",
  "LAST_ACK",
  "LISTEN",
  "CLOSING",
  "NEW_SYN_RECV",
];

export type TimerKind = "none" | "retransmit" | "keepalive" | "timewait" | "probe";
const TIMER_KINDS: readonly TimerKind[] = ["none", "retransmit", "keepalive", "timewait", "probe"];

export interface TcpSocket {
  family: 4 | 6;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  state: TcpState;
  txQueue: number;
  rxQueue: number;
  timer: TimerKind;
  /** Time left on the timer, in milliseconds (the kernel prints 1/100 s). */
  timerMs: number;
  retransmits: number;
  uid: number;
  /** 0 = no process owns the socket (TIME_WAIT, orphaned FIN_WAIT_*, request sockets). */
  inode: number;
}

export type Endianness = "LE" | "BE";

function hexWordToBytes(hex: string, endian: Endianness, out: number[]): void {
  const w = parseInt(hex, 16) >>> 0;
  if (endian === "LE") out.push(w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, w >>> 24);
  else out.push(w >>> 24, (w >>> 16) & 0xff, (w >>> 8) & 0xff, w & 0xff);
}

/** Canonical text form of an IPv6 address (RFC 5952), with v4-mapped shown as ::ffff:a.b.c.d. */
export function formatIPv6(bytes: readonly number[]): string {
  const isV4Mapped =
    bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (isV4Mapped) return `::ffff:${bytes.slice(12).join(".")}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // Longest run of two or more zero groups becomes "::" (first one on a tie).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  const head = hex.slice(0, bestStart).join(":");
  const tail = hex.slice(bestStart + bestLen).join(":");
  return `${head}::${tail}`;
}

export function parseHexAddress(hex: string, endian: Endianness = "LE"): string {
  const bytes: number[] = [];
  if (hex.length === 8) {
    hexWordToBytes(hex, endian, bytes);
    return bytes.join(".");
  }
  if (hex.length === 32) {
    for (let i = 0; i < 32; i += 8) hexWordToBytes(hex.slice(i, i + 8), endian, bytes);
    return formatIPv6(bytes);
  }
  throw new Error(`not a kernel address: ${hex}`);
}

function splitEndpoint(field: string, endian: Endianness): [string, number] {
  const colon = field.indexOf(":");
  return [parseHexAddress(field.slice(0, colon), endian), parseInt(field.slice(colon + 1), 16)];
}

/**
 * One table row into a record, or null for the header or a row that does not parse. `only` lets the
 * caller drop rows by local port before the costly part (address formatting).
 */
export function parseTcpLine(
  line: string,
  family: 4 | 6,
  endian: Endianness = "LE",
  onlyLocalPort?: number,
): TcpSocket | null {
  const f = line.trim().split(/\s+/);
  if (f.length < 10 || !f[0]!.endsWith(":")) return null;
  const local = f[1]!;
  const colon = local.indexOf(":");
  if (colon < 0) return null;
  const localPort = parseInt(local.slice(colon + 1), 16);
  if (onlyLocalPort !== undefined && localPort !== onlyLocalPort) return null;
  const stateNum = parseInt(f[3]!, 16);
  const state = TCP_STATES[stateNum];
  if (!state) return null;
  const [txq, rxq] = f[4]!.split(":");
  const [tr, when] = f[5]!.split(":");
  const [localAddress] = splitEndpoint(local, endian);
  const [remoteAddress, remotePort] = splitEndpoint(f[2]!, endian);
  return {
    family,
    localAddress,
    localPort,
    remoteAddress,
    remotePort,
    state,
    txQueue: parseInt(txq ?? "0", 16),
    rxQueue: parseInt(rxq ?? "0", 16),
    timer: TIMER_KINDS[parseInt(tr ?? "0", 16)] ?? "none",
    timerMs: parseInt(when ?? "0", 16) * 10,
    retransmits: parseInt(f[6]!, 16),
    uid: parseInt(f[7]!, 10),
    inode: parseInt(f[9]!, 10),
  };
}

export function parseTcpTable(
  text: string,
  family: 4 | 6,
  endian: Endianness = "LE",
  onlyLocalPort?: number,
): TcpSocket[] {
  const out: TcpSocket[] = [];
  // The port filter on raw text skips the split of rows we do not want: at 50,000 TIME_WAIT
  // sockets most rows are not the port asked about.
  const needle =
    onlyLocalPort === undefined
      ? undefined
      : ":" + onlyLocalPort.toString(16).toUpperCase().padStart(4, "0") + " ";
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    if (needle === undefined || lineHasLocalPort(text, start, end, needle)) {
      const row = parseTcpLine(text.slice(start, end), family, endian, onlyLocalPort);
      if (row) out.push(row);
    }
    start = end + 1;
  }
  return out;
}

function lineHasLocalPort(text: string, start: number, end: number, needle: string): boolean {
  const i = text.indexOf(needle, start);
  if (i < 0 || i >= end) return false;
  // The first ":XXXX " in a row after "sl:" is the local endpoint's port.
  const firstSpaceAfterSl = text.indexOf(":", start);
  const local = text.indexOf(":", firstSpaceAfterSl + 1);
  return local === i;
}

/** Accepts the kernel's names and ss's spellings: "time-wait", "FIN-WAIT-2", "fin_wait2", "listen". */
export function normaliseStateName(name: string): TcpState | undefined {
  const n = name.toUpperCase().replace(/-/g, "_");
  const alias: Record<string, TcpState> = {
    FIN_WAIT1: "FIN_WAIT_1",
    FIN_WAIT2: "FIN_WAIT_2",
    ESTAB: "ESTABLISHED",
    SYN_RECEIVED: "SYN_RECV",
    CLOSED: "CLOSE",
    LISTENING: "LISTEN",
    TIMEWAIT: "TIME_WAIT",
  };
  if (alias[n]) return alias[n];
  return TCP_STATES.find((s) => s === n);
}
