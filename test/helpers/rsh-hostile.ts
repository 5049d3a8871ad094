/**
 * Hostile rsh servers for tests: real TCP servers on loopback that speak enough of rcmd to get past
 * the client's request, then abuse it in one chosen way. Where rsh-fault.ts has servers that fail,
 * these attack: a refusal "message" of any size, a stderr back-connection from the wrong place or
 * one that never closes.
 */
import net from "node:net";
import { once } from "node:events";
import { connectFrom } from "../../src/net/connect-from.js";
import { decodeRequest } from "../../src/remote/rcmd/codec.js";

export interface HostileOptions {
  /** Refuse with \1 and this many bytes of "x" (no newline until the end), instead of running. */
  refusalBytes?: number;
  /** Refuse with \1 and this text (as it is: NULs, escapes, several lines). */
  refusalText?: string;
  /**
   * The stderr back-connection: "normal" (from our address, a reserved port when root), "never-close"
   * (normal, but never closed), "other-address" (from 127.0.0.9), "unreserved-port" (our address, an
   * ephemeral port), "other-then-normal" (one from 127.0.0.9 first, then the real one).
   */
  stderr?: "normal" | "never-close" | "other-address" | "unreserved-port" | "other-then-normal";
  /** What the "command" prints on stdout and stderr, and its exit code. */
  stdout?: string;
  stderrText?: string;
  exitCode?: number;
}

export interface HostileServer {
  port: number;
  /** What the server did: bytes of refusal written, stderr connections tried. */
  stats: { refusalWritten: number; stderrConnections: number };
  /** Our ends of stderr back-connections that are still open. */
  openStderr(): number;
  close(): Promise<void>;
}

const isRoot = process.getuid?.() === 0;

async function connectBack(kind: string, client: net.Socket, port: number): Promise<net.Socket> {
  const host = client.remoteAddress!;
  if (kind === "other-address") return dial({ host, port, localAddress: "127.0.0.9" });
  if (kind === "unreserved-port" || !isRoot) return dial({ host, port, localAddress: client.localAddress! });
  return (await connectFrom({ host, port, localPorts: "reserved", localAddress: client.localAddress!, connectTimeoutMs: 5000 })).socket;
}

async function dial(o: { host: string; port: number; localAddress: string }): Promise<net.Socket> {
  const s = net.connect(o);
  s.on("error", () => {});
  await once(s, "connect");
  return s;
}

export async function startHostileRsh(opts: HostileOptions): Promise<HostileServer> {
  const live = new Set<net.Socket>();
  const stats = { refusalWritten: 0, stderrConnections: 0 };
  const stderrSockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    live.add(s);
    s.on("close", () => live.delete(s));
    s.on("error", () => {});
  };
  const srv = net.createServer((s) => {
    track(s);
    let got = Buffer.alloc(0);
    let started = false;
    s.on("data", async (b: Buffer) => {
      if (started) return;
      got = Buffer.concat([got, b]);
      const parsed = decodeRequest(got);
      if (!parsed) return;
      started = true;
      if (opts.refusalText !== undefined) {
        s.end(Buffer.concat([Buffer.from([1]), Buffer.from(opts.refusalText, "latin1")]));
        return;
      }
      if (opts.refusalBytes !== undefined) {
        // Written in chunks with backpressure, until the client stops reading or it is all out.
        const chunk = Buffer.alloc(64 * 1024, "x");
        s.write(Buffer.from([1]));
        let left = opts.refusalBytes;
        const pump = () => {
          while (left > 0 && !s.destroyed) {
            const n = Math.min(left, chunk.length);
            left -= n;
            stats.refusalWritten += n;
            if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once("drain", pump);
          }
          if (!s.destroyed) s.end("\n");
        };
        pump();
        return;
      }
      const stderrPort = parsed.request.stderrPort;
      let err: net.Socket | null = null;
      if (stderrPort !== 0) {
        const kind = opts.stderr ?? "normal";
        if (kind === "other-then-normal") {
          stats.stderrConnections++;
          const intruder = await connectBack("other-address", s, stderrPort).catch(() => null);
          if (intruder) {
            track(intruder);
            stderrSockets.add(intruder);
            intruder.on("close", () => stderrSockets.delete(intruder));
            intruder.write("injected\n");
          }
        }
        stats.stderrConnections++;
        err = await connectBack(kind === "other-then-normal" ? "normal" : kind, s, stderrPort).catch(() => null);
        if (err) {
          const e = err;
          track(e);
          stderrSockets.add(e);
          e.on("close", () => stderrSockets.delete(e));
        }
      }
      // The exit marker, from the wrapped command: `... echo "HEAD""TAIL$?"`.
      const m = /echo "([^"]+)""([^"$]+)\$\?"$/.exec(parsed.request.command);
      s.write(Buffer.from([0]));
      if (opts.stdout) s.write(opts.stdout);
      if (err && opts.stderrText) err.write(opts.stderrText);
      if (m) s.write(`${m[1]}${m[2]}${opts.exitCode ?? 0}\n`);
      if (err && opts.stderr !== "never-close") err.end();
      // Like rshd, close first once the "command" is over.
      setTimeout(() => s.end(), 20);
    });
  });
  srv.listen({ port: 0, host: "127.0.0.1" });
  await once(srv, "listening");
  return {
    port: (srv.address() as net.AddressInfo).port,
    stats,
    openStderr: () => stderrSockets.size,
    close: async () => {
      for (const s of live) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}
