/**
 * The sockets on a port counted by TCP state, the way `why` shows them: one group per state,
 * listeners first and TIME_WAIT near the end, each with its count and its longest timer. Pure.
 * Apart from diagnose.ts because it is only counting: the rows a summarising reader omitted count
 * here as much as the listed ones, and the diagnosis reads the groups rather than walking 50,000 rows.
 */
import type { SocketRow } from "./diagnose.js";

export interface StateGroup {
  state: string;
  count: number;
  /** Longest time left on the kernel timer among the group, ms (TIME_WAIT, FIN_WAIT_2, ...). */
  longestTimerMs: number | null;
  /** The listed sockets: all `count` of them unless the caller passed some as OmittedRows. */
  sockets: SocketRow[];
}

const STATE_ORDER = [
  "LISTEN",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "NEW_SYN_RECV",
  "CLOSE_WAIT",
  "LAST_ACK",
  "FIN_WAIT_1",
  "FIN_WAIT_2",
  "CLOSING",
  "TIME_WAIT",
  "CLOSE",
];

/**
 * Sockets the caller counted instead of listing (src/kernel's ownerlessSample): ownerless rows in one
 * state on one local address and port. They add to counts and timers; only listed rows are shown.
 */
export interface OmittedRows {
  state: string;
  localAddress: string;
  localPort: number;
  count: number;
  longestTimerMs: number | null;
}

export function groupByState(rows: readonly SocketRow[], omitted: readonly OmittedRows[] = []): StateGroup[] {
  const map = new Map<string, StateGroup>();
  const group = (state: string) => {
    let g = map.get(state);
    if (!g) {
      g = { state, count: 0, longestTimerMs: null, sockets: [] };
      map.set(state, g);
    }
    return g;
  };
  for (const r of rows) {
    const g = group(r.state);
    g.count++;
    g.sockets.push(r);
    if (r.timer !== "none") g.longestTimerMs = Math.max(g.longestTimerMs ?? 0, r.timerMs);
  }
  for (const o of omitted) {
    const g = group(o.state);
    g.count += o.count;
    if (o.longestTimerMs !== null) g.longestTimerMs = Math.max(g.longestTimerMs ?? 0, o.longestTimerMs);
  }
  const rank = (s: string) => {
    const i = STATE_ORDER.indexOf(s);
    return i < 0 ? STATE_ORDER.length : i;
  };
  return [...map.values()].sort((a, b) => rank(a.state) - rank(b.state));
}
