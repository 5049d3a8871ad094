/**
 * Ending one connection: politely after the peer (`closeAfterPeer`), or at once with RST (`abort`).
 *
 * Who sends the first FIN keeps the TIME_WAIT (RFC 9293 §3.6). Waiting for the peer's FIN before
 * sending ours leaves the TIME_WAIT with the peer. An RST leaves none anywhere, but it also throws
 * away data in flight in both directions (RFC 9293 §3.10.7), so it is the last resort.
 */
import net from "node:net";
import { ArgumentError } from "../errors.js";
import { timerDelay } from "../core/timer.js";

/** Who ended a connection: the peer's FIN came first, ours did, or an RST (either way) ended it. */
export type ClosedBy = "remote" | "local" | "reset";
export type CloseResult = { closedBy: ClosedBy };

export interface CloseAfterPeerOptions {
  /** How long to wait for the peer's FIN; 0 = wait as long as it takes. */
  timeoutMs: number;
  /** At timeoutMs: "close" sends our FIN (we keep the TIME_WAIT), "reset" sends RST. Default "close". */
  onTimeout?: "close" | "reset";
  signal?: AbortSignal;
  /**
   * When the peer's FIN comes: "close" answers with our FIN (the peer keeps the TIME_WAIT), "reset"
   * answers with RST (no TIME_WAIT on either side; data still in flight towards the peer is lost).
   * Default "close".
   */
  onPeerFin?: "close" | "reset";
}

/** Sockets this module reset, so that who ended them can still be told after they are gone. */
const resetHere = new WeakSet<net.Socket>();

/**
 * Who ended a socket that is already destroyed: reset by us (abort) or by the peer (ECONNRESET,
 * EPIPE), else the peer's FIN if it came (ours answered it), else ours. Null while it is open.
 */
function endedBy(socket: net.Socket): ClosedBy | null {
  if (!socket.destroyed) return null;
  const code = (socket.errored as NodeJS.ErrnoException | null)?.code;
  if (resetHere.has(socket) || code === "ECONNRESET" || code === "EPIPE") return socket.readableEnded ? "remote" : "reset";
  return socket.readableEnded ? "remote" : "local";
}

/**
 * A TLSSocket says so (`encrypted` is always true on one): asked this way, not with instanceof, so
 * that ending a plain TCP connection (every rsh host) does not load node:tls and with it crypto.
 */
function isTls(socket: net.Socket): boolean {
  return (socket as { encrypted?: unknown }).encrypted === true;
}

/**
 * The TCP socket under a TLS one. A TLSSocket's handle is the TLS layer, which cannot send an RST
 * (`resetAndDestroy` throws ERR_INVALID_HANDLE_TYPE), so the reset goes to the net.Socket it wraps:
 * a tls.Server's connections (and `tls.connect({ socket })`) have one, as `_parent`, which Node sets
 * and keeps for exactly this kind of reach-through (http2 uses it too). `tls.connect()` without a
 * socket wraps the TCP handle directly and Node offers no way to reset that one.
 */
function tcpOf(socket: net.Socket): net.Socket | null {
  if (!isTls(socket)) return socket;
  const parent: unknown = (socket as unknown as { _parent?: unknown })._parent;
  return parent instanceof net.Socket && !isTls(parent) ? parent : null;
}

/**
 * Ends `socket` with an RST: no TIME_WAIT on either side, and data not yet delivered is lost on both
 * sides. Use it when the peer will not close and the port's TIME_WAIT matters more than the data.
 * TLS sockets are reset through their TCP socket (an https server's connections are); a client made
 * with `tls.connect()` and no `socket` option cannot be reset by Node, and abort throws an
 * ArgumentError for it rather than close it with a FIN behind the caller's back.
 */
export function abort(socket: net.Socket): void {
  if (socket.destroyed) return;
  const tcp = tcpOf(socket);
  if (!tcp) {
    throw new ArgumentError("abort: this TLS socket has no TCP socket Node can reset; create it with tls.connect({ socket: net.connect(...) })");
  }
  resetHere.add(socket);
  resetHere.add(tcp);
  if (!tcp.destroyed) tcp.resetAndDestroy();
  // The TLS layer above closes when its TCP socket does; destroy it too so it cannot write a close_notify.
  if (tcp !== socket) socket.destroy();
}

/**
 * Waits for the peer to close (its FIN), then closes ours, so the peer keeps the TIME_WAIT. Data
 * still arriving meanwhile is read and thrown away unless someone else reads it. Resolves with who
 * closed: "remote" (the peer's FIN came first), "local" (we closed first at the timeout, or the
 * application did), "reset" (an RST either way). Abort of `signal` acts like the timeout, now.
 */
export function closeAfterPeer(socket: net.Socket, o: CloseAfterPeerOptions): Promise<CloseResult> {
  if (o === null || typeof o !== "object") throw new ArgumentError("closeAfterPeer: options must be an object");
  if (!Number.isInteger(o.timeoutMs) || o.timeoutMs < 0) {
    throw new ArgumentError(`closeAfterPeer: timeoutMs must be a non-negative integer, got ${String(o.timeoutMs)}`);
  }
  for (const key of ["onTimeout", "onPeerFin"] as const) {
    const v = o[key];
    if (v !== undefined && v !== "close" && v !== "reset") {
      throw new ArgumentError(`closeAfterPeer: ${key} must be "close" or "reset", got ${JSON.stringify(v)}`);
    }
  }
  return new Promise((resolve) => {
    let peerFirst = socket.readableEnded;
    let weFirst = socket.writableEnded && !peerFirst;
    let reset = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      if (timer) clearTimeout(timer);
      o.signal?.removeEventListener("abort", act);
      socket.removeListener("end", onEnd);
      socket.removeListener("error", onError);
      // Who closed FIRST: an RST after the peer's FIN does not move the peer's TIME_WAIT here.
      if (resetHere.has(socket)) reset = true;
      resolve({ closedBy: peerFirst ? "remote" : reset ? "reset" : "local" });
    };
    const onEnd = () => {
      if (!weFirst) peerFirst = true;
      if (o.onPeerFin === "reset") abort(socket);
      // allowHalfOpen sockets (http servers' among them) do not answer a FIN on their own.
      else if (!socket.writableEnded) socket.end();
    };
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET" || err.code === "EPIPE") reset = true;
    };
    const act = () => {
      if (socket.destroyed || peerFirst) return;
      if ((o.onTimeout ?? "close") === "reset") {
        reset = true;
        abort(socket);
      } else {
        weFirst = true;
        socket.end();
      }
    };
    const gone = endedBy(socket);
    if (gone) {
      resolve({ closedBy: gone });
      return;
    }
    socket.once("close", finish);
    socket.on("end", onEnd);
    socket.on("error", onError);
    if (peerFirst) onEnd();
    // Without a reader, a paused socket never sees the FIN behind unread data. A caller that reads
    // keeps its own flow control (a slow consumer pauses the socket; the FIN waits behind the data).
    if (socket.listenerCount("data") === 0) {
      socket.on("data", () => {});
      socket.resume();
    }
    if (o.signal?.aborted) act();
    else o.signal?.addEventListener("abort", act, { once: true });
    // Clamped: past 2^31-1 ms a Node timer fires at once, and we would close first (core/timer.ts).
    const delay = timerDelay(o.timeoutMs, "closeAfterPeer: timeoutMs");
    if (delay > 0) timer = setTimeout(act, delay);
  });
}

export interface EndAfterPeerOptions {
  /** How long the peer has to send its FIN before we reset; 0 = until `signal` aborts. */
  graceMs: number;
  /** Abort = reset now (no TIME_WAIT anywhere), unless the peer's FIN is already in. */
  signal?: AbortSignal;
  /** Answer the peer's FIN with RST instead of FIN (rsh's resetAfterEof). */
  onPeerFin?: "close" | "reset";
}

/**
 * The one place a transport learns who ended its connection. Never sends the first FIN: it waits for
 * the peer's (then answers, so the TIME_WAIT is the peer's), and when the grace runs out or `signal`
 * aborts it resets (RST: no TIME_WAIT on either side). Call it as soon as the connection is up or
 * at any later moment: a socket already gone (reset by `abort`, by the peer, or after the peer's
 * FIN) is told from its state. Who reads the data stays the caller's business.
 */
export function endAfterPeer(socket: net.Socket, o: EndAfterPeerOptions): Promise<ClosedBy> {
  return closeAfterPeer(socket, {
    timeoutMs: o.graceMs,
    onTimeout: "reset",
    ...(o.onPeerFin ? { onPeerFin: o.onPeerFin } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  }).then((r) => r.closedBy);
}
