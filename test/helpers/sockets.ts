/** Real sockets on loopback for tests: listeners on port 0 and connections that end in a chosen state. */
import net from "node:net";
import { once } from "node:events";

export async function listen(host = "127.0.0.1", onConn?: (s: net.Socket) => void): Promise<net.Server> {
  const srv = net.createServer(onConn ?? (() => {}));
  srv.listen({ port: 0, host });
  await once(srv, "listening");
  return srv;
}

export function portOf(srv: net.Server): number {
  const a = srv.address();
  if (a === null || typeof a === "string") throw new Error("not listening on TCP");
  return a.port;
}

export function closeServer(srv: net.Server): Promise<void> {
  return new Promise((resolve) => srv.close(() => resolve()));
}

/**
 * One connection to a listener on `port` where the server side closes first, so the server's end
 * (local port = `port`) goes to TIME_WAIT. Resolves when both sides are fully closed.
 */
export async function makeServerTimeWait(srv: net.Server, host = "127.0.0.1"): Promise<void> {
  const port = portOf(srv);
  const accepted = new Promise<net.Socket>((resolve) => srv.once("connection", resolve));
  const c = net.connect(port, host);
  const s = await accepted;
  // Server closes first: it sends FIN, the client answers with its own FIN when it sees the end.
  c.on("end", () => c.end());
  const done = Promise.all([once(c, "close"), once(s, "close")]);
  s.end();
  await done;
}
