/**
 * Where a run's output goes, set up from the options. Each host's stdout goes first to the transfer
 * (--copy/--rcopy: its protocol bytes are not output), then to -o/-e files, else to the sink: lines
 * as they complete, gathered (-b), or JSON (--json, --ndjson). On a terminal, a progress line on
 * stderr, cleared before anything else is written there.
 */
import type { HostResult, RunStatus } from "../../remote/engine.js";
import type { OutputGate } from "../../remote/flow.js";
import { StatusLine } from "../display.js";
import { showsProgress, type CliIO } from "../io.js";
import type { Opts } from "./options.js";
import { OutputDirs, prepareOutputDir } from "./output-dir.js";
import { OutputSink, type OutputMode } from "./output-sink.js";
import type { Transfer } from "./transfer.js";

/** -o DIR / -e DIR, checked before any host is contacted; -e implies --stderr. */
export function openOutputDirs(o: Opts): OutputDirs | null {
  if (o.o === undefined && o.e === undefined) return null;
  const dirs = new OutputDirs({
    ...(o.o !== undefined ? { stdout: prepareOutputDir(o.o, "-o") } : {}),
    ...(o.e !== undefined ? { stderr: prepareOutputDir(o.e, "-e") } : {}),
  });
  if (o.e !== undefined) o.stderr = true;
  return dirs;
}

export function outputMode(o: Opts): OutputMode {
  return o.json ? "json" : o.ndjson ? "ndjson" : o.b ? "gather" : "lines";
}

export class RunOutput {
  readonly mode: OutputMode;
  /** --json and --ndjson keep stderr quiet: the notices are in the document. */
  readonly quiet: boolean;
  readonly sink: OutputSink;
  private readonly line: StatusLine;
  private readonly progress: boolean;
  private ticker: NodeJS.Timeout | null = null;
  private finished = 0;
  private failed = 0;

  constructor(
    io: CliIO,
    o: Opts,
    private readonly gate: OutputGate,
    private readonly transfer: Transfer | null,
    readonly dirs: OutputDirs | null,
  ) {
    this.mode = outputMode(o);
    this.quiet = this.mode === "json" || this.mode === "ndjson";
    this.progress = showsProgress(io) && !this.quiet;
    this.line = new StatusLine(io.stderr, this.progress);
    this.sink = new OutputSink(io, this.mode, !o.N, this.line, { gate, raw: !!o.raw });
  }

  output(host: string, stream: "stdout" | "stderr", chunk: Buffer): void {
    if (stream === "stdout" && this.transfer?.onStdout(host, chunk)) return;
    if (this.dirs?.output(host, stream, chunk)) return;
    this.sink.output(host, stream, chunk);
  }

  result(r: HostResult): void {
    this.dirs?.finish(r.host);
    this.finished++;
    if (r.state !== "done" || (r.exitCode ?? 0) !== 0) this.failed++;
    this.sink.finish(r);
  }

  /** The progress line, redrawn every 100 ms on a terminal. */
  startProgress(run: { status(): RunStatus }, hosts: number): void {
    if (!this.progress) return;
    const started = Date.now();
    this.ticker = setInterval(() => {
      const s = run.status();
      const secs = (Date.now() - started) / 1000;
      this.line.set(
        `[${this.finished}/${hosts}] ${s.connecting.length + s.running.length} running, ${this.failed} failed, ${(this.finished / Math.max(secs, 0.001)).toFixed(0)} hosts/s`,
      );
    }, 100);
  }

  clearStatus(): void {
    this.line.clear();
  }

  /** Let the hosts send again whatever a slow reader held back (a stop: nobody will read it). */
  resume(): void {
    this.gate.resume();
  }

  /** Every host has its result: files closed, progress line gone. */
  hostsDone(): void {
    this.dirs?.closeAll();
    if (this.ticker) clearInterval(this.ticker);
    this.line.clear();
  }
}
