/**
 * -R openssh: the system `ssh`, one process per host, for what the built-in client cannot do
 * (ProxyCommand/ProxyJump, GSSAPI, hardware keys, certificates). Spawned as
 * `ssh [-o ProxyCommand=RELAY] -T -o BatchMode=yes [-F file] [-o ConnectTimeout=N] [-l user] -E LOG -o LogLevel=DEBUG1 -- host command`
 * through local-command.ts: no shell, stdin at EOF, its own process group.
 *
 * ssh's own messages go to a per-host log file (-E), never into the host's output, and are read for
 * "Sending command" (the command started) and, on exit 255, why (auth, host key, refused, timeout)
 * and whether the remote actually exited 255 (an exit-status channel request was logged) or died by a
 * signal (OpenSSH's client does not pass the signal's name on and exits 255: reported as exit code
 * 255, as pdsh does).
 *
 * Close order: OpenSSH's client closes first, so on its own it leaves a TIME_WAIT here per host.
 * By default it therefore goes through the relay (relay.ts): this process holds the TCP connection,
 * waits for the server's FIN after ssh's DISCONNECT, and so keeps no TIME_WAIT ("remote"; "reset"
 * when the server does not close within the grace, or on abort). A connect failure is the relay's
 * to name (ssh only sees its proxy close). Without a relay (no netcat-openbsd, or the configuration
 * has its own ProxyCommand/ProxyJump or shared connections), ssh's own socket is looked up through
 * /proc/PID/fd when the log says "Connection established.", and after the exit the kernel table
 * says who closed: FIN_WAIT_* / CLOSING / TIME_WAIT mean we did ("local"); no row or LAST_ACK means
 * the server did ("remote"). An abort then resets ssh's connection with `ss -K` (root only: "reset"),
 * then kills the process group.
 */
import { closeSync, openSync, readSync, unlinkSync, watch, type FSWatcher } from "node:fs";
import { randomBytes } from "node:crypto";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { readTcpSockets, socketInodesOf } from "../../kernel/read.js";
import { ABORTED, notStarted, type ClosedBy, type HostError, type RunRequest, type Transport, type TransportOptions, type TransportResult, type HostErrorCode } from "../transport.js";
import { planFromSshConfig } from "../ssh/config.js";
import { PlanningConfigs } from "../ssh/config-files.js";
import { closedByFromStates } from "../ssh/witness.js";
import { ABORT_HOOK_MS, runLocalCommand } from "../local-command.js";
import { planSshRelay, shuttleFor, withRelay, type RelayOutcome, type RelayRun, type RelayedSocket, type Shuttle } from "../ssh/relay.js";

export interface OpenSshEnvironment {
  /** The ssh binary (default "ssh" from PATH). */
  ssh?: string;
  /** The relay's shuttle (default: netcat-openbsd from PATH); null = no relay, ssh connects itself. */
  shuttle?: Shuttle | null;
  /** Home directory for ~/.ssh/config (default: the user's). */
  home?: string;
}

const HOST_KEY_OPTION = { strict: "yes", "accept-new": "accept-new", off: "no" } as const;

/** The argument vector for one host (pure; exported for tests). No log file: for `ssh -G`. */
export function opensshArgv(options: TransportOptions, req: Pick<RunRequest, "host" | "user" | "localUser" | "command" | "connectTimeoutMs">, logFile: string | null, ssh = "ssh"): string[] {
  const argv = [ssh, "-T", "-o", "BatchMode=yes"];
  if (logFile !== null) argv.push("-o", "LogLevel=DEBUG1", "-E", logFile);
  if (options.sshConfigFile !== undefined) argv.push("-F", options.sshConfigFile);
  if (req.connectTimeoutMs > 0) argv.push("-o", `ConnectTimeout=${Math.max(1, Math.ceil(req.connectTimeoutMs / 1000))}`);
  if (options.hostKeyChecking) argv.push("-o", `StrictHostKeyChecking=${HOST_KEY_OPTION[options.hostKeyChecking]}`);
  if (options.port !== undefined) argv.push("-p", String(options.port));
  // The default user is the local one; only a user given with -u overrides the config's User.
  if (req.user) argv.push("-l", req.user);
  // "--": a host beginning with "-" is a host, never an option.
  argv.push("--", req.host, req.command);
  return argv;
}

/** Why ssh exited 255, from its log: the error code and the line that says it. */
export function classifySshLog(log: string): HostError {
  const lines = log.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const said = lines.filter((l) => !/^(debug\d|Transferred:|Bytes per second:|Authenticated to|Warning: Permanently added)/.test(l));
  const find = (re: RegExp) => said.find((l) => re.test(l));
  const rules: [RegExp, HostErrorCode][] = [
    [/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|host key .* (is not known|has changed)|No .* host key is known/i, "HOST_KEY_UNTRUSTED"],
    [/Permission denied|Too many authentication failures|no more authentication methods/i, "HOST_AUTH"],
    [/Connection refused/i, "HOST_CONNECT_REFUSED"],
    [/timed out|Connection timed out/i, "HOST_CONNECT_TIMEOUT"],
    [/Could not resolve hostname|No route to host|Network is unreachable/i, "HOST_CONNECT_FAILED"],
    [/Connection (closed|reset) by|Broken pipe|kex_exchange_identification|Connection to .* closed/i, "HOST_CONNECTION_LOST"],
    [/Bad configuration option|Can't open user config file|terminating, \d+ bad configuration options/i, "HOST_LOCAL"],
  ];
  for (const [re, code] of rules) {
    const line = find(re);
    if (line) {
      // The host key warning is a banner of many lines; say the one that names the host.
      const message = code === "HOST_KEY_UNTRUSTED" ? (find(/Host key verification failed/) ?? find(/Offending|is not known/) ?? line) : line;
      return { code, message: `ssh: ${message}` };
    }
  }
  return { code: "HOST_TRANSPORT", message: `ssh exited 255${said.length ? `: ${said.at(-1)}` : ""}` };
}

/**
 * What is kept of ssh's log per host: its start (where "Connection established." and "Sending
 * command" are) and its end (why it exited). A hostile server can make it endless (every
 * SSH2_MSG_DEBUG it sends is a "debug1: Remote:" line), and it used to be kept whole.
 */
export const OPENSSH_LOG_KEEP = 1024 * 1024;

export function keepEnds(text: string, max: number): string {
  return `${text.slice(0, max / 2)}\n[...]\n${text.slice(-(max / 2))}`;
}

function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Reset ssh's connection from outside, with `ss -K` (SOCK_DESTROY: the kernel sends the RST), so an
 * aborted host leaves no TIME_WAIT here either. Needs root (CAP_NET_ADMIN) and a kernel with
 * CONFIG_INET_DIAG_DESTROY; true only when ss listed the socket it destroyed.
 */
function destroySocket(s: { localAddress: string; localPort: number; remoteAddress: string; remotePort: number }): Promise<boolean> {
  if (process.getuid?.() !== 0) return Promise.resolve(false);
  return new Promise((resolve) => {
    const ss = spawn("ss", ["-K", "-tn", "src", hostPort(s.localAddress, s.localPort), "dst", hostPort(s.remoteAddress, s.remotePort)], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    let out = "";
    const timer = setTimeout(() => ss.kill("SIGKILL"), ABORT_HOOK_MS);
    ss.stdout.on("data", (b: Buffer) => (out += b.toString()));
    ss.on("error", () => resolve(false));
    ss.on("close", (code) => {
      clearTimeout(timer);
      resolve(code === 0 && out.trim().split("\n").length >= 2);
    });
  });
}

export class OpenSshTransport implements Transport {
  readonly name = "openssh" as const;
  private seq = 0;

  constructor(
    private readonly options: TransportOptions,
    private readonly env: OpenSshEnvironment = {},
  ) {
    this.planning = new PlanningConfigs(env.home ?? homedir());
  }

  /** Said once per run, for the CLI to print (e.g. that the relay's shuttle is missing). */
  readonly notices: string[] = [];
  /** The ssh configuration, read once per run. */
  private readonly planning: PlanningConfigs;

  async run(req: RunRequest): Promise<TransportResult> {
    const ssh = this.env.ssh ?? "ssh";
    const shuttle = shuttleFor(this.env.shuttle, this.notices);
    if (!shuttle) return this.runSsh(req, null);
    // Where ssh would connect, and whether it may go through us at all: in-process when the
    // configuration allows it, else from ssh -G (its log file is not needed there).
    const configs = this.planning.for(this.options.sshConfigFile);
    const plan = configs
      ? planFromSshConfig(configs, req.host, { ...(this.options.port !== undefined ? { port: this.options.port } : {}), connectTimeoutMs: req.connectTimeoutMs })
      : await planSshRelay(opensshArgv(this.options, req, null, ssh), req.signal);
    if (req.signal.aborted) return notStarted("HOST_CANCELLED", "cancelled before ssh started");
    return plan.relay ? withRelay(plan.target, shuttle, req.signal, (relay) => this.runSsh(req, relay)) : this.runSsh(req, null);
  }

  private async runSsh(req: RunRequest, relay: RelayRun | null): Promise<TransportResult> {
    // Created here (O_EXCL, 0600) so that ssh appends to our file, never to one planted in /tmp.
    const logFile = join(tmpdir(), `addrinuse-openssh-${process.pid}-${this.seq++}-${randomBytes(4).toString("hex")}.log`);
    let logFd: number;
    try {
      logFd = openSync(logFile, "wx+", 0o600);
    } catch (e) {
      return notStarted("HOST_TRANSPORT", `cannot create the ssh log file: ${(e as Error).message}`);
    }
    const plain = opensshArgv(this.options, req, logFile, this.env.ssh ?? "ssh");
    const argv = relay ? relay.argv(plain) : plain;
    // Without the relay, ssh's own socket, found in the kernel's tables.
    let own = null as RelayedSocket | null;
    const socketOf = (): RelayedSocket | null => relay?.socket ?? own;

    let log = "";
    let offset = 0;
    // The last bytes ssh wrote on stderr, where its parting "Connection to ... closed" goes.
    let stderrTail = "";
    let child = null as ChildProcess | null;
    let watcher = null as FSWatcher | null;
    let connected = false;
    let resetByUs = false;
    // ss -K makes ssh exit by itself, often before ss does: finish waits for ss's verdict.
    let resetting: Promise<void> | null = null;
    const buf = Buffer.alloc(16384);

    const findSocket = () => {
      // Through the relay the socket is ours, known from its connect on.
      if (relay || own || child?.pid === undefined) return;
      const inodes = socketInodesOf(child.pid);
      if (inodes.size === 0) return;
      const row = readTcpSockets().find((r) => inodes.has(r.inode) && r.state === "ESTABLISHED");
      if (row) own = { localAddress: row.localAddress, localPort: row.localPort, remoteAddress: row.remoteAddress, remotePort: row.remotePort };
    };
    const markConnected = () => {
      if (connected) return;
      connected = true;
      findSocket();
      req.onConnected({ localPort: socketOf()?.localPort ?? null });
    };
    const readLog = () => {
      for (let i = 0; i < 64; i++) {
        const n = readSync(logFd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        log += buf.toString("utf8", 0, n);
        if (log.length > OPENSSH_LOG_KEEP) log = keepEnds(log, OPENSSH_LOG_KEEP);
      }
      if (!socketOf() && log.includes("debug1: Connection established.")) findSocket();
      if (!connected && log.includes("debug1: Sending command:")) markConnected();
    };

    let cleaned = false;
    const cleanup = () => {
      if (cleaned) return;
      cleaned = true;
      watcher?.close();
      closeSync(logFd);
      try {
        unlinkSync(logFile);
      } catch {
        // already gone
      }
    };

    // Every chunk of output says the command started; ssh's own stderr keeps its parting words.
    const errOut = req.separateStderr ? req.onStderr : req.onStdout;
    const watched: RunRequest = {
      ...req,
      separateStderr: true,
      onStdout: (d) => {
        markConnected();
        req.onStdout(d);
      },
      onStderr: (d) => {
        markConnected();
        stderrTail = (stderrTail + d.toString("latin1")).slice(-512);
        errOut(d);
      },
    };
    const onSpawn = (c: ChildProcess) => {
      child = c;
      try {
        watcher = watch(logFile, () => readLog());
        watcher.on("error", () => {});
      } catch {
        // No inotify: the log is read at exit; onConnected then waits for the first output.
      }
    };
    // Through the relay an abort resets our own socket (withRelay); else ss -K resets ssh's.
    const beforeKill = () => {
      findSocket();
      const s = own;
      resetting = s ? destroySocket(s).then((ok) => void (resetByUs = ok)) : Promise.resolve();
      return resetting;
    };
    try {
      const exit = await runLocalCommand(argv, watched, relay ? { onSpawn } : { onSpawn, beforeKill });
      if (!exit.started) return exit.result;
      const { code, signal: sig, aborted } = exit;
      if (resetting) await resetting;
      watcher?.close();
      readLog();
      const ran = connected || log.includes("debug1: Sending command:");
      // ssh has exited: the relay waits for the host's FIN (bounded) before saying who closed;
      // when no session ran (auth, host key), sshd would not close: reset at once.
      const relayed: RelayOutcome | null = relay ? await relay.finish(ran) : null;
      cleanup();
      let closedBy: ClosedBy | null = null;
      if (relayed) closedBy = relayed.closedBy;
      else if (resetByUs) closedBy = "reset";
      else if (own) {
        const s = own;
        const rows = readTcpSockets({ localPort: s.localPort }).filter((r) => r.remotePort === s.remotePort && r.remoteAddress === s.remoteAddress);
        closedBy = closedByFromStates(rows.map((r) => r.state));
      }
      const s = socketOf();
      const base = {
        closedBy,
        localPort: s?.localPort ?? null,
        ...(s ? { remoteAddress: s.remoteAddress, remotePort: s.remotePort } : {}),
        connected: ran,
      };
      if (aborted) {
        return {
          ...base,
          exitCode: null,
          signal: null,
          // The engine names the error of an aborted host.
          error: ABORTED,
          // The system ssh has no way to end the remote command, and sshd keeps a command that
          // does not write running after its connection goes: said, not hidden (-R ssh ends it).
          ...(ran ? { remoteCommand: "left-running" as const } : {}),
        };
      }
      if (code === null) {
        return { ...base, exitCode: null, signal: null, error: { code: "HOST_TRANSPORT", message: `ssh was killed by ${sig}` } };
      }
      // The remote's own status: any code but 255, or 255 when the server reported it.
      if (code !== 255 || /rtype exit-(status|signal)/.test(log)) return { ...base, exitCode: code, signal: null, error: null };
      if (ran) {
        // Started, and no status came: the connection went. Which words ssh uses depends on where
        // its loop noticed: a read of EOF in the client loop goes to stderr ("Connection to HOST
        // closed by remote host."); EOF or RST seen by the packet layer, or a write into the dead
        // socket, is a fatal message that -E sends to the log ("Connection closed by ADDR port N",
        // "Connection reset by ADDR port N", "Read from remote host ...", "client_loop: send
        // disconnect: Broken pipe"). The RST comes when the killed end had unread data: a race.
        const said =
          /Connection to \S+ closed[^\r\n]*/.exec(stderrTail)?.[0] ??
          /(Read from remote host[^\r\n]*|Connection (?:reset|closed) by [^\r\n]*|client_loop: send disconnect: [^\r\n]*)/.exec(log)?.[0];
        return {
          ...base,
          exitCode: null,
          signal: null,
          error: { code: "HOST_CONNECTION_LOST", message: `ssh: ${said ?? "the connection ended before the command's exit status (ssh exit 255)"}` },
        };
      }
      // Through the relay, a failed connect is ours: ssh only saw its proxy close.
      return { ...base, exitCode: null, signal: null, error: relayed?.connectError ?? classifySshLog(log) };
    } finally {
      // When ssh cannot even be spawned its exit is never read: the log file still goes.
      cleanup();
    }
  }
}

export function createOpenSshTransport(options: TransportOptions, env?: OpenSshEnvironment): Transport {
  return new OpenSshTransport(options, env);
}
