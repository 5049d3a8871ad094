/**
 * rsh's second channel (--stderr): we listen, send the port in the request, and rshd connects back
 * to it from a reserved port of its own. Who may connect, and how long we wait for it to end, are
 * the two things a hostile network or host can abuse:
 *
 *  - Accepted only from the host's own address and, when rshd is the real one (reserved local ports,
 *    the default), from a reserved port (512-1023), as rcmd(3) checks (it refuses a port outside
 *    IPPORT_RESERVED/2 .. IPPORT_RESERVED-1). Anyone else who finds the port is reset, and we keep
 *    waiting for the right one: otherwise any local user or host could inject "stderr" into a host's
 *    output. With --local-ports (a server that does not require reserved ports) only the address is
 *    checked, since such a server connects back from an ordinary port.
 *  - Once the main connection has ended (the command's exit status is in), the channel gets
 *    STDERR_LINGER_MS to end too, then is reset. rshd closes both as the command ends; a channel held
 *    open (by a hostile server, or a background job keeping the command's stderr) used to hold the
 *    host until -t, then the engine's grace, and lost its exit code and leaked the socket.
 */
import net from "node:net";
import { AddrinuseError } from "../../errors.js";
import { unmapV4 } from "../../core/address.js";
import type { OutputFlow } from "../flow.js";

/** How long the stderr channel may outlive the main connection before it is reset. */
export const STDERR_LINGER_MS = 1000;
/** What rcmd(3) accepts as the back-connection's source port. */
export const RESERVED_SOURCE: readonly [number, number] = [512, 1023];

export interface StderrChannelOptions {
  /** Our address on the main connection: rshd connects back to it. */
  localAddress: string;
  /** Where to listen from: "reserved" (rshd needs it) or the --local-ports range. */
  localPorts: "reserved" | [number, number];
  /** The host's address on the main connection: the only one accepted. */
  peerAddress: string;
  /** Accept only a source port in 512-1023 (real rshd). */
  requireReservedPeer: boolean;
  resetAfterEof: boolean;
  onData(chunk: Buffer): void;
  flow?: OutputFlow;
  lingerMs?: number;
}

export interface StderrChannel {
  /** The port to send in the request. */
  readonly port: number;
  /** Resolves once the channel is over: it closed, was reset, or never came and we stopped listening. */
  readonly done: Promise<void>;
  /** Connections refused because they came from the wrong address or port. */
  readonly rejected: number;
  /** The connected channel, once rshd has connected back (rcmd(3) writes signal bytes to it). */
  socket(): net.Socket | undefined;
  /** The main connection is over: stop listening; a connected channel gets its linger time. */
  mainEnded(): void;
  /** Now: reset the channel and stop listening (abort). */
  reset(): void;
}

/** Listens on a free port of `range` at `host` (rshd refuses a stderr port that is not reserved). */
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
  throw new AddrinuseError("AIU_PORTS_EXHAUSTED", `no free port in ${lo}-${hi} to listen on for rsh's stderr channel`);
}

/** Is this back-connection the host's rshd (its address, and a reserved port when required)? */
export function acceptableStderrPeer(s: { remoteAddress?: string | undefined; remotePort?: number | undefined }, peerAddress: string, requireReserved: boolean): boolean {
  if (!s.remoteAddress || unmapV4(s.remoteAddress) !== unmapV4(peerAddress)) return false;
  const port = s.remotePort ?? 0;
  return !requireReserved || (port >= RESERVED_SOURCE[0] && port <= RESERVED_SOURCE[1]);
}

export async function openStderrChannel(o: StderrChannelOptions): Promise<StderrChannel> {
  const srv = await listenReserved(o.localAddress, o.localPorts);
  const port = (srv.address() as net.AddressInfo).port;
  let socket: net.Socket | undefined;
  let rejected = 0;
  let linger: NodeJS.Timeout | undefined;
  let detach: (() => void) | undefined;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  let listening = true;
  const stopListening = () => {
    if (!listening) return;
    listening = false;
    srv.close();
  };
  srv.on("connection", (s: net.Socket) => {
    s.on("error", () => {});
    if (socket || !acceptableStderrPeer(s, o.peerAddress, o.requireReservedPeer)) {
      rejected++;
      s.resetAndDestroy();
      return;
    }
    socket = s;
    stopListening();
    detach = o.flow?.attach(s);
    s.on("data", (b: Buffer) => o.onData(b));
    s.on("end", () => {
      if (o.resetAfterEof && !s.destroyed) s.resetAndDestroy();
    });
    s.on("close", () => {
      if (linger) clearTimeout(linger);
      detach?.();
      resolveDone();
    });
  });
  srv.on("close", () => {
    if (!socket) resolveDone();
  });
  return {
    port,
    done,
    get rejected() {
      return rejected;
    },
    socket: () => socket,
    mainEnded: () => {
      stopListening();
      if (socket && !socket.destroyed && !linger) {
        const ms = o.lingerMs ?? STDERR_LINGER_MS;
        const end = () => {
          // Behind a slow reader its bytes wait in the kernel: the linger starts again once it reads.
          if (o.flow?.paused) linger = setTimeout(end, ms);
          // Then RST: no TIME_WAIT on either side for this channel.
          else if (socket && !socket.destroyed) socket.resetAndDestroy();
        };
        linger = setTimeout(end, ms);
      }
    },
    reset: () => {
      stopListening();
      if (socket && !socket.destroyed) socket.resetAndDestroy();
    },
  };
}
