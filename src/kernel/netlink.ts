/**
 * The socket side of the netlink reader: sends inet_diag dump requests and feeds the answer to the
 * decoder in inet-diag.ts. Node has no netlink sockets, so this goes through the `netlink` package
 * (an optional dependency with prebuilt N-API binaries), loaded on first use; when it is missing or
 * will not load, `netlinkAvailable()` says so and the caller reads procfs instead.
 *
 * The package's sockets are asynchronous (a libuv poll on the fd), hence Promise-returning reads.
 * Receives use a 32 KiB buffer without peeking: the kernel sizes each dump datagram to the largest
 * receive it has seen, capped near 32 KiB (netlink_recvmsg, max_recvmsg_len), so one recvmsg takes
 * a full datagram, about 340 sockets, where a peeked 4 KiB read took eight times as many calls.
 */
import { createRequire } from "node:module";
import { endianness } from "node:os";
import {
  DiagAnswerError,
  DiagDecoder,
  encodeDumpRequest,
  NETLINK_SOCK_DIAG,
  type DiagRequestForm,
  type OmittedSockets,
} from "./inet-diag.js";
import type { PortFilter, TcpSocket } from "./parse.js";

/** The part of netlink's RawNetlinkSocket used here (its own types pull in an old @types/node). */
interface RawNetlinkSocket {
  on(event: "message" | "truncatedMessage", listener: (msg: Buffer) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  send(msg: Uint8Array, options?: object, callback?: (err?: Error) => void): void;
  close(): void;
  removeAllListeners(event: string): unknown;
}

interface NetlinkModule {
  RawNetlinkSocket: new (
    protocol: number,
    options: { messagePeeking: boolean; msgBufferSize: number; recvBufferSize?: number; sendBufferSize?: number },
  ) => RawNetlinkSocket;
}

const RECEIVE_BUFFER = 32768;
/** A dump of 50,000 sockets takes about 30 ms; this only stops a hang from hanging the caller. */
const DUMP_TIMEOUT_MS = 5000;

let binding: NetlinkModule | null | undefined;
let loadError: unknown;

function load(): NetlinkModule | null {
  if (binding === undefined) {
    try {
      if (process.platform !== "linux") throw new Error(`netlink is Linux only; this is ${process.platform}`);
      binding = createRequire(import.meta.url)("netlink/dist/raw.js") as NetlinkModule;
    } catch (e) {
      // Not installed (optional dependency), no binary for this platform, or not Linux.
      loadError = e;
      binding = null;
    }
  }
  return binding;
}

/** Whether the netlink reader can run here; if not, `netlinkUnavailableReason()` says why. */
export function netlinkAvailable(): boolean {
  return load() !== null;
}

export function netlinkUnavailableReason(): string | undefined {
  load();
  return loadError === undefined ? undefined : String((loadError as Error).message ?? loadError).split("\n")[0];
}

// The request form this kernel accepts, learnt on the first read of the process.
let form: DiagRequestForm = "compat";
let seq = 0;

function dump(socket: RawNetlinkSocket, request: Buffer, decoder: DiagDecoder): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`no end to the sock_diag dump after ${DUMP_TIMEOUT_MS} ms`)), DUMP_TIMEOUT_MS);
    socket.on("message", (msg) => {
      if (settled) return;
      try {
        if (decoder.push(msg)) finish();
      } catch (e) {
        finish(e);
      }
    });
    socket.on("truncatedMessage", () => finish(new Error(`a sock_diag datagram larger than ${RECEIVE_BUFFER} bytes`)));
    socket.on("error", (e) => finish(e));
    socket.send(request, {}, (e) => {
      if (e) finish(e);
    });
  });
}

export interface NetlinkReadOptions {
  localPort?: number;
  /** Only sockets that pass this port filter (the kernel applies it). */
  ports?: PortFilter;
  family?: 4 | 6;
  /** See DecodeOptions.ownerlessSample. */
  ownerlessSample?: number;
  /** Bit mask of states to ask for (inet-diag.ts ALL_STATES, the default, or BOUND_INACTIVE_STATES). */
  states?: number;
  /** Ask for tcp_info too, and answer with each row's round trip (NetlinkAnswer.minRttUs). */
  roundTrip?: boolean;
}

export interface NetlinkAnswer {
  rows: TcpSocket[];
  omitted: OmittedSockets[];
  /** IPV6_V6ONLY of the owned AF_INET6 sockets, by inode (see DiagDecoder.v6only). */
  v6only: Map<number, boolean>;
  /** The least round trip of each row, in microseconds, when asked for (see DiagDecoder.minRttUs). */
  minRttUs: Map<TcpSocket, number>;
}

/**
 * Every TCP socket of this process's network namespace (or those on one local port), over netlink.
 * Rejects when netlink is unavailable or the kernel refuses; the caller falls back to procfs.
 */
export async function readTcpSocketsNetlink(
  options: NetlinkReadOptions = {},
): Promise<NetlinkAnswer> {
  const nl = load();
  if (!nl) throw new Error(`netlink unavailable: ${netlinkUnavailableReason()}`);
  if (options.ports !== undefined && options.ports.local === undefined && options.ports.remote === undefined) {
    return { rows: [], omitted: [], v6only: new Map(), minRttUs: new Map() }; // matches nothing, so nothing to ask
  }
  const endian = endianness();
  const open = () => new nl.RawNetlinkSocket(NETLINK_SOCK_DIAG, { messagePeeking: false, msgBufferSize: RECEIVE_BUFFER });
  const decoding = { localPort: options.localPort, ports: options.ports, ownerlessSample: options.ownerlessSample, roundTrip: options.roundTrip, endian };
  if (form === "compat" && options.family === undefined) {
    const socket = open();
    try {
      const decoder = new DiagDecoder(decoding);
      await dump(socket, encodeDumpRequest({ form, localPort: options.localPort, ports: options.ports, states: options.states, roundTrip: options.roundTrip, seq: ++seq }, endian), decoder);
      return { rows: decoder.rows, omitted: decoder.omitted(), v6only: decoder.v6only, minRttUs: decoder.minRttUs };
    } catch (e) {
      // A kernel without the old TCPDIAG_GETSOCK message: ask per family from now on.
      if (!(e instanceof DiagAnswerError && e.errno !== 0)) throw e;
      form = "by-family";
    } finally {
      socket.close();
    }
  }
  // One dump at a time per socket (a second request while one runs gets EBUSY), one socket per dump
  // so that no late datagram of the first can reach the second's listener.
  const decoder = new DiagDecoder({ ...decoding, family: options.family });
  for (const family of options.family === undefined ? ([4, 6] as const) : [options.family]) {
    const socket = open();
    try {
      await dump(socket, encodeDumpRequest({ form: "by-family", family, localPort: options.localPort, ports: options.ports, states: options.states, roundTrip: options.roundTrip, seq: ++seq }, endian), decoder);
    } finally {
      socket.close();
    }
  }
  return { rows: decoder.rows, omitted: decoder.omitted(), v6only: decoder.v6only, minRttUs: decoder.minRttUs };
}

/**
 * Sends requests that the kernel acknowledges (NLM_F_ACK) one after another on one socket and
 * resolves with each ack's errno, 0 for success (SOCK_DESTROY, in sock-destroy.ts). `onEach` sees
 * every answer as it comes. Rejects when netlink is unavailable.
 */
export async function requestsWithAck(encoders: readonly ((seq: number) => Buffer)[], onEach?: (i: number, errno: number) => void): Promise<number[]> {
  const nl = load();
  if (!nl) throw new Error(`netlink unavailable: ${netlinkUnavailableReason()}`);
  const { decodeAck } = await import("./sock-destroy.js");
  const socket = new nl.RawNetlinkSocket(NETLINK_SOCK_DIAG, { messagePeeking: false, msgBufferSize: 8192 });
  const out: number[] = [];
  try {
    for (let i = 0; i < encoders.length; i++) {
      const errno = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to a sock_diag request after ${DUMP_TIMEOUT_MS} ms`)), DUMP_TIMEOUT_MS);
        const onMessage = (msg: Buffer) => {
          const e = decodeAck(msg, endianness());
          if (e !== null) {
            clearTimeout(timer);
            resolve(e);
          }
        };
        socket.on("message", onMessage);
        socket.on("error", (e) => {
          clearTimeout(timer);
          reject(e);
        });
        socket.send(encoders[i]!(++seq), {}, (e) => {
          if (e) {
            clearTimeout(timer);
            reject(e);
          }
        });
      });
      out.push(errno);
      onEach?.(i, errno);
      socket.removeAllListeners("message");
      socket.removeAllListeners("error");
    }
  } finally {
    socket.close();
  }
  return out;
}

/** For tests: read with the per-family request form whatever this kernel accepts. */
export function setRequestFormForTests(f: DiagRequestForm): DiagRequestForm {
  const before = form;
  form = f;
  return before;
}
