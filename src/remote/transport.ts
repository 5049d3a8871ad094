/**
 * The one small interface every remote-command transport implements (pdsh's rcmd modules,
 * ClusterShell's workers). The engine owns scheduling, timeouts, output and results; a transport only
 * runs one command on one host and says how its connection ended.
 *
 * Contract:
 *  - `run` never rejects for a host problem: per-host failures come back as `error` in the result
 *    (refused, timeout, protocol, auth...). A rejection is a bug.
 *  - `signal` aborting means stop now: reset the connection(s) (RST, no TIME_WAIT on either side)
 *    and resolve promptly with `closedBy: "reset"`. The engine names the error of an aborted host
 *    (timeout or cancel, from `signal.reason`; connected or not; what became of the command): the
 *    transport need not care, and whatever error it returns for an aborted host is replaced.
 *  - Who closed first is decided in one place, net/close.ts `endAfterPeer`, for every transport
 *    that owns its TCP connection; `END_GRACE_MS` is how long the peer has to close after we are done.
 *  - `onConnected` is called once, when the command is about to start on the remote side
 *    (connecting -> running in the engine's state machine).
 *  - Output chunks are raw bytes as they arrive; the engine splits lines.
 */
import { AddrinuseError, type ErrorCode } from "../errors.js";
import type { ClosedBy } from "../net/close.js";
import type { OutputFlow } from "./flow.js";

export type { ClosedBy };
export type TransportName = "rsh" | "ssh" | "openssh" | "exec";

/**
 * After our side of a session is done (ssh's DISCONNECT, the relay's proxy closed), how long the host
 * has to send its FIN before we reset. Every transport uses this one.
 */
export const END_GRACE_MS = 2000;

/**
 * Why one host failed, as a result (never thrown): codes of their own, apart from the library's
 * `AIU_*` errors, so that `--json` readers and the failure causes (remote/failure-cause.ts) see one
 * list. `HOST_LOCAL` is this machine's part failing for that host (no free reserved port, no fd).
 */
export type HostErrorCode =
  | "HOST_CONNECT_REFUSED"
  | "HOST_CONNECT_FAILED"
  | "HOST_CONNECT_TIMEOUT"
  | "HOST_COMMAND_TIMEOUT"
  | "HOST_IDLE_TIMEOUT"
  | "HOST_AUTH"
  | "HOST_REFUSED"
  | "HOST_KEY_UNTRUSTED"
  | "HOST_PROTOCOL"
  | "HOST_DROPPED_BY_SERVER"
  | "HOST_CONNECTION_LOST"
  | "HOST_CANCELLED"
  | "HOST_COPY"
  | "HOST_TRANSPORT"
  | "HOST_LOCAL";

/**
 * What a transport returns as the error of a host its signal aborted: a mark only, since the
 * engine names the real error (timeout or cancel, and how far the host got).
 */
export const ABORTED: HostError = { code: "HOST_CANCELLED", message: "aborted" };

/**
 * How long an aborted host may take to end its remote command (rsh: a second connection's kill of
 * the process group; ssh: the channel's exit-signal), well inside the engine's ABORT_GRACE_MS.
 */
export const KILL_WAIT_MS = 1000;

/** Why one host failed, as a transport reports it (the engine adds the cause; see remote/failure-cause.ts). */
export interface HostError {
  code: HostErrorCode;
  message: string;
}

const HOST_CODE_OF: Partial<Record<ErrorCode, HostErrorCode>> = {
  AIU_CONNECT_REFUSED: "HOST_CONNECT_REFUSED",
  AIU_CONNECT_FAILED: "HOST_CONNECT_FAILED",
  AIU_CONNECT_TIMEOUT: "HOST_CONNECT_TIMEOUT",
  AIU_COPY: "HOST_COPY",
};

/** A library error met while running one host (connectFrom's, a copy's), as that host's result. */
export function hostErrorOf(e: AddrinuseError): HostError {
  return { code: HOST_CODE_OF[e.code] ?? "HOST_LOCAL", message: e.message };
}
/**
 * What became of the remote command when the host timed out or was cancelled after it started:
 * "ended" the host confirmed it (rsh: `kill -9` of its process group succeeded over a second
 * connection; ssh: the exit-signal came), "signalled" it was told to end and nothing confirmed it,
 * "left-running" nothing here could end it (the system ssh; a shell that did not give its pid).
 */
export type RemoteCommandFate = "ended" | "signalled" | "left-running";

export interface RunRequest {
  /** The host as the user wrote it (address, or name for ssh/exec; rsh needs an address). */
  host: string;
  /** Remote user (-u); "" = not given (rsh then sends the local user, ssh takes its config's User). */
  user: string;
  /** Local user name (rsh sends it; rshd checks .rhosts against it). */
  localUser: string;
  command: string;
  /** 0 = none (the engine's total timeout still applies). */
  connectTimeoutMs: number;
  /** Keep the remote stderr separate (rsh's second channel, ssh's extended data). */
  separateStderr: boolean;
  signal: AbortSignal;
  onConnected(info: { localPort: number | null }): void;
  onStdout(chunk: Buffer): void;
  onStderr(chunk: Buffer): void;
  /** Backpressure (flow.ts): attach every stream host output is read from; absent = read freely. */
  flow?: OutputFlow;
  /** Bytes for the remote command's stdin (-I, --copy, --rcopy); without it the remote stdin is at EOF. */
  input?: RemoteInput;
}

/**
 * Input for a remote command, sent so that the client still never closes first. Over rsh a half-close
 * would be our FIN first (TIME_WAIT here), so the remote side must know where the input ends:
 *  - `{ length: N }`: exactly N bytes; rsh wraps the command so that it reads N bytes and then sees EOF.
 *  - `"protocol"`: the remote program ends the exchange itself (rcp -t ends at its top-level `E`,
 *    rcp -f when its files are sent); rsh gives it the connection as its stdin.
 * Over ssh `end()` is a channel EOF and over a local program a pipe's close: neither touches TCP's order.
 */
export interface RemoteInput {
  framing: { length: number } | "protocol";
  /** Called once, when the command has started on the remote side. */
  start(stdin: RemoteStdin): void;
}

export interface RemoteStdin {
  /** Resolves once more may be written (backpressure); false when the connection or pipe is gone. */
  write(chunk: Buffer): Promise<boolean>;
  /** No more input: ssh sends channel EOF, a local program's stdin closes; rsh sends nothing. */
  end(): void;
}

/** A RemoteStdin over any Node writable (socket, channel, pipe). */
export function writableStdin(w: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }, onEnd: () => void): RemoteStdin {
  return {
    write(chunk: Buffer): Promise<boolean> {
      if (w.destroyed || w.writableEnded) return Promise.resolve(false);
      if (w.write(chunk)) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          w.removeListener("drain", onDrain);
          w.removeListener("close", onClose);
          resolve(ok);
        };
        const onDrain = () => done(true);
        const onClose = () => done(false);
        w.on("drain", onDrain);
        w.on("close", onClose);
      });
    },
    end: onEnd,
  };
}

export interface TransportResult {
  /** The remote command's exit status, when it is known. */
  exitCode: number | null;
  /** The signal that ended the remote command (ssh reports it; rsh cannot). */
  signal: string | null;
  /** Who ended the main TCP connection; null when there was none (exec, or never connected). */
  closedBy: ClosedBy | null;
  localPort: number | null;
  /** The address and port actually connected to (names resolved), for matching kernel rows. */
  remoteAddress?: string;
  remotePort?: number;
  /** Did the command start on the remote side? */
  connected: boolean;
  /** Connection attempts retried before this result (ssh: handshakes dropped before the banner). */
  retries?: number;
  error: HostError | null;
  /** Set when an abort (timeout, cancel) came after the command started. */
  remoteCommand?: RemoteCommandFate;
}

/** The result of a host whose command never started: nothing connected, nothing to close. */
export function notStarted(code: HostErrorCode, message: string): TransportResult {
  return { exitCode: null, signal: null, closedBy: null, localPort: null, connected: false, error: { code, message } };
}

export interface Transport {
  readonly name: TransportName;
  run(req: RunRequest): Promise<TransportResult>;
  /** Release shared resources (agents, pools) at the end of a run. */
  close?(): Promise<void>;
  /** One-line notes for the user about the run (e.g. a helper program missing), each said once. */
  readonly notices?: readonly string[];
}

export interface TransportOptions {
  /** rsh: after the server's FIN, end with RST so neither side keeps TIME_WAIT. */
  resetAfterEof?: boolean;
  /** rsh: local port range to bind from ("reserved" = 512-1023, what rshd requires). */
  localPorts?: "reserved" | [number, number];
  /** rsh: remote port (default 514). */
  port?: number;
  /** ssh: ~/.ssh/config replacement (-F). */
  sshConfigFile?: string;
  /** ssh: known_hosts policy. */
  hostKeyChecking?: "strict" | "accept-new" | "off";
  /** exec: the command template, e.g. ["docker", "exec", "%h", "sh", "-c"]. */
  template?: string[];
}
