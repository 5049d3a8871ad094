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
 * PidLineFilter cuts from the output. rshd makes that shell lead its own process group (setsid), so
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
 * Cuts the wrapper's first line (`MARKERpid<digits>`) from the start of a stream and keeps the pid.
 * A stream that does not start with it (a shell that printed something first, say a login banner)
 * is passed on whole, and the pid stays unknown. The digits are the remote's bytes: only 1-10 of
 * them are taken, as a number.
 */
export class PidLineFilter {
  pid: number | null = null;
  private held: Buffer = Buffer.alloc(0);
  private decided = false;
  private readonly prefix: Buffer;

  constructor(marker: string, private readonly emit: (chunk: Buffer) => void) {
    this.prefix = Buffer.from(`${marker}pid`, "latin1");
  }

  push(chunk: Buffer): void {
    if (this.decided) return this.emit(chunk);
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const nl = buf.indexOf(0x0a);
    const line = nl < 0 ? buf : buf.subarray(0, nl);
    const known = Math.min(line.length, this.prefix.length);
    if (!line.subarray(0, known).equals(this.prefix.subarray(0, known))) return this.pass(buf);
    if (nl < 0) {
      // Still possibly the pid line; it is short, so more than a line's worth is not it.
      if (buf.length > this.prefix.length + 12) return this.pass(buf);
      this.held = Buffer.from(buf);
      return;
    }
    const digits = line.subarray(this.prefix.length).toString("latin1").replace(/\r$/, "");
    if (!/^\d{1,10}$/.test(digits)) return this.pass(buf);
    this.pid = Number(digits);
    this.decided = true;
    this.held = Buffer.alloc(0);
    if (buf.length > nl + 1) this.emit(buf.subarray(nl + 1));
  }

  private pass(buf: Buffer): void {
    this.decided = true;
    this.held = Buffer.alloc(0);
    if (buf.length) this.emit(buf);
  }

  /** End of stream: what was held back was not the pid line after all. */
  end(): void {
    if (!this.decided && this.held.length) this.emit(this.held);
    this.held = Buffer.alloc(0);
    this.decided = true;
  }
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
