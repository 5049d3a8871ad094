/**
 * One host's ssh session with the built-in client (-R ssh), from TCP connect to the socket's close.
 *
 * Theory of operation. ssh2 speaks the protocol; this module owns the TCP connection. ssh2 is handed
 * a view of the socket (SocketView) whose end() does nothing, so no code path in the library can send
 * our FIN. A host's run goes through its phases in order, each entered once:
 *
 *   connecting  our socket, our connect timeout (which also covers the handshake and authentication,
 *               like OpenSSH's ConnectTimeout plus BatchMode)
 *   handshake   banner, key exchange, host key checked against known_hosts, agent keys then identity
 *               files (identities.ts), never a prompt
 *   running     exec with the remote stdin at EOF at once (CHANNEL_EOF, RFC 4254 §5.3; the TCP
 *               connection stays open), output as it comes, the exit-status or exit-signal (RFC 4254
 *               §6.10), CHANNEL_CLOSE
 *   ending      our SSH_MSG_DISCONNECT (RFC 4253 §11.1), socket kept open, waiting for the server
 *   closed      the socket is gone; the one result is out
 *
 * The close is the point of the exercise. OpenSSH's client exits after CHANNEL_CLOSE and its kernel
 * sends the first FIN, so the operator's machine keeps a TIME_WAIT per host for 60 s (RFC 9293
 * §3.6.1: the side that closes first waits 2*MSL). Here sshd exits on our DISCONNECT and *its* kernel
 * sends the first FIN; ours follows (LAST_ACK, then gone): the TIME_WAIT is the server's. If that FIN
 * does not come within `graceMs`, the connection is reset (RST: no TIME_WAIT on either side).
 * Timeouts and aborts reset at once. net/close.ts `endAfterPeer` does all of it and says which
 * happened (closedBy), from what the socket saw.
 */
import net from "node:net";
import ssh2 from "ssh2";
import type { CipherAlgorithm, ClientChannel, KexAlgorithm, MacAlgorithm, ServerHostKeyAlgorithm } from "ssh2";
import { endAfterPeer } from "../../net/close.js";
import { ABORTED, KILL_WAIT_MS, writableStdin, type ClosedBy, type HostError, type RunRequest, type TransportResult, type HostErrorCode } from "../transport.js";
import { hostKeyOrder, type Algorithms } from "./algorithms.js";
import type { HostKeyPolicy, SshHostConfig } from "./config.js";
import { HostAuth, type Identities } from "./identities.js";
import { decideHostKey, hostKeyAlgorithmsFor, knownHostsName, knownKeyTypes, type KnownHostEntry } from "./known-hosts.js";
import type { KnownHostsStore } from "./known-hosts-store.js";
import { execKillSession, sendSignal } from "./remote-kill.js";
import { SocketView } from "./socket-view.js";
import { capInFlight, inFlightCap, sendWindow, serverSoftware } from "./send-window.js";
import { tcpRoundTripMs } from "../../kernel/read.js";

const { Client } = ssh2;
type SshClient = InstanceType<typeof Client>;
type ClientError = Error & { level?: string; code?: string };

export type Phase = "connecting" | "handshake" | "running" | "ending" | "closed";

/** What a host's run takes from its transport: the run's shared caches and settings. */
export interface HostRunContext {
  /** How long the server has to close after our DISCONNECT before the reset. */
  graceMs: number;
  /** The bound on session setup when no connect timeout is set. */
  handshakeLimitMs: number;
  hostKeyPolicy: HostKeyPolicy;
  knownHosts: KnownHostsStore;
  identities: Identities;
  /** SSH_AUTH_SOCK; "" = no agent. */
  agentSocket: string;
}

/** One host's connection, from connect to the socket's close; its run() resolves exactly once. */
export class HostRun {
  private phase: Phase = "connecting";
  private sock: net.Socket | null = null;
  private view: SocketView | null = null;
  private client: SshClient | null = null;
  /** The command's channel: set once the command started (the run reached "running"). */
  private channel: ClientChannel | null = null;
  private localPort: number | null = null;
  /** The connection's round trip as the kernel measured it, which sizes how much input we keep in flight. */
  private rttMs: Promise<number | null> | null = null;
  private remoteAddress: string | null = null;
  private exitCode: number | null = null;
  private exitSignal: string | null = null;
  private error: HostError | null = null;
  /** Who ended the connection, from endAfterPeer; started when our side is done (or at the close). */
  private closing: Promise<ClosedBy> | null = null;
  /** Aborting it resets the connection now, unless the server's FIN is already in. */
  private readonly resetSignal = new AbortController();
  private hostKeyProblem: string | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private remoteCommand: "ended" | "signalled" | null = null;
  private auth: HostAuth | null = null;
  private readonly target: string;
  /** The server's first bytes (up to 256): did its banner come before it closed? */
  private firstBytes: Buffer = Buffer.alloc(0);
  private done: (r: TransportResult) => void = () => {};

  constructor(
    private readonly ctx: HostRunContext,
    private readonly req: RunRequest,
    private readonly cfg: SshHostConfig,
    private readonly algorithms: Algorithms,
  ) {
    this.target = `${cfg.user}@${cfg.hostName}${cfg.port === 22 ? "" : `:${cfg.port}`}`;
  }

  run(): Promise<TransportResult> {
    return new Promise((resolve) => {
      this.done = resolve;
      this.start();
    });
  }

  private readonly onAbort = (): void => {
    // The engine names the error of an aborted host; this one only marks that it was aborted.
    if (!this.error) this.error = ABORTED;
    if (!this.endRemoteCommand()) this.resetNow();
  };

  /**
   * On timeout or cancel with the command running: a reset alone leaves it running on the host (a
   * command that does not write never notices), so first ask sshd to end it (remote-kill.ts), wait a
   * bounded KILL_WAIT_MS for the channel to close with its exit-signal, then reset. False: no
   * running command, reset at once.
   */
  private endRemoteCommand(): boolean {
    const channel = this.channel;
    if (!channel || this.phase !== "running") return false;
    const signalled = sendSignal(channel, "KILL");
    const killed = this.client ? execKillSession(this.client) : false;
    if (!signalled && !killed) return false;
    this.remoteCommand = "signalled";
    this.killTimer = setTimeout(() => this.resetNow(), KILL_WAIT_MS);
    return true;
  }

  /** The channel closed after our signal: say whether the host confirmed the end, then reset. */
  private remoteCommandEnded(): void {
    if (this.killTimer) clearTimeout(this.killTimer);
    this.killTimer = null;
    if (this.exitSignal !== null || this.exitCode !== null) this.remoteCommand = "ended";
    this.resetNow();
  }

  private start(): void {
    this.req.signal.addEventListener("abort", this.onAbort, { once: true });
    const timeoutMs = this.req.connectTimeoutMs > 0 ? this.req.connectTimeoutMs : this.cfg.connectTimeoutMs > 0 ? this.cfg.connectTimeoutMs : this.ctx.handshakeLimitMs;
    if (timeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        const stuck = this.phase === "connecting" ? "TCP connect" : "handshake/authentication";
        this.fail("HOST_CONNECT_TIMEOUT", `${this.target}: no ssh session within ${timeoutMs / 1000} s (stuck in ${stuck})`);
        this.resetNow();
      }, timeoutMs);
    }
    const sock = net.connect({ host: this.cfg.hostName, port: this.cfg.port });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on("connect", () => this.onTcpConnect());
    sock.on("error", (e: NodeJS.ErrnoException) => this.onSocketError(e));
    sock.on("end", () => {
      // Ending: the server's FIN after our DISCONNECT, as it should be (or after an error, said already).
      if (this.phase === "ending") return;
      if (this.droppedBeforeBanner()) {
        this.fail("HOST_DROPPED_BY_SERVER", `${this.target}: the server closed the connection before its banner (sshd drops handshakes beyond MaxStartups)`);
      }
      this.fail(
        "HOST_CONNECTION_LOST",
        this.channel
          ? `${this.target}: the server closed the connection before the command finished`
          : `${this.target}: the server closed the connection during the ssh handshake`,
      );
      // allowHalfOpen is off: Node answers with our FIN now, after theirs.
    });
    sock.on("close", () => void this.settle());
  }

  private onTcpConnect(): void {
    const sock = this.sock!;
    this.phase = "handshake";
    this.localPort = sock.localPort ?? null;
    this.remoteAddress = sock.remoteAddress ?? null;
    const keep = (d: Buffer) => {
      this.firstBytes = Buffer.concat([this.firstBytes, d]).subarray(0, 256);
      // Up to the end of the identification line, which says the server's software (send-window.ts).
      const id = this.firstBytes.indexOf("SSH-");
      if (this.firstBytes.length >= 256 || (id >= 0 && this.firstBytes.includes("\n", id))) sock.off("data", keep);
    };
    sock.on("data", keep);
    const view = new SocketView(sock);
    this.view = view;
    const client = new Client();
    this.client = client;
    client.on("error", (e: ClientError) => this.onClientError(e));
    client.on("ready", () => this.onReady());
    const name = knownHostsName(this.cfg.hostKeyAlias ?? this.cfg.hostName, this.cfg.port);
    const entries = this.ctx.knownHosts.entries([...this.cfg.userKnownHostsFiles, ...this.cfg.globalKnownHostsFiles], name);
    const auth = new HostAuth(this.cfg.user, this.cfg.identityFiles.map((p) => this.ctx.identities.get(p)), this.cfg.identitiesOnly, this.ctx.agentSocket);
    this.auth = auth;
    try {
      client.connect({
        sock: view,
        username: this.cfg.user,
        readyTimeout: 0,
        keepaliveInterval: 0,
        algorithms: {
          serverHostKey: hostKeyOrder(knownKeyTypes(entries, name).flatMap(hostKeyAlgorithmsFor)) as ServerHostKeyAlgorithm[],
          cipher: this.algorithms.cipher as CipherAlgorithm[],
          kex: this.algorithms.kex as KexAlgorithm[],
          hmac: this.algorithms.hmac as MacAlgorithm[],
        },
        hostVerifier: (key: Buffer) => this.verifyHostKey(name, entries, key),
        authHandler: auth.handler,
      });
    } catch (e) {
      // ssh2 checks its options as it starts (an algorithm it cannot run, say): this host fails, not the run.
      this.fail("HOST_TRANSPORT", `${this.target}: ssh: ${(e as Error).message}`);
      this.resetNow();
    }
  }

  private verifyHostKey(name: string, entries: KnownHostEntry[], key: Buffer): boolean {
    const d = decideHostKey(this.ctx.hostKeyPolicy, entries, name, key, this.target);
    if (!d.accept) {
      this.hostKeyProblem = d.problem;
      return false;
    }
    const file = this.cfg.userKnownHostsFiles[0];
    if (d.file && file !== undefined) {
      try {
        this.ctx.knownHosts.add(file, name, key, this.cfg.hashKnownHosts);
      } catch (e) {
        this.hostKeyProblem = `${this.target}: cannot add the host key to ${file}: ${(e as Error).message}`;
        return false;
      }
    }
    return true;
  }

  private onReady(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    if (this.phase !== "handshake") return;
    if (this.req.input && this.localPort !== null && this.sock?.remotePort !== undefined) this.rttMs = tcpRoundTripMs(this.localPort, this.sock.remotePort);
    try {
      this.client!.exec(this.req.command, (err, stream) => {
        if (this.phase === "closed") return;
        if (err) {
          this.fail("HOST_REFUSED", `${this.target}: the server would not run the command: ${err.message}`);
          this.endPolitely();
          return;
        }
        this.onChannel(stream);
      });
    } catch (e) {
      this.fail("HOST_CONNECTION_LOST", `${this.target}: ${(e as Error).message}`);
      this.resetNow();
    }
  }

  private onChannel(stream: ClientChannel): void {
    if (this.phase !== "handshake") return;
    this.phase = "running";
    this.channel = stream;
    this.req.onConnected({ localPort: this.localPort });
    const errOut = this.req.separateStderr ? this.req.onStderr : this.req.onStdout;
    stream.on("data", (d: Buffer) => this.req.onStdout(d));
    stream.stderr.on("data", (d: Buffer) => errOut(d));
    // Paused, the channel's window is not reopened: the server stops sending (RFC 4254 §5.2).
    const detach = [this.req.flow?.attach(stream), this.req.flow?.attach(stream.stderr)];
    stream.once("close", () => detach.forEach((d) => d?.()));
    stream.on("exit", (code: number | null, signal?: string) => {
      if (typeof code === "number") this.exitCode = code;
      else this.exitSignal = signal ?? null;
    });
    stream.on("error", () => {});
    stream.on("close", () => {
      if (this.remoteCommand !== null) return this.remoteCommandEnded();
      if (this.exitCode === null && this.exitSignal === null) {
        this.fail("HOST_PROTOCOL", `${this.target}: the command's channel closed without an exit status`);
      }
      this.endPolitely();
    });
    // The remote stdin gets EOF now, or after the input (CHANNEL_EOF); the TCP connection stays open.
    const input = this.req.input;
    if (input) {
      // Asked for when authentication ended, so the answer is in by now (a fraction of a millisecond).
      void (this.rttMs ?? Promise.resolve(null)).then((rttMs) => {
        const cap = inFlightCap({ window: sendWindow(stream), rttMs, server: serverSoftware(this.firstBytes) });
        if (cap !== null && this.sock) capInFlight(stream, this.sock, cap);
        input.start(writableStdin(stream, () => stream.end()));
      });
    } else stream.end();
  }

  private onClientError(e: ClientError): void {
    switch (e.level) {
      case "agent":
        if (this.auth) this.auth.agentProblem = e.message;
        return;
      case "client-authentication":
        this.fail("HOST_AUTH", this.auth ? this.auth.failureMessage(this.target) : `${this.target}: permission denied`);
        break;
      default:
        if (this.hostKeyProblem) this.fail("HOST_KEY_UNTRUSTED", this.hostKeyProblem);
        else this.fail("HOST_PROTOCOL", `${this.target}: ssh: ${e.message}`);
    }
    this.endPolitely();
  }

  private onSocketError(e: NodeJS.ErrnoException): void {
    if (this.phase === "connecting") {
      if (e.code === "ECONNREFUSED") this.fail("HOST_CONNECT_REFUSED", `${this.target}: connection refused`);
      else this.fail("HOST_CONNECT_FAILED", `${this.target}: cannot connect: ${e.code ?? e.message}`);
      return;
    }
    if (this.phase === "ending") return;
    if (this.droppedBeforeBanner()) {
      this.fail("HOST_DROPPED_BY_SERVER", `${this.target}: the server reset the connection before its banner (${e.code ?? e.message})`);
    }
    this.fail("HOST_CONNECTION_LOST", `${this.target}: connection lost: ${e.code ?? e.message}`);
  }

  /** DISCONNECT, then wait a bounded grace for the server's FIN; reset if it does not come. */
  private endPolitely(): void {
    if (this.phase === "ending" || this.phase === "closed") return;
    this.phase = "ending";
    if (this.connectTimer) clearTimeout(this.connectTimer);
    try {
      // Sends SSH_MSG_DISCONNECT through the view; the view swallows ssh2's end() of the socket.
      this.client?.end();
    } catch {
      // already unwritable: nothing to say to the server
    }
    this.endAfterServer(this.ctx.graceMs);
  }

  /** From now on endAfterPeer decides the close: the server's FIN within graceMs, else RST. */
  private endAfterServer(graceMs: number): Promise<ClosedBy> {
    this.closing ??= endAfterPeer(this.sock!, { graceMs, signal: this.resetSignal.signal });
    return this.closing;
  }

  private resetNow(): void {
    const sock = this.sock;
    if (!sock || sock.destroyed) return;
    // Still connecting (SYN_SENT): closing it sends nothing, and there is no connection to end.
    if (this.phase === "connecting") return void sock.destroy();
    // RST (no TIME_WAIT on either side), unless the server's FIN is in: then ours answers it.
    this.resetSignal.abort();
    void this.endAfterServer(0);
  }

  /**
   * Connected, and the server ended it before its `SSH-` banner having said nothing at all (sshd's
   * drop past MaxStartups: close or reset right after accept) or only that it is over MaxStartups
   * (some builds write "Exceeded MaxStartups"). Anything else said first (an HTTP server) is not a drop.
   */
  private droppedBeforeBanner(): boolean {
    if (this.phase !== "handshake" || this.firstBytes.includes("SSH-")) return false;
    return this.firstBytes.length === 0 || this.firstBytes.includes("MaxStartups");
  }

  private fail(code: HostErrorCode, message: string): void {
    if (!this.error) this.error = { code, message };
  }

  private async settle(): Promise<void> {
    if (this.phase === "closed") return;
    const from = this.phase;
    this.phase = "closed";
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.killTimer) clearTimeout(this.killTimer);
    this.req.signal.removeEventListener("abort", this.onAbort);
    this.view?.destroy();
    // Closed before our side was done: the command did not finish (an error already said why, mostly).
    if (from !== "ending") this.fail("HOST_CONNECTION_LOST", `${this.target}: connection closed`);
    // The socket is closed: endAfterPeer tells who ended it (from its own watch, or from the state).
    const closedBy = from === "connecting" ? null : await this.endAfterServer(0);
    this.done({
      exitCode: this.exitCode,
      signal: this.exitSignal,
      closedBy,
      localPort: this.localPort,
      ...(this.remoteAddress !== null ? { remoteAddress: this.remoteAddress, remotePort: this.cfg.port } : {}),
      connected: this.channel !== null,
      error: this.error,
      ...(this.remoteCommand !== null ? { remoteCommand: this.remoteCommand } : {}),
    });
  }
}
