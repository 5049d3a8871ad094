/**
 * How much of an OpenSSH server's channel window the built-in client fills with input (--copy, -I).
 *
 * ssh2 sends all the window allows the moment it allows it, and sshd opens 2 MB (64 packets of
 * 32 KB). Whenever the network is faster than the program the bytes are for (scp -t writing files:
 * on a LAN, or on the testbed, always), those 2 MB wait inside each host's sshd, in buffers it grows
 * and unmaps again and again. Measured with bench/copy (32 testbed hosts, 10 MB each, fan-out 32):
 * the hosts' sshd spent ~1.6 s more CPU with ssh2 as the client than with OpenSSH's own, in page
 * faults and unmaps (perf), and our copy lost to `clush --copy` on wall time (1.4×); with at most
 * 512 KB unacknowledged per channel it wins (0.7×), and one 100 MB session costs its sshd 270 ms of
 * CPU instead of 450.
 *
 * The cap must not cost throughput: a connection carries at most inFlight / RTT, so the cap grows
 * with the connection's least round trip, as the kernel measured it (kernel/read.ts tcpRoundTripMs),
 * so that HOST_RATE still gets through; from 8 ms up (2 MB) it is the whole window, as before. Where
 * the kernel cannot be asked (no netlink), there is no cap.
 *
 * It is only safe with a server that credits the window before half of it is used. OpenSSH's sshd
 * sends CHANNEL_WINDOW_ADJUST once a few packets are outstanding and some are consumed (channels.c,
 * channel_check_window; seen here: 100 MB went through sshd 9.2 with only 128 KB in flight); ssh2's
 * own server waits for half the window, which 512 KB never reaches. So the cap is for servers whose
 * banner says OpenSSH, and if credit still stops for STALL_MS while we wait at the cap, the rest of
 * the window is given back for good.
 */
import type net from "node:net";
import type { ClientChannel } from "ssh2";

/** The least we keep in flight: enough for 256 MB/s at 2 ms. */
export const MIN_IN_FLIGHT = 512 * 1024;
/** What one host's input must still reach under the cap, in bytes per second. */
export const HOST_RATE = 256 * 1024 * 1024;
/** No credit for this long while we wait at the cap: the server does not credit early after all. */
export const STALL_MS = 500;

/** The software part of the server's identification line (RFC 4253 §4.2): "OpenSSH_9.2p1", or null. */
export function serverSoftware(firstBytes: Buffer): string | null {
  const m = /^SSH-2\.0-([^ \r\n]+)[ \r\n]/m.exec(firstBytes.toString("latin1"));
  return m ? m[1]! : null;
}

/**
 * The most input to keep unacknowledged in a channel whose window is `window`, or null for no cap
 * (the server's credit rule is unknown, the round trip was not measured, or the cap would be the
 * whole window anyway).
 */
export function inFlightCap(o: { window: number; rttMs: number | null; server: string | null }): number | null {
  if (o.rttMs === null || !Number.isFinite(o.rttMs) || o.rttMs < 0) return null;
  if (!o.server || !o.server.startsWith("OpenSSH_")) return null;
  const cap = Math.max(MIN_IN_FLIGHT, Math.ceil((o.rttMs / 1000) * HOST_RATE));
  return cap < o.window ? cap : null;
}

/**
 * ssh2's view of the channel, as lib/Channel.js and lib/client.js keep it (ssh2 ^1.17): the window it
 * may still fill, and the write it holds while that window is 0.
 */
interface ChannelInternals {
  outgoing: { window: number };
  _waitWindow?: boolean;
  _chunk?: Buffer;
  _chunkcb?: () => void;
  _write(data: Buffer, encoding: null, cb: (() => void) | undefined): void;
}

/** How much ssh2 may still send on the channel before the server credits more. */
export function sendWindow(channel: ClientChannel): number {
  return (channel as unknown as ChannelInternals).outgoing.window;
}

export interface InFlightCap {
  /** The server stopped crediting at the cap, and the whole window was given back. */
  readonly released: boolean;
  stop(): void;
}

/**
 * Hide all but `cap` bytes of the channel's send window from ssh2, so that ssh2's own window logic
 * keeps at most `cap` unacknowledged; the hidden part comes back if the server stops crediting
 * (nothing written on `sock` for STALL_MS while the window we left is used up).
 */
export function capInFlight(channel: ClientChannel, sock: net.Socket, cap: number): InFlightCap {
  const ch = channel as unknown as ChannelInternals;
  const hidden = ch.outgoing.window - cap;
  const state = { released: false, stop: (): void => {} };
  if (!(hidden > 0) || typeof ch._write !== "function") return state;
  ch.outgoing.window -= hidden;
  let written = sock.bytesWritten;
  const timer = setInterval(() => {
    const now = sock.bytesWritten;
    if (ch.outgoing.window <= 0 && now === written) release();
    written = now;
  }, STALL_MS);
  timer.unref();
  const stop = (): void => clearInterval(timer);
  const release = (): void => {
    stop();
    state.released = true;
    ch.outgoing.window += hidden;
    // What ssh2 does when a CHANNEL_WINDOW_ADJUST arrives: resume the write it holds.
    if (!ch._waitWindow) return;
    ch._waitWindow = false;
    if (ch._chunk) ch._write(ch._chunk, null, ch._chunkcb);
    else ch._chunkcb?.();
  };
  channel.once("close", stop);
  channel.once("finish", stop);
  state.stop = stop;
  return state;
}
