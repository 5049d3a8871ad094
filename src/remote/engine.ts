/**
 * The parallel run. Theory of operation (after pdsh's dsh.c):
 *
 * Every host starts `queued`. Up to `parallel` hosts run at once; when one ends the next queued host
 * starts, so the fan-out stays full. A host is `connecting` until its transport says the command
 * started (`running`), and ends `done` (the command ran and reported a status, whatever it was),
 * `failed` (the transport could not run it), `timedout` or `cancelled`. Each host has its own
 * AbortController: the total timer (-t, from the start of connecting), the connect timer and the
 * command timer abort it with reason "timeout"; `cancel()` aborts every running host with reason
 * "cancel" and ends every queued host as `cancelled` without starting it. A transport that does not
 * settle within ABORT_GRACE_MS of an abort is given up on, so every host gets exactly one result
 * whatever the transport does.
 *
 * Two more limits, for fan-outs of thousands: `idleTimeoutMs` aborts a running host that has printed
 * nothing for that long (a hung command, a stalled channel), and `ratePerSecond` spaces the starts
 * of new connections (sshd drops handshakes beyond its MaxStartups, 10 at once by default; a burst
 * of thousands of SYNs overflows listen queues). Every failed host carries one `cause` from the list
 * in remote/failure-cause.ts.
 */
import { timerDelay } from "../core/timer.js";
import { failureCause, type FailureCause, type TimerKind } from "./failure-cause.js";
import type { OutputFlow } from "./flow.js";
import { notStarted, type ClosedBy, type HostError, type RemoteCommandFate, type RemoteInput, type Transport, type TransportResult } from "./transport.js";

export type HostState = "queued" | "connecting" | "running" | "done" | "failed" | "timedout" | "cancelled";
export const FINAL_STATES: readonly HostState[] = ["done", "failed", "timedout", "cancelled"];

export interface HostResult {
  host: string;
  state: HostState;
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
  error: HostError | null;
  closedBy: ClosedBy | null;
  localPort: number | null;
  remoteAddress?: string;
  remotePort?: number;
  /** Timed out or cancelled after the command started: what became of it (see transport.ts). */
  remoteCommand?: RemoteCommandFate;
  /** Why it failed, from a fixed list (remote/failure-cause.ts); null when done. */
  cause?: FailureCause | null;
  /** Connection attempts the transport retried (ssh: a handshake dropped before the banner). */
  retries?: number;
}

export interface RunHostsOptions {
  hosts: readonly string[];
  command: string;
  transport: Transport;
  parallel: number;
  /** Whole life of a host, connect included (multi-rsh -t). 0 = none. */
  timeoutMs: number;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  /** No output for this long once running: abort (multi-rsh --idle-timeout). 0 or absent = none. */
  idleTimeoutMs?: number;
  /** New connections per second at most (multi-rsh --rate). 0 or absent = as fast as the fan-out allows. */
  ratePerSecond?: number;
  /**
   * True while the consumer of the output holds the hosts back (backpressure): a host that prints
   * nothing because it is not being read is not idle, so the idle timer waits.
   */
  outputPaused?(): boolean;
  user: string;
  /** Per-host remote users (`user@host` in -w), over `user`. */
  users?: ReadonlyMap<string, string>;
  localUser: string;
  separateStderr: boolean;
  /** Input for a host's remote command (-I, --copy, --rcopy), asked for as the host starts. */
  inputFor?(host: string): RemoteInput | undefined;
  onState?(host: string, state: HostState): void;
  onOutput?(host: string, stream: "stdout" | "stderr", chunk: Buffer): void;
  /** Backpressure from the output's consumer, handed to every transport run (flow.ts). */
  flow?: OutputFlow;
  /** Called once per host, as it finishes; output for that host has all been delivered. */
  onResult?(result: HostResult): void;
}

export const ABORT_GRACE_MS = 2000;

const FATE: Record<RemoteCommandFate, string> = {
  ended: "; the remote command was ended",
  signalled: "; the remote command was told to end (not confirmed)",
  "left-running": "; the remote command could not be ended",
};

/**
 * The error of a host that a timer or a cancel aborted, named here for every transport (the
 * transport only resets and says how far it got). `t` is null when the transport did not settle
 * within ABORT_GRACE_MS.
 */
export function abortError(reason: "timeout" | "cancel", timer: TimerKind | null, idleMs: number, connected: boolean, t: TransportResult | null): HostError {
  const how = t === null ? `; the transport did not end within ${ABORT_GRACE_MS / 1000} s` : t.closedBy === "reset" ? "; connection reset" : "";
  const fate = t?.remoteCommand ? FATE[t.remoteCommand] : "";
  if (reason === "cancel") return { code: "HOST_CANCELLED", message: `cancelled${connected ? "" : " while connecting"}${how}${fate}` };
  if (timer === "idle") return { code: "HOST_IDLE_TIMEOUT", message: `no output for ${idleMs / 1000} s (--idle-timeout)${how}${fate}` };
  if (!connected) return { code: "HOST_CONNECT_TIMEOUT", message: `timed out while connecting${how}` };
  return { code: "HOST_COMMAND_TIMEOUT", message: `timed out${how}${fate}` };
}

export interface RunStatus {
  queued: string[];
  connecting: string[];
  running: string[];
  finished: HostResult[];
}

export interface HostsRun {
  /** Resolves with one result per host, in the order hosts were given. */
  done: Promise<HostResult[]>;
  cancel(): void;
  status(): RunStatus;
}

export function runHosts(o: RunHostsOptions): HostsRun {
  // Checked once, before any host starts: a delay past a Node timer's range would fire at once.
  const delays = {
    total: timerDelay(o.timeoutMs, "timeoutMs"),
    connect: timerDelay(o.connectTimeoutMs, "connectTimeoutMs"),
    command: timerDelay(o.commandTimeoutMs, "commandTimeoutMs"),
    idle: timerDelay(o.idleTimeoutMs ?? 0, "idleTimeoutMs"),
  };
  // Output held back by a slow reader (the flow's gate, or the caller's own signal) is not idleness.
  const outputPaused = (): boolean => o.outputPaused?.() === true || o.flow?.paused === true;
  const state = new Map<string, HostState>();
  const results = new Map<string, HostResult>();
  const controllers = new Map<string, AbortController>();
  for (const h of o.hosts) state.set(h, "queued");
  let next = 0;
  let active = 0;
  let cancelled = false;
  let resolveDone!: (r: HostResult[]) => void;
  const done = new Promise<HostResult[]>((r) => (resolveDone = r));

  const setState = (host: string, s: HostState) => {
    state.set(host, s);
    o.onState?.(host, s);
  };

  const record = (r: HostResult) => {
    if (results.has(r.host)) return;
    results.set(r.host, r);
    setState(r.host, r.state);
    o.onResult?.(r);
  };

  const maybeFinish = () => {
    if (results.size === o.hosts.length) resolveDone(o.hosts.map((h) => results.get(h)!));
  };

  const startOne = (host: string) => {
    active++;
    const started = Date.now();
    const ac = new AbortController();
    controllers.set(host, ac);
    const timers: NodeJS.Timeout[] = [];
    let firedTimer: TimerKind | null = null;
    let connected = false;
    const timeout = (kind: TimerKind) => () => {
      if (ac.signal.aborted) return;
      if (kind === "idle" && outputPaused()) {
        idleTimer?.refresh();
        return;
      }
      firedTimer = kind;
      ac.abort("timeout");
    };
    const abortAfter = (ms: number, kind: TimerKind) => {
      if (ms > 0) timers.push(setTimeout(timeout(kind), ms));
    };
    abortAfter(delays.total, "total");
    let connectTimer: NodeJS.Timeout | undefined;
    if (delays.connect > 0) connectTimer = setTimeout(timeout("connect"), delays.connect);
    // The idle timer restarts on every chunk of output; it runs from the command's start.
    const idleMs = delays.idle;
    let idleTimer: NodeJS.Timeout | undefined;
    const touch = () => {
      if (idleMs <= 0 || !connected) return;
      if (idleTimer) idleTimer.refresh();
      else idleTimer = setTimeout(timeout("idle"), idleMs);
    };
    setState(host, "connecting");

    let graceTimer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<null>((resolve) => {
      ac.signal.addEventListener("abort", () => {
        graceTimer = setTimeout(() => resolve(null), ABORT_GRACE_MS);
      });
    });

    const input = o.inputFor?.(host);
    const run = o.transport
      .run({
        ...(input ? { input } : {}),
        host,
        user: o.users?.get(host) ?? o.user,
        localUser: o.localUser,
        command: o.command,
        connectTimeoutMs: delays.connect,
        separateStderr: o.separateStderr,
        signal: ac.signal,
        onConnected: () => {
          if (connectTimer) clearTimeout(connectTimer);
          connected = true;
          if (state.get(host) === "connecting") setState(host, "running");
          abortAfter(delays.command, "command");
          touch();
        },
        onStdout: (b) => {
          touch();
          o.onOutput?.(host, "stdout", b);
        },
        onStderr: (b) => {
          touch();
          o.onOutput?.(host, "stderr", b);
        },
        ...(o.flow ? { flow: o.flow } : {}),
      })
      // A transport that rejects has a bug; the host still gets its one result.
      .catch((e: unknown): TransportResult => notStarted("HOST_TRANSPORT", `transport error: ${(e as Error)?.message ?? String(e)}`));

    void Promise.race([run, gaveUp]).then((t) => {
      for (const tm of timers) clearTimeout(tm);
      if (connectTimer) clearTimeout(connectTimer);
      if (idleTimer) clearTimeout(idleTimer);
      if (graceTimer) clearTimeout(graceTimer);
      controllers.delete(host);
      const reason = ac.signal.aborted ? ac.signal.reason : undefined;
      let final: HostState;
      if (reason === "timeout") final = "timedout";
      else if (reason === "cancel") final = "cancelled";
      else if (t === null || t.error) final = "failed";
      else final = "done";
      const wasConnected = connected || !!t?.connected;
      const aborted = final === "timedout" || final === "cancelled";
      const error = aborted ? abortError(reason as "timeout" | "cancel", firedTimer, idleMs, wasConnected, t) : (t?.error ?? null);
      const cause =
        final === "done"
          ? null
          : failureCause({ state: final, timer: firedTimer, connected: wasConnected, code: error?.code ?? null, message: error?.message ?? "" });
      record({
        host,
        state: final,
        // Aborted: the command did not end by itself, and what the kill (or a local ssh's own
        // timeout in the same instant) made it say is not its status.
        exitCode: aborted ? null : (t?.exitCode ?? null),
        signal: t?.signal ?? null,
        durationMs: Date.now() - started,
        error: final === "done" ? null : error,
        closedBy: t?.closedBy ?? (t === null ? "reset" : null),
        localPort: t?.localPort ?? null,
        ...(t?.remoteAddress ? { remoteAddress: t.remoteAddress } : {}),
        ...(t?.remotePort ? { remotePort: t.remotePort } : {}),
        ...(t?.remoteCommand && final !== "done" ? { remoteCommand: t.remoteCommand } : {}),
        cause,
        ...(t?.retries ? { retries: t.retries } : {}),
      });
      active--;
      pump();
      maybeFinish();
    });
  };

  // --rate: starts are spaced 1/rate s apart; a timer wakes the pump for the next slot.
  const interval = (o.ratePerSecond ?? 0) > 0 ? 1000 / o.ratePerSecond! : 0;
  let nextStartAt = 0;
  let rateTimer: NodeJS.Timeout | undefined;
  const pump = () => {
    while (!cancelled && active < Math.max(1, o.parallel) && next < o.hosts.length) {
      if (interval > 0) {
        const now = performance.now();
        if (now < nextStartAt) {
          if (!rateTimer) {
            rateTimer = setTimeout(() => {
              rateTimer = undefined;
              pump();
            }, Math.ceil(nextStartAt - now));
          }
          return;
        }
        nextStartAt = Math.max(now, nextStartAt) + interval;
      }
      startOne(o.hosts[next++]!);
    }
  };

  const cancel = () => {
    if (cancelled) return;
    cancelled = true;
    while (next < o.hosts.length) {
      const h = o.hosts[next++]!;
      record({
        host: h,
        state: "cancelled",
        exitCode: null,
        signal: null,
        durationMs: 0,
        error: { code: "HOST_CANCELLED", message: "cancelled before it started" },
        closedBy: null,
        localPort: null,
        cause: "cancelled",
      });
    }
    if (rateTimer) clearTimeout(rateTimer);
    for (const ac of controllers.values()) ac.abort("cancel");
    maybeFinish();
  };

  const status = (): RunStatus => {
    const by = (s: HostState) => o.hosts.filter((h) => state.get(h) === s);
    return { queued: by("queued"), connecting: by("connecting"), running: by("running"), finished: [...results.values()] };
  };

  if (o.hosts.length === 0) resolveDone([]);
  else queueMicrotask(pump);
  return { done, cancel, status };
}
