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

/** A TCP socket's two ends and its state: what every reader of the table matches a row on. */
export interface SocketEnds {
  family: 4 | 6;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  state: string;
}

export interface TcpSocket extends SocketEnds {
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

/**
 * Rows to keep by port: those whose local port is in `local` or whose remote port is in `remote`
 * (inclusive ranges; a side left out matches nothing). Both readers apply it before the costly part
 * of a row, and netlink has the kernel apply it, so a caller that cares about a few ports does not
 * pay for the rest of a big table.
 */
export interface PortFilter {
  local?: readonly [number, number];
  remote?: readonly [number, number];
}

export function portFilterMatches(f: PortFilter, localPort: number, remotePort: number): boolean {
  const l = f.local;
  if (l !== undefined && localPort >= l[0] && localPort <= l[1]) return true;
  const r = f.remote;
  return r !== undefined && remotePort >= r[0] && remotePort <= r[1];
}

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

// Hex digit values by char code (-1: not a hex digit). The rows are parsed by scanning characters
// rather than split(/\s+/): at 50,000 rows the split's arrays and substrings were most of the cost.
const HEX = new Int8Array(128).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[65 + c] = 10 + c;
  HEX[97 + c] = 10 + c;
}

function hexEnd(text: string, i: number, end: number): number {
  while (i < end) {
    const c = text.charCodeAt(i);
    if (c >= 128 || HEX[c]! < 0) break;
    i++;
  }
  return i;
}

/** Value of text[i, j) as hex; at most 13 digits stay exact, the kernel prints 8. */
function hexValue(text: string, i: number, j: number): number {
  let v = 0;
  for (; i < j; i++) v = v * 16 + HEX[text.charCodeAt(i)]!;
  return v;
}

function skipSpaces(text: string, i: number, end: number): number {
  while (i < end && text.charCodeAt(i) === 32) i++;
  return i;
}

/** End of a run of decimal digits (a leading '-' allowed). */
function decEnd(text: string, i: number, end: number): number {
  if (i < end && text.charCodeAt(i) === 45) i++;
  while (i < end) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) break;
    i++;
  }
  return i;
}

/** End of a decimal token (optional '-', at least one digit) that a space or the line's end follows; -1 if none. */
function decToken(text: string, i: number, end: number): number {
  const digits = text.charCodeAt(i) === 45 ? i + 1 : i;
  const j = decEnd(text, digits, end);
  if (j === digits || !endsToken(text, j, end)) return -1;
  return j;
}

function endsToken(text: string, j: number, end: number): boolean {
  return j === end || text.charCodeAt(j) === 32;
}

function decValue(text: string, i: number, j: number): number {
  let neg = false;
  if (text.charCodeAt(i) === 45) {
    neg = true;
    i++;
  }
  let v = 0;
  for (; i < j; i++) v = v * 10 + (text.charCodeAt(i) - 48);
  return neg ? -v : v;
}

/** Rows repeat a handful of addresses thousands of times: format each once per table. */
interface AddressCache {
  v4: Map<number, string>;
  v6: Map<string, string>;
}

function newAddressCache(): AddressCache {
  return { v4: new Map(), v6: new Map() };
}

function addressAt(text: string, i: number, j: number, endian: Endianness, cache: AddressCache): string {
  if (j - i === 8) {
    // Keyed by the word's value: no substring for the common case.
    const w = hexValue(text, i, j);
    let a = cache.v4.get(w);
    if (a === undefined) {
      a = parseHexAddress(text.slice(i, j), endian);
      cache.v4.set(w, a);
    }
    return a;
  }
  const hex = text.slice(i, j);
  let a = cache.v6.get(hex);
  if (a === undefined) {
    a = parseHexAddress(hex, endian);
    cache.v6.set(hex, a);
  }
  return a;
}

function parseRow(
  text: string,
  start: number,
  end: number,
  family: 4 | 6,
  endian: Endianness,
  onlyLocalPort: number | undefined,
  cache: AddressCache,
  ports?: PortFilter,
): TcpSocket | null {
  // "  sl: LOCAL:PORT REMOTE:PORT ST TX:RX TR:WHEN RETRNSMT UID TIMEOUT INODE ..."
  let i = skipSpaces(text, start, end);
  let j = decEnd(text, i, end);
  if (j === i || text.charCodeAt(j) !== 58) return null;
  i = skipSpaces(text, j + 1, end);
  j = hexEnd(text, i, end);
  const localLen = j - i;
  if ((localLen !== 8 && localLen !== 32) || text.charCodeAt(j) !== 58) return null;
  const localStart = i;
  const localEnd = j;
  i = j + 1;
  j = hexEnd(text, i, end);
  if (j === i) return null;
  if (!endsToken(text, j, end)) return null;
  const localPort = hexValue(text, i, j);
  // The port filter comes before anything costly: at 50,000 rows most are not the port asked about.
  if (onlyLocalPort !== undefined && localPort !== onlyLocalPort) return null;
  i = skipSpaces(text, j, end);
  j = hexEnd(text, i, end);
  const remoteLen = j - i;
  if ((remoteLen !== 8 && remoteLen !== 32) || text.charCodeAt(j) !== 58) return null;
  const remoteStart = i;
  const remoteEnd = j;
  i = j + 1;
  j = hexEnd(text, i, end);
  if (j === i) return null;
  if (!endsToken(text, j, end)) return null;
  const remotePort = hexValue(text, i, j);
  if (ports !== undefined && !portFilterMatches(ports, localPort, remotePort)) return null;
  i = skipSpaces(text, j, end);
  j = hexEnd(text, i, end);
  if (j === i || !endsToken(text, j, end)) return null;
  const state = TCP_STATES[hexValue(text, i, j)];
  if (!state) return null;
  // tx_queue:rx_queue
  i = skipSpaces(text, j, end);
  j = hexEnd(text, i, end);
  if (j === i || text.charCodeAt(j) !== 58) return null;
  const txQueue = hexValue(text, i, j);
  i = j + 1;
  j = hexEnd(text, i, end);
  if (j === i || !endsToken(text, j, end)) return null;
  const rxQueue = hexValue(text, i, j);
  // tr:tm->when
  i = skipSpaces(text, j, end);
  j = hexEnd(text, i, end);
  if (j === i || text.charCodeAt(j) !== 58) return null;
  const tr = hexValue(text, i, j);
  i = j + 1;
  j = hexEnd(text, i, end);
  if (j === i || !endsToken(text, j, end)) return null;
  const when = hexValue(text, i, j);
  // retrnsmt
  i = skipSpaces(text, j, end);
  j = hexEnd(text, i, end);
  if (j === i || !endsToken(text, j, end)) return null;
  const retransmits = hexValue(text, i, j);
  // uid, timeout (skipped), inode
  i = skipSpaces(text, j, end);
  j = decToken(text, i, end);
  if (j < 0) return null;
  const uid = decValue(text, i, j);
  i = skipSpaces(text, j, end);
  j = decToken(text, i, end);
  if (j < 0) return null;
  i = skipSpaces(text, j, end);
  j = decToken(text, i, end);
  if (j < 0) return null;
  const inode = decValue(text, i, j);
  return {
    family,
    localAddress: addressAt(text, localStart, localEnd, endian, cache),
    localPort,
    remoteAddress: addressAt(text, remoteStart, remoteEnd, endian, cache),
    remotePort,
    state,
    txQueue,
    rxQueue,
    timer: TIMER_KINDS[tr] ?? "none",
    timerMs: when * 10,
    retransmits,
    uid,
    inode,
  };
}

/**
 * One table row into a record, or null for the header or a row that does not parse. `onlyLocalPort`
 * drops rows by local port before the costly part (address formatting).
 */
export function parseTcpLine(
  line: string,
  family: 4 | 6,
  endian: Endianness = "LE",
  onlyLocalPort?: number,
): TcpSocket | null {
  return parseRow(line, 0, line.length, family, endian, onlyLocalPort, newAddressCache());
}

export function parseTcpTable(
  text: string,
  family: 4 | 6,
  endian: Endianness = "LE",
  onlyLocalPort?: number,
  ports?: PortFilter,
): TcpSocket[] {
  const out: TcpSocket[] = [];
  const cache = newAddressCache();
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const row = parseRow(text, start, end, family, endian, onlyLocalPort, cache, ports);
    if (row) out.push(row);
    start = end + 1;
  }
  return out;
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
