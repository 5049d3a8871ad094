/**
 * -R exec: run a local command per host, from a pdsh-style template: `%h` the host, `%u` the remote
 * user, `%%` a percent sign (other `%` sequences are left as they are), and the remote command
 * appended as the last argument, e.g. `-R exec -- docker exec %h sh -c` or
 * `-R exec -- kubectl exec %h -- sh -c`.
 *
 * The template is an argument vector, never a shell line: a host name full of `;` or `$(...)` lands in
 * one argument of the program and nowhere else. The exit code is the local command's.
 *
 * A foreign program's TCP connection is its own: closedBy null. Except for the system ssh (a
 * template whose program is `ssh`), which closes first and so would leave a TIME_WAIT here per host:
 * unless the template proxies by itself (-J, -W, -o ProxyCommand/ProxyJump) or its configuration
 * does (seen by `ssh -G`), it goes through the relay (relay.ts) as -R openssh does, with
 * `-o ProxyCommand=...` put right after argv[0]. The relay's TCP connection is then ours: closedBy
 * and the local port are known, and it leaves no TIME_WAIT here.
 *
 * Each child runs in its own process group (detached): a Ctrl-C at the terminal goes to the
 * multi-rsh process alone, which prints its status and carries on (the engine's rule), instead of
 * killing every child; an abort kills the whole group, so helpers the template started go too.
 * runLocalCommand() is shared with the openssh transport.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { UsageError } from "../../errors.js";
import { notStarted, writableStdin, type HostError, type RunRequest, type Transport, type TransportOptions, type TransportResult } from "../transport.js";
import { homedir } from "node:os";
import type SSHConfig from "ssh-config";
import {
  NO_SHUTTLE_NOTICE, SshRelay, execTemplateOptOut, findShuttle, needsSshG, parseSshCommandLine, planFromSshConfig, planSshRelay, proxyOptions,
  type SshCommandLine,
} from "../relay.js";
import { fsConfigReader, parseSshConfigs, readSshConfigTexts } from "../ssh-config.js";
import { witnessed } from "../witness.js";

/** Substitute %h, %u and %% in each template argument. */
export function expandTemplate(template: readonly string[], host: string, user: string): string[] {
  return template.map((arg) =>
    arg.replace(/%([%hu])/g, (_m, c: string) => (c === "%" ? "%" : c === "h" ? host : user)),
  );
}

export interface ChildHooks {
  /** Called once the child is running (before any output), with its pid. */
  onSpawn?(child: ChildProcess): void;
  /** Called before onStdout/onStderr for each chunk (openssh watches for the first byte). */
  onOutput?(): void;
  /**
   * Runs on abort before the group is killed (openssh resets ssh's connection here); the kill waits
   * for it, at most ABORT_HOOK_MS.
   */
  onAbort?(): Promise<void>;
  /** Every chunk of the child's own stderr, merged or not (openssh reads ssh's parting words). */
  onStderr?(chunk: Buffer): void;
  /** Turns the exit into a result (openssh reads its log here). Default: the child's own status. */
  finish?(code: number | null, signal: NodeJS.Signals | null, aborted: boolean): TransportResult | Promise<TransportResult>;
}

/** The longest an onAbort hook may delay the kill. */
export const ABORT_HOOK_MS = 1000;

/** The error of a host whose command was killed on abort; the engine names the real one. */
export const KILLED: HostError = { code: "ERR_CANCELLED", message: "aborted: local command killed" };

/**
 * Spawn argv[0] with the rest as arguments (no shell), stdin at EOF, and resolve once it has exited
 * and its output pipes are drained. Never rejects.
 */
export function runLocalCommand(argv: readonly string[], req: RunRequest, hooks: ChildHooks = {}): Promise<TransportResult> {
  return new Promise((resolve) => {
    if (req.signal.aborted) {
      resolve(notStarted("ERR_CANCELLED", "cancelled before the local command started"));
      return;
    }
    const [file, ...args] = argv;
    const child = spawn(file!, args, { stdio: [req.input ? "pipe" : "ignore", "pipe", "pipe"], detached: true, shell: false });
    // A program that exits without reading all its input: EPIPE is its business, not an error here.
    child.stdin?.on("error", () => {});
    // Behind a slow reader the child blocks in write(2) on its full pipe instead of us buffering.
    const detach = [req.flow?.attach(child.stdout!), req.flow?.attach(child.stderr!)];
    let spawned = false;
    let aborted = false;
    let settled = false;
    const killGroup = () => {
      // Even when the leader has exited: a helper it left behind may hold the output pipes open. The
      // group id cannot be reused while any member lives, and after `close` nothing is killed.
      if (child.pid === undefined || settled) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    const kill = () => {
      aborted = true;
      // A paused pipe would hold back the child's `close` (and so this host's result) until the
      // reader catches up: what is left in it is at most a pipe's worth, let it go.
      for (const d of detach) d?.();
      child.stdout?.resume();
      child.stderr?.resume();
      if (!hooks.onAbort) return killGroup();
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((r) => (timer = setTimeout(r, ABORT_HOOK_MS)));
      void Promise.race([hooks.onAbort().catch(() => {}), bound]).then(() => {
        clearTimeout(timer);
        killGroup();
      });
    };
    req.signal.addEventListener("abort", kill, { once: true });
    const done = (r: TransportResult) => {
      if (settled) return;
      settled = true;
      for (const d of detach) d?.();
      req.signal.removeEventListener("abort", kill);
      resolve(r);
    };
    child.on("spawn", () => {
      spawned = true;
      hooks.onSpawn?.(child);
      if (req.input && child.stdin) req.input.start(writableStdin(child.stdin, () => child.stdin!.end()));
    });
    const errOut = req.separateStderr ? req.onStderr : req.onStdout;
    child.stdout!.on("data", (d: Buffer) => {
      hooks.onOutput?.();
      req.onStdout(d);
    });
    child.stderr!.on("data", (d: Buffer) => {
      hooks.onOutput?.();
      hooks.onStderr?.(d);
      errOut(d);
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (spawned) return;
      const why = e.code === "ENOENT" ? "not found" : e.code === "EACCES" ? "not executable" : e.message;
      done(notStarted("ERR_TRANSPORT", `cannot run '${file}': ${why}`));
    });
    child.on("close", (code, sig) => {
      if (!spawned) return;
      const finish = hooks.finish
        ? hooks.finish(code, sig, aborted)
        : {
            exitCode: code,
            signal: sig,
            closedBy: null,
            localPort: null,
            connected: true,
            error: aborted ? KILLED : null,
          };
      void Promise.resolve(finish).then(done, (e: unknown) =>
        done({
          exitCode: code,
          signal: sig,
          closedBy: null,
          localPort: null,
          connected: true,
          error: { code: "ERR_TRANSPORT", message: String(e) },
        }),
      );
    });
  });
}

export interface ExecEnvironment {
  /** The relay's shuttle for ssh templates (default: netcat-openbsd from PATH); null = no relay. */
  shuttle?: { nohup: string; nc: string } | null;
  /** Home directory for ~/.ssh/config (default: the user's). */
  home?: string;
}

export class ExecTransport implements Transport {
  readonly name = "exec" as const;
  private readonly template: readonly string[];
  /** Said once per run, for the CLI to print (e.g. that the relay's shuttle is missing). */
  readonly notices: string[] = [];
  /** Config file texts per -F value ("" = none), read once per run; null: only ssh -G is exact. */
  private readonly texts = new Map<string, string[] | null>();

  /** The template's parsed configuration (its -o lines first), or null when ssh -G must decide. */
  private configs(line: SshCommandLine): SSHConfig[] | null {
    const key = line.configFile ?? "";
    if (!this.texts.has(key)) {
      try {
        this.texts.set(key, readSshConfigTexts(fsConfigReader, this.env.home ?? homedir(), line.configFile, "/etc/ssh/ssh_config"));
      } catch {
        this.texts.set(key, null);
      }
    }
    const files = this.texts.get(key);
    if (!files) return null;
    const texts = [line.configLines.join("\n"), ...files];
    if (needsSshG(texts)) return null;
    try {
      return parseSshConfigs(texts);
    } catch {
      return null;
    }
  }

  constructor(
    options: TransportOptions,
    private readonly env: ExecEnvironment = {},
  ) {
    const template = options.template ?? [];
    if (template.length === 0 || template[0] === "") {
      throw new UsageError("-R exec needs a command template after --, e.g. -R exec -- docker exec %h sh -c");
    }
    this.template = template;
  }

  async run(req: RunRequest): Promise<TransportResult> {
    const argv = [...expandTemplate(this.template, req.host, req.user || req.localUser), req.command];
    const plain = () => runLocalCommand(argv, req, { onSpawn: () => req.onConnected({ localPort: null }) });
    if (execTemplateOptOut(argv) !== null) return plain();
    const shuttle = this.env.shuttle === undefined ? findShuttle() : this.env.shuttle;
    if (!shuttle && this.env.shuttle === undefined && !this.notices.includes(NO_SHUTTLE_NOTICE)) this.notices.push(NO_SHUTTLE_NOTICE);
    // Where ssh would connect: in-process when its command line and configuration allow (as
    // -R openssh does), else from ssh -G.
    const line = parseSshCommandLine(argv);
    const configs = line ? this.configs(line) : null;
    const plan = line && configs ? planFromSshConfig(configs, line.host, { ...(line.port !== undefined ? { port: line.port } : {}), connectTimeoutMs: 0 }) : await planSshRelay(argv, req.signal);
    if (!plan.relay) return plain();
    // No relay: ssh's own connection, which it closes first; the kernel says what it left (witness.ts).
    if (!shuttle) return witnessed(plan.target, plain);
    const relay = await SshRelay.open(plan.target, () => {});
    if (!relay) return plain();
    const relayed = [argv[0]!, ...proxyOptions(shuttle, relay.socketPath), ...argv.slice(1)];
    const r = await runLocalCommand(relayed, req, {
      onSpawn: () => req.onConnected({ localPort: null }),
      // Our own socket: reset it directly (RST, no TIME_WAIT here or there).
      onAbort: () => {
        relay.reset();
        return Promise.resolve();
      },
      finish: async (code, sig, aborted) => {
        // ssh has exited: the relay waits for the host's FIN (bounded) before saying who closed.
        // 255 is ssh's own failure (or the remote's 255): no session to end politely, sshd would
        // not close before its LoginGraceTime, so reset at once (no TIME_WAIT either way).
        const o = await relay.finish(code !== 255);
        return {
          exitCode: code,
          signal: sig,
          closedBy: o.closedBy,
          localPort: o.localPort,
          ...(o.remoteAddress !== undefined ? { remoteAddress: o.remoteAddress } : {}),
          ...(o.remotePort !== undefined ? { remotePort: o.remotePort } : {}),
          connected: true,
          error: aborted ? KILLED : null,
          // As with -R openssh: the system ssh cannot end the remote command, nor can a reset.
          ...(aborted ? { remoteCommand: "left-running" as const } : {}),
        };
      },
    });
    // When the program cannot even be spawned, finish never runs: the relay still goes.
    relay.reset();
    await relay.finish();
    return r;
  }
}

export function createExecTransport(options: TransportOptions, env?: ExecEnvironment): Transport {
  return new ExecTransport(options, env);
}
