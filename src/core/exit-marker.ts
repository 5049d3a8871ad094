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
 * The command as sent to the remote shell (sh, bash, dash and busybox sh).
 *
 * It also ends the command when the client gives up on it (timeout, Ctrl-C), which rsh itself does
 * not: the client then resets the connection, and a command that is not writing (`sleep 25`) would
 * never notice and run on. So when stdin is the connection (a socket, as rshd gives it in both
 * of its modes), a watcher in the background reads it. The client never sends a byte after the
 * request, nor its FIN before the host's, so the read returns only when the connection is reset,
 * and the watcher then kills the process group that rshd made the shell lead (setsid): the command
 * and everything it started. `kill -9 -$$` names only a group led by this shell, so where the shell
 * leads none nothing else is hit. When the command ends, the watcher is killed first, so it does
 * not hold the connection open. One fork per host, none of it in the output.
 */
export function wrapCommand(command: string, m: { head: string; tail: string }): string {
  // The newline before ")" keeps a trailing "# comment" in the user's command from eating the wrapper.
  // An asynchronous list's stdin is /dev/null unless redirected, hence fd 3.
  const watch = `if [ -S /dev/stdin ]; then exec 3<&0; { read -r _ || kill -9 -$$; } <&3 >/dev/null 2>&1 & w=$!; fi`;
  return `${watch}; (${command}\n) </dev/null 3<&-; s=$?; [ -n "$w" ] && kill $w 2>/dev/null; echo "${m.head}""${m.tail}$s"`;
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
