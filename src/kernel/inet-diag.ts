/**
 * The kernel's TCP socket table over netlink (NETLINK_SOCK_DIAG, the inet_diag interface `ss` uses):
 * request bytes out, records in. No I/O; src/kernel/netlink.ts does the socket.
 *
 * Why netlink: for /proc/net/tcp the kernel prints every socket as text and walks its hash tables
 * again for each 4 KiB read, which at 50,000 sockets costs as much as all of `ss -tan`. Over netlink
 * the kernel fills a fixed 72-byte record per socket, and a bytecode filter (INET_DIAG_REQ_BYTECODE,
 * inet-diag-filter.ts) leaves the sockets on other ports in the kernel.
 *
 * Two request forms (include/uapi/linux/inet_diag.h, net/ipv4/inet_diag.c):
 *  - SOCK_DIAG_BY_FAMILY with inet_diag_req_v2: one family per request, so one walk of the kernel's
 *    established hash per family;
 *  - TCPDIAG_GETSOCK with the older inet_diag_req: the kernel sets the family to AF_UNSPEC
 *    (inet_diag_dump_compat) and returns IPv4 and IPv6 from one walk. The walk alone is about 9 ms
 *    at 50,000 sockets however few match, so this is the one tried first; the reader falls back to
 *    the per-family form if a kernel refuses it.
 * Both answer with the same inet_diag_msg records, then NLMSG_DONE.
 *
 * The records become the same TcpSocket values as src/kernel/parse.ts makes from procfs text, with
 * two differences the kernel imposes: timers are in milliseconds (procfs rounds to 1/100 s), and
 * `retransmits` is what inet_diag reports, the retransmit count under a retransmit timer and the
 * probes sent under a keepalive or zero-window timer (procfs always prints the retransmit count).
 * A request socket (SYN_RECV) carries uid 0 here, where procfs prints its listener's uid.
 */
import { formatIPv6, portFilterMatches, TCP_STATES, type Endianness, type PortFilter, type TcpSocket, type TcpState, type TimerKind } from "./parse.js";
import { filterBytecode } from "./inet-diag-filter.js";
import { AF_INET, AF_INET6, IPPROTO_TCP, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST, SOCK_DIAG_BY_FAMILY } from "./sock-diag-abi.js";

export const NETLINK_SOCK_DIAG = 4;
const TCPDIAG_GETSOCK = 18;
const INET_DIAG_REQ_BYTECODE = 1;
const NLMSG_HDRLEN = 16;
const INET_DIAG_MSG_LEN = 72;

/**
 * States 1..12 (ESTABLISHED..NEW_SYN_RECV; the kernel reports request sockets as SYN_RECV). Not bit
 * 13, TCP_BOUND_INACTIVE: bound sockets that never listened or connected, which /proc/net/tcp does
 * not list either.
 */
export const ALL_STATES = 0x1ffe;
/**
 * Bit 13 alone: TCP_BOUND_INACTIVE (Linux 6.5+), sockets bound to a port that never listened or
 * connected. The kernel finds them by walking its bind hash and reports them in state CLOSE (7)
 * with a zero remote end; only `why` asks (a bound socket holds its port like any other), and older
 * kernels answer with nothing.
 */
export const BOUND_INACTIVE_STATES = 1 << 13;
/** The attribute the kernel adds to every full AF_INET6 socket: IPV6_V6ONLY, one byte. */
const INET_DIAG_SKV6ONLY = 11;
/** struct tcp_info (include/uapi/linux/tcp.h); the request asks for it with ext bit 1 << (2 - 1). */
const INET_DIAG_INFO = 2;
/** tcpi_rtt, the smoothed round trip in microseconds: after 8 bytes of u8 fields, the 16th u32. */
const TCPI_RTT_OFFSET = 68;
/** tcpi_min_rtt (Linux 4.6+), the least round trip seen, in microseconds. */
const TCPI_MIN_RTT_OFFSET = 148;

const TIMER_KINDS: readonly TimerKind[] = ["none", "retransmit", "keepalive", "timewait", "probe"];

export type DiagRequestForm = "compat" | "by-family";

export interface DiagRequest {
  form: DiagRequestForm;
  /** With "by-family", the one family asked for; "compat" always asks for both. */
  family?: 4 | 6;
  /** Only sockets with this local port (a kernel-side bytecode filter). */
  localPort?: number;
  /** Only sockets that pass this (kernel-side bytecode); ignored when localPort is given. */
  ports?: PortFilter;
  /** Bit mask of states (1 << state number); default ALL_STATES. */
  states?: number;
  /** Ask for each socket's tcp_info too (INET_DIAG_INFO), for its round-trip time. */
  roundTrip?: boolean;
  seq: number;
}

/** One dump request: nlmsghdr, the request struct, and the bytecode attribute when a port is asked for. */
export function encodeDumpRequest(req: DiagRequest, endian: Endianness = "LE"): Buffer {
  const le = endian === "LE";
  const bodyLen = req.form === "compat" ? 60 : 56;
  const filter = filterBytecode(req, le);
  const attrLen = filter ? 4 + filter.length : 0;
  const b = Buffer.alloc(NLMSG_HDRLEN + bodyLen + attrLen);
  const u16 = (v: number, at: number) => (le ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
  const u32 = (v: number, at: number) => (le ? b.writeUInt32LE(v >>> 0, at) : b.writeUInt32BE(v >>> 0, at));
  u32(b.length, 0);
  u16(req.form === "compat" ? TCPDIAG_GETSOCK : SOCK_DIAG_BY_FAMILY, 4);
  u16(NLM_F_REQUEST | NLM_F_DUMP, 6);
  u32(req.seq, 8);
  u32(0, 12); // nlmsg_pid 0: the kernel fills in the sender
  const body = NLMSG_HDRLEN;
  let id: number;
  if (req.form === "compat") {
    // inet_diag_req: family, src_len, dst_len, ext, id, states, dbs
    id = body + 4;
    if (req.roundTrip) b[body + 3] = 1 << (INET_DIAG_INFO - 1);
    u32(req.states ?? ALL_STATES, body + 52);
  } else {
    // inet_diag_req_v2: family, protocol, ext, pad, states, id
    b[body] = req.family === 6 ? AF_INET6 : AF_INET;
    b[body + 1] = IPPROTO_TCP;
    if (req.roundTrip) b[body + 2] = 1 << (INET_DIAG_INFO - 1);
    u32(req.states ?? ALL_STATES, body + 4);
    id = body + 8;
  }
  // inet_diag_sockid: all zero (no exact match) but the cookie, INET_DIAG_NOCOOKIE.
  u32(0xffffffff, id + 40);
  u32(0xffffffff, id + 44);
  if (filter) {
    const at = body + bodyLen;
    u16(attrLen, at);
    u16(INET_DIAG_REQ_BYTECODE, at + 2);
    filter.copy(b, at + 4);
  }
  return b;
}

/** The kernel answered a dump with NLMSG_ERROR, or with bytes that are not a dump answer. */
export class DiagAnswerError extends Error {
  /** Positive errno from NLMSG_ERROR, or 0 for malformed bytes. */
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message);
    this.name = "DiagAnswerError";
    this.errno = errno;
  }
}

/**
 * Sockets a summarising read counted instead of returning: those in one state on one local address
 * and port that no process owns (inode 0: TIME_WAIT, orphaned FIN_WAIT_*, unaccepted connections),
 * past the first few. Such rows carry nothing the diagnosis needs beyond their number and their
 * longest timer, and a busy port has tens of thousands of them.
 */
export interface OmittedSockets {
  family: 4 | 6;
  state: TcpState;
  localAddress: string;
  localPort: number;
  count: number;
  /** Longest time left on a timer among them, ms; null if none had a timer running. */
  longestTimerMs: number | null;
}

interface Omitting extends OmittedSockets {
  /** The local address's raw words (network order read natively), to match rows without formatting. */
  w0: number;
  w1: number;
  w2: number;
  w3: number;
  stateNumber: number;
  kept: number;
}

interface V6Entry {
  w0: number;
  w1: number;
  w2: number;
  w3: number;
  text: string;
}

export interface DecodeOptions {
  /** Only rows with this local port (the kernel filters too; this holds whatever the kernel did). */
  localPort?: number;
  /** Only rows that pass this (the kernel filters too; this holds whatever the kernel did). */
  ports?: PortFilter;
  family?: 4 | 6;
  /** Byte order of the host that produced the bytes: netlink headers and counters are in host order. */
  endian?: Endianness;
  /**
   * Keep at most this many ownerless (inode 0) non-listening sockets per state, local address and
   * port; count the rest in omitted(). Unset: every row is kept.
   */
  ownerlessSample?: number;
  /** The request asked for tcp_info (DiagRequest.roundTrip): read each row's round trip from it. */
  roundTrip?: boolean;
}

const NATIVE_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/**
 * Turns the chunks of one or more dump answers into records. Feed each chunk the socket receives to
 * push(); it returns true at NLMSG_DONE.
 *
 * Written for 50,000 records in a process that runs once, so mostly before the JIT has optimised
 * anything: counters are read as whole words from a Uint32Array (messages are 4-byte aligned), ports
 * and addresses from the bytes, and each address is formatted once per decoder, keyed by its raw
 * words. With ownerlessSample, the rows counted instead of kept cost a few word reads and one Map
 * lookup each, and no object.
 */
export class DiagDecoder {
  readonly rows: TcpSocket[] = [];
  /**
   * IPV6_V6ONLY of each owned (inode != 0) AF_INET6 socket, by inode: whether a [::] socket covers
   * IPv4 too. Kept beside the rows, not in them, so that rows keep one shape whatever the reader.
   */
  readonly v6only = new Map<number, boolean>();
  /**
   * Each row's least round trip in microseconds (tcpi_min_rtt; tcpi_rtt, the smoothed one, from a
   * kernel older than 4.6), when the request asked for it (DiagRequest.roundTrip). The least, because
   * the smoothed one holds the peer's think time too: ~1.2 ms for an ssh connection on a veth whose
   * least is 0.02 ms.
   */
  readonly minRttUs = new Map<TcpSocket, number>();
  private readonly swap: boolean;
  /** Byte order of the bytes (not of this machine): rtattr headers are read by hand in it. */
  private readonly le: boolean;
  /** Where nlmsg_type sits in the word it shares with nlmsg_flags. */
  private readonly typeShift: number;
  private readonly onlyLocalPort: number;
  private readonly ports: PortFilter | undefined;
  private readonly onlyFamily: 4 | 6 | undefined;
  private readonly sample: number;
  private readonly roundTrip: boolean;
  /** Keyed by a hash of address, state and port; the list holds the (rare) collisions. */
  private readonly omitting = new Map<number, Omitting[]>();
  private readonly v4 = new Map<number, string>();
  private readonly v6 = new Map<number, V6Entry[]>();

  constructor(options: DecodeOptions = {}) {
    const le = (options.endian ?? "LE") === "LE";
    this.swap = le !== NATIVE_LE;
    this.le = le;
    this.typeShift = le ? 0 : 16;
    this.onlyLocalPort = options.localPort ?? -1;
    this.ports = options.ports;
    this.onlyFamily = options.family;
    this.sample = options.ownerlessSample ?? Infinity;
    this.roundTrip = options.roundTrip ?? false;
  }

  /** What a summarising decoder counted instead of keeping (see DecodeOptions.ownerlessSample). */
  omitted(): OmittedSockets[] {
    const out: OmittedSockets[] = [];
    for (const list of this.omitting.values()) {
      for (const o of list) {
        if (o.count > 0) {
          out.push({ family: o.family, state: o.state, localAddress: o.localAddress, localPort: o.localPort, count: o.count, longestTimerMs: o.longestTimerMs });
        }
      }
    }
    return out;
  }

  /** Decodes one received datagram (one or more netlink messages). True once the dump is done. */
  push(chunk: Uint8Array): boolean {
    let b = chunk;
    if (b.byteOffset % 4 !== 0) b = Uint8Array.prototype.slice.call(b); // a copy starts at offset 0
    const words = b.byteLength >>> 2;
    let u32 = new Uint32Array(b.buffer, b.byteOffset, words);
    if (this.swap) u32 = u32.map(swap32);
    const size = b.byteLength;
    let off = 0;
    while (off + NLMSG_HDRLEN <= size) {
      const w = off >>> 2;
      const len = u32[w]!;
      const type = (u32[w + 1]! >>> this.typeShift) & 0xffff; // nlmsg_type, then nlmsg_flags
      if (len < NLMSG_HDRLEN || off + len > size) {
        throw new DiagAnswerError(0, `netlink message of length ${len} at ${off} in a ${size}-byte datagram`);
      }
      if (type === NLMSG_DONE) return true;
      if (type === NLMSG_ERROR) {
        const errno = len >= NLMSG_HDRLEN + 4 ? -(u32[w + 4]! | 0) : 0;
        throw new DiagAnswerError(errno, `the kernel refused the sock_diag request (errno ${errno})`);
      }
      if (type !== TCPDIAG_GETSOCK && type !== SOCK_DIAG_BY_FAMILY) {
        throw new DiagAnswerError(0, `unexpected netlink message type ${type}`);
      }
      if (len < NLMSG_HDRLEN + INET_DIAG_MSG_LEN) throw new DiagAnswerError(0, `inet_diag_msg of ${len} bytes`);
      this.record(b, u32, off + NLMSG_HDRLEN, off + len);
      // NLMSG_ALIGN: messages start on 4-byte boundaries.
      off += (len + 3) & ~3;
    }
    return false;
  }

  /**
   * inet_diag_msg at byte `at`: family, state, timer, retrans; id: sport, dport (network order),
   * src[16], dst[16], if, cookie[2]; then expires, rqueue, wqueue, uid, inode (host order).
   */
  private record(b: Uint8Array, u32: Uint32Array, at: number, end: number): void {
    const family = b[at] === AF_INET6 ? 6 : 4;
    if (this.onlyFamily !== undefined && family !== this.onlyFamily) return;
    const localPort = (b[at + 4]! << 8) | b[at + 5]!;
    if (this.onlyLocalPort >= 0 && localPort !== this.onlyLocalPort) return;
    const remotePort = (b[at + 6]! << 8) | b[at + 7]!;
    if (this.ports !== undefined && !portFilterMatches(this.ports, localPort, remotePort)) return;
    const stateNumber = b[at + 1]!;
    const state = TCP_STATES[stateNumber];
    if (!state) return;
    const w = at >>> 2;
    const inode = u32[w + 17]!;
    const timerNumber = b[at + 2]!;
    if (inode === 0 && this.sample !== Infinity && state !== "LISTEN") {
      const o = this.omittingFor(family, stateNumber, state, b, u32, w, localPort);
      if (o.kept >= this.sample) {
        o.count++;
        if (timerNumber !== 0) {
          const ms = u32[w + 13]!;
          if (o.longestTimerMs === null || ms > o.longestTimerMs) o.longestTimerMs = ms;
        }
        return;
      }
      o.kept++;
    }
    const timer = TIMER_KINDS[timerNumber] ?? "none";
    const row: TcpSocket = {
      family,
      localAddress: family === 4 ? this.address4(b, u32[w + 2]!, at + 8) : this.address6(b, u32, w + 2, at + 8),
      localPort,
      remoteAddress: family === 4 ? this.address4(b, u32[w + 6]!, at + 24) : this.address6(b, u32, w + 6, at + 24),
      remotePort,
      state,
      // The answer for a listener puts its backlog limit in wqueue; procfs prints write_seq - snd_una,
      // 0 for a listener. Kept to procfs's meaning so both readers give one record.
      txQueue: state === "LISTEN" ? 0 : u32[w + 15]!,
      rxQueue: u32[w + 14]!,
      timer,
      timerMs: timer === "none" ? 0 : u32[w + 13]!,
      retransmits: b[at + 3]!,
      uid: u32[w + 16]!,
      inode,
    };
    this.rows.push(row);
    const v6only = family === 6 && inode !== 0;
    if (v6only || this.roundTrip) this.readAttributes(b, u32, at + INET_DIAG_MSG_LEN, end, row, v6only);
  }

  /**
   * One walk of the rtattrs after an inet_diag_msg: INET_DIAG_SKV6ONLY (when `v6only`) and
   * INET_DIAG_INFO's round trip (there only when asked for). Attributes and tcp_info's u32 fields are
   * 4-byte aligned, so the round trip is read from the word array, already in this machine's order.
   */
  private readAttributes(b: Uint8Array, u32: Uint32Array, at: number, end: number, row: TcpSocket, v6only: boolean): void {
    let wantV6 = v6only;
    let wantRtt = this.roundTrip;
    while ((wantV6 || wantRtt) && at + 4 <= end) {
      const len = this.le ? b[at]! | (b[at + 1]! << 8) : (b[at]! << 8) | b[at + 1]!;
      const type = (this.le ? b[at + 2]! | (b[at + 3]! << 8) : (b[at + 2]! << 8) | b[at + 3]!) & 0x3fff;
      if (len < 4) return;
      if (wantV6 && type === INET_DIAG_SKV6ONLY && len >= 5) {
        this.v6only.set(row.inode, b[at + 4] !== 0);
        wantV6 = false;
      } else if (wantRtt && type === INET_DIAG_INFO) {
        const has = (off: number) => len >= 4 + off + 4 && at + 4 + off + 4 <= end;
        const off = has(TCPI_MIN_RTT_OFFSET) ? TCPI_MIN_RTT_OFFSET : has(TCPI_RTT_OFFSET) ? TCPI_RTT_OFFSET : -1;
        if (off >= 0) this.minRttUs.set(row, u32[(at + 4 + off) >>> 2]!);
        wantRtt = false;
      }
      at += (len + 3) & ~3;
    }
  }

  private omittingFor(
    family: 4 | 6,
    stateNumber: number,
    state: TcpState,
    b: Uint8Array,
    u32: Uint32Array,
    w: number,
    localPort: number,
  ): Omitting {
    const w0 = u32[w + 2]!;
    const w1 = family === 4 ? 0 : u32[w + 3]!;
    const w2 = family === 4 ? 0 : u32[w + 4]!;
    const w3 = family === 4 ? 0 : u32[w + 5]!;
    // A small-integer key (one Map probe, no allocation); equal keys are told apart by the fields.
    const key = (w0 ^ w1 ^ w2 ^ w3 ^ Math.imul(stateNumber + 1, 0x9e3779b1) ^ Math.imul(localPort + 1, 0x85ebca6b) ^ family) | 0;
    let list = this.omitting.get(key);
    if (list === undefined) {
      list = [];
      this.omitting.set(key, list);
    }
    for (const o of list) {
      if (o.w0 === w0 && o.w1 === w1 && o.w2 === w2 && o.w3 === w3 && o.stateNumber === stateNumber && o.localPort === localPort && o.family === family) return o;
    }
    const at = w << 2;
    const localAddress = family === 4 ? this.address4(b, w0, at + 8) : this.address6(b, u32, w + 2, at + 8);
    const o: Omitting = { family, state, localAddress, localPort, count: 0, longestTimerMs: null, w0, w1, w2, w3, stateNumber, kept: 0 };
    list.push(o);
    return o;
  }

  /** `word` is the address's four bytes read as one native word: a key, not a value. */
  private address4(b: Uint8Array, word: number, at: number): string {
    let a = this.v4.get(word);
    if (a === undefined) {
      a = `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
      this.v4.set(word, a);
    }
    return a;
  }

  private address6(b: Uint8Array, u32: Uint32Array, w: number, at: number): string {
    const w0 = u32[w]!;
    const w1 = u32[w + 1]!;
    const w2 = u32[w + 2]!;
    const w3 = u32[w + 3]!;
    let list = this.v6.get(w3);
    if (list === undefined) {
      list = [];
      this.v6.set(w3, list);
    }
    for (const e of list) if (e.w0 === w0 && e.w1 === w1 && e.w2 === w2) return e.text;
    const text = formatIPv6(Array.from(b.subarray(at, at + 16)));
    list.push({ w0, w1, w2, w3, text });
    return text;
  }
}
