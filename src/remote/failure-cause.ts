/**
 * Why a host failed, as one word from a fixed list, so that a run over thousands of hosts can be
 * counted by cause (`jq 'group_by(.cause)'`) instead of read message by message. Pure: the engine
 * passes what it knows (the final state, which timer fired, the transport's error code).
 *
 *   refused            the host answered the connect with RST: nothing listens on the port
 *   unreachable        no route, a name that does not resolve, or any other connect error
 *   timeout-connect    no session within the connect time (or the total time ran out while connecting)
 *   timeout-total      the command did not finish within -t or --command-timeout
 *   timeout-idle       the command printed nothing for --idle-timeout seconds
 *   auth               the host would not let us in (ssh permission denied, rshd's refusal)
 *   host-key           the ssh host key is unknown, changed or revoked
 *   protocol           the host spoke, but not the protocol (a bad banner, no exit status)
 *   dropped-by-server  the host closed or reset the connection before the command's status (sshd's
 *                      MaxStartups drop before its banner, a daemon that died mid-run)
 *   cancelled          Ctrl-C, or the run was stopped before the host started
 *   local              this machine could not do its part (no free local port, out of file descriptors,
 *                      a helper program missing)
 */
import type { HostErrorCode } from "./transport.js";

export const FAILURE_CAUSES = [
  "refused",
  "unreachable",
  "timeout-connect",
  "timeout-total",
  "timeout-idle",
  "auth",
  "host-key",
  "protocol",
  "dropped-by-server",
  "cancelled",
  "local",
] as const;
export type FailureCause = (typeof FAILURE_CAUSES)[number];

/** Which of the engine's timers ended the host, if one did. */
export type TimerKind = "total" | "connect" | "command" | "idle";

export interface CauseInput {
  state: "done" | "failed" | "timedout" | "cancelled";
  /** The timer that fired (engine), when state is timedout. */
  timer: TimerKind | null;
  /** Did the command start on the host? */
  connected: boolean;
  code: HostErrorCode | null;
  /** The transport's message: a connect error's errno is in it ("EMFILE", "EHOSTUNREACH"). */
  message: string;
}

/** The cause of a failed host; null for a host that is done (its exit code speaks for it). */
export function failureCause(i: CauseInput): FailureCause | null {
  if (i.state === "done") return null;
  if (i.state === "cancelled") return "cancelled";
  if (i.state === "timedout") {
    if (i.timer === "idle") return "timeout-idle";
    if (i.timer === "connect" || !i.connected) return "timeout-connect";
    return "timeout-total";
  }
  if (/\bE(MFILE|NFILE|NOBUFS|NOMEM)\b/.test(i.message)) return "local";
  switch (i.code) {
    case "HOST_CONNECT_REFUSED":
      return "refused";
    case "HOST_CONNECT_FAILED":
      return "unreachable";
    case "HOST_CONNECT_TIMEOUT":
      return "timeout-connect";
    case "HOST_COMMAND_TIMEOUT":
      return "timeout-total";
    case "HOST_AUTH":
    case "HOST_REFUSED":
      return "auth";
    case "HOST_KEY_UNTRUSTED":
      return "host-key";
    case "HOST_PROTOCOL":
      return "protocol";
    case "HOST_CONNECTION_LOST":
    case "HOST_DROPPED_BY_SERVER":
      return "dropped-by-server";
    case "HOST_CANCELLED":
      return "cancelled";
    default:
      return "local";
  }
}
