/**
 * rsh spoken natively (rcmd(3), RFC 1282), arranged so that the REMOTE end closes first.
 *
 * Theory of operation. The client connects to port 514 from a reserved port (< 1024: rshd trusts
 * the client because only root can bind one) and sends four NUL-terminated strings: the port for a
 * separate stderr channel ("0" = stderr merged into the one connection), the local user, the remote
 * user, and the command. rshd answers one byte: \0, or \1 followed by a message and its close. Then
 * the command's output flows until the command exits and rshd closes.
 *
 * netkit rsh and pdsh half-close their side when their stdin ends and close as soon as output ends,
 * so the client is the side that sends FIN first and keeps every connection in TIME_WAIT for 60 s,
 * holding one of only ~500 reserved ports each. Here the client never sends FIN first: the command's
 * stdin is /dev/null (see remote/rcmd/exit-marker.ts), we wait for rshd's FIN and only then close (Node
 * answers it), so the TIME_WAIT lands on the server (RFC 9293 §3.6: the side that closes first
 * keeps it). With `resetAfterEof` we answer the server's FIN with RST instead, and neither side keeps
 * one. A host that times out or is cancelled is reset.
 *
 * Exit codes do not exist in rcmd; the command is wrapped to print a marker and `$?`, which is cut
 * out of the output (as pdsh does).
 */
import net from "node:net";
import { AddrinuseError } from "../../errors.js";
import { ExitMarkerFilter, killGroupCommand, newMarker, wrapCommand } from "../rcmd/exit-marker.js";
import { randomHex } from "../../kernel/random.js";
import { connectFrom } from "../../net/connect-from.js";
import { abort, endAfterPeer } from "../../net/close.js";
import { BoundedBytes, oneLine } from "../../core/untrusted.js";
import { decodeReply, encodeRequest } from "../rcmd/codec.js";
import { openStderrChannel, type StderrChannel } from "./rsh-stderr.js";
import { ABORTED, KILL_WAIT_MS, hostErrorOf, notStarted, writableStdin, type ClosedBy, type HostError, type RunRequest, type Transport, type TransportOptions, type TransportResult, type HostErrorCode } from "../transport.js";

export const RSH_PORT = 514;
/**
 * rshd's refusal is one line (rcmd(3) reads up to the newline). Of a hostile host's "message" we keep
 * the first REFUSAL_KEEP_BYTES, and past REFUSAL_READ_BYTES we stop reading and reset: a 700 MB one
 * used to be gathered whole and passed to Buffer#toString (ERR_STRING_TOO_LONG, every result lost).
 */
export const REFUSAL_KEEP_BYTES = 1024;
export const REFUSAL_READ_BYTES = 64 * 1024;

/** The refusal as one line of our message: its first line, control characters escaped, bounded. */
export function refusalMessage(got: BoundedBytes): string {
  const { text, dropped } = got.text();
  const nl = text.indexOf("\n");
  const first = (nl >= 0 ? text.slice(0, nl) : text).replace(/\0/g, "").trim();
  const hidden = dropped + (nl >= 0 ? Buffer.byteLength(text.slice(nl + 1).trim()) : 0);
  const more = hidden > 0 ? ` (and ${hidden} more bytes, not shown)` : "";
  return `rshd refused: ${oneLine(first, 200) || "(no message)"}${more}`;
}

function errorOf(e: unknown, fallback: HostErrorCode = "HOST_CONNECT_FAILED"): HostError {
  if (e instanceof AddrinuseError) return hostErrorOf(e);
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ECONNREFUSED") return { code: "HOST_CONNECT_REFUSED", message: "connection refused (no rshd listening)" };
  if (err?.code === "ECONNRESET") return { code: "HOST_CONNECTION_LOST", message: "connection reset by the remote side" };
  return { code: fallback, message: err?.message ?? String(e) };
}

export function createRshTransport(options: TransportOptions = {}): Transport {
  const port = options.port ?? RSH_PORT;
  const localPorts = options.localPorts ?? "reserved";
  const resetAfterEof = options.resetAfterEof ?? false;

  /**
   * An aborted host's command, which a reset alone leaves running: a second connection runs
   * `kill -9 -PID` on the process group the wrapper's shell leads (its pid came first in the
   * output), bounded by KILL_WAIT_MS. True when the host says the group was there and is killed.
   */
  async function endRemoteGroup(req: RunRequest, pid: number): Promise<boolean> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort("timeout"), KILL_WAIT_MS);
    try {
      const noop = () => {};
      const r = await runOne(
        { ...req, command: killGroupCommand(pid), separateStderr: false, signal: ac.signal, onConnected: noop, onStdout: noop, onStderr: noop },
        false,
      );
      return r.error === null && r.exitCode === 0;
    } finally {
      clearTimeout(timer);
    }
  }

  const run = (req: RunRequest): Promise<TransportResult> => runOne(req, true);

  async function runOne(req: RunRequest, endOnAbort: boolean): Promise<TransportResult> {
    if (req.signal.aborted) return notStarted("HOST_CANCELLED", "cancelled before connecting");
    const result: TransportResult = { exitCode: null, signal: null, closedBy: null, localPort: null, connected: false, error: null };
    let address = req.host;
    if (net.isIP(address) === 0) {
      try {
        // Loaded here, not at the top: hosts are usually addresses, and start-up delays every run.
        const { lookup } = await import("node:dns/promises");
        address = (await lookup(req.host)).address;
      } catch (e) {
        return notStarted("HOST_CONNECT_FAILED", `cannot resolve '${req.host}': ${(e as Error).message}`);
      }
    }
    let socket: net.Socket;
    try {
      const c = await connectFrom({
        host: address,
        port,
        localPorts,
        signal: req.signal,
        connectTimeoutMs: req.connectTimeoutMs,
        // Every read of the kernel table walks its whole hash (~10 ms however empty); a fan-out of
        // hundreds shares one read a second. What another program did meanwhile surfaces as
        // EADDRNOTAVAIL, which connectFrom retries with a fresh read.
        tableMaxAgeMs: 1000,
      });
      socket = c.socket;
      result.localPort = c.localPort;
      result.remoteAddress = address;
      result.remotePort = port;
    } catch (e) {
      // Aborted while connecting: the engine names the error.
      return { ...result, error: errorOf(e) };
    }

    const marker = newMarker(randomHex(8));
    const stdoutFilter = new ExitMarkerFilter(marker.marker, (b) => req.onStdout(b));
    let ending: Promise<void> = Promise.resolve();
    let stderrChannel: StderrChannel | undefined;
    let stderrDone: Promise<void> = Promise.resolve();
    let closing!: Promise<ClosedBy>;

    const resetAll = () => {
      abort(socket);
      stderrChannel?.reset();
    };

    // Behind a slow reader rshd blocks in write(2) on a closed TCP window, not us on a heap of chunks.
    const detachMain = req.flow?.attach(socket);
    return new Promise<TransportResult>((resolve) => {
      let settled = false;
      const finish = (error: HostError | null) => {
        if (settled) return;
        settled = true;
        detachMain?.();
        req.signal.removeEventListener("abort", onAbort);
        stdoutFilter.end(req.signal.aborted);
        result.exitCode = stdoutFilter.exitCode;
        result.error = error;
        if (!error && result.exitCode === null) {
          result.error = { code: "HOST_CONNECTION_LOST", message: "the connection ended before the command's exit status arrived" };
        }
        // The exit status is in: the stderr channel gets a bounded time to end too.
        stderrChannel?.mainEnded();
        void Promise.all([stderrDone, ending, closing]).then(([, , closedBy]) => {
          result.closedBy = closedBy;
          resolve(result);
        });
      };
      const onAbort = () => {
        resetAll();
        if (result.connected && endOnAbort) {
          const pid = stdoutFilter.pid;
          ending =
            pid === null
              ? Promise.resolve(void (result.remoteCommand = "left-running"))
              : endRemoteGroup(req, pid).then(
                  (ended) => void (result.remoteCommand = ended ? "ended" : "left-running"),
                  () => void (result.remoteCommand = "left-running"),
                );
        }
        finish(ABORTED);
      };
      req.signal.addEventListener("abort", onAbort, { once: true });

      let replied = false;
      let refusal: BoundedBytes | null = null;
      socket.on("data", (chunk: Buffer) => {
        if (!replied) {
          replied = true;
          const { reply, rest } = decodeReply(chunk);
          chunk = rest;
          if (reply === "refused") {
            refusal = new BoundedBytes(REFUSAL_KEEP_BYTES, REFUSAL_READ_BYTES);
          } else {
            result.connected = true;
            req.onConnected({ localPort: result.localPort });
            // end() sends nothing: the wrapper tells the remote where the input ends (never our FIN first).
            req.input?.start(writableStdin(socket, () => {}));
            if (chunk.length === 0) return;
          }
        }
        if (refusal) {
          refusal.push(chunk);
          if (refusal.over) {
            // Not a refusal any rshd sends: stop reading it (RST, no TIME_WAIT either side).
            resetAll();
            finish({ code: "HOST_REFUSED", message: refusalMessage(refusal) });
          }
          return;
        }
        stdoutFilter.push(chunk);
      });
      // We never send the first FIN: the server's comes first and ours answers it (CLOSE_WAIT ->
      // LAST_ACK -> CLOSED, no TIME_WAIT here), or with resetAfterEof an RST does (none anywhere).
      closing = endAfterPeer(socket, { graceMs: 0, signal: req.signal, onPeerFin: resetAfterEof ? "reset" : "close" });
      socket.on("error", (e: NodeJS.ErrnoException) => {
        finish(errorOf(e, "HOST_CONNECTION_LOST"));
      });
      socket.on("close", () => {
        if (!replied) {
          finish({ code: "HOST_PROTOCOL", message: "rshd closed the connection without answering" });
        } else if (refusal) {
          finish({ code: "HOST_REFUSED", message: refusalMessage(refusal) });
        } else {
          finish(null);
        }
      });

      const send = (stderrPort: number) => {
        const wrapped = wrapCommand(req.command, marker, req.input?.framing);
        // No -u: rshd is asked for the same user as the local one, as rsh(1) does.
        socket.write(encodeRequest({ stderrPort, localUser: req.localUser, remoteUser: req.user || req.localUser, command: wrapped }));
      };

      if (!req.separateStderr) {
        send(0);
        return;
      }
      // The stderr channel: rshd connects back to us (rsh-stderr.ts says from where, and for how long).
      openStderrChannel({
        localAddress: socket.localAddress ?? "0.0.0.0",
        localPorts,
        peerAddress: address,
        requireReservedPeer: localPorts === "reserved",
        resetAfterEof,
        onData: (b) => req.onStderr(b),
        ...(req.flow ? { flow: req.flow } : {}),
      })
        .then((ch) => {
          stderrChannel = ch;
          stderrDone = ch.done;
          if (settled) ch.reset();
          else send(ch.port);
        })
        .catch((e: unknown) => {
          resetAll();
          finish(errorOf(e));
        });
    });
  }

  return { name: "rsh", run };
}
