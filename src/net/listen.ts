/**
 * `server.listen` that explains EADDRINUSE. When the bind fails we read the kernel table for that
 * port (with owners), let the same diagnosis `addrinuse why` uses decide which case it is (a live
 * listener, a more specific address over a wildcard or the reverse, ...), and reject with a
 * PortInUseError that names the holders and says what to do.
 *
 * It also starts tracking the server's connections (see shutdown.ts), so that a later `shutdown`
 * knows every connection, including those accepted before it was called.
 */
import net from "node:net";
import { AddrinuseError, ArgumentError, PortInUseError, type PortHolder } from "../errors.js";
import { diagnose, parsePortRanges } from "../diagnosis/diagnose.js";
import { formatEndpoint, unmapV4 } from "../core/address.js";
import { readTcpTable } from "../kernel/read.js";
import { readPortSettings } from "../kernel/sysctl.js";
import { trackConnections } from "./shutdown.js";

export interface ListenOptions {
  /** 0 = any free port (read it back from the result). */
  port: number;
  /** An IP address; default: every address, dual-stack (Node binds "::"). */
  host?: string;
  backlog?: number;
  ipv6Only?: boolean;
}

function validate(o: ListenOptions): void {
  if (o === null || typeof o !== "object") throw new ArgumentError("listen: options must be an object");
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
    throw new ArgumentError(`listen: port must be an integer 0..65535, got ${String(o.port)}`);
  }
  if (o.host !== undefined && (typeof o.host !== "string" || net.isIP(o.host) === 0)) {
    throw new ArgumentError(`listen: host must be an IP address, got ${JSON.stringify(o.host)}`);
  }
  if (o.backlog !== undefined && (!Number.isInteger(o.backlog) || o.backlog < 0)) {
    throw new ArgumentError(`listen: backlog must be a non-negative integer, got ${String(o.backlog)}`);
  }
}

/** Why `port` on `host` could not be bound, as a typed error naming the holders. */
export function portInUseError(port: number, host: string | undefined, cause: NodeJS.ErrnoException): AddrinuseError {
  const wanted = host ?? "::";
  const where = host === undefined ? `port ${port} (all addresses)` : formatEndpoint(host, port);
  let snapshot;
  try {
    snapshot = readTcpTable({ localPort: port });
  } catch {
    // Not Linux, or procfs unreadable: the bind error alone still says what happened.
    return new PortInUseError(`${where} is already in use (${cause.code}); no kernel table to name the holder`, port, wanted, [], cause);
  }
  const settings = readPortSettings();
  const d = diagnose(port, wanted, snapshot.sockets, { ok: false, errno: cause.code ?? "EADDRINUSE", message: cause.message }, [], {
    ephemeralRange: settings.ephemeralRange,
    reservedPorts: parsePortRanges(settings.reservedPorts),
    unreadableProcesses: snapshot.unreadableProcesses,
  });
  if (cause.code === "EACCES") {
    return new AddrinuseError("AIU_NOT_ROOT", `${where}: permission denied. ${d.advice.join(" ")}`, { cause });
  }
  const rows = d.groups.flatMap((g) => g.sockets);
  // A TIME_WAIT blocks a Node server only when the socket that left it had no SO_REUSEADDR (Linux
  // needs it on both), and a listener beside it is the likelier holder: it is named only when it is
  // all there is.
  const blocking = rows.some((r) => r.state !== "TIME_WAIT") ? rows.filter((r) => r.state !== "TIME_WAIT") : rows;
  const holders: PortHolder[] = blocking.flatMap((r): PortHolder[] => {
    const base = {
      state: r.state,
      local: formatEndpoint(r.localAddress, r.localPort),
      remote: formatEndpoint(r.remoteAddress, r.remotePort),
    };
    if (r.owners.length === 0) return [{ ...base, pid: null, command: null, user: null }];
    return r.owners.map((o) => ({ ...base, pid: o.pid, command: o.command, user: o.user }));
  });
  const unread = snapshot.unreadableProcesses > 0 ? ` (${snapshot.unreadableProcesses} processes could not be inspected; run as root to name every holder)` : "";
  return new PortInUseError(`${where} is already in use. ${d.advice.join(" ")}${unread}`, port, unmapV4(wanted), holders, cause);
}

/**
 * Like `server.listen({port, host})` for net, http and https servers; resolves with the bound
 * address. EADDRINUSE rejects with PortInUseError (code AIU_PORT_IN_USE) carrying the holders;
 * EACCES with AIU_NOT_ROOT. The server is left not listening, so it may be listened again.
 */
export function listen(server: net.Server, o: ListenOptions): Promise<net.AddressInfo> {
  validate(o);
  trackConnections(server);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.removeListener("listening", onListening);
      if (err.code === "EADDRINUSE" || err.code === "EACCES") reject(portInUseError(o.port, o.host, err));
      else reject(err);
    };
    const onListening = () => {
      server.removeListener("error", onError);
      const a = server.address();
      if (a === null || typeof a === "string") {
        reject(new AddrinuseError("AIU_BAD_ARGUMENT", "listen: the server is not listening on TCP"));
        return;
      }
      resolve(a);
    };
    server.once("error", onError);
    server.once("listening", onListening);
    const opts: net.ListenOptions = { port: o.port };
    if (o.host !== undefined) opts.host = o.host;
    if (o.backlog !== undefined) opts.backlog = o.backlog;
    if (o.ipv6Only !== undefined) opts.ipv6Only = o.ipv6Only;
    server.listen(opts);
  });
}
