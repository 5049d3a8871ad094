/**
 * Output flow control: backpressure from whoever consumes the output (multi-rsh's stdout, a slow
 * `| (sleep 10; wc -c)`) to the sockets and pipes the hosts' bytes arrive on.
 *
 * Without it every byte a host sends is read at once and queued in this process until the reader
 * takes it: a host sending 1 GB into a slow pipe cost 1.16 GB of RSS, and the pipe's write queue
 * failed with ENOBUFS and lost the output. With it, the consumer pauses the gate when its writes
 * stop being accepted (`write()` returned false) and resumes it on `drain`; every stream a
 * transport reads host output from is attached to the gate, so while it is paused nothing is read,
 * the kernel's receive buffers fill, TCP's window closes (RFC 9293 §3.8.6) and the remote command
 * blocks in write(2), as it would behind a slow terminal. Memory stays at about one chunk per host.
 *
 * One gate for the whole run (not one per host): stdout is one pipe, so when it is full every host
 * has to wait; hosts are resumed together and their lines keep arriving whole (remote/output/lines.ts).
 */

/** What a transport hands to the gate: a socket, a child's stdout/stderr pipe, an ssh channel. */
export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

/** The part of the gate a transport sees (RunRequest.flow). */
export interface OutputFlow {
  /** Read from `stream` only while the consumer keeps up; returns the detach function. */
  attach(stream: Pausable): () => void;
  /** Is the consumer behind right now (a timer that would cut a stream short can wait)? */
  readonly paused: boolean;
}

export class OutputGate implements OutputFlow {
  private readonly streams = new Set<Pausable>();
  private pausedNow = false;
  /** How often the consumer made the sources wait (for tests and --json). */
  pauses = 0;

  get paused(): boolean {
    return this.pausedNow;
  }

  attach(stream: Pausable): () => void {
    this.streams.add(stream);
    if (this.pausedNow) stream.pause();
    return () => {
      this.streams.delete(stream);
    };
  }

  pause(): void {
    if (this.pausedNow) return;
    this.pausedNow = true;
    this.pauses++;
    for (const s of this.streams) s.pause();
  }

  resume(): void {
    if (!this.pausedNow) return;
    this.pausedNow = false;
    for (const s of this.streams) s.resume();
  }
}
