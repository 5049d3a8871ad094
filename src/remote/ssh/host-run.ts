/**
 * -R ssh: the built-in ssh client, on the ssh2 library. Every host is one TCP connection on this
 * process's event loop; nothing is forked per host (pdsh, pssh and clush run one `ssh` each).
 *
 * Theory of operation. ssh2 speaks the protocol; this module owns the TCP connection. ssh2 is handed
 * a view of the socket (SocketView) whose end() does nothing, so no code path in the library can send
 * our FIN. A host's run: connect (our socket, our connect timeout, which also covers the handshake
 * and authentication, like OpenSSH's ConnectTimeout plus BatchMode) -> host key checked against
 * known_hosts -> agent keys, then identity files, never a prompt -> exec with the remote stdin at EOF
 * at once (CHANNEL_EOF, RFC 4254 §5.3; the TCP connection stays open) -> output as it comes -> the
 * exit-status or exit-signal (RFC 4254 §6.10) -> CHANNEL_CLOSE.
 *
 * Then the close, the point of the exercise. OpenSSH's client exits at this moment and its kernel
 * sends the first FIN, so the operator's machine keeps a TIME_WAIT per host for 60 s (RFC 9293
 * §3.6.1: the side that closes first waits 2*MSL). Here the client sends SSH_MSG_DISCONNECT (RFC 4253
 * §11.1) and keeps its socket open; sshd exits on it and *its* kernel sends the first FIN; ours
 * follows (LAST_ACK, then gone): the TIME_WAIT is the server's. If that FIN does not come within
 * `graceMs`, the connection is reset (RST: no TIME_WAIT on either side). Timeouts and aborts reset at
 * once. Each result's closedBy says which of these happened, from what the socket saw.
 *
 * Settings come from ~/.ssh/config (or -F) through ssh-config.ts and known_hosts through
 * known-hosts.ts; both files are read once per run, not once per host.
 */
import { createPrivateKey, getCiphers, sign as cryptoSign, type KeyObject } from "node:crypto";
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import { dirname } from "node:path";
import net from "node:net";
import { Duplex } from "node:stream";
import ssh2 from "ssh2";
import type {
  AnyAuthMethod,
  AuthenticationType,
  CipherAlgorithm,
  ClientChannel,
  IdentityCallback,
  KexAlgorithm,
  MacAlgorithm,
  NextAuthHandler,
  ParsedKey,
  ServerHostKeyAlgorithm,
} from "ssh2";
import type SSHConfig from "ssh-config";
import { AddrinuseError, UsageError, type ErrorCode } from "../../errors.js";
import {
  checkHostKey,
  fingerprint,
  formatKnownHostsLine,
  hostKeyAlgorithmsFor,
  knownHostsName,
  knownKeyTypes,
  KnownHostsIndex,
  parseKnownHosts,
  type KnownHostEntry,
} from "./known-hosts.js";
import { applyAlgorithmSpec, badSshConfigValue, parseSshConfigs, readSshConfigTexts, resolveSshConfig, fsConfigReader, type HostKeyPolicy, type SshHostConfig } from "./config.js";
import { endAfterPeer } from "../../net/close.js";
import { END_GRACE_MS, notStarted, writableStdin, type ClosedBy, type HostError, type RunRequest, type Transport, type TransportOptions, type TransportResult } from "../transport.js";

const { Client, OpenSSHAgent, utils } = ssh2;
type SshClient = InstanceType<typeof Client>;

/**
 * Session setup (TCP connect, banner, key exchange, authentication) is bounded even when no timeout
 * is set anywhere (-t 0, no --connect-timeout, no ConnectTimeout): -t 0 lets a command run as long
 * as it likes, but a server that drips an endless banner (ssh2 caps it at 1024 lines of 8 KiB, not
 * the time between them) or never finishes its key exchange would otherwise hold the host forever.
 * sshd's own LoginGraceTime is 120 s; 60 s is far beyond any real handshake.
 */
export const HANDSHAKE_LIMIT_MS = 60_000;

/** What the transport reads from its surroundings; tests replace it. */
export interface SshEnvironment {
  home?: string;
  localUser?: string;
  /** SSH_AUTH_SOCK; default from process.env. Empty string = no agent. */
  agentSocket?: string;
  /** System config read after the user's when no -F is given (default /etc/ssh/ssh_config). */
  systemConfigFile?: string | null;
  graceMs?: number;
  /** The bound on session setup when no connect timeout is set (default HANDSHAKE_LIMIT_MS). */
  handshakeLimitMs?: number;
}

/** Host key algorithms ssh2 supports, in its default preference (protocol/constants.js). */
const HOST_KEY_ALGORITHMS = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

/** OpenSSL's name for each cipher: ssh2 refuses a cipher this Node's OpenSSL lacks (chacha20 in some builds). */
const CIPHER_OPENSSL: Record<string, string> = {
  "aes128-gcm@openssh.com": "aes-128-gcm",
  "aes256-gcm@openssh.com": "aes-256-gcm",
  "aes128-ctr": "aes-128-ctr",
  "aes192-ctr": "aes-192-ctr",
  "aes256-ctr": "aes-256-ctr",
  "chacha20-poly1305@openssh.com": "chacha20",
  "aes256-cbc": "aes-256-cbc",
  "aes192-cbc": "aes-192-cbc",
  "aes128-cbc": "aes-128-cbc",
  "3des-cbc": "des-ede3-cbc",
};
const OPENSSL_CIPHERS = new Set(getCiphers());
const usableCipher = (name: string): boolean => OPENSSL_CIPHERS.has(CIPHER_OPENSSL[name] ?? "");
/**
 * Algorithms offered, in order, when the ssh config names none (Ciphers, KexAlgorithms, MACs):
 * ssh2's own secure defaults, with the ciphers pinned to AES-GCM first. ssh2 runs AES-GCM on
 * Node's native crypto (one AEAD pass, no separate MAC); without its optional native binding (when
 * its install-time build fails) its chacha20-poly1305 computes Poly1305 in JavaScript, and with the
 * binding it would put chacha20 first on a CPU without AES instructions.
 * Compression stays ssh2's default, "none" first: a few bytes of `hostname` gain nothing from zlib.
 */
const CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr", "chacha20-poly1305@openssh.com"].filter(usableCipher);
const KEX = [
  "curve25519-sha256",
  "curve25519-sha256@libssh.org",
  "ecdh-sha2-nistp256",
  "ecdh-sha2-nistp384",
  "ecdh-sha2-nistp521",
  "diffie-hellman-group-exchange-sha256",
  "diffie-hellman-group14-sha256",
  "diffie-hellman-group15-sha512",
  "diffie-hellman-group16-sha512",
  "diffie-hellman-group17-sha512",
  "diffie-hellman-group18-sha512",
];
const MACS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1"];
/** What a config may ask for beyond the defaults (older algorithms ssh2 still speaks). */
const CIPHERS_SUPPORTED = [...CIPHERS, ...["aes256-cbc", "aes192-cbc", "aes128-cbc", "3des-cbc"].filter(usableCipher)];
const KEX_SUPPORTED = [...KEX, "diffie-hellman-group-exchange-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1"];
const MACS_SUPPORTED = [...MACS, "hmac-md5", "hmac-sha2-256-96", "hmac-sha2-512-96", "hmac-sha1-96", "hmac-md5-96"];

interface Identity {
  path: string;
  /** Usable private key, or null (missing, encrypted, unreadable). */
  key: ParsedKey | null;
  /** Public blob from the key or its .pub file, to pick agent keys under IdentitiesOnly. */
  publicBlob: Buffer | null;
  encrypted: boolean;
}

/**
 * ssh2 reads and writes through this; the real socket stays ours. end() (ssh2 calls it after sending
 * DISCONNECT, and on errors) is swallowed: the server must close first.
 *
 * Writes made in one tick go out in one writev: ssh2 hands over each encrypted packet in three
 * pieces (length, ciphertext, MAC tag), and with Nagle off each piece was its own write(2) and its
 * own TCP segment (~31 a host for `hostname`), costing both ends a syscall and a wake-up per piece.
 */
class SocketView extends Duplex {
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

/** Agent keys narrowed to the configured identities (IdentitiesOnly yes), as OpenSSH does. */
class FilteredAgent extends OpenSSHAgent {
  constructor(
    socketPath: string,
    private readonly allowed: readonly Buffer[],
  ) {
    super(socketPath);
  }
  override getIdentities(cb: IdentityCallback<ParsedKey>): void {
    super.getIdentities((err, keys) => {
      if (err || !keys) return cb(err, keys);
      // ssh2's agent protocol yields parsed keys; other entry shapes cannot be matched and are dropped.
      cb(undefined, keys.filter((k) => "getPublicSSH" in k && this.allowed.some((a) => a.equals(k.getPublicSSH()))));
    });
  }
}

/**
 * The key, signing through a KeyObject made once. ssh2's sign() hands OpenSSL the key's PEM text on
 * every call, which parses it again each time: ~0.4 ms of CPU per host for an ed25519 key, where
 * the signature itself takes ~0.04 ms. ssh2 keeps the PEM under a symbol of its own
 * ("Private key PEM"); if a later ssh2 drops it, the key is left as it is (slower, same result).
 */
export function signWithKeyObject(key: ParsedKey): ParsedKey {
  const holder = key as unknown as Record<symbol, unknown>;
  const pemSym = Object.getOwnPropertySymbols(key).find((s) => s.description === "Private key PEM");
  const hashSym = Object.getOwnPropertySymbols(key).find((s) => s.description === "Hash Algorithm");
  const pem = pemSym ? holder[pemSym] : undefined;
  if (typeof pem !== "string") return key;
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(pem);
  } catch {
    return key;
  }
  const defaultAlgo = hashSym ? holder[hashSym] : undefined;
  // Same contract as ssh2's BaseKey.sign: the signature, or the Error (ssh2 reports it as such).
  // (@types/ssh2 says Buffer; the library's own code returns an Error and ssh2 checks for one.)
  const sign = (data: Buffer | string, algo?: string): Buffer | Error => {
    const a = algo || (typeof defaultAlgo === "string" ? defaultAlgo : null);
    try {
      return cryptoSign(a, typeof data === "string" ? Buffer.from(data) : data, keyObject);
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  };
  key.sign = sign as ParsedKey["sign"];
  return key;
}

function readOptional(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch {
    return null;
  }
}

export class SshTransport implements Transport {
  readonly name = "ssh" as const;
  private readonly configs: SSHConfig[];
  private readonly home: string;
  private readonly localUser: string;
  private readonly agentSocket: string;
  readonly graceMs: number;
  readonly handshakeLimitMs: number;
  private readonly identities = new Map<string, Identity>();
  private readonly knownHosts = new Map<string, KnownHostEntry[]>();
  private readonly knownHostsIndexes = new Map<string, { files: readonly string[]; index: KnownHostsIndex }>();

  constructor(
    private readonly options: TransportOptions,
    env: SshEnvironment = {},
  ) {
    this.home = env.home ?? homedir();
    this.localUser = env.localUser ?? userInfo().username;
    this.agentSocket = env.agentSocket ?? process.env["SSH_AUTH_SOCK"] ?? "";
    this.graceMs = env.graceMs ?? END_GRACE_MS;
    this.handshakeLimitMs = env.handshakeLimitMs ?? HANDSHAKE_LIMIT_MS;
    let texts: string[] = [];
    try {
      const systemFile = env.systemConfigFile === undefined ? "/etc/ssh/ssh_config" : env.systemConfigFile;
      texts = readSshConfigTexts(fsConfigReader, this.home, options.sshConfigFile, systemFile);
    } catch (e) {
      if (e instanceof AddrinuseError && e.code === "ERR_USAGE") throw new UsageError(e.message);
      throw new UsageError(`cannot read ssh config: ${(e as Error).message}`);
    }
    try {
      this.configs = parseSshConfigs(texts);
    } catch (e) {
      throw new UsageError(`cannot parse ssh config: ${(e as Error).message}`);
    }
    const bad = badSshConfigValue(this.configs);
    if (bad) throw new UsageError(bad);
  }

  /** One host's settings; the user from RunRequest counts only when it is not the default (-u given). */
  resolve(req: Pick<RunRequest, "host" | "user" | "localUser">): SshHostConfig {
    const explicitUser = req.user ? req.user : null;
    const cfg = resolveSshConfig(this.configs, req.host, { home: this.home, localUser: this.localUser, user: explicitUser });
    // --port beats the config's Port, as ssh -p does.
    if (this.options.port !== undefined) cfg.port = this.options.port;
    return cfg;
  }

  identity(path: string): Identity {
    let id = this.identities.get(path);
    if (id) return id;
    id = { path, key: null, publicBlob: null, encrypted: false };
    const data = readOptional(path);
    if (data) {
      const parsed = utils.parseKey(data);
      if (parsed instanceof Error) {
        id.encrypted = /passphrase|encrypted/i.test(parsed.message);
      } else {
        const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed;
        if (key.isPrivateKey()) {
          id.key = signWithKeyObject(key);
          id.publicBlob = key.getPublicSSH();
        }
      }
    }
    if (!id.publicBlob) {
      const pub = readOptional(`${path}.pub`);
      const parsed = pub ? utils.parseKey(pub) : null;
      if (parsed && !(parsed instanceof Error)) id.publicBlob = (Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed).getPublicSSH();
    }
    this.identities.set(path, id);
    return id;
  }

  /** The lines of these files that bear on `name` (see KnownHostsIndex.forHost); files read once a run. */
  knownHostsEntries(files: readonly string[], name: string): KnownHostEntry[] {
    const key = files.join("\0");
    let index = this.knownHostsIndexes.get(key);
    if (!index) {
      index = { files, index: new KnownHostsIndex() };
      for (const f of files) {
        let entries = this.knownHosts.get(f);
        if (!entries) {
          const text = readOptional(f);
          entries = text ? parseKnownHosts(text.toString("utf8"), f) : [];
          this.knownHosts.set(f, entries);
        }
        index.index.add(entries);
      }
      this.knownHostsIndexes.set(key, index);
    }
    return index.index.forHost(name);
  }

  /** accept-new: file the key in the first user known_hosts file (and in our cache for later hosts). */
  addKnownHost(file: string, name: string, key: Buffer, hash: boolean): void {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const line = formatKnownHostsLine(name, key, hash);
    appendFileSync(file, line, { mode: 0o600 });
    const added = parseKnownHosts(line, file);
    const entries = this.knownHosts.get(file) ?? [];
    entries.push(...added);
    this.knownHosts.set(file, entries);
    for (const { files, index } of this.knownHostsIndexes.values()) if (files.includes(file)) index.add(added);
  }

  hostKeyPolicy(cfg: SshHostConfig): HostKeyPolicy {
    return this.options.hostKeyChecking ?? cfg.hostKeyChecking ?? "strict";
  }

  agentPath(): string {
    return this.agentSocket;
  }

  async run(req: RunRequest): Promise<TransportResult> {
    let cfg: SshHostConfig;
    try {
      cfg = this.resolve(req);
    } catch (e) {
      const code: ErrorCode = e instanceof AddrinuseError ? e.code : "ERR_TRANSPORT";
      return notStarted(code, (e as Error).message);
    }
    if (cfg.unsupported.length > 0) {
      return notStarted(
        "ERR_TRANSPORT",
        `${req.host}: the ssh config sets ${cfg.unsupported.join(", ")}, which the built-in ssh does not follow; use -R openssh`,
      );
    }
    const algorithms = {
      cipher: applyAlgorithmSpec(CIPHERS, CIPHERS_SUPPORTED, cfg.algorithms.ciphers),
      kex: applyAlgorithmSpec(KEX, KEX_SUPPORTED, cfg.algorithms.kex),
      hmac: applyAlgorithmSpec(MACS, MACS_SUPPORTED, cfg.algorithms.macs),
    };
    for (const [keyword, list] of [["Ciphers", algorithms.cipher], ["KexAlgorithms", algorithms.kex], ["MACs", algorithms.hmac]] as const) {
      if (list.length === 0) {
        return notStarted("ERR_TRANSPORT", `${req.host}: the ssh config's ${keyword} leaves nothing the built-in ssh speaks; use -R openssh`);
      }
    }
    if (req.signal.aborted) return notStarted("ERR_CANCELLED", "cancelled before connecting");
    // sshd drops a handshake beyond its MaxStartups before it sends its banner: try again a few
    // times, backing off, and count it. Each dropped attempt was closed by the server first.
    for (let retries = 0; ; retries++) {
      const r = await new Promise<TransportResult>((resolve) => new HostRun(this, req, cfg, algorithms, resolve).start());
      if (r.error?.code !== "ERR_DROPPED_BY_SERVER" || retries >= SSH_DROP_RETRIES || req.signal.aborted) {
        return retries > 0 ? { ...r, retries } : r;
      }
      if (!(await backoff(retries, req.signal))) return { ...r, retries };
    }
  }
}

/** Retries of a handshake the server dropped before its banner (sshd MaxStartups, LoginGraceTime). */
export const SSH_DROP_RETRIES = 4;

/** Waits 250 ms, 500 ms, 1 s, 2 s (each up to twice that, at random, so retries spread out). */
function backoff(attempt: number, signal: AbortSignal): Promise<boolean> {
  const ms = 250 * 2 ** attempt * (1 + Math.random());
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Run on a second channel of a timed-out or cancelled connection (see execKillSession): one grep
 * over every process's environment, then kill each match's process group (sshd makes each
 * session's shell lead one) and the process itself. `$$` is this script's own shell.
 */
export const KILL_SESSION_SCRIPT =
  'for f in $(grep -lzxF "SSH_CONNECTION=$SSH_CONNECTION" /proc/[0-9]*/environ 2>/dev/null); do p=${f#/proc/}; p=${p%/environ}; ' +
  '[ "$p" = "$$" ] || { kill -9 -"$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; }; done; true';

/** How long a timed-out or cancelled host waits for sshd to confirm its command ended; well inside the engine's ABORT_GRACE_MS. */
export const KILL_WAIT_MS = 1000;

type ClientError = Error & { level?: string; code?: string };

/** The parts of an ssh2 channel that sendSignal() reaches past its public API for. */
interface ChannelInternals {
  outgoing?: { id?: unknown; state?: unknown };
  _client?: { _protocol?: { signal?: unknown } };
}

/**
 * A "signal" channel request (RFC 4254 §6.9). ssh2's channel.signal() sends nothing once our side
 * has sent CHANNEL_EOF, and we send it at once (the remote stdin is at EOF); the RFC allows requests
 * on a channel until it is closed, so the request goes through ssh2's protocol object directly.
 * False when that object is not there (another ssh2 version) or the channel is closing.
 */
function sendSignal(channel: ClientChannel, name: string): boolean {
  const c = channel as unknown as ChannelInternals;
  const id = c.outgoing?.id;
  const state = c.outgoing?.state;
  const protocol = c._client?._protocol;
  if (typeof id !== "number" || (state !== "open" && state !== "eof") || !protocol || typeof protocol.signal !== "function") return false;
  try {
    (protocol.signal as (chan: number, signal: string) => void).call(protocol, id, name);
    return true;
  } catch {
    return false;
  }
}

/** One host's connection, from connect to the socket's close; resolves exactly once. */
class HostRun {
  private sock: net.Socket | null = null;
  private view: SocketView | null = null;
  private client: SshClient | null = null;
  private localPort: number | null = null;
  private remoteAddress: string | null = null;
  private tcpUp = false;
  private started = false;
  private commandDone = false;
  private exitCode: number | null = null;
  private exitSignal: string | null = null;
  private error: HostError | null = null;
  /** Who ended the connection, from endAfterPeer; started when our side is done (or at the close). */
  private closing: Promise<ClosedBy> | null = null;
  /** Aborting it resets the connection now, unless the server's FIN is already in. */
  private readonly resetSignal = new AbortController();
  private ending = false;
  private settled = false;
  private hostKeyProblem: string | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private channel: ClientChannel | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private remoteCommand: "ended" | "signalled" | null = null;
  private readonly target: string;
  private authTried: string[] = [];
  private serverMethods: string[] | null = null;
  private agentProblem: string | null = null;
  private skippedEncrypted: string[] = [];
  /** The server's first bytes (up to 256): did its banner come before it closed? */
  private firstBytes: Buffer = Buffer.alloc(0);

  constructor(
    private readonly t: SshTransport,
    private readonly req: RunRequest,
    private readonly cfg: SshHostConfig,
    private readonly algorithms: { cipher: string[]; kex: string[]; hmac: string[] },
    private readonly done: (r: TransportResult) => void,
  ) {
    this.target = `${cfg.user}@${cfg.hostName}${cfg.port === 22 ? "" : `:${cfg.port}`}`;
  }

  private readonly onAbort = (): void => {
    // The engine names the error of an aborted host; this one only marks that it was aborted.
    this.fail("ERR_CANCELLED", `${this.target}: aborted`);
    if (!this.endRemoteCommand()) this.resetNow();
  };

  /**
   * On timeout or cancel with the command running: a reset alone leaves it running on the host (a
   * command that does not write never notices), so first ask sshd to signal it (RFC 4254 §6.9;
   * OpenSSH killpg()s the session's process group), wait a bounded KILL_WAIT_MS for the channel to
   * close with its exit-signal, then reset. False: no running command, reset at once.
   */
  private endRemoteCommand(): boolean {
    const channel = this.channel;
    if (!channel || this.commandDone || this.settled) return false;
    const signalled = sendSignal(channel, "KILL");
    const killed = this.execKillSession();
    if (!signalled && !killed) return false;
    this.remoteCommand = "signalled";
    this.killTimer = setTimeout(() => this.resetNow(), KILL_WAIT_MS);
    return true;
  }

  /**
   * OpenSSH refuses the "signal" request for a root login (it runs such a session without privilege
   * separation, and signals only from the unprivileged child), so the same connection also runs
   * KILL_SESSION_SCRIPT on a second channel: it kills the processes whose SSH_CONNECTION is this
   * connection's (our local port makes it unique), this second session's shell excepted.
   */
  private execKillSession(): boolean {
    const client = this.client;
    if (!client) return false;
    try {
      client.exec(KILL_SESSION_SCRIPT, (err, ch) => {
        if (err || !ch) return;
        // Nothing it says reaches the user; its stdin is at EOF at once.
        ch.on("data", () => {});
        ch.stderr.on("data", () => {});
        ch.on("error", () => {});
        ch.end();
      });
      return true;
    } catch {
      return false;
    }
  }

  /** The channel closed after our signal: say whether the host confirmed the end, then reset. */
  private remoteCommandEnded(): void {
    if (this.killTimer) clearTimeout(this.killTimer);
    this.killTimer = null;
    if (this.exitSignal !== null || this.exitCode !== null) this.remoteCommand = "ended";
    this.resetNow();
  }

  start(): void {
    this.req.signal.addEventListener("abort", this.onAbort, { once: true });
    const timeoutMs = this.req.connectTimeoutMs > 0 ? this.req.connectTimeoutMs : this.cfg.connectTimeoutMs > 0 ? this.cfg.connectTimeoutMs : this.t.handshakeLimitMs;
    if (timeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        const phase = this.tcpUp ? "handshake/authentication" : "TCP connect";
        this.fail("ERR_CONNECT_TIMEOUT", `${this.target}: no ssh session within ${timeoutMs / 1000} s (stuck in ${phase})`);
        this.resetNow();
      }, timeoutMs);
    }
    const sock = net.connect({ host: this.cfg.hostName, port: this.cfg.port });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on("connect", () => this.onTcpConnect());
    sock.on("error", (e: NodeJS.ErrnoException) => this.onSocketError(e));
    sock.on("end", () => {
      if (!this.commandDone && this.droppedBeforeBanner()) {
        this.fail(
          "ERR_DROPPED_BY_SERVER",
          `${this.target}: the server closed the connection before its banner (sshd drops handshakes beyond MaxStartups)`,
        );
      }
      if (!this.commandDone) {
        this.fail(
          "ERR_CONNECTION_LOST",
          this.started
            ? `${this.target}: the server closed the connection before the command finished`
            : `${this.target}: the server closed the connection during the ssh handshake`,
        );
      }
      // allowHalfOpen is off: Node answers with our FIN now, after theirs.
    });
    sock.on("close", () => void this.settle());
  }

  private onTcpConnect(): void {
    const sock = this.sock!;
    this.tcpUp = true;
    this.localPort = sock.localPort ?? null;
    this.remoteAddress = sock.remoteAddress ?? null;
    const keep = (d: Buffer) => {
      this.firstBytes = Buffer.concat([this.firstBytes, d]).subarray(0, 256);
      if (this.firstBytes.length >= 256 || this.firstBytes.includes("SSH-")) sock.off("data", keep);
    };
    sock.on("data", keep);
    const view = new SocketView(sock);
    this.view = view;
    const client = new Client();
    this.client = client;
    client.on("error", (e: ClientError) => this.onClientError(e));
    client.on("ready", () => this.onReady());
    const name = knownHostsName(this.cfg.hostKeyAlias ?? this.cfg.hostName, this.cfg.port);
    const entries = this.t.knownHostsEntries([...this.cfg.userKnownHostsFiles, ...this.cfg.globalKnownHostsFiles], name);
    const known = knownKeyTypes(entries, name).flatMap(hostKeyAlgorithmsFor).filter((a) => HOST_KEY_ALGORITHMS.includes(a));
    const order = [...new Set([...known, ...HOST_KEY_ALGORITHMS])];
    try {
      this.connect(client, view, name, entries, order);
    } catch (e) {
      // ssh2 checks its options as it starts (an algorithm it cannot run, say): this host fails, not the run.
      this.fail("ERR_TRANSPORT", `${this.target}: ssh: ${(e as Error).message}`);
      this.resetNow();
    }
  }

  private connect(client: SshClient, view: SocketView, name: string, entries: KnownHostEntry[], order: string[]): void {
    client.connect({
      sock: view,
      username: this.cfg.user,
      readyTimeout: 0,
      keepaliveInterval: 0,
      algorithms: {
        serverHostKey: order as ServerHostKeyAlgorithm[],
        cipher: this.algorithms.cipher as CipherAlgorithm[],
        kex: this.algorithms.kex as KexAlgorithm[],
        hmac: this.algorithms.hmac as MacAlgorithm[],
      },
      hostVerifier: (key: Buffer) => this.verifyHostKey(name, entries, key),
      authHandler: this.authHandler(),
    });
  }

  private verifyHostKey(name: string, entries: KnownHostEntry[], key: Buffer): boolean {
    const policy = this.t.hostKeyPolicy(this.cfg);
    if (policy === "off") return true;
    const v = checkHostKey(entries, name, key);
    switch (v.kind) {
      case "match":
        return true;
      case "revoked":
        this.hostKeyProblem = `${this.target}: the host key ${fingerprint(key)} is marked @revoked (${v.entry.file}:${v.entry.line})`;
        return false;
      case "changed":
        this.hostKeyProblem =
          `${this.target}: HOST KEY CHANGED for ${name}: the server offers ${fingerprint(key)}, ` +
          `${v.entry.file}:${v.entry.line} has another ${v.entry.keyType} key; if the change is expected, ` +
          `remove it with ssh-keygen -R '${name}' -f ${v.entry.file}`;
        return false;
      case "unknown": {
        if (policy === "accept-new") {
          const file = this.cfg.userKnownHostsFiles[0];
          if (file !== undefined) {
            try {
              this.t.addKnownHost(file, name, key, this.cfg.hashKnownHosts);
            } catch (e) {
              this.hostKeyProblem = `${this.target}: cannot add the host key to ${file}: ${(e as Error).message}`;
              return false;
            }
          }
          return true;
        }
        const others = v.otherTypes.length ? ` (known_hosts has only ${v.otherTypes.join(", ")} keys for it)` : "";
        this.hostKeyProblem =
          `${this.target}: unknown host key ${fingerprint(key)} for ${name}${others}; ` +
          `add it to known_hosts or run with --host-key-checking accept-new`;
        return false;
      }
    }
  }

  /** Agent first (narrowed under IdentitiesOnly), then the identity files; never a password or prompt. */
  private authHandler(): (authsLeft: AuthenticationType[] | null, partial: boolean | null, next: NextAuthHandler) => void {
    const user = this.cfg.user;
    const methods: { label: string; method: AnyAuthMethod }[] = [];
    const ids = this.cfg.identityFiles.map((p) => this.t.identity(p));
    const agent = this.t.agentPath();
    if (agent) {
      if (this.cfg.identitiesOnly) {
        const allowed = ids.flatMap((i) => (i.publicBlob ? [i.publicBlob] : []));
        if (allowed.length) methods.push({ label: "agent", method: { type: "agent", username: user, agent: new FilteredAgent(agent, allowed) } });
      } else {
        methods.push({ label: "agent", method: { type: "agent", username: user, agent } });
      }
    }
    for (const id of ids) {
      if (id.key) methods.push({ label: id.path, method: { type: "publickey", username: user, key: id.key } });
    }
    const encrypted = ids.filter((i) => i.encrypted && !i.key).map((i) => i.path);
    this.skippedEncrypted = encrypted;
    let i = 0;
    return (authsLeft, _partial, next) => {
      if (authsLeft) this.serverMethods = authsLeft;
      while (i < methods.length) {
        const m = methods[i++]!;
        if (authsLeft && !authsLeft.includes("publickey")) continue;
        this.authTried.push(m.label);
        next(m.method);
        return;
      }
      (next as (m: AnyAuthMethod | false) => void)(false);
    };
  }

  private authFailureMessage(): string {
    const parts = [`${this.target}: permission denied`];
    if (this.serverMethods) parts[0] += ` (server accepts: ${this.serverMethods.join(",")})`;
    parts.push(this.authTried.length ? `tried ${this.authTried.join(", ")}` : "no key to offer (no agent, no readable identity file)");
    if (this.skippedEncrypted.length) parts.push(`skipped passphrase-protected ${this.skippedEncrypted.join(", ")} (add them to ssh-agent: we never prompt)`);
    if (this.agentProblem) parts.push(`agent: ${this.agentProblem}`);
    return parts.join("; ");
  }

  private onReady(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    if (this.settled || this.ending) return;
    try {
      this.client!.exec(this.req.command, (err, stream) => {
        if (this.settled) return;
        if (err) {
          this.fail("ERR_REMOTE_REFUSED", `${this.target}: the server would not run the command: ${err.message}`);
          this.endPolitely();
          return;
        }
        this.onChannel(stream);
      });
    } catch (e) {
      this.fail("ERR_CONNECTION_LOST", `${this.target}: ${(e as Error).message}`);
      this.resetNow();
    }
  }

  private onChannel(stream: ClientChannel): void {
    if (this.settled || this.ending) return;
    this.started = true;
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
    this.channel = stream;
    stream.on("close", () => {
      this.commandDone = true;
      if (this.remoteCommand !== null) return this.remoteCommandEnded();
      if (this.exitCode === null && this.exitSignal === null) {
        this.fail("ERR_PROTOCOL", `${this.target}: the command's channel closed without an exit status`);
      }
      this.endPolitely();
    });
    // The remote stdin gets EOF now, or after the input (CHANNEL_EOF); the TCP connection stays open.
    if (this.req.input) this.req.input.start(writableStdin(stream, () => stream.end()));
    else stream.end();
  }

  private onClientError(e: ClientError): void {
    switch (e.level) {
      case "agent":
        this.agentProblem = e.message;
        return;
      case "client-authentication":
        this.fail("ERR_AUTH", this.authFailureMessage());
        break;
      default:
        if (this.hostKeyProblem) this.fail("ERR_HOST_KEY", this.hostKeyProblem);
        else this.fail("ERR_PROTOCOL", `${this.target}: ssh: ${e.message}`);
    }
    this.endPolitely();
  }

  private onSocketError(e: NodeJS.ErrnoException): void {
    if (!this.tcpUp) {
      if (e.code === "ECONNREFUSED") this.fail("ERR_CONNECT_REFUSED", `${this.target}: connection refused`);
      else this.fail("ERR_CONNECT", `${this.target}: cannot connect: ${e.code ?? e.message}`);
      return;
    }
    if (!this.commandDone && this.droppedBeforeBanner()) {
      this.fail("ERR_DROPPED_BY_SERVER", `${this.target}: the server reset the connection before its banner (${e.code ?? e.message})`);
    }
    if (!this.commandDone) this.fail("ERR_CONNECTION_LOST", `${this.target}: connection lost: ${e.code ?? e.message}`);
  }

  /** DISCONNECT, then wait a bounded grace for the server's FIN; reset if it does not come. */
  private endPolitely(): void {
    if (this.ending || this.settled) return;
    this.ending = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    try {
      // Sends SSH_MSG_DISCONNECT through the view; the view swallows ssh2's end() of the socket.
      this.client?.end();
    } catch {
      // already unwritable: nothing to say to the server
    }
    this.endAfterServer(this.t.graceMs);
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
    if (!this.tcpUp) return void sock.destroy();
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
    if (!this.tcpUp || this.started || this.firstBytes.includes("SSH-")) return false;
    return this.firstBytes.length === 0 || this.firstBytes.includes("MaxStartups");
  }

  private fail(code: ErrorCode, message: string): void {
    if (!this.error) this.error = { code, message };
  }

  private async settle(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.killTimer) clearTimeout(this.killTimer);
    this.req.signal.removeEventListener("abort", this.onAbort);
    this.view?.destroy();
    if (!this.error && !this.commandDone) this.fail("ERR_CONNECTION_LOST", `${this.target}: connection closed`);
    // The socket is closed: endAfterPeer tells who ended it (from its own watch, or from the state).
    const closedBy = this.tcpUp ? await this.endAfterServer(0) : null;
    this.done({
      // Aborted: the command did not end by itself; what the kill made it say is not its status.
      exitCode: this.req.signal.aborted ? null : this.exitCode,
      signal: this.exitSignal,
      closedBy,
      localPort: this.localPort,
      ...(this.remoteAddress !== null ? { remoteAddress: this.remoteAddress, remotePort: this.cfg.port } : {}),
      connected: this.started,
      error: this.error,
      ...(this.remoteCommand !== null ? { remoteCommand: this.remoteCommand } : {}),
    });
  }
}

export function createSshTransport(options: TransportOptions, env?: SshEnvironment): Transport {
  return new SshTransport(options, env);
}
