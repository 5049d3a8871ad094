/** Sockets counted per local port and state, busiest first (what `addrinuse ls` prints). Pure. */

export interface PortCount {
  port: number;
  total: number;
  states: Record<string, number>;
}

/** A row stands for `count` sockets when it has one (a summary of sockets not listed one by one). */
export function countByPort(rows: readonly { localPort: number; state: string; count?: number }[]): PortCount[] {
  const map = new Map<number, PortCount>();
  for (const r of rows) {
    let c = map.get(r.localPort);
    if (!c) {
      c = { port: r.localPort, total: 0, states: {} };
      map.set(r.localPort, c);
    }
    const n = r.count ?? 1;
    c.total += n;
    c.states[r.state] = (c.states[r.state] ?? 0) + n;
  }
  return [...map.values()].sort((a, b) => b.total - a.total || a.port - b.port);
}

export function countByState(rows: readonly { state: string; count?: number }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of rows) out[r.state] = (out[r.state] ?? 0) + (r.count ?? 1);
  return out;
}
