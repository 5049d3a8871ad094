/** The kernel table as the judge of who closed first: counts by state for one port, once it settles. */
import type net from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { readTcpSockets } from "../../src/kernel/read.js";
import { listen } from "../../src/net/listen.js";
import { onFreshPort } from "../helpers/sockets.js";

const TRANSIENT = new Set(["FIN_WAIT_1", "CLOSING", "LAST_ACK", "SYN_SENT", "SYN_RECV"]);

/** Rows whose local port is `port`, after in-flight closing handshakes on it are over (bounded: 2 s). */
export async function settledRows(port: number, side: "local" | "remote" = "local") {
  const pick = () =>
    readTcpSockets().filter((r) => (side === "local" ? r.localPort === port : r.remotePort === port));
  for (let i = 0; i < 100; i++) {
    const rows = pick();
    if (!rows.some((r) => TRANSIENT.has(r.state))) return rows;
    await delay(20);
  }
  return pick();
}

export async function timeWaitCount(port: number, side: "local" | "remote" = "local"): Promise<number> {
  return (await settledRows(port, side)).filter((r) => r.state === "TIME_WAIT").length;
}

/** The library's listen on an ephemeral port of `host` that no earlier test's sockets are on (onFreshPort). */
export async function listenFresh(srv: net.Server, host = "127.0.0.1"): Promise<{ port: number }> {
  return { port: await onFreshPort(srv, async () => (await listen(srv, { port: 0, host })).port) };
}
