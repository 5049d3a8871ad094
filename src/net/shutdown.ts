/**
 * Shutting a server down so that the clients close first, and the server keeps no TIME_WAIT.
 *
 * The side that sends the first FIN keeps the 4-tuple in TIME_WAIT for 60 s (RFC 9293 §3.6,
 * TCP_TIMEWAIT_LEN). Every common Node shutdown helper ends idle keep-alive sockets itself
 * (`closeIdleConnections`, which Node's own http `close()` calls first), so a restarted host collects
 * one TIME_WAIT per client. Here:
 *
 *  1. The listening socket is closed with net.Server's close, not http's (which would end idle
 *     connections first). Connections still in the kernel's accept queue at that moment are reset by
 *     Linux (inet_csk_listen_stop), see docs/library.md.
 *  2. Open connections are left to finish. For HTTP/1.1 we never send `Connection: close`: RFC 9112
 *     §9.6 says a server that does must initiate the closure, i.e. keep the TIME_WAIT. Instead every
 *     response from now on carries `Keep-Alive: timeout=1`, on which both Node's agent and undici stop
 *     reusing the socket and close it themselves, and the server's own idle timer (keepAliveTimeout,
 *     which would close first) is switched off.
 *  3. A keep-alive connection that has answered every request it sent and then stays silent for
 *     `idleGraceMs` is reset (`idle: "reset"`, the default): nothing is lost, since no request is
 *     unanswered, and an RST leaves no TIME_WAIT on either side. Without this, the most common client
 *     (`new http.Agent({ keepAlive: true })`, no idle timeout of its own) never leaves, since it only
 *     hears the hint on a response, and sits out the whole grace until the server closes first. A
 *     client that sends again within `idleGraceMs` is served (with the hint) and leaves on its own.
 *     Bytes that arrive without making a request (a request still being read, an upgraded
 *     connection) make the connection not idle: it is left to step 4.
 *  4. At `graceMs` whatever is left is closed (our FIN first: our TIME_WAIT) or reset (RST: no
 *     TIME_WAIT anywhere), as `onTimeout` says. An abort of `signal` means "now" for step 4.
 *
 * Connections must be tracked from their accept on: `listen()` from this module does it, or call
 * `trackConnections(server)` before the server starts accepting.
 */
import net from "node:net";
import { timerDelay } from "../core/timer.js";
import http from "node:http";
import tls from "node:tls";
import { ArgumentError } from "../errors.js";
import { abort } from "./close.js";

export type ClosedBy = "client" | "server" | "reset" | "client-reset";

interface Conn {
  socket: net.Socket;
  /** Requests read and not yet answered in full. */
  active: Set<http.ServerResponse>;
  peerEnded: boolean;
  weEnded: boolean;
  /** Set by shutdown when it acts on the connection (at graceMs, or once idle). */
  forced?: "close" | "reset";
  /** Shutdown ended it because it stayed idle `idleGraceMs`. */
  endedIdle: boolean;
  /** `socket.bytesRead` when the connection last had no request unanswered (0 at accept). */
  bytesAtIdle: number;
  /** Bytes came that made no request (one being read, or an upgrade): not idle until a request ends. */
  unknownTraffic: boolean;
  idleTimer?: NodeJS.Timeout;
  resetByPeer: boolean;
  closed: boolean;
}

interface Tracking {
  conns: Set<Conn>;
  /** Set while a shutdown is running: it wants to hear about each close and each new request. */
  onClose?: (c: Conn) => void;
  onRequest?: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  /** A connection's last unanswered request has ended. */
  onIdle?: (c: Conn) => void;
  /** Requests that finished or were cut off since tracking started. */
  completed: number;
  cutOff: number;
}

const tracked = new WeakMap<net.Server, Tracking>();
const connOf = new WeakMap<net.Socket, Conn>();

function isHttp(server: net.Server): server is http.Server {
  return server instanceof http.Server || typeof (server as Partial<http.Server>).closeIdleConnections === "function";
}

/**
 * Starts keeping the list of open connections of `server` (idempotent). Needed by `shutdown`;
 * `listen()` calls it. For TLS servers the connection is the TLS socket once the handshake is done.
 */
export function trackConnections(server: net.Server): void {
  if (tracked.has(server)) return;
  const t: Tracking = { conns: new Set(), completed: 0, cutOff: 0 };
  tracked.set(server, t);
  const add = (socket: net.Socket) => {
    if (connOf.has(socket)) return;
    const c: Conn = {
      socket,
      active: new Set(),
      peerEnded: false,
      weEnded: false,
      resetByPeer: false,
      closed: false,
      endedIdle: false,
      bytesAtIdle: 0,
      unknownTraffic: false,
    };
    connOf.set(socket, c);
    t.conns.add(c);
    socket.on("end", () => {
      if (!c.weEnded) c.peerEnded = true;
    });
    // 'finish' is our FIN queued: whoever's comes first decides who keeps the TIME_WAIT.
    socket.on("finish", () => {
      if (!c.peerEnded) c.weEnded = true;
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET" || err.code === "EPIPE") c.resetByPeer = true;
    });
    socket.on("close", () => {
      c.closed = true;
      if (c.idleTimer) clearTimeout(c.idleTimer);
      t.conns.delete(c);
      t.onClose?.(c);
    });
  };
  const isTls = server instanceof tls.Server;
  server.on(isTls ? "secureConnection" : "connection", add);
  if (isHttp(server)) {
    server.prependListener("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
      const c = connOf.get(req.socket);
      if (!c) return;
      c.active.add(res);
      c.unknownTraffic = false;
      t.onRequest?.(req, res);
      res.once("close", () => {
        c.active.delete(res);
        if (res.writableFinished) t.completed++;
        else t.cutOff++;
        if (c.active.size === 0) {
          c.bytesAtIdle = c.socket.bytesRead;
          t.onIdle?.(c);
        }
      });
    });
  }
}

export interface ShutdownOptions {
  /** How long to wait for clients to close first; 0 = do not wait (act at once). */
  graceMs: number;
  /** What to do with connections left at graceMs: "close" (our FIN: our TIME_WAIT) or "reset" (RST: none). Default "close". */
  onTimeout?: "close" | "reset";
  /**
   * HTTP keep-alive connections that have answered every request and stay silent `idleGraceMs`:
   * "reset" (RST: no TIME_WAIT anywhere, nothing unanswered is lost; the default), "close" (our FIN:
   * one server TIME_WAIT each) or "wait" (leave them to the client, then to `onTimeout` at graceMs).
   */
  idle?: "reset" | "close" | "wait";
  /** How long an idle connection may stay silent before `idle` acts. Default 1000; 0 = at once. */
  idleGraceMs?: number;
  /** Aborting ends the grace period now (the report says `aborted`). */
  signal?: AbortSignal;
}

export interface ShutdownReport {
  /** Connections open when shutdown began. */
  connections: number;
  /** Closed by the client first (FIN): the client keeps the TIME_WAIT, we keep none. */
  closedByClient: number;
  /** Reset by the client (no TIME_WAIT on either side). */
  resetByClient: number;
  /** Closed by us first (the application, or onTimeout "close"): each leaves a TIME_WAIT here. */
  closedByServer: number;
  /** Reset by us (onTimeout "reset" at graceMs, or idle "reset"). */
  reset: number;
  /** Of those closed or reset by us, how many because they stayed idle `idleGraceMs` (option `idle`). */
  endedIdle: number;
  /** Requests answered in full during the shutdown. */
  requestsCompleted: number;
  /** Requests whose response did not finish (the connection ended under them). */
  requestsCutOff: number;
  /**
   * Connections accepted before tracking began (no `listen()` from this module, no
   * `trackConnections`): we cannot tell who closed them. At graceMs an http server's are destroyed
   * with closeAllConnections(); a plain net server's are left to the application.
   */
  untracked: number;
  /** Whether graceMs ran out (or the signal fired) with connections still open. */
  timedOut: boolean;
  aborted: boolean;
  durationMs: number;
}

const KEEP_ALIVE_HINT = "timeout=1";
/** After a forced close, how long to let our FIN and the peer's answer pass before destroying. */
const CLOSE_LINGER_MS = 1000;
const DEFAULT_IDLE_GRACE_MS = 1000;

function validate(o: ShutdownOptions): void {
  if (o === null || typeof o !== "object") throw new ArgumentError("shutdown: options must be an object");
  if (!Number.isInteger(o.graceMs) || o.graceMs < 0) {
    throw new ArgumentError(`shutdown: graceMs must be a non-negative integer, got ${String(o.graceMs)}`);
  }
  if (o.onTimeout !== undefined && o.onTimeout !== "close" && o.onTimeout !== "reset") {
    throw new ArgumentError(`shutdown: onTimeout must be "close" or "reset", got ${JSON.stringify(o.onTimeout)}`);
  }
  if (o.idle !== undefined && o.idle !== "reset" && o.idle !== "close" && o.idle !== "wait") {
    throw new ArgumentError(`shutdown: idle must be "reset", "close" or "wait", got ${JSON.stringify(o.idle)}`);
  }
  if (o.idleGraceMs !== undefined && (!Number.isInteger(o.idleGraceMs) || o.idleGraceMs < 0)) {
    throw new ArgumentError(`shutdown: idleGraceMs must be a non-negative integer, got ${String(o.idleGraceMs)}`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new ArgumentError("shutdown: signal must be an AbortSignal");
  }
}

/**
 * http.Server#close would stop the server's timer that enforces headersTimeout/requestTimeout; we
 * bypass that close (it ends idle connections first), so we stop the timer ourselves once done. It is
 * unref'd, so leaving it would only keep the server in memory; where Node's internals differ, we do.
 */
function stopHttpTimer(server: http.Server): void {
  const key = Object.getOwnPropertySymbols(server).find((s) => s.description === "http.server.connectionsCheckingInterval");
  if (key === undefined) return;
  const timer: unknown = (server as unknown as Record<symbol, unknown>)[key];
  if (timer instanceof Object && "unref" in timer) clearInterval(timer as NodeJS.Timeout);
}

function hint(res: http.ServerResponse): void {
  if (!res.headersSent) res.setHeader("Keep-Alive", KEEP_ALIVE_HINT);
}

/**
 * Stops accepting, lets open connections finish with the client closing first, and after `graceMs`
 * closes or resets what is left. Resolves when every connection and the listener are closed.
 */
const inProgress = new WeakMap<net.Server, Promise<ShutdownReport>>();

export function shutdown(server: net.Server, o: ShutdownOptions): Promise<ShutdownReport> {
  validate(o);
  // A second call while one runs joins it (its options do not apply): there is one drain per server.
  const running = inProgress.get(server);
  if (running) return running;
  const p = run(server, o).finally(() => inProgress.delete(server));
  inProgress.set(server, p);
  return p;
}

async function run(server: net.Server, o: ShutdownOptions): Promise<ShutdownReport> {
  const started = performance.now();
  trackConnections(server);
  const t = tracked.get(server)!;
  const completedBefore = t.completed;
  const cutOffBefore = t.cutOff;
  const listenerClosed = new Promise<void>((resolve) => {
    if (!server.listening) return resolve();
    server.once("close", () => resolve());
    // net.Server's close, not http's: http.Server#close ends idle keep-alive connections first.
    net.Server.prototype.close.call(server);
  });

  if (isHttp(server)) {
    // The server's idle timer would close first; the grace period governs instead.
    server.keepAliveTimeout = 0;
    t.onRequest = (_req, res) => hint(res);
    for (const c of t.conns) {
      c.socket.setTimeout(0);
      for (const res of c.active) hint(res);
    }
  }

  // Counted once the listener is closed, so that no connection arrives between the two counts.
  const open = await new Promise<number>((resolve) => server.getConnections((err, n) => resolve(err ? 0 : n)));
  const report: ShutdownReport = {
    connections: t.conns.size,
    closedByClient: 0,
    resetByClient: 0,
    closedByServer: 0,
    reset: 0,
    endedIdle: 0,
    requestsCompleted: 0,
    requestsCutOff: 0,
    untracked: 0,
    timedOut: false,
    aborted: false,
    durationMs: 0,
  };
  report.untracked = Math.max(0, open - t.conns.size);
  const counted = new Set<Conn>();
  const count = (c: Conn) => {
    if (counted.has(c)) return;
    counted.add(c);
    if (c.endedIdle) report.endedIdle++;
    if (c.forced === "reset") report.reset++;
    else if (c.peerEnded) report.closedByClient++;
    else if (c.resetByPeer) report.resetByClient++;
    else report.closedByServer++;
  };

  let allClosed!: () => void;
  const drained = new Promise<void>((resolve) => (allClosed = resolve));
  t.onClose = (c) => {
    count(c);
    if (t.conns.size === 0) allClosed();
  };
  if (t.conns.size === 0) allClosed();
  const serverClosed = Promise.all([listenerClosed, drained]);

  const idleMode = o.idle ?? "reset";
  const idleGraceMs = o.idleGraceMs ?? DEFAULT_IDLE_GRACE_MS;
  const lingering = new Set<NodeJS.Timeout>();
  const endIdle = (c: Conn) => {
    c.idleTimer = undefined;
    if (c.closed || c.peerEnded || c.forced || c.socket.writableEnded || c.active.size > 0) return;
    // Bytes since the last answer that made no request yet: a request on its way in, or not HTTP any more.
    if (c.socket.bytesRead !== c.bytesAtIdle) {
      c.unknownTraffic = true;
      return;
    }
    c.endedIdle = true;
    c.forced = idleMode === "reset" ? "reset" : "close";
    if (idleMode === "reset") return abort(c.socket);
    c.socket.end();
    const linger = setTimeout(() => {
      lingering.delete(linger);
      if (!c.closed) c.socket.destroy();
    }, CLOSE_LINGER_MS);
    lingering.add(linger);
  };
  const watchIdle = (c: Conn) => {
    if (c.idleTimer) clearTimeout(c.idleTimer);
    c.idleTimer = undefined;
    if (c.closed || c.peerEnded || c.forced || c.unknownTraffic || c.socket.writableEnded || c.active.size > 0) return;
    c.idleTimer = setTimeout(() => endIdle(c), idleGraceMs);
  };
  if (isHttp(server) && idleMode !== "wait") {
    t.onIdle = watchIdle;
    const served = t.onRequest;
    t.onRequest = (req, res) => {
      const c = connOf.get(req.socket);
      if (c?.idleTimer) clearTimeout(c.idleTimer);
      served?.(req, res);
    };
    for (const c of t.conns) {
      if (c.active.size === 0 && c.socket.bytesRead !== c.bytesAtIdle) c.unknownTraffic = true;
      watchIdle(c);
    }
  }

  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const graceOver = new Promise<"grace" | "abort">((resolve) => {
    if (o.signal?.aborted) return resolve("abort");
    if (o.graceMs === 0) return resolve("grace");
    // Clamped: past 2^31-1 ms a Node timer fires at once (core/timer.ts).
    timer = setTimeout(() => resolve("grace"), timerDelay(o.graceMs, "shutdown: graceMs"));
    onAbort = () => resolve("abort");
    o.signal?.addEventListener("abort", onAbort, { once: true });
  });

  try {
    // The listener's 'close' comes once every connection, tracked or not, is gone.
    const first = await Promise.race([serverClosed.then(() => "drained" as const), graceOver]);
    if (first !== "drained") {
      report.timedOut = true;
      report.aborted = first === "abort";
      const how = o.onTimeout ?? "close";
      const left = [...t.conns];
      for (const c of left) {
        if (c.idleTimer) clearTimeout(c.idleTimer);
        // One closed idle a moment ago is already on its way out: let its linger finish it.
        if (c.forced) continue;
        c.forced = how;
        if (how === "reset") abort(c.socket);
        else c.socket.end();
      }
      if (how === "close" && left.length > 0) {
        // Our FIN is out; give the peer a moment to answer it, then let go of what still lingers.
        const linger = setTimeout(() => {
          for (const c of left) if (!c.closed) c.socket.destroy();
        }, CLOSE_LINGER_MS);
        await drained;
        clearTimeout(linger);
      } else {
        await drained;
      }
      if (report.untracked > 0) {
        if (isHttp(server)) server.closeAllConnections();
      }
    }
    // A plain net server's untracked connections are the application's to end; do not wait on them.
    if (report.untracked === 0 || isHttp(server)) await listenerClosed;
  } finally {
    if (isHttp(server)) stopHttpTimer(server);
    if (timer) clearTimeout(timer);
    for (const l of lingering) clearTimeout(l);
    for (const c of t.conns) if (c.idleTimer) clearTimeout(c.idleTimer);
    if (onAbort) o.signal?.removeEventListener("abort", onAbort);
    t.onClose = undefined;
    t.onRequest = undefined;
    t.onIdle = undefined;
  }
  report.requestsCompleted = t.completed - completedBefore;
  report.requestsCutOff = t.cutOff - cutOffBefore;
  report.durationMs = Math.round(performance.now() - started);
  return report;
}
