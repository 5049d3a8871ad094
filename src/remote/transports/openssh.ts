/**
 * -R openssh: the system `ssh`, one process per host, for what the built-in client cannot do
 * (ProxyCommand/ProxyJump, GSSAPI, hardware keys, certificates). Spawned as
 * `ssh -T -o BatchMode=yes [-F file] [-o ConnectTimeout=N] [-l user] -E LOG -o LogLevel=DEBUG1 -- host command`
 * through runLocalCommand (exec.ts): no shell, stdin at EOF, its own process group.
 *
 * ssh's own messages go to a per-host log file (-E), never into the host's output, and are read for
 * three things: "Connection established." (then the ssh process's socket is looked up in the kernel
 * table through /proc/PID/fd, to learn its local port), "Sending command" (the command started), and,
 * on exit 255, why (auth, host key, refused, timeout) and whether the remote actually exited 255
 * (an exit-status channel request was logged) or died by a signal (OpenSSH's client does not pass
 * the signal's name on and exits 255: reported as exit code 255, as pdsh does).
 *
 * Close order, honestly: OpenSSH's client exits, and so closes, first. After the exit the kernel
 * table is read for that local port: FIN_WAIT_* / CLOSING / TIME_WAIT mean we closed first
 * ("local", a TIME_WAIT here for 60 s); no row or LAST_ACK means the server did ("remote"). An
 * abort first resets ssh's connection with `ss -K` (root only: "reset", no TIME_WAIT), then kills
 * the process group; without root the kernel closes the socket with a FIN when ssh dies, and the
 * table says so ("local").
 */
import { closeSync, openSync, readSync, readdirSync, readlinkSync, unlinkSync, watch, type FSWatcher } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import type { ErrorCode } from "../../errors.js";
import { readTcpSockets } from "../../kernel/read.js";
import type { TcpState } from "../../kernel/parse.js";
import type { ClosedBy, RunRequest, Transport, TransportOptions, TransportResult } from "../transport.js";
import { ABORT_HOOK_MS, runLocalCommand } from "./exec.js";

export interface OpenSshEnvironment {
  /** The ssh binary (default "ssh" from PATH). */
  ssh?: string;
}

const HOST_KEY_OPTION = { strict: "yes", "accept-new": "accept-new", off: "no" } as const;

/** The argument vector for one host (pure; exported for tests). */
export function opensshArgv(options: TransportOptions, req: Pick<RunRequest, "host" | "user" | "localUser" | "command" | "connectTimeoutMs">, logFile: string, ssh = "ssh"): string[] {
  const argv = [ssh, "-T", "-o", "BatchMode=yes", "-o", "LogLevel=DEBUG1", "-E", logFile];
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
export function classifySshLog(log: string): { code: ErrorCode; message: string } {
  const lines = log.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const said = lines.filter((l) => !/^(debug\d|Transferred:|Bytes per second:|Authenticated to|Warning: Permanently added)/.test(l));
  const find = (re: RegExp) => said.find((l) => re.test(l));
  const rules: [RegExp, ErrorCode][] = [
    [/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|host key .* (is not known|has changed)|No .* host key is known/i, "ERR_HOST_KEY"],
    [/Permission denied|Too many authentication failures|no more authentication methods/i, "ERR_AUTH"],
    [/Connection refused/i, "ERR_CONNECT_REFUSED"],
    [/timed out|Connection timed out/i, "ERR_CONNECT_TIMEOUT"],
    [/Could not resolve hostname|No route to host|Network is unreachable/i, "ERR_CONNECT"],
    [/Connection (closed|reset) by|Broken pipe|kex_exchange_identification|Connection to .* closed/i, "ERR_CONNECTION_LOST"],
    [/Bad configuration option|Can't open user config file|terminating, \d+ bad configuration options/i, "ERR_USAGE"],
  ];
  for (const [re, code] of rules) {
    const line = find(re);
    if (line) {
      // The host key warning is a banner of many lines; say the one that names the host.
      const message = code === "ERR_HOST_KEY" ? (find(/Host key verification failed/) ?? find(/Offending|is not known/) ?? line) : line;
      return { code, message: `ssh: ${message}` };
    }
  }
  return { code: "ERR_TRANSPORT", message: `ssh exited 255${said.length ? `: ${said.at(-1)}` : ""}` };
}

/** Which side closed first, from the states of our socket's row after ssh exited. */
export function closedByFromStates(states: readonly TcpState[]): ClosedBy {
  const weFirst: TcpState[] = ["FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "TIME_WAIT"];
  return states.some((s) => weFirst.includes(s)) ? "local" : "remote";
}

function socketInodes(pid: number): Set<number> {
  const inodes = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(Number(m[1]));
    } catch {
      // fd closed meanwhile
    }
  }
  return inodes;
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
  ) {}

  run(req: RunRequest): Promise<TransportResult> {
    // Created here (O_EXCL, 0600) so that ssh appends to our file, never to one planted in /tmp.
    const logFile = join(tmpdir(), `addrinuse-openssh-${process.pid}-${this.seq++}-${randomBytes(4).toString("hex")}.log`);
    let logFd: number;
    try {
      logFd = openSync(logFile, "wx+", 0o600);
    } catch (e) {
      return Promise.resolve({
        exitCode: null,
        signal: null,
        closedBy: null,
        localPort: null,
        connected: false,
        error: { code: "ERR_TRANSPORT", message: `cannot create the ssh log file: ${(e as Error).message}` },
      });
    }
    const argv = opensshArgv(this.options, req, logFile, this.env.ssh ?? "ssh");

    let log = "";
    let offset = 0;
    // The last bytes ssh wrote on stderr, where its parting "Connection to ... closed" goes.
    let stderrTail = "";
    let child: ChildProcess | null = null;
    let watcher: FSWatcher | null = null;
    let connected = false;
    let socket: { localAddress: string; localPort: number; remoteAddress: string; remotePort: number } | null = null;
    let resetByUs = false;
    // ss -K makes ssh exit by itself, often before ss does: finish waits for ss's verdict.
    let resetting: Promise<void> | null = null;
    const buf = Buffer.alloc(16384);

    const findSocket = () => {
      if (socket || child?.pid === undefined) return;
      const inodes = socketInodes(child.pid);
      if (inodes.size === 0) return;
      const row = readTcpSockets().find((r) => inodes.has(r.inode) && r.state === "ESTABLISHED");
      if (row) socket = { localAddress: row.localAddress, localPort: row.localPort, remoteAddress: row.remoteAddress, remotePort: row.remotePort };
    };
    const markConnected = () => {
      if (connected) return;
      connected = true;
      findSocket();
      req.onConnected({ localPort: socket?.localPort ?? null });
    };
    const readLog = () => {
      for (let i = 0; i < 64; i++) {
        const n = readSync(logFd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        log += buf.toString("utf8", 0, n);
      }
      if (!socket && log.includes("debug1: Connection established.")) findSocket();
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

    const run = runLocalCommand(argv, req, {
      onSpawn: (c) => {
        child = c;
        try {
          watcher = watch(logFile, () => readLog());
          watcher.on("error", () => {});
        } catch {
          // No inotify: the log is read at exit; onConnected then waits for the first output.
        }
      },
      onOutput: markConnected,
      onAbort: () => {
        findSocket();
        const s = socket;
        resetting = s ? destroySocket(s).then((ok) => void (resetByUs = ok)) : Promise.resolve();
        return resetting;
      },
      onStderr: (b) => {
        stderrTail = (stderrTail + b.toString("latin1")).slice(-512);
      },
      finish: async (code, sig, aborted) => {
        if (resetting) await resetting;
        watcher?.close();
        readLog();
        cleanup();
        const ran = connected || log.includes("debug1: Sending command:");
        let closedBy: ClosedBy | null = null;
        if (resetByUs) closedBy = "reset";
        else if (socket) {
          const s = socket;
          const rows = readTcpSockets({ localPort: s.localPort }).filter((r) => r.remotePort === s.remotePort && r.remoteAddress === s.remoteAddress);
          closedBy = closedByFromStates(rows.map((r) => r.state));
        }
        const base = {
          closedBy,
          localPort: socket?.localPort ?? null,
          ...(socket ? { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort } : {}),
          connected: ran,
        };
        if (aborted) {
          const timeout = req.signal.reason === "timeout";
          return {
            ...base,
            exitCode: null,
            signal: null,
            error: {
              code: timeout ? (ran ? "ERR_COMMAND_TIMEOUT" : "ERR_CONNECT_TIMEOUT") : "ERR_CANCELLED",
              message: timeout ? "timed out: ssh killed" : "cancelled: ssh killed",
            },
          };
        }
        if (code === null) {
          return { ...base, exitCode: null, signal: null, error: { code: "ERR_TRANSPORT", message: `ssh was killed by ${sig}` } };
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
            error: { code: "ERR_CONNECTION_LOST", message: `ssh: ${said ?? "the connection ended before the command's exit status (ssh exit 255)"}` },
          };
        }
        return { ...base, exitCode: null, signal: null, error: classifySshLog(log) };
      },
    });
    // When ssh cannot even be spawned, finish never runs: the log file still goes.
    return run.then((r) => {
      cleanup();
      return r;
    });
  }
}

export function createOpenSshTransport(options: TransportOptions, env?: OpenSshEnvironment): Transport {
  return new OpenSshTransport(options, env);
}
