/**
 * The relay that makes the system `ssh` (-R openssh, and -R exec with an ssh template) leave no
 * TIME_WAIT here: this process holds the TCP connection to the host, and ssh reaches it through a
 * Unix socket (which has no TIME_WAIT state at all).
 *
 * Why: OpenSSH's client sends SSH2_MSG_DISCONNECT and close()s at once, so its FIN usually goes
 * first and the 4-tuple sits in TIME_WAIT here for 60 s (RFC 9293 §3.6). A plain byte relay
 * (`ProxyCommand nc %h %p`) does no better: it quits as soon as ssh does, FIN first. Here the TCP side
 * is ours, and when ssh's side ends we send no FIN: we wait for the server's (sshd closes on the
 * DISCONNECT), then close, so the TIME_WAIT is the host's. A server that never closes is reset after
 * END_GRACE_MS (RST: no TIME_WAIT anywhere), as is every connection on abort: the socket is ours, so
 * no `ss -K` and no root are needed. net/close.ts `endAfterPeer` decides all of it.
 *
 * How ssh reaches us: `-o ProxyCommand=nohup nc.openbsd -U SOCKET`, one private 0700 directory and
 * socket per host. netcat-openbsd under nohup delivers ssh's last bytes (the DISCONNECT) every time
 * (30 of 30 here): ssh SIGHUPs its ProxyCommand on exit, and nohup's SIG_IGN survives nc's exec.
 * socat installs its own SIGHUP handler over nohup's and exits on that signal, dropping the
 * DISCONNECT (13 of 20 runs lost it), so it is not used. `nc -F` (hand ssh the socket itself, with
 * ProxyUseFdpass) would spare the copy, but netcat-openbsd refuses -F with -U.
 *
 * Where to connect: what ssh itself would (HostName and Port after every Host block, Include and
 * -o, AddressFamily, BindAddress, ConnectTimeout), and whether the user's configuration has its own
 * ProxyCommand, ProxyJump or connection sharing: then there is no relay (the TCP connection is
 * theirs, closedBy stays honest). Read in-process by config.ts's one resolver (as -R ssh does; an
 * exec template's own options with argv.ts) unless the configuration has Match blocks or
 * canonicalisation, or the template an option that is not understood here: those ask `ssh -G` with
 * the same arguments (planSshRelay), exact but one more ssh process per host (measured: ~4 ms of
 * CPU in it, ~2 ms more here to spawn it), whose answer the same resolver reads. Tests check the
 * in-process plan against the real ssh -G.
 */
import net from "node:net";
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { endAfterPeer } from "../../net/close.js";
import { END_GRACE_MS, type ClosedBy, type HostError } from "../transport.js";
import { planFromSshG, type RelayPlan, type SshTarget } from "./config.js";

/** The longest `ssh -G` may take; it only reads configuration files. */
const SSH_G_TIMEOUT_MS = 10_000;

export const NO_SHUTTLE_NOTICE =
  "no netcat-openbsd (nc.openbsd) found: the system ssh closes first and leaves a TIME_WAIT per host here; install netcat-openbsd for remote-first close";

/** netcat-openbsd under nohup: what ssh's ProxyCommand runs to reach the relay's Unix socket. */
export type Shuttle = { nohup: string; nc: string };

/** For the shell that ssh runs the ProxyCommand with: one word, whatever the path holds. */
function shellWord(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The `-o` options that send ssh through the shuttle to `socketPath` (pure). ssh runs the command as
 * `$SHELL -c "exec COMMAND"` after expanding its % tokens, so % is doubled and words are quoted.
 * ProxyUseFdpass=no: the shuttle relays bytes, it does not hand over a socket.
 */
export function proxyOptions(shuttle: Shuttle, socketPath: string): string[] {
  const cmd = [shuttle.nohup, shuttle.nc, "-U", socketPath].map(shellWord).join(" ").replace(/%/g, "%%");
  return ["-o", `ProxyCommand=${cmd}`, "-o", "ProxyUseFdpass=no"];
}

function onPath(name: string, path = process.env.PATH ?? ""): string | null {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

let shuttleFound: Shuttle | null | undefined;

/**
 * netcat-openbsd and nohup from PATH, looked up once per process: `nc.openbsd` (Debian's name), else
 * an `nc` that says it is OpenBSD netcat (other distributions install it as nc). null when missing.
 */
export function findShuttle(): Shuttle | null {
  if (shuttleFound !== undefined) return shuttleFound;
  const nohup = onPath("nohup");
  let nc = onPath("nc.openbsd");
  if (!nc) {
    const plain = onPath("nc");
    if (plain) {
      const r = spawnSync(plain, ["-h"], { encoding: "latin1", timeout: 2000 });
      if (/OpenBSD netcat/i.test(`${r.stdout ?? ""}${r.stderr ?? ""}`)) nc = plain;
    }
  }
  shuttleFound = nohup && nc ? { nohup, nc } : null;
  return shuttleFound;
}

/**
 * The shuttle a transport relays through: `given` (tests; null = none), else the one on PATH. When
 * none is found there, NO_SHUTTLE_NOTICE goes into `notices` (once).
 */
export function shuttleFor(given: Shuttle | null | undefined, notices: string[]): Shuttle | null {
  if (given !== undefined) return given;
  const found = findShuttle();
  if (!found && !notices.includes(NO_SHUTTLE_NOTICE)) notices.push(NO_SHUTTLE_NOTICE);
  return found;
}

/**
 * Runs `ssh -G` with the same arguments as the real run (argv[0] the ssh binary) and plans from its
 * output. Never rejects: a failure plans no relay, and the real ssh then says what is wrong itself.
 */
export function planSshRelay(argv: readonly string[], signal: AbortSignal): Promise<RelayPlan> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve({ relay: false, why: "aborted" });
    const child = spawn(argv[0]!, ["-G", ...argv.slice(1)], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    const stop = () => child.kill("SIGKILL");
    const timer = setTimeout(stop, SSH_G_TIMEOUT_MS);
    signal.addEventListener("abort", stop, { once: true });
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (s: string) => (out += s));
    let settled = false;
    const done = (p: RelayPlan) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
      resolve(p);
    };
    child.on("error", (e) => done({ relay: false, why: `ssh -G: ${e.message}` }));
    child.on("close", (code) => done(code === 0 ? planFromSshG(out) : { relay: false, why: `ssh -G exited ${code ?? "on a signal"}` }));
  });
}

/** The relay's TCP connection, once up. */
export interface RelayedSocket {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

export interface RelayOutcome {
  /** The TCP connection to the target could not be made (ssh then only sees its proxy close). */
  connectError: HostError | null;
  /** Who ended the TCP connection; null when there was none. */
  closedBy: ClosedBy | null;
  localPort: number | null;
  remoteAddress?: string;
  remotePort?: number;
}

function connectErrorOf(e: NodeJS.ErrnoException, t: SshTarget): HostError {
  const where = `connect to host ${t.hostName} port ${t.port}`;
  if (e.code === "ECONNREFUSED") return { code: "HOST_CONNECT_REFUSED", message: `${where}: Connection refused` };
  if (e.code === "ETIMEDOUT") return { code: "HOST_CONNECT_TIMEOUT", message: `${where}: Connection timed out` };
  return { code: "HOST_CONNECT_FAILED", message: `${where}: ${e.code ?? e.message}` };
}

/**
 * One host's relay: a Unix socket for the shuttle, and the TCP connection to the target made when the
 * shuttle connects. `finish()` (after ssh has exited) resolves once the TCP side is closed.
 */
export class SshRelay {
  readonly socketPath: string;
  private readonly dir: string;
  private readonly server: net.Server;
  private unix: net.Socket | null = null;
  private tcp: net.Socket | null = null;
  private tcpUp = false;
  private connectError: RelayOutcome["connectError"] = null;
  /** Who ended the TCP connection, from endAfterPeer; started when ssh's side is done (or at the close). */
  private closing: Promise<ClosedBy> | null = null;
  /** Aborting it resets the TCP connection now, unless the host's FIN is already in. */
  private readonly resetNow = new AbortController();
  private connectTimer: NodeJS.Timeout | undefined;
  private outcome: RelayOutcome = { connectError: null, closedBy: null, localPort: null };
  private settledTcp!: () => void;
  private readonly tcpSettled = new Promise<void>((r) => (this.settledTcp = r));
  private done = false;
  private finishing: Promise<RelayOutcome> | null = null;

  private constructor(
    private readonly target: SshTarget,
    private readonly onTcpConnected: (s: RelayedSocket) => void,
  ) {
    // 0700: nobody else may connect to the socket and be relayed to the host.
    this.dir = mkdtempSync(join(tmpdir(), "addrinuse-relay-"));
    this.socketPath = join(this.dir, "s");
    this.server = net.createServer({ allowHalfOpen: true }, (s) => this.accept(s));
    this.server.on("error", () => {});
  }

  /** Listening, or null when the socket cannot be made (then run without a relay). */
  static async open(target: SshTarget, onTcpConnected: (s: RelayedSocket) => void): Promise<SshRelay | null> {
    let relay: SshRelay;
    try {
      relay = new SshRelay(target, onTcpConnected);
    } catch {
      return null;
    }
    const ok = await new Promise<boolean>((resolve) => {
      relay.server.once("error", () => resolve(false));
      relay.server.listen(relay.socketPath, () => resolve(true));
    });
    if (!ok) {
      relay.removeDir();
      return null;
    }
    return relay;
  }

  private removeDir(): void {
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      // a temp dir left behind is harmless
    }
  }

  private accept(unix: net.Socket): void {
    // One shuttle per relay: whatever else connects is not ssh's.
    if (this.unix || this.done) return void unix.destroy();
    this.unix = unix;
    this.server.close();
    unix.on("error", () => {});
    const t = this.target;
    const tcp = net.connect({
      host: t.hostName,
      port: t.port,
      allowHalfOpen: true,
      ...(t.family ? { family: t.family } : {}),
      ...(t.localAddress ? { localAddress: t.localAddress } : {}),
    });
    this.tcp = tcp;
    tcp.setNoDelay(true);
    if (t.connectTimeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        this.connectError = { code: "HOST_CONNECT_TIMEOUT", message: `connect to host ${t.hostName} port ${t.port}: Connection timed out` };
        tcp.destroy();
      }, t.connectTimeoutMs);
    }
    tcp.once("error", (e: NodeJS.ErrnoException) => {
      if (!this.tcpUp && !this.connectError) this.connectError = connectErrorOf(e, t);
    });
    tcp.once("close", () => {
      clearTimeout(this.connectTimer);
      // Never connected: ssh sees its proxy close and exits; the error is ours to tell.
      if (!this.tcpUp) {
        unix.destroy();
        return this.settledTcp();
      }
      void this.endTcp(0).then((closedBy) => {
        this.outcome.closedBy = closedBy;
        unix.destroy();
        this.settledTcp();
      });
    });
    tcp.once("connect", () => {
      clearTimeout(this.connectTimer);
      this.tcpUp = true;
      this.outcome.localPort = tcp.localPort ?? null;
      if (tcp.remoteAddress) this.outcome.remoteAddress = tcp.remoteAddress;
      if (tcp.remotePort) this.outcome.remotePort = tcp.remotePort;
      this.pipe(unix, tcp);
      this.onTcpConnected({
        localAddress: tcp.localAddress ?? "",
        localPort: tcp.localPort ?? 0,
        remoteAddress: tcp.remoteAddress ?? "",
        remotePort: tcp.remotePort ?? t.port,
      });
    });
  }

  private pipe(unix: net.Socket, tcp: net.Socket): void {
    let unixOpen = true;
    // Hand-made rather than stream.pipe: after ssh's side is gone, the host's bytes (if any) are
    // still read, or the host's FIN behind them would never be seen.
    tcp.on("data", (d: Buffer) => {
      if (unixOpen && !unix.write(d)) tcp.pause();
    });
    unix.on("drain", () => tcp.resume());
    unix.on("data", (d: Buffer) => {
      if (!tcp.destroyed && !tcp.writableEnded && !tcp.write(d)) unix.pause();
    });
    tcp.on("drain", () => unix.resume());
    // ssh's side is done (its DISCONNECT was the last thing through): end the Unix socket too, send
    // no FIN, and give the host a bounded time to send its own.
    unix.once("end", () => {
      unix.end();
      this.startGrace();
    });
    unix.once("close", () => {
      unixOpen = false;
      tcp.resume();
      this.startGrace();
    });
    // The host closed (normally after the DISCONNECT, or its session died): endAfterPeer answers
    // with our FIN, second (the socket is half-open), so the TIME_WAIT is the host's; ssh sees the
    // end of its proxy.
    tcp.once("end", () => {
      if (unixOpen) unix.end();
      void this.endTcp(END_GRACE_MS);
    });
    tcp.on("error", () => {
      unix.destroy();
    });
  }

  /** ssh's side is done: the host has END_GRACE_MS to send its FIN, then it is reset. */
  private startGrace(): void {
    void this.endTcp(END_GRACE_MS);
  }

  /** From now on endAfterPeer decides how the TCP connection ends (once; later calls share it). */
  private endTcp(graceMs: number): Promise<ClosedBy> {
    this.closing ??= endAfterPeer(this.tcp!, { graceMs, signal: this.resetNow.signal });
    return this.closing;
  }

  /** RST now (no TIME_WAIT on either side), unless the host's FIN is in: then ours answers it. */
  private resetAll(): void {
    this.resetNow.abort();
    void this.endTcp(0);
  }

  /** Stop now (abort, timeout): the TCP connection is reset (no TIME_WAIT on either side). */
  reset(): void {
    this.done = true;
    this.server.close();
    if (this.tcpUp) this.resetAll();
    else this.tcp?.destroy();
    this.unix?.destroy();
  }

  /**
   * After ssh has exited: waits for the TCP side to be closed (the host's FIN, or the grace, or a
   * reset) and says how it went. Resolves at once when ssh never reached the relay.
   *
   * `waitForRemote` false: ssh gave up before a session ran (authentication, host key): sshd then
   * waits for more (LoginGraceTime) rather than closing, so the connection is reset at once instead
   * of after the grace (measured: 2.1 s per such host otherwise). Nothing is lost: ssh is gone.
   */
  finish(waitForRemote = true): Promise<RelayOutcome> {
    this.finishing ??= this.settle(waitForRemote);
    return this.finishing;
  }

  private async settle(waitForRemote: boolean): Promise<RelayOutcome> {
    this.done = true;
    this.server.close();
    if (!this.unix) this.settledTcp();
    else if (this.tcpUp) {
      if (waitForRemote) this.startGrace();
      else this.resetAll();
    } else this.tcp?.destroy();
    await this.tcpSettled;
    this.removeDir();
    return { ...this.outcome, connectError: this.tcpUp ? null : this.connectError };
  }
}

/** One ssh run's relay, as withRelay hands it over. */
export interface RelayRun {
  /** The ssh argument vector through the relay: its ProxyCommand right after argv[0]. */
  argv(ssh: readonly string[]): string[];
  /** The relay's TCP connection, once up. */
  readonly socket: RelayedSocket | null;
  /** After ssh has exited (SshRelay.finish). */
  finish(waitForRemote: boolean): Promise<RelayOutcome>;
}

/**
 * Runs `body` with a relay to `target` open (null when none can be made: ssh then connects itself),
 * and closes the relay after, whatever happened (the program may not even have started). On abort
 * the relay's connection is reset (our own socket, so RST, no TIME_WAIT here or there, no root
 * needed) just after the kill of ssh, which runs in the same abort dispatch: reset first, ssh could
 * still see its proxy go and print "client_loop: send disconnect: Broken pipe" into the host's
 * output before the SIGKILL landed (seen once in CI, a timed-out host of -R exec).
 */
export async function withRelay<T>(target: SshTarget, shuttle: Shuttle, signal: AbortSignal, body: (relay: RelayRun | null) => Promise<T>): Promise<T> {
  let socket: RelayedSocket | null = null;
  const relay = await SshRelay.open(target, (s) => (socket = s));
  if (!relay) return body(null);
  const reset = () => process.nextTick(() => relay.reset());
  signal.addEventListener("abort", reset, { once: true });
  try {
    return await body({
      argv: (ssh) => [ssh[0]!, ...proxyOptions(shuttle, relay.socketPath), ...ssh.slice(1)],
      get socket() {
        return socket;
      },
      finish: (waitForRemote) => relay.finish(waitForRemote),
    });
  } finally {
    signal.removeEventListener("abort", reset);
    relay.reset();
    await relay.finish();
  }
}
