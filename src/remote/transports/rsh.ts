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
 * stdin is /dev/null (see core/exit-marker.ts), we wait for rshd's FIN and only then close (Node
 * answers it), so the TIME_WAIT lands on the server (RFC 9293 §3.6: the side that closes first
 * keeps it). With `resetAfterEof` we answer the server's FIN with RST instead, and neither side keeps
 * one. A host that times out or is cancelled is reset.
 *
 * Exit codes do not exist in rcmd; the command is wrapped to print a marker and `$?`, which is cut
 * out of the output (as pdsh does).
 */
import net from "node:net";
import { AddrinuseError, type ErrorCode } from "../../errors.js";
import { ExitMarkerFilter, newMarker, wrapCommand } from "../../core/exit-marker.js";
import { randomHex } from "../../kernel/random.js";
import { connectFrom } from "../../net/connect-from.js";
import { writableStdin, type ClosedBy, type RunRequest, type Transport, type TransportOptions, type TransportResult } from "../transport.js";

export const RSH_PORT = 514;

function errorOf(e: unknown, fallback: ErrorCode = "ERR_CONNECT"): { code: ErrorCode; message: string } {
  if (e instanceof AddrinuseError) return { code: e.code, message: e.message };
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ECONNREFUSED") return { code: "ERR_CONNECT_REFUSED", message: "connection refused (no rshd listening)" };
  if (err?.code === "ECONNRESET") return { code: "ERR_CONNECTION_LOST", message: "connection reset by the remote side" };
  return { code: fallback, message: err?.message ?? String(e) };
}

/** Listens on a reserved port for rshd's stderr connection back to us (rshd refuses others). */
async function listenReserved(host: string, range: "reserved" | [number, number]): Promise<net.Server> {
  const [lo, hi] = range === "reserved" ? [512, 1023] : range;
  const start = lo + Math.floor(Math.random() * (hi - lo + 1));
  for (let i = 0; i <= hi - lo; i++) {
    const port = lo + ((start - lo + i) % (hi - lo + 1));
    const srv = net.createServer({ allowHalfOpen: false });
    const ok = await new Promise<boolean>((resolve, reject) => {
      srv.once("error", (e: NodeJS.ErrnoException) => {
        if (e.code === "EADDRINUSE" || e.code === "EADDRNOTAVAIL") resolve(false);
        else reject(e);
      });
      srv.listen({ port, host, exclusive: true, backlog: 1 }, () => resolve(true));
    });
    if (ok) return srv;
  }
  throw new AddrinuseError("ERR_PORTS_EXHAUSTED", `no free port in ${lo}-${hi} to listen on for rsh's stderr channel`);
}

export function createRshTransport(options: TransportOptions = {}): Transport {
  const port = options.port ?? RSH_PORT;
  const localPorts = options.localPorts ?? "reserved";
  const resetAfterEof = options.resetAfterEof ?? false;

  async function run(req: RunRequest): Promise<TransportResult> {
    const result: TransportResult = { exitCode: null, signal: null, closedBy: null, localPort: null, connected: false, error: null };
    if (req.signal.aborted) {
      result.error = { code: "ERR_CANCELLED", message: "cancelled before connecting" };
      return result;
    }
    let address = req.host;
    if (net.isIP(address) === 0) {
      try {
        // Loaded here, not at the top: hosts are usually addresses, and start-up delays every run.
        const { lookup } = await import("node:dns/promises");
        address = (await lookup(req.host)).address;
      } catch (e) {
        result.error = { code: "ERR_CONNECT", message: `cannot resolve '${req.host}': ${(e as Error).message}` };
        return result;
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
      if (req.signal.aborted) {
        result.error = { code: req.signal.reason === "timeout" ? "ERR_CONNECT_TIMEOUT" : "ERR_CANCELLED", message: req.signal.reason === "timeout" ? "timed out while connecting" : "cancelled while connecting" };
        return result;
      }
      result.error = errorOf(e);
      return result;
    }

    const marker = newMarker(randomHex(8));
    const stdoutFilter = new ExitMarkerFilter(marker.marker, (b) => req.onStdout(b));
    let stderrServer: net.Server | undefined;
    let stderrSocket: net.Socket | undefined;
    let stderrDone: Promise<void> = Promise.resolve();
    let closedBy: ClosedBy | null = null;
    let weEnded = false;

    const resetAll = () => {
      weEnded = true;
      if (!socket.destroyed) socket.resetAndDestroy();
      if (stderrSocket && !stderrSocket.destroyed) stderrSocket.resetAndDestroy();
      stderrServer?.close();
    };

    return new Promise<TransportResult>((resolve) => {
      let settled = false;
      const finish = (error: { code: ErrorCode; message: string } | null) => {
        if (settled) return;
        settled = true;
        req.signal.removeEventListener("abort", onAbort);
        stdoutFilter.end();
        result.exitCode = stdoutFilter.exitCode;
        result.closedBy = closedBy;
        result.error = error;
        if (!error && result.exitCode === null) {
          result.error = { code: "ERR_CONNECTION_LOST", message: "the connection ended before the command's exit status arrived" };
        }
        stderrServer?.close();
        void stderrDone.then(() => resolve(result));
      };
      const onAbort = () => {
        closedBy = "reset";
        resetAll();
        const timeout = req.signal.reason === "timeout";
        finish({
          code: timeout ? (result.connected ? "ERR_COMMAND_TIMEOUT" : "ERR_CONNECT_TIMEOUT") : "ERR_CANCELLED",
          message: timeout ? "timed out; connection reset" : "cancelled; connection reset",
        });
      };
      req.signal.addEventListener("abort", onAbort, { once: true });

      let replied = false;
      let refusal: Buffer[] | null = null;
      socket.on("data", (chunk: Buffer) => {
        if (!replied) {
          replied = true;
          if (chunk[0] !== 0) {
            refusal = [chunk.subarray(1)];
            return;
          }
          result.connected = true;
          req.onConnected({ localPort: result.localPort });
          // end() sends nothing: the wrapper tells the remote where the input ends (never our FIN first).
          req.input?.start(writableStdin(socket, () => {}));
          chunk = chunk.subarray(1);
          if (chunk.length === 0) return;
        }
        if (refusal) refusal.push(chunk);
        else stdoutFilter.push(chunk);
      });
      socket.on("end", () => {
        // The server closed first: the outcome we arrange for. Node's default (allowHalfOpen false)
        // answers with our FIN, so this side goes CLOSE_WAIT -> LAST_ACK -> CLOSED, no TIME_WAIT.
        if (!weEnded && closedBy === null) closedBy = "remote";
        if (resetAfterEof && !socket.destroyed) socket.resetAndDestroy();
      });
      socket.on("error", (e: NodeJS.ErrnoException) => {
        if (closedBy === null) closedBy = e.code === "ECONNRESET" ? "reset" : "local";
        finish(errorOf(e, "ERR_CONNECTION_LOST"));
      });
      socket.on("close", () => {
        if (closedBy === null) closedBy = weEnded ? "local" : "remote";
        if (!replied) {
          finish({ code: "ERR_PROTOCOL", message: "rshd closed the connection without answering" });
        } else if (refusal) {
          const msg = Buffer.concat(refusal).toString("utf8").replace(/\0/g, "").trim();
          finish({ code: "ERR_REMOTE_REFUSED", message: `rshd refused: ${msg || "(no message)"}` });
        } else {
          finish(null);
        }
      });

      const send = (stderrPort: number) => {
        const wrapped = wrapCommand(req.command, marker, req.input?.framing);
        // No -u: rshd is asked for the same user as the local one, as rsh(1) does.
        socket.write(`${stderrPort}\0${req.localUser}\0${req.user || req.localUser}\0${wrapped}\0`);
      };

      if (!req.separateStderr) {
        send(0);
        return;
      }
      // The stderr channel: rshd connects back to us; it must come from the address we talk to.
      const localAddress = socket.localAddress ?? "0.0.0.0";
      listenReserved(localAddress, localPorts)
        .then((srv) => {
          stderrServer = srv;
          stderrDone = new Promise<void>((done) => {
            srv.once("connection", (s: net.Socket) => {
              stderrSocket = s;
              srv.close();
              s.on("data", (b: Buffer) => req.onStderr(b));
              s.on("end", () => {
                if (resetAfterEof && !s.destroyed) s.resetAndDestroy();
              });
              s.on("error", () => {});
              s.on("close", () => done());
            });
            srv.once("close", () => {
              if (!stderrSocket) done();
            });
          });
          send((srv.address() as net.AddressInfo).port);
        })
        .catch((e: unknown) => {
          closedBy = "reset";
          resetAll();
          finish(errorOf(e));
        });
    });
  }

  return { name: "rsh", run };
}
