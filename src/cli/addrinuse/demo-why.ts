/**
 * `addrinuse demo`: makes the two classic situations on loopback and explains them with `why`:
 * a live listener (someone serving on the port), then the same port after the server closed first
 * and left a TIME_WAIT behind.
 */
import net from "node:net";
import { once } from "node:events";
import type { CliIO } from "../io.js";
import { formatWhy, whyReport } from "./why.js";

export async function runWhyDemo(json: boolean, io: CliIO): Promise<number> {
  const srv = net.createServer();
  srv.listen({ port: 0, host: "127.0.0.1" });
  await once(srv, "listening");
  const port = (srv.address() as net.AddressInfo).port;
  // One connection the server closes first: its end (local port = the listener's) enters TIME_WAIT.
  const accepted = once(srv, "connection");
  const c = net.connect(port, "127.0.0.1");
  const [s] = (await accepted) as [net.Socket];
  c.on("end", () => c.end());
  const closed = Promise.all([once(c, "close"), once(s, "close")]);
  s.end();
  await closed;
  const held = await whyReport(port, "127.0.0.1");
  await new Promise<void>((r) => srv.close(() => r()));
  const after = await whyReport(port, "127.0.0.1");
  if (json) {
    io.stdout.write(JSON.stringify({ port, whileListening: held, afterClose: after }, null, 2) + "\n");
  } else {
    io.stdout.write(`$ addrinuse why ${port} --host 127.0.0.1     # while the demo server listens\n`);
    io.stdout.write(formatWhy(held));
    io.stdout.write(`\n$ addrinuse why ${port} --host 127.0.0.1     # after it closed (it had closed its connection first)\n`);
    io.stdout.write(formatWhy(after));
  }
  return !held.bindable && after.bindable ? 0 : 1;
}
