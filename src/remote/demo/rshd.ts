/**
 * Built-in demo hosts: small rsh servers on loopback addresses (127.0.0.2 ... 127.0.0.17) that speak
 * the rcmd protocol and run each command in a local `sh`, so `multi-rsh --demo` shows the real client
 * at work on any Linux machine without installing rshd. Like rshd, they close the connection when
 * the command ends, and since the client waits for that, every TIME_WAIT lands here, on the "remote"
 * side.
 *
 * As root they listen on 514 and accept only reserved source ports, as rshd does. As a normal user
 * they take one free high port shared by all hosts, and the client uses ordinary local ports.
 */
import net from "node:net";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { connectFrom } from "../../net/connect-from.js";
import { decodeRequest, encodeRefusal, MAX_REQUEST_BYTES, REPLY_OK } from "../rcmd/codec.js";

export interface DemoHosts {
  addresses: string[];
  port: number;
  reservedOnly: boolean;
  /** Connections served, and how many each side closed first (seen from the server). */
  stats: { served: number; serverClosedFirst: number; clientClosedFirst: number };
  close(): Promise<void>;
}

function serve(socket: net.Socket, host: string, reservedOnly: boolean, stats: DemoHosts["stats"], live: Set<net.Socket>): void {
  live.add(socket);
  socket.on("close", () => live.delete(socket));
  socket.on("error", () => {});
  let buf = Buffer.alloc(0);
  let started = false;
  let weClosed = false;
  socket.on("end", () => {
    if (!weClosed) stats.clientClosedFirst++;
  });
  const refuse = (msg: string) => {
    weClosed = true;
    socket.end(encodeRefusal(msg));
  };
  socket.on("data", async (chunk: Buffer) => {
    if (started) return; // stdin from the client is ignored: commands read /dev/null
    buf = Buffer.concat([buf, chunk]);
    const parsed = decodeRequest(buf);
    if (!parsed) {
      if (buf.length > MAX_REQUEST_BYTES) refuse("request too long");
      return;
    }
    const req = parsed.request;
    started = true;
    stats.served++;
    if (Number.isNaN(req.stderrPort)) return refuse("bad stderr port");
    if (reservedOnly && (socket.remotePort ?? 0) >= 1024) return refuse("permission denied: not from a reserved port");
    let errSock: net.Socket | null = null;
    if (req.stderrPort !== 0) {
      if (reservedOnly && req.stderrPort >= 1024) return refuse("2nd port not reserved");
      try {
        // As rshd: from a reserved port of ours (rresvport), which the client checks, as rcmd(3) does.
        errSock = reservedOnly
          ? (await connectFrom({ host: socket.remoteAddress!, port: req.stderrPort, localPorts: "reserved", localAddress: host, connectTimeoutMs: 5000 })).socket
          : net.connect({ port: req.stderrPort, host: socket.remoteAddress!, localAddress: host });
        errSock.on("error", () => {});
        if (errSock.connecting) await once(errSock, "connect");
      } catch {
        return refuse("can't connect to the stderr port");
      }
    }
    socket.write(Buffer.from([REPLY_OK]));
    const child = spawn("/bin/sh", ["-c", req.command], {
      // Its own session, as rshd gives it: the shell leads its process group, which multi-rsh
      // kills (over a second connection) when it gives up on the host.
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, MULTI_RSH_HOST: host, REMOTEUSER: req.localUser, USER: req.remoteUser },
    });
    child.stdout.pipe(socket, { end: false });
    child.stderr.pipe(errSock ?? socket, { end: false });
    child.on("error", () => {});
    child.on("close", () => {
      // The command is over: close first, as rshd does, so the client need not.
      weClosed = true;
      if (!socket.readableEnded) stats.serverClosedFirst++;
      errSock?.end();
      socket.end();
    });
  });
}

/**
 * `count` hosts on 127.0.0.`first` and up, or exactly `addresses` (any local address, "::1" too: the
 * tests of host names need a host on each family).
 */
export async function startDemoHosts(opts: { count?: number; first?: number; addresses?: string[] } = {}): Promise<DemoHosts> {
  const count = opts.count ?? 16;
  const first = opts.first ?? 2;
  const addresses = opts.addresses ?? Array.from({ length: count }, (_, i) => `127.0.0.${first + i}`);
  const isRoot = process.getuid?.() === 0;
  const stats = { served: 0, serverClosedFirst: 0, clientClosedFirst: 0 };
  const live = new Set<net.Socket>();
  const candidates = isRoot ? [514, 0, 0, 0, 0] : [0, 0, 0, 0, 0];
  for (const wanted of candidates) {
    const servers: net.Server[] = [];
    let port = wanted;
    let ok = true;
    for (const addr of addresses) {
      const srv = net.createServer((s) => serve(s, addr, isRoot && port === 514, stats, live));
      const bound = await new Promise<boolean>((resolve) => {
        srv.once("error", () => resolve(false));
        srv.listen({ port, host: addr, exclusive: true }, () => resolve(true));
      });
      if (!bound) {
        ok = false;
        break;
      }
      servers.push(srv);
      port = (srv.address() as net.AddressInfo).port;
    }
    if (ok) {
      return {
        addresses,
        port,
        reservedOnly: isRoot && port === 514,
        stats,
        close: async () => {
          for (const s of live) s.destroy();
          await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
        },
      };
    }
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
  throw new Error("could not find one port free on all demo addresses");
}
