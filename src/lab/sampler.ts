/**
 * Watches both ends of one connection in the kernel's TCP table and records each change of state
 * with its offset in milliseconds from the start of the run.
 *
 * The table is read back to back (at most one read in flight, at least 1 ms between starts), off the
 * event loop (fs.promises on libuv's thread pool): generating /proc/net/tcp walks the whole
 * established hash, shared by every namespace, and on a big machine one read costs milliseconds. Read
 * synchronously, it would hold up the lab's own actions for as long. Reads are chained, so a slow
 * read can never be recorded after a newer one.
 *
 * Held states are always seen; transient ones are seen when the network is slow enough (scenario 3
 * shapes its loopback with tbf). On plain loopback a FIN is delivered and acknowledged within the
 * close() call, and FIN_WAIT_1 or LAST_ACK may pass between two reads. A row that disappears after it
 * was seen is the end reaching CLOSED (the kernel unhashes closed sockets).
 *
 * Each read takes the table text once per namespace and filters it by port (parseTcpTable's text
 * filter), rather than calling readTcpSockets once per port, which would generate the table twice.
 */
import { readFile } from "node:fs/promises";
import { endianness } from "node:os";
import { performance } from "node:perf_hooks";
import type { ClosingState, Side } from "./closing-model.js";
import { parseTcpTable, type TcpSocket, type TimerKind } from "../kernel/parse.js";

export type ObservedState = ClosingState | "SYN_SENT" | "SYN_RECV" | "NEW_SYN_RECV";

export interface Watch {
  side: Side;
  /** /proc for the lab's own namespace, /proc/PID for a process inside another one. */
  procRoot: string;
  localPort: number;
  remotePort: number;
}

export type TimelineEntry =
  | { tMs: number; kind: "state"; side: Side; state: ObservedState; timer: TimerKind; timerMs: number; rxQueue: number }
  | { tMs: number; kind: "action"; side?: Side; label: string };

export interface LastRow {
  tMs: number;
  row: TcpSocket | null;
}

function observed(row: TcpSocket | undefined, seen: boolean): ObservedState | undefined {
  if (!row) return seen ? "CLOSED" : undefined;
  if (row.state === "CLOSE") return "CLOSED";
  if (row.state === "LISTEN") return undefined;
  return row.state;
}

/** Reads beyond this in one run mean something is wrong; the loop stops (bounded in count as well as by stop()). */
const MAX_READS = 200_000;

export class Sampler {
  readonly timeline: TimelineEntry[] = [];
  reads = 0;
  private readonly t0 = performance.now();
  private readonly watches: Watch[] = [];
  private readonly current = new Map<Side, ObservedState>();
  private readonly last = new Map<Side, LastRow>();
  private readonly waiters = new Set<() => void>();
  private running = false;
  private chain: Promise<void> = Promise.resolve();
  private loop: Promise<void> = Promise.resolve();
  private readonly endian = endianness();

  now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  watch(w: Watch): void {
    this.watches.push(w);
  }

  start(minIntervalMs = 1): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running && this.reads < MAX_READS) {
        const began = performance.now();
        await this.sample();
        const spent = performance.now() - began;
        if (spent < minIntervalMs) await new Promise((r) => setTimeout(r, minIntervalMs - spent));
      }
    })();
  }

  /** Stops the loop after its current read. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    for (const w of this.waiters) w();
  }

  mark(label: string, side?: Side): void {
    this.timeline.push({ tMs: this.now(), kind: "action", label, ...(side ? { side } : {}) });
  }

  state(side: Side): ObservedState | undefined {
    return this.current.get(side);
  }

  lastRow(side: Side): LastRow | undefined {
    return this.last.get(side);
  }

  /** One read of the table, after any read already in flight; records what changed. */
  sample(): Promise<void> {
    this.chain = this.chain.then(() => this.readOnce());
    return this.chain;
  }

  private async readOnce(): Promise<void> {
    const roots = [...new Set(this.watches.map((w) => w.procRoot))];
    const texts = new Map<string, string>();
    await Promise.all(
      roots.map(async (root) => {
        try {
          texts.set(root, await readFile(`${root}/net/tcp`, "latin1"));
        } catch {
          // The process that lent us its namespace has gone: no reading, no change recorded.
        }
      }),
    );
    // A state's offset is when the read that first showed it ended: never before it happened, and
    // never before an action that caused it, so the timeline stays in order.
    const t = this.now();
    for (const w of this.watches) {
      const text = texts.get(w.procRoot);
      if (text === undefined) continue;
      const row = parseTcpTable(text, 4, this.endian, w.localPort).find((r) => r.remotePort === w.remotePort);
      const before = this.current.get(w.side);
      // States before ESTABLISHED belong to opening the connection, not to closing it.
      if (before === undefined && row?.state !== "ESTABLISHED") continue;
      this.last.set(w.side, { tMs: t, row: row ?? null });
      const s = observed(row, before !== undefined);
      if (s !== undefined && s !== before) {
        this.current.set(w.side, s);
        this.timeline.push({ tMs: t, kind: "state", side: w.side, state: s, timer: row?.timer ?? "none", timerMs: row?.timerMs ?? 0, rxQueue: row?.rxQueue ?? 0 });
      }
    }
    this.reads++;
    for (const w of this.waiters) w();
  }

  /**
   * Resolves true once `pred` holds for what the sampler has seen (checked after every read), false
   * after `timeoutMs` or when the sampler stops.
   */
  waitFor(pred: (s: Sampler) => boolean, timeoutMs: number): Promise<boolean> {
    if (pred(this)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (pred(this)) finish(true);
        else if (!this.running) finish(false);
      };
      const finish = (v: boolean) => {
        clearTimeout(t);
        this.waiters.delete(check);
        resolve(v);
      };
      const t = setTimeout(() => finish(pred(this)), timeoutMs);
      this.waiters.add(check);
    });
  }
}
