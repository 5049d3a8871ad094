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
 */
import type { ErrorCode } from "../errors.js";
import type { ClosedBy, RemoteInput, Transport, TransportResult } from "./transport.js";

export type HostState = "queued" | "connecting" | "running" | "done" | "failed" | "timedout" | "cancelled";
export const FINAL_STATES: readonly HostState[] = ["done", "failed", "timedout", "cancelled"];

export interface HostResult {
  host: string;
  state: HostState;
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
  error: { code: ErrorCode; message: string } | null;
  closedBy: ClosedBy | null;
  localPort: number | null;
  remoteAddress?: string;
  remotePort?: number;
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
  user: string;
  localUser: string;
  separateStderr: boolean;
  /** Input for a host's remote command (-I, --copy, --rcopy), asked for as the host starts. */
  inputFor?(host: string): RemoteInput | undefined;
  onState?(host: string, state: HostState): void;
  onOutput?(host: string, stream: "stdout" | "stderr", chunk: Buffer): void;
  /** Called once per host, as it finishes; output for that host has all been delivered. */
  onResult?(result: HostResult): void;
}

export const ABORT_GRACE_MS = 2000;

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
    const abortAfter = (ms: number) => {
      if (ms > 0) timers.push(setTimeout(() => ac.abort("timeout"), ms));
    };
    abortAfter(o.timeoutMs);
    let connectTimer: NodeJS.Timeout | undefined;
    if (o.connectTimeoutMs > 0) connectTimer = setTimeout(() => ac.abort("timeout"), o.connectTimeoutMs);
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
        user: o.user,
        localUser: o.localUser,
        command: o.command,
        connectTimeoutMs: o.connectTimeoutMs,
        separateStderr: o.separateStderr,
        signal: ac.signal,
        onConnected: () => {
          if (connectTimer) clearTimeout(connectTimer);
          if (state.get(host) === "connecting") setState(host, "running");
          abortAfter(o.commandTimeoutMs);
        },
        onStdout: (b) => o.onOutput?.(host, "stdout", b),
        onStderr: (b) => o.onOutput?.(host, "stderr", b),
      })
      .catch((e: unknown): TransportResult => ({
        // A transport that rejects has a bug; the host still gets its one result.
        exitCode: null,
        signal: null,
        closedBy: null,
        localPort: null,
        connected: false,
        error: { code: "ERR_TRANSPORT" as ErrorCode, message: `transport error: ${(e as Error)?.message ?? String(e)}` },
      }));

    void Promise.race([run, gaveUp]).then((t) => {
      for (const tm of timers) clearTimeout(tm);
      if (connectTimer) clearTimeout(connectTimer);
      if (graceTimer) clearTimeout(graceTimer);
      controllers.delete(host);
      const reason = ac.signal.aborted ? ac.signal.reason : undefined;
      let final: HostState;
      if (reason === "timeout") final = "timedout";
      else if (reason === "cancel") final = "cancelled";
      else if (t === null || t.error) final = "failed";
      else final = "done";
      const error =
        t?.error ??
        (final === "timedout"
          ? { code: "ERR_COMMAND_TIMEOUT" as ErrorCode, message: "timed out" }
          : final === "cancelled"
            ? { code: "ERR_CANCELLED" as ErrorCode, message: "cancelled" }
            : null);
      record({
        host,
        state: final,
        exitCode: t?.exitCode ?? null,
        signal: t?.signal ?? null,
        durationMs: Date.now() - started,
        error: final === "done" ? null : error,
        closedBy: t?.closedBy ?? (t === null ? "reset" : null),
        localPort: t?.localPort ?? null,
        ...(t?.remoteAddress ? { remoteAddress: t.remoteAddress } : {}),
        ...(t?.remotePort ? { remotePort: t.remotePort } : {}),
      });
      active--;
      pump();
      maybeFinish();
    });
  };

  const pump = () => {
    while (!cancelled && active < Math.max(1, o.parallel) && next < o.hosts.length) startOne(o.hosts[next++]!);
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
        error: { code: "ERR_CANCELLED", message: "cancelled before it started" },
        closedBy: null,
        localPort: null,
      });
    }
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
