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
 * The command as sent to the remote shell (sh, bash, dash and busybox sh). `input` (see
 * remote/transport.ts RemoteInput): `{ length }` makes the command read exactly that many bytes of the
 * connection (`head -c N`, then what the command left unread is drained, so the host reads every byte
 * we send and still closes first); "protocol" gives it the connection itself (rcp -t/-f end the
 * exchange on their own).
 */
export function wrapCommand(command: string, m: { head: string; tail: string }, input?: { length: number } | "protocol"): string {
  const status = `echo "${m.head}""${m.tail}$?"`;
  // The newline before ")" keeps a trailing "# comment" in the user's command from eating the wrapper.
  if (input === undefined) return `(${command}\n) </dev/null; ${status}`;
  if (input === "protocol") return `(${command}\n); ${status}`;
  return `head -c ${Math.floor(input.length)} | { (${command}\n); r=$?; cat >/dev/null; exit $r; }; ${status}`;
}

/**
 * Filters a byte stream: passes everything through except the final `MARKER<code>\n`, and reports the
 * code. Bytes that might be the start of a marker are held back until the next chunk decides.
 */
export class ExitMarkerFilter {
  private readonly marker: Buffer;
  private held: Buffer = Buffer.alloc(0);
  private found = false;
  private codeText = "";
  exitCode: number | null = null;

  constructor(marker: string, private readonly emit: (chunk: Buffer) => void) {
    this.marker = Buffer.from(marker, "latin1");
  }

  push(chunk: Buffer): void {
    if (this.found) {
      this.codeText += chunk.toString("latin1");
      this.settle();
      return;
    }
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const at = buf.indexOf(this.marker);
    if (at >= 0) {
      if (at > 0) this.emit(buf.subarray(0, at));
      this.found = true;
      this.held = Buffer.alloc(0);
      this.codeText = buf.subarray(at + this.marker.length).toString("latin1");
      this.settle();
      return;
    }
    // Keep the longest tail that is a prefix of the marker.
    let keep = Math.min(buf.length, this.marker.length - 1);
    while (keep > 0 && !this.marker.subarray(0, keep).equals(buf.subarray(buf.length - keep))) keep--;
    if (buf.length - keep > 0) this.emit(buf.subarray(0, buf.length - keep));
    this.held = keep ? Buffer.from(buf.subarray(buf.length - keep)) : Buffer.alloc(0);
  }

  private settle(): void {
    if (this.exitCode !== null) {
      // Output after the status line comes from background jobs the command left running: pass it on.
      if (this.codeText) this.emit(Buffer.from(this.codeText, "latin1"));
      this.codeText = "";
      return;
    }
    const m = /^(\d+)\r?\n/.exec(this.codeText);
    if (m) {
      this.exitCode = Number(m[1]);
      this.codeText = this.codeText.slice(m[0].length);
      if (this.codeText) this.settle();
    }
  }

  /** End of stream: anything held back was not a marker after all. */
  end(): void {
    if (!this.found && this.held.length) this.emit(this.held);
    this.held = Buffer.alloc(0);
    if (this.found && this.exitCode === null) {
      const m = /^(\d+)/.exec(this.codeText);
      if (m) this.exitCode = Number(m[1]);
    }
  }
}
