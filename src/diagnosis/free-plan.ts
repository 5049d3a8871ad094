/**
 * What `addrinuse free PORT` would do to free a port. Pure: rows in, a plan out.
 *
 *  - Sockets no process owns (inode 0: TIME_WAIT, orphaned FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, CLOSING) can only go
 *    through the kernel: SOCK_DESTROY, as `ss -K`. For TIME_WAIT that gives up what it is for (RFC
 *    9293 §3.6.1: a delayed segment of the old connection could be taken into a new one on the same
 *    4-tuple); the peer is not told, it has closed already.
 *  - Sockets a process owns go with that process: TERM, then KILL after a grace. Its established
 *    connections on the port are listed, since their clients lose them.
 *  - Never PID 1 (init, or systemd holding a socket unit: stop the unit instead) nor this process.
 */
import { formatEndpoint } from "../core/address.js";
import { printableCommand } from "./diagnose.js";
import type { SocketEnds } from "../kernel/parse.js";

export interface FreeRow extends SocketEnds {
  inode: number;
  owners: { pid: number; command: string; user: string | null }[];
}

export interface FreePlan {
  /** Ownerless sockets to destroy through SOCK_DESTROY. */
  destroy: FreeRow[];
  /** Processes to signal, with what they hold on the port. */
  signal: { pid: number; command: string; user: string | null; listening: string[]; clients: string[] }[];
  /** Processes not signalled, and why. */
  refused: { pid: number; reason: string }[];
  /** Owned sockets whose owner could not be found (another user's, when not root). */
  hidden: number;
}

const KERNEL_ONLY = new Set(["TIME_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "LAST_ACK"]);

export function freePlan(rows: readonly FreeRow[], selfPid: number): FreePlan {
  const destroy: FreeRow[] = [];
  const byPid = new Map<number, FreePlan["signal"][number]>();
  const refused = new Map<number, string>();
  let hidden = 0;
  for (const r of rows) {
    if (r.inode === 0) {
      if (KERNEL_ONLY.has(r.state)) destroy.push(r);
      continue; // request sockets (SYN_RECV) go with their listener
    }
    if (r.owners.length === 0) {
      hidden++;
      continue;
    }
    for (const o of r.owners) {
      if (o.pid === 1) {
        refused.set(1, "PID 1 (init or systemd socket activation): stop the unit that holds it (systemctl stop NAME.socket), not PID 1");
        continue;
      }
      if (o.pid === selfPid) {
        refused.set(o.pid, "this process");
        continue;
      }
      let e = byPid.get(o.pid);
      if (!e) {
        e = { pid: o.pid, command: printableCommand(o.command), user: o.user, listening: [], clients: [] };
        byPid.set(o.pid, e);
      }
      if (r.state === "LISTEN" || r.remotePort === 0) e.listening.push(formatEndpoint(r.localAddress, r.localPort));
      else e.clients.push(`${formatEndpoint(r.remoteAddress, r.remotePort)} (${r.state})`);
    }
  }
  return { destroy, signal: [...byPid.values()], refused: [...refused].map(([pid, reason]) => ({ pid, reason })), hidden };
}
