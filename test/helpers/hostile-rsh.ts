/**
 * Hostile rsh hosts for tests: real TCP servers on loopback that speak rshd's protocol (RFC 1282
 * framing, the stderr back-channel, the exit-code wrapper) and then send whatever a script says:
 * escape sequences, carriage returns, invalid UTF-8, forged exit markers, floods without newlines.
 * Each host is an address of its own on one shared port, as multi-rsh's -R rsh --port expects.
 * The server reads the wrapper's marker out of the command it is sent, as a real host could, so a
 * script can end the run with the true status line or forge one.
 */
import net from "node:net";
import { once } from "node:events";

export interface HostileSession {
  /** The address the client connected to (which "host" this is). */
  host: string;
  command: string;
  /** The exit marker the wrapper would print, joined (`__AIU_EXIT_<id>__`). */
  marker: string;
  /** The main connection (stdout, and stderr when merged); \0 has been sent. */
  socket: net.Socket;
  /** The stderr back-channel when the client asked for one (connected from a reserved port). */
  stderr: net.Socket | null;
  /** Write the status line the wrapper would (`MARKER<code>\n`) and close first, as rshd does. */
  exit(code: number): void;
}

export type HostileScript = (s: HostileSession) => void | Promise<void>;

export interface HostileRsh {
  port: number;
  addresses: string[];
  /** Sessions started, per address. */
  sessions: Map<string, number>;
  close(): Promise<void>;
}

/** Binds a reserved local port to connect back from (rshd does; the client requires < 1024). */
async function connectBack(host: string, localAddress: string, port: number): Promise<net.Socket> {
  for (let lp = 1023; lp >= 600; lp--) {
    try {
      const s = net.connect({ host, port, localAddress, localPort: lp });
      await once(s, "connect");
      return s;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
    }
  }
  throw new Error("no reserved port to connect back from");
}

/** `port` 0: a free one (chosen at the first address, shared by the rest). */
export async function startHostileRsh(addresses: string[], script: HostileScript, port = 0): Promise<HostileRsh> {
  const live = new Set<net.Socket>();
  const servers: net.Server[] = [];
  const sessions = new Map<string, number>();
  for (const address of addresses) {
    const srv = net.createServer((s) => {
      live.add(s);
      s.on("close", () => live.delete(s));
      s.on("error", () => {});
      let got = Buffer.alloc(0);
      // As rshd: the stderr port comes first, and the channel is connected back before the rest is
      // read (rcmd(3) clients such as pdsh wait for it before they send the command).
      let stderr: Promise<net.Socket | null> | null = null;
      const onData = (b: Buffer) => {
        got = Buffer.concat([got, b]);
        const fields: string[] = [];
        let at = 0;
        for (let i = 0; i < got.length && fields.length < 4; i++) {
          if (got[i] === 0) {
            fields.push(got.toString("utf8", at, i));
            at = i + 1;
          }
        }
        if (fields.length >= 1 && stderr === null) {
          const stderrPort = fields[0]!;
          stderr =
            stderrPort === "0"
              ? Promise.resolve(null)
              : connectBack(s.remoteAddress!, address, Number(stderrPort)).then((e) => {
                  live.add(e);
                  e.on("close", () => live.delete(e));
                  e.on("error", () => {});
                  return e;
                });
        }
        if (fields.length < 4) return;
        s.off("data", onData);
        const command = fields[3]!;
        const m = /echo "(__AIU_EXIT_)""([0-9a-f]+__)\$\?"/.exec(command);
        const marker = m ? m[1]! + m[2]! : "";
        sessions.set(address, (sessions.get(address) ?? 0) + 1);
        void (async () => {
          const channel = await stderr!;
          s.write(Buffer.from([0]));
          const session: HostileSession = {
            host: address,
            command,
            marker,
            socket: s,
            stderr: channel,
            exit: (code) => {
              channel?.end();
              s.end(`${marker}${code}\n`);
            },
          };
          await script(session);
        })().catch((e) => {
          if (process.env.HOSTILE_DEBUG) console.error("hostile-rsh:", e);
          s.destroy();
        });
      };
      s.on("data", onData);
    });
    srv.listen({ host: address, port });
    await once(srv, "listening");
    port = (srv.address() as net.AddressInfo).port;
    servers.push(srv);
  }
  return {
    port,
    addresses,
    sessions,
    close: async () => {
      for (const s of live) s.destroy();
      await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
    },
  };
}

/** Writes `bytes` in chunks, waiting for the socket to drain (a real flood, not one huge buffer). */
export async function writeAll(s: net.Socket, total: number, chunk: Buffer): Promise<void> {
  for (let sent = 0; sent < total; sent += chunk.length) {
    const part = total - sent < chunk.length ? chunk.subarray(0, total - sent) : chunk;
    if (!s.write(part)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          s.off("drain", done);
          s.off("close", done);
          resolve();
        };
        s.on("drain", done);
        s.on("close", done);
      });
    }
    if (s.destroyed) return;
  }
}
