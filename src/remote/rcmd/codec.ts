/**
 * The rcmd(3) wire format (RFC 1282 §3 for rlogin's cousin; rshd(8) for rsh), pure: bytes in, values
 * out, no sockets. The client sends four NUL-terminated strings: the port of a separate stderr
 * channel ("0" = stderr merged into the one connection), the local user, the remote user and the
 * command. The server answers one byte: \0 (the command runs; its output follows), or \1 followed by
 * one line of refusal and its close. Exit codes are not in the protocol: see ./exit-marker.ts.
 *
 * Shared by the rsh transport (the client) and the demo hosts (a server), so both read the protocol
 * the same way.
 */

export interface RcmdRequest {
  /** 0 = stderr on the main connection. */
  stderrPort: number;
  localUser: string;
  remoteUser: string;
  command: string;
}

/** The byte that opens a server's answer when the command runs. */
export const REPLY_OK = 0;
/** The byte that opens a refusal (a one-line message follows, then the server closes). */
export const REPLY_REFUSED = 1;
/**
 * The longest request a server here reads before refusing it: rshd's own limit for the command is
 * ARG_MAX-sized, but a request that never ends must not grow without bound.
 */
export const MAX_REQUEST_BYTES = 64 * 1024;

export function encodeRequest(r: RcmdRequest): Buffer {
  return Buffer.from(`${r.stderrPort}\0${r.localUser}\0${r.remoteUser}\0${r.command}\0`, "utf8");
}

/** The request at the head of `buf` and the bytes after it, or null while it is incomplete. */
export function decodeRequest(buf: Buffer): { request: RcmdRequest; rest: Buffer } | null {
  const fields: string[] = [];
  let start = 0;
  for (let i = 0; i < 4; i++) {
    const nul = buf.indexOf(0, start);
    if (nul < 0) return null;
    fields.push(buf.subarray(start, nul).toString("utf8"));
    start = nul + 1;
  }
  const stderrPort = /^\d{1,5}$/.test(fields[0]!) ? Number(fields[0]) : NaN;
  return {
    request: { stderrPort, localUser: fields[1]!, remoteUser: fields[2]!, command: fields[3]! },
    rest: buf.subarray(start),
  };
}

export function encodeRefusal(message: string): Buffer {
  return Buffer.concat([Buffer.from([REPLY_REFUSED]), Buffer.from(`${message}\n`, "utf8")]);
}

/**
 * The server's first byte: "ok" (the command's output is `rest`) or "refused" (`rest` is the start
 * of its message). Any byte but \0 is a refusal, as rcmd(3) reads it.
 */
export function decodeReply(chunk: Buffer): { reply: "ok" | "refused"; rest: Buffer } {
  return { reply: chunk[0] === REPLY_OK ? "ok" : "refused", rest: chunk.subarray(1) };
}
