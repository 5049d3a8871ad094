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
 * It first prints the marker, "pid" and its shell's pid (`$$`, a builtin: no fork), which
 * ExitMarkerFilter cuts from the output. rshd makes that shell lead its own process group (setsid), so
 * when the client gives up on a host (timeout, Ctrl-C) it can end the command and everything it
 * started with `kill -9 -PID` over a second connection: rsh itself has no way to, and a command that
 * is not writing (`sleep 25`) never notices that its connection was reset.
 */
export function wrapCommand(command: string, m: { head: string; tail: string }): string {
  // The newline before ")" keeps a trailing "# comment" in the user's command from eating the wrapper.
  return `echo "${m.head}""${m.tail}pid$$"; (${command}\n) </dev/null; echo "${m.head}""${m.tail}$?"`;
}

/** The command that ends the process group `pid` leads; exit 0 only when there was one to end. */
export function killGroupCommand(pid: number): string {
  return `kill -9 -${pid}`;
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
  /** The remote shell's pid, from the wrapper's first line (see wrapCommand); null until seen. */
  pid: number | null = null;

  constructor(marker: string, private readonly emit: (chunk: Buffer) => void) {
    this.marker = Buffer.from(marker, "latin1");
  }

  push(chunk: Buffer): void {
    if (this.found) {
      this.codeText += chunk.toString("latin1");
      this.settle();
      return;
    }
    let buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    for (;;) {
      const at = buf.indexOf(this.marker);
      if (at < 0) break;
      const after = buf.subarray(at + this.marker.length);
      // The wrapper's pid line (MARKERpid<digits>), cut out wherever it comes: a login shell may
      // print before it. Followed by digits instead, the marker is the exit status.
      const pidLine = this.pidLine(after);
      if (pidLine === "more") {
        if (at > 0) this.emit(buf.subarray(0, at));
        this.held = Buffer.from(buf.subarray(at));
        return;
      }
      if (pidLine !== null) {
        if (at > 0) this.emit(buf.subarray(0, at));
        buf = after.subarray(pidLine);
        continue;
      }
      if (at > 0) this.emit(buf.subarray(0, at));
      this.found = true;
      this.held = Buffer.alloc(0);
      this.codeText = after.toString("latin1");
      this.settle();
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

  /** End of stream: anything held back was not a marker after all (see `cut`). */
  end(cut = false): void {
    // A stream we cut (timeout, cancel) may end inside our own marker or pid line (a host that
    // drips its output): those bytes are the wrapper's, not the command's. A tail of one or two
    // bytes ("_", "__") is as likely the command's own, and is passed on; so is everything when the
    // stream ended by itself, where only the command can have printed a look-alike.
    const ours = cut && this.held.length >= 3 && this.held.subarray(0, this.marker.length).equals(this.marker.subarray(0, Math.min(this.held.length, this.marker.length)));
    if (!this.found && this.held.length && !ours) this.emit(this.held);
    this.held = Buffer.alloc(0);
    if (this.found && this.exitCode === null) {
      const m = /^(\d+)/.exec(this.codeText);
      if (m) this.exitCode = Number(m[1]);
    }
  }
}
