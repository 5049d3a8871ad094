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
    const port = await freePort(address);
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
    const knownHostsPath = join(dir, `known_hosts-${tag}`);
    const [ktype, kblob] = hostKey.publicLine.split(" ");
    writeFileSync(knownHostsPath, `[${address}]:${port} ${ktype} ${kblob}\n`);
    const clientConfigPath = join(dir, `ssh_config-${tag}`);
    writeFileSync(
      clientConfigPath,
      [
        "Host *",
        `  Port ${port}`,
        `  IdentityFile ${clientKey.privatePath}`,
        "  IdentitiesOnly yes",
        `  UserKnownHostsFile ${knownHostsPath}`,
        "  GlobalKnownHostsFile /dev/null",
        "  BatchMode yes",
        "",
      ].join("\n"),
    );

    const child = spawn(SSHD, ["-D", "-e", "-f", configPath], { stdio: ["ignore", "ignore", "pipe"] });
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
      continue;
    }
    return {
      address,
      port,
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

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}
