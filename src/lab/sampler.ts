/**
 * Watches both ends of one connection in the kernel's TCP table and records each change of state
 * with its offset in milliseconds from the start of the run.
 *
 * The table is read every millisecond (the timer's floor) and again right before and after every lab
 * action, so held states are always seen and transient ones are seen when the network is slow enough
 * (the namespace scenarios with a tbf qdisc); on loopback a FIN is delivered and acknowledged within
 * the close() call, and FIN_WAIT_1 or LAST_ACK may pass between two reads. A row that disappears
 * after it was seen is the end reaching CLOSED (the kernel unhashes closed sockets).
 *
 * Each read takes the table text once per namespace and filters it by port (parseTcpTable's text
 * filter), rather than calling readTcpSockets once per port: with thousands of TIME_WAIT rows from
 * other programs, generating the table is the kernel's costly part, and it is done once per tick.
 */
import { readFileSync } from "node:fs";
import { endianness } from "node:os";
import { performance } from "node:perf_hooks";
import type { ClosingState, Side } from "../core/closing.js";
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

export class Sampler {
  readonly timeline: TimelineEntry[] = [];
  reads = 0;
  private readonly t0 = performance.now();
  private readonly watches: Watch[] = [];
  private readonly current = new Map<Side, ObservedState>();
  private readonly last = new Map<Side, LastRow>();
  private readonly waiters = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private readonly endian = endianness();

  now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  watch(w: Watch): void {
    this.watches.push(w);
    this.tick();
  }

  start(intervalMs = 1): void {
    this.timer = setInterval(() => this.tick(), intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const w of this.waiters) w();
  }

  mark(label: string, side?: Side): void {
    this.tick();
    this.timeline.push({ tMs: this.now(), kind: "action", label, ...(side ? { side } : {}) });
  }

  state(side: Side): ObservedState | undefined {
    return this.current.get(side);
  }

  lastRow(side: Side): LastRow | undefined {
    return this.last.get(side);
  }

  /** Reads the table once and records what changed. */
  tick(): void {
    const texts = new Map<string, string>();
    for (const w of this.watches) {
      let text = texts.get(w.procRoot);
      if (text === undefined) {
        try {
          text = readFileSync(`${w.procRoot}/net/tcp`, "latin1");
        } catch {
          // The process that lent us its namespace has gone: no reading, no change recorded.
          continue;
        }
        texts.set(w.procRoot, text);
      }
      const row = parseTcpTable(text, 4, this.endian, w.localPort).find((r) => r.remotePort === w.remotePort);
      const before = this.current.get(w.side);
      // States before ESTABLISHED belong to opening the connection, not to closing it.
      if (before === undefined && row?.state !== "ESTABLISHED") continue;
      const t = this.now();
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
   * after `timeoutMs`.
   */
  waitFor(pred: (s: Sampler) => boolean, timeoutMs: number): Promise<boolean> {
    if (pred(this)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (pred(this)) finish(true);
        else if (!this.timer) finish(false);
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
