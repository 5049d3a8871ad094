/**
 * -R ssh: the built-in ssh client, on the ssh2 library. Every host is one TCP connection on this
 * process's event loop; nothing is forked per host (pdsh, pssh and clush run one `ssh` each).
 *
 * This is the plug-in: it reads the ssh configuration once per run (ssh/config.ts), resolves each
 * host's settings, and runs one ssh/host-run.ts HostRun per attempt, retrying the handshakes a
 * server drops before its banner. The session, and the close that leaves the TIME_WAIT on the
 * server (our SSH_MSG_DISCONNECT, the server's FIN first), are HostRun's.
 */
import { homedir, userInfo } from "node:os";
import type SSHConfig from "ssh-config";
import { AddrinuseError, UsageError } from "../../errors.js";
import { algorithmsFor } from "../ssh/algorithms.js";
import { badSshConfigValue, parseSshConfigs, resolveSshConfig, type SshHostConfig } from "../ssh/config.js";
import { fsConfigReader, readSshConfigTexts } from "../ssh/config-files.js";
import { HostRun, type HostRunContext } from "../ssh/host-run.js";
import { Identities } from "../ssh/identities.js";
import { KnownHostsStore } from "../ssh/known-hosts-store.js";
import { END_GRACE_MS, hostErrorOf, notStarted, type RunRequest, type Transport, type TransportOptions, type TransportResult } from "../transport.js";

/**
 * Session setup (TCP connect, banner, key exchange, authentication) is bounded even when no timeout
 * is set anywhere (-t 0, no --connect-timeout, no ConnectTimeout): -t 0 lets a command run as long
 * as it likes, but a server that drips an endless banner (ssh2 caps it at 1024 lines of 8 KiB, not
 * the time between them) or never finishes its key exchange would otherwise hold the host forever.
 * sshd's own LoginGraceTime is 120 s; 60 s is far beyond any real handshake.
 */
export const HANDSHAKE_LIMIT_MS = 60_000;

/** Retries of a handshake the server dropped before its banner (sshd MaxStartups, LoginGraceTime). */
export const SSH_DROP_RETRIES = 4;

/** What the transport reads from its surroundings; tests replace it. */
export interface SshEnvironment {
  home?: string;
  localUser?: string;
  /** SSH_AUTH_SOCK; default from process.env. Empty string = no agent. */
  agentSocket?: string;
  /** System config read after the user's when no -F is given (default /etc/ssh/ssh_config). */
  systemConfigFile?: string | null;
  /** How long the server has to close after our DISCONNECT (default END_GRACE_MS). */
  graceMs?: number;
  /** The bound on session setup when no connect timeout is set (default HANDSHAKE_LIMIT_MS). */
  handshakeLimitMs?: number;
}

export class SshTransport implements Transport {
  readonly name = "ssh" as const;
  private readonly configs: SSHConfig[];
  private readonly home: string;
  private readonly localUser: string;
  private readonly context: Omit<HostRunContext, "hostKeyPolicy">;

  constructor(
    private readonly options: TransportOptions,
    env: SshEnvironment = {},
  ) {
    this.home = env.home ?? homedir();
    this.localUser = env.localUser ?? userInfo().username;
    this.context = {
      agentSocket: env.agentSocket ?? process.env["SSH_AUTH_SOCK"] ?? "",
      graceMs: env.graceMs ?? END_GRACE_MS,
      handshakeLimitMs: env.handshakeLimitMs ?? HANDSHAKE_LIMIT_MS,
      identities: new Identities(),
      knownHosts: new KnownHostsStore(),
    };
    let texts: string[] = [];
    try {
      const systemFile = env.systemConfigFile === undefined ? "/etc/ssh/ssh_config" : env.systemConfigFile;
      texts = readSshConfigTexts(fsConfigReader, this.home, options.sshConfigFile, systemFile);
    } catch (e) {
      if (e instanceof AddrinuseError && e.code === "AIU_USAGE") throw new UsageError(e.message);
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

  async run(req: RunRequest): Promise<TransportResult> {
    let cfg: SshHostConfig;
    try {
      cfg = this.resolve(req);
    } catch (e) {
      if (e instanceof AddrinuseError) return notStarted(hostErrorOf(e).code, e.message);
      return notStarted("HOST_TRANSPORT", (e as Error).message);
    }
    if (cfg.unsupported.length > 0) {
      return notStarted(
        "HOST_TRANSPORT",
        `${req.host}: the ssh config sets ${cfg.unsupported.join(", ")}, which the built-in ssh does not follow; use -R openssh`,
      );
    }
    const { algorithms, empty } = algorithmsFor(cfg.algorithms);
    if (empty) return notStarted("HOST_TRANSPORT", `${req.host}: the ssh config's ${empty} leaves nothing the built-in ssh speaks; use -R openssh`);
    if (req.signal.aborted) return notStarted("HOST_CANCELLED", "cancelled before connecting");
    const context: HostRunContext = { ...this.context, hostKeyPolicy: this.options.hostKeyChecking ?? cfg.hostKeyChecking ?? "strict" };
    // sshd drops a handshake beyond its MaxStartups before it sends its banner: try again a few
    // times, backing off, and count it. Each dropped attempt was closed by the server first.
    for (let retries = 0; ; retries++) {
      const r = await new HostRun(context, req, cfg, algorithms).run();
      if (r.error?.code !== "HOST_DROPPED_BY_SERVER" || retries >= SSH_DROP_RETRIES || req.signal.aborted) {
        return retries > 0 ? { ...r, retries } : r;
      }
      if (!(await backoff(retries, req.signal))) return { ...r, retries };
    }
  }
}

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

export function createSshTransport(options: TransportOptions, env?: SshEnvironment): Transport {
  return new SshTransport(options, env);
}
