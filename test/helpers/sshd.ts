/**
 * A real OpenSSH sshd for tests, on a loopback address and a free port, with its own host key,
 * authorized_keys and client files in a temp dir, and a client ssh_config (-F) that points at them,
 * so nothing in ~/.ssh or /etc/ssh is read or written. Needs root (sshd's privilege separation) and
 * the openssh-server package.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import type { ClientInfo, Connection, ServerChannel } from "ssh2";
import type { RunRequest, Transport, TransportResult } from "../../src/remote/transport.js";
import { abortError } from "../../src/remote/engine.js";

export const SSHD = "/usr/sbin/sshd";

/** Why sshd tests cannot run here, or null when they can. */
export function sshdSkipReason(): string | null {
  if (process.platform !== "linux") return "sshd tests run on Linux only";
  if (process.getuid?.() !== 0) return "sshd tests need root (sshd privilege separation)";
  if (!existsSync(SSHD)) return "no /usr/sbin/sshd (apt-get install openssh-server)";
  if (!existsSync("/usr/bin/ssh-keygen")) return "no ssh-keygen (apt-get install openssh-client)";
  return null;
}

export interface KeyPair {
  privatePath: string;
  /** The .pub line: "ssh-ed25519 AAAA... comment". */
  publicLine: string;
}

export function makeKey(dir: string, name: string, type: "ed25519" | "ecdsa" | "rsa" = "ed25519", passphrase = ""): KeyPair {
  const privatePath = join(dir, name);
  const args = ["-q", "-t", type, "-N", passphrase, "-C", name, "-f", privatePath];
  if (type === "rsa") args.push("-b", "2048");
  execFileSync("ssh-keygen", args, { stdio: "ignore" });
  return { privatePath, publicLine: readFileSync(`${privatePath}.pub`, "utf8").trim() };
}

export interface Sshd {
  address: string;
  port: number;
  dir: string;
  /** The host key sshd serves. */
  hostKey: KeyPair;
  /** A client key listed in authorized_keys. */
  clientKey: KeyPair;
  /** known_hosts with the right host key for [address]:port. */
  knownHostsPath: string;
  /** An ssh_config for -F: IdentityFile clientKey, UserKnownHostsFile knownHostsPath, BatchMode. */
  clientConfigPath: string;
  pid: number;
  /** The sshd log so far (sshd -e). */
  log(): string;
  stop(): Promise<void>;
}

export interface SshdOptions {
  address?: string;
  /** Extra sshd_config lines. */
  sshdConfig?: string[];
  /** Share keys across servers (saves ssh-keygen runs). */
  dir?: string;
  hostKey?: KeyPair;
  clientKey?: KeyPair;
  /** A port to use instead of a free one found by binding port 0 (benches: many sshd, one port). */
  port?: number;
  /**
   * Run sshd in a mount namespace of its own with an empty directory over the login user's home, so
   * sessions do not run this machine's ~/.bashrc (root's may start pyenv and the like: ~100 ms of
   * CPU per session, which would swamp a benchmark, and a chatty one would change every output).
   * Needs unshare(1) (util-linux). Default true.
   */
  cleanHome?: boolean;
}

async function freePort(address: string): Promise<number> {
  const srv = net.createServer();
  srv.listen({ port: 0, host: address });
  await once(srv, "listening");
  const a = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (a === null || typeof a === "string") throw new Error("no port");
  return a.port;
}

/** OpenSSH's version as major + minor/100 (9.8 -> 9.08), from `ssh -V` (which prints on stderr). */
function opensshVersion(): number {
  const r = spawnSync("ssh", ["-V"], { encoding: "utf8" });
  const m = /OpenSSH_(\d+)\.(\d+)/.exec(`${r.stdout}${r.stderr}`);
  return m ? Number(m[1]) + Number(m[2]) / 100 : 0;
}

export async function startSshd(options: SshdOptions = {}): Promise<Sshd> {
  const address = options.address ?? "127.0.0.1";
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "aissh-sshd-"));
  const ownsDir = options.dir === undefined;
  const hostKey = options.hostKey ?? makeKey(dir, "host_ed25519");
  const clientKey = options.clientKey ?? makeKey(dir, "client_ed25519");
  // Debian's sshd refuses to start without its privilege separation directory.
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });

  const version = opensshVersion();
  let lastError = "";
  // The port is found by binding port 0 and closing it; another process may take it in between,
  // so a failed bind is retried with a new port (bounded).
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = options.port ?? (await freePort(address));
    const tag = `${address}-${port}`;
    const authorized = join(dir, `authorized_keys-${tag}`);
    writeFileSync(authorized, `${clientKey.publicLine}\n`);
    const configPath = join(dir, `sshd_config-${tag}`);
    const lines = [
      `ListenAddress ${address}`,
      `Port ${port}`,
      `HostKey ${hostKey.privatePath}`,
      "PidFile none",
      `AuthorizedKeysFile ${authorized}`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "LogLevel VERBOSE",
      "MaxStartups 1000",
      "MaxAuthTries 20",
      "UseDNS no",
      // OpenSSH 9.8 penalises sources that fail auth or drop connections; the fault tests do both.
      ...(version >= 9.08 ? ["PerSourcePenalties no"] : []),
      ...(options.sshdConfig ?? []),
    ];
    writeFileSync(configPath, `${lines.join("\n")}\n`);
    const { knownHostsPath, clientConfigPath } = writeClientFiles(dir, address, port, clientKey.privatePath, hostKey.publicLine);

    const home = join(dir, "empty-home");
    mkdirSync(home, { recursive: true, mode: 0o700 });
    // unshare makes the new mount namespace private, so the bind mount never shows outside it.
    const child = (options.cleanHome ?? true)
      ? spawn("unshare", ["--mount", "sh", "-c", `mount --bind "$1" /root && exec "$2" -D -e -f "$3"`, "sh", home, SSHD, configPath], {
          stdio: ["ignore", "ignore", "pipe"],
        })
      : spawn(SSHD, ["-D", "-e", "-f", configPath], { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    child.stderr!.setEncoding("utf8");
    const ready = new Promise<boolean>((resolve) => {
      const onData = (d: string) => {
        log += d;
        if (log.includes("Server listening on")) resolve(true);
        else if (/Cannot bind|Address already in use/.test(log)) resolve(false);
      };
      child.stderr!.on("data", onData);
      child.once("exit", () => resolve(false));
      child.once("error", () => resolve(false));
    });
    // Bounded: sshd prints its listening line within milliseconds; give up after 10 s.
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    const ok = await ready;
    clearTimeout(timer);
    if (!ok) {
      lastError = log.trim().split("\n").slice(-3).join(" | ");
      await stopChild(child);
      if (options.port !== undefined) break;
      continue;
    }
    return {
      address,
      port,
      pid: child.pid!,
      dir,
      hostKey,
      clientKey,
      knownHostsPath,
      clientConfigPath,
      log: () => log,
      stop: async () => {
        await stopChild(child);
        if (ownsDir) rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  if (ownsDir) rmSync(dir, { recursive: true, force: true });
  throw new Error(`sshd did not start: ${lastError}`);
}

/**
 * known_hosts holding `hostKeyLine` for [address]:port, and an ssh_config for -F that uses it and
 * `identity`, so that no test reads or writes ~/.ssh or /etc/ssh.
 */
export function writeClientFiles(
  dir: string,
  address: string,
  port: number,
  identity: string,
  hostKeyLine: string,
  extra: string[] = [],
): { knownHostsPath: string; clientConfigPath: string } {
  const tag = `${address}-${port}`;
  const knownHostsPath = join(dir, `known_hosts-${tag}`);
  const [ktype, kblob] = hostKeyLine.split(" ");
  writeFileSync(knownHostsPath, `[${address}]:${port} ${ktype} ${kblob}\n`);
  const clientConfigPath = join(dir, `ssh_config-${tag}`);
  writeFileSync(
    clientConfigPath,
    [
      ...extra,
      "Host *",
      `  Port ${port}`,
      `  IdentityFile ${identity}`,
      "  IdentitiesOnly yes",
      `  UserKnownHostsFile ${knownHostsPath}`,
      "  GlobalKnownHostsFile /dev/null",
      "  BatchMode yes",
      "",
    ].join("\n"),
  );
  return { knownHostsPath, clientConfigPath };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/**
 * An ed25519 key pair from ssh2's generator. About 1 in 100 of its private keys is rejected by its own
 * parser ("Malformed OpenSSH private key"), so draw again (bounded) until one parses.
 */
export function generateEd25519(): { private: string; public: string } {
  for (let i = 0; i < 50; i++) {
    const k = ssh2.utils.generateKeyPairSync("ed25519");
    if (!(ssh2.utils.parseKey(k.private) instanceof Error)) return k;
  }
  throw new Error("ssh2 generated no parseable ed25519 key in 50 tries");
}

export interface FaultServer {
  address: string;
  port: number;
  /** "ssh-ed25519 AAAA..." of the server's host key. */
  hostKeyLine: string;
  close(): Promise<void>;
}

export interface FaultServerOptions {
  /** Runs for each exec request, with the raw TCP socket for faults. Default: exit 0. */
  onExec?: (ctx: { channel: ServerChannel; socket: net.Socket; command: string }) => void;
  /** Accept only passwords (a host where the built-in client, which never prompts, must give up). */
  passwordOnly?: boolean;
  /** Refuse every exec request (channel request failure). */
  rejectExec?: boolean;
  /** Ignore the client's DISCONNECT and never close the TCP connection (a server that hangs on). */
  neverClose?: boolean;
  /** The software it names in its identification line (ssh2's own by default). */
  ident?: string;
}

/**
 * ssh2's own server for faults sshd cannot be made to show: it accepts any public key, and hands the
 * test the raw socket of each connection (injected through injectSocket, so no private fields).
 */
export async function startFaultSshServer(options: FaultServerOptions = {}): Promise<FaultServer> {
  const keys = generateEd25519();
  const sockets = new Set<net.Socket>();
  const server = new ssh2.Server({ hostKeys: [keys.private], ...(options.ident ? { ident: options.ident } : {}) }, () => {});
  const raw = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    if (options.neverClose) {
      // ssh2 ends the socket on DISCONNECT; this server keeps it open, like a wedged sshd.
      socket.end = () => socket;
    }
    server.injectSocket(socket);
  });
  server.on("connection", (client: Connection, info: ClientInfo) => {
    const socket = [...sockets].find((s) => s.remotePort === info.port)!;
    client.on("error", () => {});
    client.on("authentication", (ctx) => (options.passwordOnly && ctx.method !== "password" ? ctx.reject(["password"]) : ctx.accept()));
    client.on("ready", () => {
      client.on("session", (accept) => {
        const session = accept();
        session.on("exec", (acceptExec, rejectExec, info) => {
          if (options.rejectExec) return rejectExec();
          const channel = acceptExec();
          if (options.onExec) options.onExec({ channel, socket, command: info.command });
          else {
            channel.exit(0);
            channel.end();
          }
        });
      });
    });
  });
  raw.listen({ port: 0, host: "127.0.0.1" });
  await once(raw, "listening");
  const a = raw.address() as net.AddressInfo;
  return {
    address: "127.0.0.1",
    port: a.port,
    hostKeyLine: keys.public.trim(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => raw.close(() => r()));
    },
  };
}

/**
 * A raw TCP server for the faults below the ssh layer: `banner` is written on accept (null = say
 * nothing), then the connection is held open (or closed when closeAfterBanner).
 */
export async function startRawServer(
  banner: string | null,
  closeAfterBanner = false,
  onConnection?: (s: net.Socket) => void,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    onConnection?.(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    s.resume();
    if (banner !== null) s.write(banner);
    if (closeAfterBanner) s.end();
  });
  srv.listen({ port: 0, host: "127.0.0.1" });
  await once(srv, "listening");
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

export interface Ran {
  result: TransportResult;
  out: string;
  err: string;
  /** How many times onConnected was called (the contract: at most once). */
  connected: number;
}

/** One run through a transport as root@host, collecting output. */
export async function runOn(
  t: Transport,
  host: string,
  command: string,
  extra: Partial<RunRequest> & { onConnectedHook?: () => void } = {},
): Promise<Ran> {
  let out = "";
  let err = "";
  let connected = 0;
  const signal = extra.signal ?? new AbortController().signal;
  const ran = await t.run({
    host,
    user: "root",
    localUser: "root",
    command,
    connectTimeoutMs: 10_000,
    separateStderr: false,
    ...extra,
    signal,
    onConnected: () => {
      connected++;
      extra.onConnectedHook?.();
    },
    onStdout: (b) => {
      out += b.toString("utf8");
      extra.onStdout?.(b);
    },
    onStderr: (b) => {
      err += b.toString("utf8");
      extra.onStderr?.(b);
    },
  });
  // An aborted host is recorded as the engine records it, for every transport: no exit status, and
  // the error the engine names.
  const reason = signal.reason === "timeout" ? "timeout" : "cancel";
  const result = signal.aborted ? { ...ran, exitCode: null, error: abortError(reason, null, 0, connected > 0 || ran.connected, ran) } : ran;
  return { result, out, err, connected };
}
