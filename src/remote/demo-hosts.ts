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
import { connectFrom } from "../net/connect-from.js";

export interface DemoHosts {
  addresses: string[];
  port: number;
  reservedOnly: boolean;
  /** Connections served, and how many each side closed first (seen from the server). */
  stats: { served: number; serverClosedFirst: number; clientClosedFirst: number };
  close(): Promise<void>;
}

interface Request {
  stderrPort: number;
  localUser: string;
  remoteUser: string;
  command: string;
}

function parseRequest(buf: Buffer): { req: Request; rest: Buffer } | null {
  const fields: string[] = [];
  let start = 0;
  for (let i = 0; i < 4; i++) {
    const nul = buf.indexOf(0, start);
    if (nul < 0) return null;
    fields.push(buf.subarray(start, nul).toString("utf8"));
    start = nul + 1;
  }
  return {
    req: { stderrPort: Number(fields[0]), localUser: fields[1]!, remoteUser: fields[2]!, command: fields[3]! },
    rest: buf.subarray(start),
  };
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
    socket.end(Buffer.concat([Buffer.from([1]), Buffer.from(`${msg}\n`)]));
  };
  socket.on("data", async (chunk: Buffer) => {
    if (started) return; // stdin from the client is ignored: commands read /dev/null
    buf = Buffer.concat([buf, chunk]);
    const parsed = parseRequest(buf);
    if (!parsed) {
      if (buf.length > 64 * 1024) refuse("request too long");
      return;
    }
    started = true;
    stats.served++;
    if (reservedOnly && (socket.remotePort ?? 0) >= 1024) return refuse("permission denied: not from a reserved port");
    let errSock: net.Socket | null = null;
    if (parsed.req.stderrPort !== 0) {
      if (reservedOnly && parsed.req.stderrPort >= 1024) return refuse("2nd port not reserved");
      try {
        // As rshd: from a reserved port of ours (rresvport), which the client checks, as rcmd(3) does.
        errSock = reservedOnly
          ? (await connectFrom({ host: socket.remoteAddress!, port: parsed.req.stderrPort, localPorts: "reserved", localAddress: host, connectTimeoutMs: 5000 })).socket
          : net.connect({ port: parsed.req.stderrPort, host: socket.remoteAddress!, localAddress: host });
        errSock.on("error", () => {});
        if (errSock.connecting) await once(errSock, "connect");
      } catch {
        return refuse("can't connect to the stderr port");
      }
    }
    socket.write(Buffer.from([0]));
    const child = spawn("/bin/sh", ["-c", parsed.req.command], {
      // Its own session, as rshd gives it: the shell leads its process group, which multi-rsh
      // kills (over a second connection) when it gives up on the host.
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, MULTI_RSH_HOST: host, REMOTEUSER: parsed.req.localUser, USER: parsed.req.remoteUser },
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
