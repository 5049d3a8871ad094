/**
 * rsh carries no exit status, so, as pdsh does, the command is wrapped to print a unique marker and
 * `$?` after it, and the marker is cut out of the output stream here. The wrapper also points the
 * command's stdin at /dev/null: a command that reads stdin then sees EOF at once, without the client
 * half-closing its socket, which would make the client the side that closes first.
 *
 * The marker is written split in two in the command line (`"__A""B__"`), so a command that prints
 * its own command line (ps, a shell with -x) does not show the joined marker.
 */
/** The marker around `id`, which must be unguessable by the remote command (see kernel/random.ts). */
export function newMarker(id: string): { marker: string; head: string; tail: string } {
  const head = "__AIU_EXIT_";
  const tail = `${id}__`;
  return { marker: head + tail, head, tail };
}

/**
/**
 * The command as sent to the remote shell (sh, bash, dash and busybox sh).
 *
 * It first prints the marker, "pid" and its shell's pid (`$$`, a builtin: no fork), which
 * ExitMarkerFilter cuts from the output. rshd makes that shell lead its own process group (setsid), so
 * when the client gives up on a host (timeout, Ctrl-C) it can end the command and everything it
 * started with `kill -9 -PID` over a second connection: rsh itself has no way to, and a command that
 * is not writing (`sleep 25`) never notices that its connection was reset.
 *
 * `input` (see remote/transport.ts RemoteInput): `{ length }` makes the command read exactly that many
 * bytes of the connection (`head -c N`, then what the command left unread is drained, so the host
 * reads every byte we send and still closes first); "protocol" gives it the connection itself (rcp
 * -t/-f end the exchange on their own; the pid line comes before anything they say, and is cut first).
 */
export function wrapCommand(command: string, m: { head: string; tail: string }, input?: { length: number } | "protocol"): string {
  const pid = `echo "${m.head}""${m.tail}pid$$"`;
  const status = `echo "${m.head}""${m.tail}$?"`;
  // The newline before ")" keeps a trailing "# comment" in the user's command from eating the wrapper.
  if (input === undefined) return `${pid}; (${command}\n) </dev/null; ${status}`;
  if (input === "protocol") return `${pid}; (${command}\n); ${status}`;
  return `${pid}; head -c ${Math.floor(input.length)} | { (${command}\n); r=$?; cat >/dev/null; exit $r; }; ${status}`;
}

/** The command that ends the process group `pid` leads; exit 0 only when there was one to end. */
export function killGroupCommand(pid: number): string {
  return `kill -9 -${pid}`;
}

/** `$?` of a POSIX shell is 0-255: at most three digits. More is not the wrapper's status line. */
const MAX_CODE_DIGITS = 3;

/**
 * Filters a byte stream: passes everything through except the wrapper's `MARKER<code>\n`, and
 * reports the code. The marker counts only when it is followed by one to three digits (at most 255)
 * and a newline, as the wrapper's echo prints it; anything else that starts like it (a look-alike, a
 * marker of another run, the marker followed by text or by a run of digits) is output, passed on
 * unchanged, and the search goes on after it. The first status line decides; output after it comes
 * from background jobs the command left running and is passed on.
 *
 * Linear: each byte is looked at a bounded number of times. Bytes that might be the start of a
 * marker (at most its length) or of a status (at most MAX_CODE_DIGITS + 2) are held back until the
 * next chunk decides. (The earlier version re-parsed everything after a marker on each chunk: a host
 * printing the marker and then 100 MB of digits pinned a core and swallowed that output.)
 */
export class ExitMarkerFilter {
  private readonly marker: Buffer;
  /** Bytes held back: a possible start of the marker, or the marker and what follows it so far. */
  private held: Buffer = Buffer.alloc(0);
  exitCode: number | null = null;
  /** The remote shell's pid, from the wrapper's first line (see wrapCommand); null until seen. */
  pid: number | null = null;

  constructor(marker: string, private readonly emit: (chunk: Buffer) => void) {
    this.marker = Buffer.from(marker, "latin1");
  }

  push(chunk: Buffer): void {
    if (this.exitCode !== null) {
      if (chunk.length) this.emit(chunk);
      return;
    }
    let buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = Buffer.alloc(0);
    for (;;) {
      const at = buf.indexOf(this.marker);
      if (at < 0) break;
      // The wrapper's pid line (MARKERpid<digits>), cut out wherever it comes: a login shell may
      // print before it. Followed by digits instead, the marker is the exit status.
      const pidLine = this.pidLine(buf.subarray(at + this.marker.length));
      if (pidLine === "more") {
        if (at > 0) this.emit(buf.subarray(0, at));
        this.held = Buffer.from(buf.subarray(at));
        return;
      }
      if (pidLine !== null) {
        if (at > 0) this.emit(buf.subarray(0, at));
        buf = buf.subarray(at + this.marker.length + pidLine);
        continue;
      }
      const status = this.readStatus(buf, at + this.marker.length);
      if (status === "more") {
        // The marker is whole, its status line not yet: keep it all for the next chunk.
        if (at > 0) this.emit(buf.subarray(0, at));
        this.held = Buffer.from(buf.subarray(at));
        return;
      }
      if (status === null) {
        // Not the status line: output. Search again past this marker's first byte.
        this.emit(buf.subarray(0, at + 1));
        buf = buf.subarray(at + 1);
        continue;
      }
      if (at > 0) this.emit(buf.subarray(0, at));
      this.exitCode = status.code;
      const after = buf.subarray(status.end);
      if (after.length) this.emit(after);
      return;
    }
    // Keep the longest tail that is a prefix of the marker.
    let keep = Math.min(buf.length, this.marker.length - 1);
    while (keep > 0 && !this.marker.subarray(0, keep).equals(buf.subarray(buf.length - keep))) keep--;
    if (buf.length - keep > 0) this.emit(buf.subarray(0, buf.length - keep));
    this.held = keep ? Buffer.from(buf.subarray(buf.length - keep)) : Buffer.alloc(0);
  }

  /**
   * After a marker: the length of a whole pid line to cut ("pid", 1-10 digits, newline), "more" when
   * the bytes so far could still be one, null when they are not one. The digits are the remote's
   * bytes, taken only as a number, and only once.
   */
  private pidLine(after: Buffer): number | "more" | null {
    if (this.pid !== null) return null;
    const text = after.subarray(0, 16).toString("latin1");
    const m = /^pid(\d{1,10})\r?\n/.exec(text);
    if (m) {
      this.pid = Number(m[1]);
      return m[0].length;
    }
    return /^(p|pi|pid\d{0,10}\r?)$/.test(text) || text === "" ? "more" : null;
  }

  /**
   * The status after a marker ending at `from`: its code and where the line ends, null when what
   * follows is not a status line, "more" when the bytes so far cannot tell.
   */
  private readStatus(buf: Buffer, from: number, atEnd = false): { code: number; end: number } | null | "more" {
    let i = from;
    while (i < buf.length && i - from < MAX_CODE_DIGITS && buf[i]! >= 0x30 && buf[i]! <= 0x39) i++;
    const digits = i - from;
    if (i >= buf.length) return atEnd && digits > 0 ? this.code(buf, from, i, i) : atEnd ? null : "more";
    if (digits === 0) return null;
    if (buf[i] === 0x0d) {
      if (i + 1 >= buf.length) return atEnd ? this.code(buf, from, i, i + 1) : "more";
      return buf[i + 1] === 0x0a ? this.code(buf, from, i, i + 2) : null;
    }
    return buf[i] === 0x0a ? this.code(buf, from, i, i + 1) : null;
  }

  private code(buf: Buffer, from: number, to: number, end: number): { code: number; end: number } | null {
    const code = Number(buf.toString("latin1", from, to));
    return code <= 255 ? { code, end } : null;
  }

  /**
   * End of stream: a status line cut short by the end still counts; anything else held is output,
   * unless we cut the stream (`cut`: timeout, cancel) inside our own marker or pid line (a host that
   * drips its output): those bytes are the wrapper's, not the command's. A tail of one or two bytes
   * ("_", "__") is as likely the command's own, and is passed on; so is everything when the stream
   * ended by itself, where only the command can have printed a look-alike.
   */
  end(cut = false): void {
    if (this.exitCode === null && this.held.length) {
      const held = this.held;
      this.held = Buffer.alloc(0);
      const whole = held.subarray(0, this.marker.length).equals(this.marker);
      if (whole) {
        const status = this.readStatus(held, this.marker.length, true);
        if (status !== null && status !== "more") {
          this.exitCode = status.code;
          if (status.end < held.length) this.emit(held.subarray(status.end));
          return;
        }
      }
      const ours = cut && held.length >= 3 && (whole || this.marker.subarray(0, held.length).equals(held));
      if (!ours) this.emit(held);
    }
    this.held = Buffer.alloc(0);
  }
}
