/**
 * The kernel as witness of a connection that is not ours: the system ssh of an `-R exec` ssh
 * template when there is no relay (no netcat-openbsd). ssh closes first, so each such host leaves a
 * TIME_WAIT here, and a ledger that counted only our own sockets said 0 while `ss` showed one per
 * host. Here the rows towards the host's ssh address and port are read just before the program
 * starts and after it exits; a row that is new is its connection, and its state says who closed
 * (FIN_WAIT_* / CLOSING / TIME_WAIT: this side first). No new row after a command that ran: the
 * server closed first and our socket is gone (it races with ssh's own close), leaving nothing here.
 */
import { isIP } from "node:net";
import { unmapV4 } from "../../core/address.js";
import type { TcpSocket, TcpState } from "../../kernel/parse.js";
import { readTcpSocketsAsync } from "../../kernel/read.js";
import type { SshTarget } from "./config.js";
import type { ClosedBy, TransportResult } from "../transport.js";

const THIS_SIDE_CLOSED_FIRST = new Set<TcpState>(["FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "TIME_WAIT"]);

/**
 * Who closed a connection that is not ours (the system ssh's), from the states of its rows after
 * the program exited: FIN_WAIT_* / CLOSING / TIME_WAIT mean this side first; LAST_ACK or no row,
 * the server. (Our own sockets are net/close.ts endAfterPeer's to tell.)
 */
export function closedByFromStates(states: readonly TcpState[]): ClosedBy {
  return states.some((s) => THIS_SIDE_CLOSED_FIRST.has(s)) ? "local" : "remote";
}

async function resolveTarget(target: SshTarget): Promise<string | null> {
  if (isIP(target.hostName)) return target.hostName;
  try {
    const { lookup } = await import("node:dns/promises");
    return (await lookup(target.hostName, target.family ? { family: target.family } : {})).address;
  } catch {
    return null;
  }
}

async function rowsTowards(address: string, port: number): Promise<TcpSocket[]> {
  const { rows } = await readTcpSocketsAsync({ ports: { remote: [port, port] } });
  return rows.filter((r) => unmapV4(r.remoteAddress) === address);
}

/** Runs `run` and fills in the connection the kernel saw it make towards `target`, when it saw exactly one. */
export async function witnessed(target: SshTarget, run: () => Promise<TransportResult>): Promise<TransportResult> {
  const address = await resolveTarget(target);
  if (address === null) return run();
  const key = (r: TcpSocket) => `${r.localAddress} ${r.localPort}`;
  let before: Set<string>;
  try {
    before = new Set((await rowsTowards(address, target.port)).map(key));
  } catch {
    return run();
  }
  const result = await run();
  let fresh: TcpSocket[];
  try {
    fresh = (await rowsTowards(address, target.port)).filter((r) => !before.has(key(r)));
  } catch {
    return result;
  }
  // None, after a command that ran (ssh exits 255 for its own failures): the server closed first and
  // our end is gone, leaving nothing here. Which local port it had is lost; who closed is not.
  if (fresh.length === 0 && result.connected && result.exitCode !== null && result.exitCode !== 255) return { ...result, closedBy: "remote" };
  // More than one (another program towards the same host meanwhile): which is ours is unknown.
  if (fresh.length !== 1) return result;
  const row = fresh[0]!;
  const closedBy = closedByFromStates([row.state]);
  return { ...result, closedBy, localPort: row.localPort, remoteAddress: row.remoteAddress, remotePort: row.remotePort };
}
