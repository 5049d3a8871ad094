import type net from "node:net";
import { Duplex } from "node:stream";

/**
 * ssh2 reads and writes through this; the real socket stays ours. end() (ssh2 calls it after sending
 * DISCONNECT, and on errors) is swallowed: the server must close first.
 *
 * Writes made in one tick go out in one writev: ssh2 hands over each encrypted packet in three
 * pieces (length, ciphertext, MAC tag), and with Nagle off each piece was its own write(2) and its
 * own TCP segment (~31 a host for `hostname`), costing both ends a syscall and a wake-up per piece.
 */
export class SocketView extends Duplex {
  private corked = false;
  private readonly flush = (): void => {
    this.corked = false;
    this.sock.uncork();
  };

  constructor(private readonly sock: net.Socket) {
    super({ allowHalfOpen: true });
    sock.on("data", (d: Buffer) => {
      if (!this.push(d)) sock.pause();
    });
    sock.on("end", () => this.push(null));
  }
  override _read(): void {
    this.sock.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.sock.writable) {
      if (!this.corked) {
        this.corked = true;
        this.sock.cork();
        process.nextTick(this.flush);
      }
      this.sock.write(chunk);
    }
    cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    cb();
  }
}
