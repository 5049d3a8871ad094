/**
 * One host's --copy session: we are the rcp source, and the host's `rcp -t` (or `scp -t`) answers
 * each record. Apart from copy.ts, which holds the plan and the file source every host shares,
 * because this is one host's side of the protocol: it waits for each answer, skips what the host
 * refused and stops where the host gave up, and ends with the top-level `E` that makes the host's
 * program exit first (so the TIME_WAIT stays on the host).
 */
import { END_RECORD, OK, StatusReader, dirRecord, errorStatus, fileRecord, timeRecord, type StatusEvent } from "./rcmd/rcp.js";
import type { HostResult } from "./engine.js";
import type { RemoteInput, RemoteStdin } from "./transport.js";
import { applyOutcome, type CopyEntry, type CopyOutcome, type CopyPlan, type CopySource, type RcpProgram } from "./copy.js";

/** One host's --copy: we are the rcp source. */
export class CopyToSession {
  readonly input: RemoteInput;
  private readonly reader = new StatusReader();
  private readonly queue: StatusEvent[] = [];
  private waiter: ((s: StatusEvent | null) => void) | null = null;
  private closed = false;
  private finished = false;
  private fatal: string | null = null;
  private garbage = false;
  private readonly warnings: string[] = [];
  private files = 0;
  private bytes = 0;

  constructor(
    private readonly plan: CopyPlan,
    private readonly source: CopySource,
    private readonly program: RcpProgram,
  ) {
    this.input = {
      framing: "protocol",
      start: (stdin) =>
        void this.run(stdin).catch((e: unknown) => {
          // Not expected (file errors are sent as the file's status); the host still gets one result.
          this.fatal ??= `multi-rsh: ${(e as Error)?.message ?? String(e)}`;
          stdin.end();
        }),
    };
  }

  onStdout(chunk: Buffer): void {
    for (const ev of this.reader.push(chunk)) this.deliver(ev);
  }

  /** The transport is done with this host: anything still waiting for an answer gets none. */
  close(): void {
    this.closed = true;
    this.deliver(null);
  }

  private deliver(ev: StatusEvent | null): void {
    if (ev) this.queue.push(ev);
    const w = this.waiter;
    if (!w) return;
    if (this.queue.length) {
      this.waiter = null;
      w(this.queue.shift()!);
    } else if (this.closed) {
      this.waiter = null;
      w(null);
    }
  }

  private next(): Promise<StatusEvent | null> {
    if (this.queue.length) return Promise.resolve(this.queue.shift()!);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** "ok" to go on, "skip" this entry (the host refused it and said why), "stop" the host. */
  private async answer(what: string): Promise<"ok" | "skip" | "stop"> {
    const s = await this.next();
    if (s === null) return "stop";
    if ("garbage" in s) {
      this.garbage = true;
      return "stop";
    }
    if (s.ok) return "ok";
    if (s.fatal) {
      this.fatal = s.message || `the host gave up at ${what}`;
      return "stop";
    }
    this.warnings.push(s.message || `the host refused ${what}`);
    return "skip";
  }

  private async run(stdin: RemoteStdin): Promise<void> {
    if ((await this.answer("the start")) !== "ok") return;
    for (const e of this.plan.entries) if (!(await this.send(stdin, e))) return;
    await stdin.write(Buffer.from(END_RECORD));
    if ((await this.answer("the end")) !== "ok") return;
    this.finished = true;
    stdin.end();
  }

  private async send(stdin: RemoteStdin, e: CopyEntry): Promise<boolean> {
    if (this.plan.preserve) {
      await stdin.write(Buffer.from(timeRecord(e.mtimeSec, e.atimeSec)));
      const a = await this.answer(e.name);
      if (a !== "ok") return a === "skip";
    }
    if (e.kind === "dir") {
      await stdin.write(Buffer.from(dirRecord(e.mode, e.name)));
      const a = await this.answer(e.name);
      if (a !== "ok") return a === "skip";
      for (const c of e.children) if (!(await this.send(stdin, c))) return false;
      await stdin.write(Buffer.from(END_RECORD));
      return (await this.answer(`the end of ${e.name}`)) !== "stop";
    }
    await stdin.write(Buffer.from(fileRecord(e.mode, e.size, e.name)));
    const a = await this.answer(e.name);
    if (a !== "ok") return a === "skip";
    const r = await this.source.stream(e, (b) => stdin.write(b));
    if (r.aborted) return false;
    await stdin.write(r.readError ? errorStatus(`${e.path}: ${r.readError}`) : OK);
    const b = await this.answer(e.name);
    if (b === "ok") {
      this.files++;
      this.bytes += r.sent;
    }
    return b !== "stop";
  }

  outcome(): CopyOutcome {
    let error: CopyOutcome["error"] = null;
    if (this.garbage) {
      const text = this.reader.garbageText() ?? "";
      error = /not found|No such file/i.test(text)
        ? { code: "HOST_COPY", message: `no ${this.program} on the host: ${text.split("\n")[0]}` }
        : { code: "HOST_PROTOCOL", message: `not the rcp protocol from the host: '${text.slice(0, 120)}'` };
    } else if (this.fatal) error = { code: "HOST_COPY", message: this.fatal };
    else if (this.warnings.length) error = { code: "HOST_COPY", message: this.warnings.join("; ") };
    return { error, files: this.files, bytes: this.bytes };
  }

  result(r: HostResult): HostResult {
    return applyOutcome(r, this.outcome(), this.finished, this.program);
  }
}
