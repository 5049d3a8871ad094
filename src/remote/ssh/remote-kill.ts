/**
 * Ending a remote command on timeout or cancel, over its own connection, before the reset: a reset
 * alone leaves a command that does not write running on the host (sshd notices only when it
 * writes). Two ways, both tried: the "signal" channel request (RFC 4254 §6.9; OpenSSH killpg()s the
 * session's process group), and for a root login, where OpenSSH refuses that request, a second
 * session that kills the processes of this connection.
 */
import type { Client, ClientChannel } from "ssh2";

/**
 * Run on a second channel of a timed-out or cancelled connection (see execKillSession): one grep
 * over every process's environment, then kill each match's process group (sshd makes each
 * session's shell lead one) and the process itself. `$$` is this script's own shell.
 */
export const KILL_SESSION_SCRIPT =
  'for f in $(grep -lzxF "SSH_CONNECTION=$SSH_CONNECTION" /proc/[0-9]*/environ 2>/dev/null); do p=${f#/proc/}; p=${p%/environ}; ' +
  '[ "$p" = "$$" ] || { kill -9 -"$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; }; done; true';

/** The parts of an ssh2 channel that sendSignal() reaches past its public API for. */
interface ChannelInternals {
  outgoing?: { id?: unknown; state?: unknown };
  _client?: { _protocol?: { signal?: unknown } };
}

/**
 * A "signal" channel request (RFC 4254 §6.9). ssh2's channel.signal() sends nothing once our side
 * has sent CHANNEL_EOF, and we send it at once (the remote stdin is at EOF); the RFC allows requests
 * on a channel until it is closed, so the request goes through ssh2's protocol object directly.
 * False when that object is not there (another ssh2 version) or the channel is closing.
 */
export function sendSignal(channel: ClientChannel, name: string): boolean {
  const c = channel as unknown as ChannelInternals;
  const id = c.outgoing?.id;
  const state = c.outgoing?.state;
  const protocol = c._client?._protocol;
  if (typeof id !== "number" || (state !== "open" && state !== "eof") || !protocol || typeof protocol.signal !== "function") return false;
  try {
    (protocol.signal as (chan: number, signal: string) => void).call(protocol, id, name);
    return true;
  } catch {
    return false;
  }
}

/**
 * OpenSSH refuses the "signal" request for a root login (it runs such a session without privilege
 * separation, and signals only from the unprivileged child), so the same connection also runs
 * KILL_SESSION_SCRIPT on a second channel: it kills the processes whose SSH_CONNECTION is this
 * connection's (our local port makes it unique), this second session's shell excepted.
 */
export function execKillSession(client: Client): boolean {
  try {
    client.exec(KILL_SESSION_SCRIPT, (err, ch) => {
      if (err || !ch) return;
      // Nothing it says reaches the user; its stdin is at EOF at once.
      ch.on("data", () => {});
      ch.stderr.on("data", () => {});
      ch.on("error", () => {});
      ch.end();
    });
    return true;
  } catch {
    return false;
  }
}
