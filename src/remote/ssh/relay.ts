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
 * theirs, closedBy stays honest). Read in-process (ssh-config.ts, as -R ssh does; an exec
 * template's own options with parseSshCommandLine) unless the configuration has Match blocks or
 * canonicalisation, or the template an option that is not understood here: those ask `ssh -G` with
 * the same arguments, exact but one more ssh process per host (measured: ~4 ms of CPU in it, ~2 ms
 * more here to spawn it). Tests check the in-process plan against the real ssh -G. The planning is
 * pure (planFromSshConfig, planFromSshG, parseSshCommandLine); the I/O is below it.
 */
import net from "node:net";
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, delimiter, join } from "node:path";
import { endAfterPeer } from "../../net/close.js";
import type SSHConfig from "ssh-config";
import { END_GRACE_MS, type ClosedBy, type HostError } from "../transport.js";
/** The longest `ssh -G` may take; it only reads configuration files. */
const SSH_G_TIMEOUT_MS = 10_000;

export const NO_SHUTTLE_NOTICE =
  "no netcat-openbsd (nc.openbsd) found: the system ssh closes first and leaves a TIME_WAIT per host here; install netcat-openbsd for remote-first close";

/** netcat-openbsd under nohup: what ssh's ProxyCommand runs to reach the relay's Unix socket. */
export type Shuttle = { nohup: string; nc: string };

/** Where ssh would connect, from `ssh -G`. */
export interface SshTarget {
  hostName: string;
  port: number;
  /** AddressFamily: 0 = any. */
  family: 0 | 4 | 6;
  /** BindAddress, or null. */
  localAddress: string | null;
  /** ConnectTimeout in ms; 0 = none. */
  connectTimeoutMs: number;
}

export type RelayPlan = { relay: true; target: SshTarget } | { relay: false; why: string };

/**
 * Whether to relay, and where to, from the text `ssh -G` prints (one "keyword value" per line,
 * keywords in lower case). Pure.
 */
export function planFromSshG(text: string): RelayPlan {
  const cfg = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(" ");
    if (i <= 0) continue;
    const key = line.slice(0, i).toLowerCase();
    // The first value is the one in force (IdentityFile and the like repeat).
    if (!cfg.has(key)) cfg.set(key, line.slice(i + 1).trim());
  }
  return planFromSettings(cfg);
}

/**
 * Whether the configuration holds something only ssh itself resolves exactly (Match blocks, host
 * name canonicalisation): then ask `ssh -G`. Otherwise planFromSshConfig's answer is ssh's. Pure.
 */
export function needsSshG(texts: readonly string[]): boolean {
  return texts.some((t) => /^\s*(match|canonicalizehostname|canonicaldomains)\b/im.test(t));
}

/**
 * The same plan as planFromSshG, in-process, from the parsed configuration files (ssh-config.ts's
 * reading, first value wins across files) and the command line's own settings, which ssh puts
 * first: -p, and -o ConnectTimeout. Only for configurations that need no ssh -G (needsSshG). Pure.
 */
export function planFromSshConfig(configs: readonly SSHConfig[], host: string, cmdline: { port?: number; connectTimeoutMs: number }): RelayPlan {
  const cfg = new Map<string, string>();
  for (const c of configs) {
    const computed = c.compute({ Host: host }, { ignoreCase: true, matchExec: false }) as Record<string, string | string[]>;
    for (const [k, v] of Object.entries(computed)) {
      const value = Array.isArray(v) ? v[0] : v;
      if (value !== undefined && !cfg.has(k.toLowerCase())) cfg.set(k.toLowerCase(), value);
    }
  }
  // ssh_config(5): HostName takes %% and %h (the alias); absent, the alias itself.
  cfg.set("hostname", (cfg.get("hostname") ?? host).replace(/%([%h])/g, (_m, c: string) => (c === "%" ? "%" : host)));
  if (cmdline.port !== undefined) cfg.set("port", String(cmdline.port));
  else if (!cfg.has("port")) cfg.set("port", "22");
  if (cmdline.connectTimeoutMs > 0) cfg.set("connecttimeout", String(Math.max(1, Math.ceil(cmdline.connectTimeoutMs / 1000))));
  return planFromSettings(cfg);
}

function planFromSettings(cfg: ReadonlyMap<string, string>): RelayPlan {
  const set = (k: string) => {
    const v = cfg.get(k);
    return v !== undefined && v !== "" && v.toLowerCase() !== "none";
  };
  if (set("proxycommand")) return { relay: false, why: "the ssh configuration has its own ProxyCommand" };
  if (set("proxyjump")) return { relay: false, why: "the ssh configuration has a ProxyJump" };
  // A shared (multiplexed) connection is the master's: it may exist already, or outlive this command.
  const master = (cfg.get("controlmaster") ?? "false").toLowerCase();
  if (master !== "false" && master !== "no" && set("controlpath")) return { relay: false, why: "the ssh configuration shares connections (ControlMaster)" };
  if (set("bindinterface")) return { relay: false, why: "the ssh configuration sets BindInterface" };
  const hostName = cfg.get("hostname");
  const port = Number(cfg.get("port"));
  if (!hostName || !Number.isInteger(port) || port < 1 || port > 65535) return { relay: false, why: "ssh -G named no host name and port" };
  const af = (cfg.get("addressfamily") ?? "any").toLowerCase();
  const timeout = cfg.get("connecttimeout");
  const seconds = timeout === undefined || timeout === "none" ? 0 : Number(timeout);
  return {
    relay: true,
    target: {
      hostName,
      port,
      family: af === "inet" ? 4 : af === "inet6" ? 6 : 0,
      localAddress: set("bindaddress") ? cfg.get("bindaddress")! : null,
      connectTimeoutMs: Number.isFinite(seconds) && seconds > 0 ? Math.round(seconds * 1000) : 0,
    },
  };
}

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

/** ssh's options that take an argument (ssh.c's getopt string), to walk a template like ssh does. */
const SSH_OPTS_WITH_ARG = new Set("BbcDEeFIiJLlmOoPpQRSWw".split(""));

/**
 * Why an exec template gets no relay, or null when it does (pure): only an `ssh` program (by its
 * base name: a foreign command's TCP is its own), and not when the template itself proxies (-J,
 * -W, or -o ProxyCommand/ProxyJump; the configuration's own are seen by ssh -G later), or asks
 * ssh for something other than a command (-G, -V, -Q, -O, -N, -f).
 */
export function execTemplateOptOut(argv: readonly string[]): string | null {
  if (argv.length === 0 || basename(argv[0]!) !== "ssh") return "the template's program is not ssh";
  // ssh parses options before and after the host (it restarts getopt after the host), up to the command.
  let host = false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      if (host) break;
      host = true;
      i++;
      continue;
    }
    if (!a.startsWith("-") || a === "-") {
      if (host) break;
      host = true;
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (SSH_OPTS_WITH_ARG.has(c)) {
        const value = j + 1 < a.length ? a.slice(j + 1) : argv[++i] ?? "";
        if (c === "J") return "the template has -J";
        if (c === "W") return "the template has -W";
        if (c === "Q" || c === "O") return `the template has -${c}`;
        if (c === "o" && /^\s*(proxycommand|proxyjump)\b/i.test(value)) return "the template sets ProxyCommand or ProxyJump";
        break;
      }
      if ("GVNf".includes(c)) return `the template has -${c}`;
    }
  }
  return null;
}

/** What an ssh command line says about where it connects, for planning without ssh -G. */
export interface SshCommandLine {
  host: string;
  /** -F */
  configFile?: string;
  /** -p */
  port?: number;
  /** -o options, -4/-6 and -b as config lines: ssh reads them before any file (first value wins). */
  configLines: string[];
}

/** Flags without an argument that do not touch the connection's target. */
const TARGET_NEUTRAL_FLAGS = new Set("1246AaCgKkqsTtvXxYy".split(""));
/** Options with an argument that do not touch the connection's target either. */
const TARGET_NEUTRAL_OPTIONS = new Set("cDEeIiLlmRw".split(""));

/**
 * An ssh argument vector read the way ssh reads it, when every option in it is one this knows
 * (pure); null otherwise (then ssh -G decides). The remote command after the host is not read.
 */
export function parseSshCommandLine(argv: readonly string[]): SshCommandLine | null {
  const out: SshCommandLine = { host: "", configLines: [] };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--" || !a.startsWith("-") || a === "-") {
      if (out.host) break;
      const h = a === "--" ? argv[++i] : a;
      if (h === undefined) return null;
      out.host = h;
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (TARGET_NEUTRAL_FLAGS.has(c)) {
        if (c === "4") out.configLines.push("AddressFamily inet");
        if (c === "6") out.configLines.push("AddressFamily inet6");
        continue;
      }
      if (!SSH_OPTS_WITH_ARG.has(c)) return null;
      const value = j + 1 < a.length ? a.slice(j + 1) : argv[++i];
      if (value === undefined) return null;
      if (c === "F") out.configFile = value;
      else if (c === "p") {
        const port = Number(value);
        if (!Number.isInteger(port) || port < 1 || port > 65535) return null;
        out.port = port;
      } else if (c === "b") out.configLines.push(`BindAddress ${value}`);
      else if (c === "o") {
        const m = /^\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)$/.exec(value);
        if (!m) return null;
        out.configLines.push(`${m[1]} ${m[2]}`);
      } else if (!TARGET_NEUTRAL_OPTIONS.has(c)) return null;
      break;
    }
  }
  return out.host ? out : null;
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
  if (e.code === "ECONNREFUSED") return { code: "ERR_CONNECT_REFUSED", message: `${where}: Connection refused` };
  if (e.code === "ETIMEDOUT") return { code: "ERR_CONNECT_TIMEOUT", message: `${where}: Connection timed out` };
  return { code: "ERR_CONNECT", message: `${where}: ${e.code ?? e.message}` };
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
        this.connectError = { code: "ERR_CONNECT_TIMEOUT", message: `connect to host ${t.hostName} port ${t.port}: Connection timed out` };
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
 * the relay's connection is reset at once, before the kill of ssh (this listener comes first): our
 * own socket, so RST, no TIME_WAIT here or there, no root needed.
 */
export async function withRelay<T>(target: SshTarget, shuttle: Shuttle, signal: AbortSignal, body: (relay: RelayRun | null) => Promise<T>): Promise<T> {
  let socket: RelayedSocket | null = null;
  const relay = await SshRelay.open(target, (s) => (socket = s));
  if (!relay) return body(null);
  const reset = () => relay.reset();
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
