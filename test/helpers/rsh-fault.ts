/** Fault rsh servers for tests: real TCP servers on loopback that misbehave in one chosen way. */
import net from "node:net";
import { once } from "node:events";

export type RshFault = "hang" | "refuse-message" | "drop-before-reply" | "partial-then-reset";

export async function startFaultServer(fault: RshFault, host = "127.0.0.1"): Promise<{ port: number; close(): Promise<void> }> {
  const live = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    live.add(s);
    s.on("close", () => live.delete(s));
    s.on("error", () => {});
    let got = Buffer.alloc(0);
    s.on("data", (b: Buffer) => {
      got = Buffer.concat([got, b]);
      let nuls = 0;
      for (const c of got) if (c === 0) nuls++;
      if (nuls < 4) return;
      if (fault === "refuse-message") s.end(Buffer.from("\x01permission denied.\n"));
      if (fault === "drop-before-reply") s.end();
      if (fault === "partial-then-reset") {
        s.write(Buffer.from("\x00some output\n"));
        setImmediate(() => s.resetAndDestroy());
      }
      // "hang": accepts, reads the request, never answers.
    });
  });
  srv.listen({ port: 0, host });
  await once(srv, "listening");
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of live) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}
