/** The kernel table as the judge of who closed first: counts by state for one port, once it settles. */
import type net from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { readTcpSockets } from "../../src/kernel/read.js";
import { listen } from "../../src/net/listen.js";
import { portHasLeftovers } from "../helpers/sockets.js";

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

/**
 * The library's listen on an ephemeral port of `host` that no earlier test's sockets are on. The
 * kernel hands a listener a port with TIME_WAITs of an earlier server on it (SO_REUSEADDR), and the
 * counts here are by port: such a leftover once counted as this test's (CI, one run in many).
 * Bounded: 20 tries, then the last port as it is.
 */
export async function listenFresh(srv: net.Server, host = "127.0.0.1"): Promise<{ port: number }> {
  for (let tries = 1; ; tries++) {
    const { port } = await listen(srv, { port: 0, host });
    if (tries >= 20 || !portHasLeftovers(port)) return { port };
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
}
