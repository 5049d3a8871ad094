/**
 * One run of a command on many hosts, from the host list to its report. Opening a session creates
 * the transport and makes room for its open files; running it hands every host to the engine and
 * streams their output to the caller; finishing it closes the transport, reads this run's rows of
 * the kernel's socket table and builds the report with its TIME_WAIT ledger (report.ts). The CLI
 * keeps what is the user's: arguments, output, signals and the exit code.
 *
 * The table is read only once the transport is closed: a connection the transport still held would
 * not yet be in the state it leaves behind (TIME_WAIT on whichever side closed first, RFC 9293 §3.6).
 */
import { ensureFdLimit, type FdLimitOutcome } from "../kernel/fd-limit.js";
import type { TcpSocket } from "../kernel/parse.js";
import { readTcpSocketsAsync, type TableSource } from "../kernel/read.js";
import type { DemoHosts } from "./demo/rshd.js";
import { runHosts, type HostResult, type RunHostsOptions, type RunStatus } from "./engine.js";
import { countPeerTimeWait, ledgerPortFilter, summarise, type RunSummary } from "./report.js";
import type { Transport, TransportName, TransportOptions } from "./transport.js";
import { createTransport } from "./transports/index.js";

/** Open files kept for everything but the hosts' connections (Node itself, stdio, kernel table reads). */
const FD_RESERVE = 64;

/**
 * Open files a host's run holds at once, per transport (rsh with a separate stderr: its listener and
 * channel; the connection that ends a timed-out command opens after the main one is reset, so it
 * adds none).
 */
function fdsPerHost(transport: string, separateStderr: boolean): number {
  if (transport === "rsh") return separateStderr ? 3 : 1;
  if (transport === "ssh") return 1;
  // A child ssh or template: three pipes, and for the relay its socket pair and TCP connection.
  return 7;
}

export interface SessionOptions {
  /** -R: rsh, ssh, openssh or exec (transports/index.ts refuses any other name). */
  transport: string;
  transportOptions: TransportOptions;
  hosts: readonly string[];
  /** Connections in parallel asked for; fewer when the open-file limit cannot be raised enough. */
  parallel: number;
  separateStderr: boolean;
}

/** What the engine needs besides the hosts, the transport and the fan-out: runHosts' own options. */
export type SessionRunOptions = Omit<RunHostsOptions, "hosts" | "transport" | "parallel" | "separateStderr"> & {
  /**
   * A host's result as the run reports it (multi-rsh's transfers: a command that ran but whose file
   * failed is not done), applied before onResult and again to the final results.
   */
  adjustResult?(r: HostResult): HostResult;
};

export interface LedgerOptions {
  /** Where the kernel's socket table is read from (ADDRINUSE_TABLE; auto: netlink, else procfs). */
  source: "auto" | TableSource;
  /** The demo hosts, when they ran in this network namespace: their side of the ledger is read too. */
  demoHosts?: DemoHosts | null;
}

/** The demo hosts' side of the run, as the servers saw it and as the kernel holds it. */
export interface DemoHostsSide {
  served: number;
  serverClosedFirst: number;
  /** TIME_WAIT the hosts keep for this run's connections: the remote end keeps them, as it should. */
  hostTimeWait: number;
}

export interface SessionReport {
  /** One result per host, in the order the hosts were given. */
  results: HostResult[];
  summary: RunSummary;
  demoHosts?: DemoHostsSide;
}

export interface SessionRun {
  /** Resolves once every host has its result; the transport is still open. */
  done: Promise<HostResult[]>;
  cancel(): void;
  status(): RunStatus;
  /** After done: closes the transport, reads the ledger and builds the report. Once. */
  finish(ledger: LedgerOptions): Promise<SessionReport>;
}

export interface Session {
  transport: TransportName;
  /** The transport's own notices (an ssh config option it ignores, ...), complete once the run is. */
  readonly notices: readonly string[];
  fdLimit: FdLimitOutcome;
  /** Connections in parallel this run will make (see SessionOptions.parallel). */
  parallel: number;
  run(o: SessionRunOptions): SessionRun;
}

export async function openSession(o: SessionOptions): Promise<Session> {
  const transport = await createTransport(o.transport, o.transportOptions);
  // Before the first connection: a fan-out of 1,000 at the usual soft limit of 1024 dies of EMFILE.
  const perHost = fdsPerHost(o.transport, o.separateStderr);
  const fdLimit = await ensureFdLimit(Math.min(o.parallel, o.hosts.length) * perHost + FD_RESERVE);
  // Past the hard limit: fewer at once rather than hosts failing with EMFILE half way through.
  const soft = fdLimit.after?.soft ?? Infinity;
  const parallel = soft < fdLimit.needed ? Math.max(1, Math.min(o.parallel, Math.floor((soft - FD_RESERVE) / perHost))) : o.parallel;
  if (parallel < o.parallel && fdLimit.notice) fdLimit.notice += `; running ${parallel} at a time instead of -p ${o.parallel}`;
  return {
    transport: transport.name,
    get notices() {
      return transport.notices ?? [];
    },
    fdLimit,
    parallel,
    run: (r) => startRun(o, r, transport, parallel),
  };
}

function startRun(o: SessionOptions, r: SessionRunOptions, transport: Transport, parallel: number): SessionRun {
  const started = Date.now();
  const { adjustResult, ...engineOptions } = r;
  const adjust = adjustResult ?? ((x: HostResult) => x);
  const run = runHosts({
    ...engineOptions,
    hosts: o.hosts,
    transport,
    parallel,
    separateStderr: o.separateStderr,
    ...(r.onResult ? { onResult: (res: HostResult) => r.onResult!(adjust(res)) } : {}),
  });
  return {
    done: run.done,
    cancel: () => run.cancel(),
    status: () => run.status(),
    async finish(ledger) {
      let results: HostResult[];
      try {
        results = (await run.done).map(adjust);
      } finally {
        await transport.close?.();
      }
      const demo = ledger.demoHosts ?? null;
      const rows = await readLedgerRows(results, ledger.source, demo !== null);
      const report: SessionReport = { results, summary: summarise(results, rows, Date.now() - started) };
      if (demo) {
        report.demoHosts = { served: demo.stats.served, serverClosedFirst: demo.stats.serverClosedFirst, hostTimeWait: countPeerTimeWait(results, rows, demo.port) };
      }
      return report;
    },
  };
}

async function readLedgerRows(results: readonly HostResult[], source: LedgerOptions["source"], peerSide: boolean): Promise<TcpSocket[]> {
  // Only the rows of this run's ports: the kernel filters them over netlink (procfs: before
  // parsing), where a busy machine's table of thousands of other sockets took 50 ms to read whole.
  const ports = ledgerPortFilter(results, peerSide);
  if (ports === null) return [];
  // Only the families this run used: each table file costs a walk of the kernel's whole hash.
  // (A v4-mapped address is an IPv6 socket, listed in tcp6.)
  const families = new Set(results.flatMap((r) => (r.remoteAddress ? [r.remoteAddress.includes(":") ? 6 : 4] : [])));
  const family = families.size === 1 ? { family: families.has(6) ? (6 as const) : (4 as const) } : {};
  return (await readTcpSocketsAsync({ ports, source, ...family })).rows;
}
