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
 * The program runs as local-command.ts runs it (its own process group, killed whole on abort), as
 * the openssh transport's ssh does.
 */
import { UsageError } from "../../errors.js";
import { ABORTED, type RunRequest, type Transport, type TransportOptions, type TransportResult } from "../transport.js";
import { exitResult, runLocalCommand } from "../local-command.js";
import { homedir } from "node:os";
import { execTemplateOptOut, parseSshCommandLine } from "../ssh/argv.js";
import { planFromSshConfig } from "../ssh/config.js";
import { PlanningConfigs } from "../ssh/config-files.js";
import { planSshRelay, shuttleFor, withRelay, type Shuttle } from "../ssh/relay.js";
import { witnessed } from "../ssh/witness.js";

/** Substitute %h, %u and %% in each template argument. */
export function expandTemplate(template: readonly string[], host: string, user: string): string[] {
  return template.map((arg) =>
    arg.replace(/%([%hu])/g, (_m, c: string) => (c === "%" ? "%" : c === "h" ? host : user)),
  );
}

export interface ExecEnvironment {
  /** The relay's shuttle for ssh templates (default: netcat-openbsd from PATH); null = no relay. */
  shuttle?: Shuttle | null;
  /** Home directory for ~/.ssh/config (default: the user's). */
  home?: string;
}

export class ExecTransport implements Transport {
  readonly name = "exec" as const;
  private readonly template: readonly string[];
  /** Said once per run, for the CLI to print (e.g. that the relay's shuttle is missing). */
  readonly notices: string[] = [];
  /** The configuration ssh would read, per -F value, read once per run. */
  private readonly planning: PlanningConfigs;

  constructor(
    options: TransportOptions,
    private readonly env: ExecEnvironment = {},
  ) {
    const template = options.template ?? [];
    if (template.length === 0 || template[0] === "") {
      throw new UsageError("-R exec needs a command template after --, e.g. -R exec -- docker exec %h sh -c");
    }
    this.template = template;
    this.planning = new PlanningConfigs(env.home ?? homedir());
  }

  async run(req: RunRequest): Promise<TransportResult> {
    const argv = [...expandTemplate(this.template, req.host, req.user || req.localUser), req.command];
    const onSpawn = () => req.onConnected({ localPort: null });
    const plain = async () => exitResult(await runLocalCommand(argv, req, { onSpawn }));
    if (execTemplateOptOut(argv) !== null) return plain();
    const shuttle = shuttleFor(this.env.shuttle, this.notices);
    // Where ssh would connect: in-process when its command line and configuration allow (as
    // -R openssh does), else from ssh -G.
    const line = parseSshCommandLine(argv);
    const configs = line ? this.planning.for(line.configFile, line.configLines) : null;
    const plan = line && configs ? planFromSshConfig(configs, line.host, { ...(line.port !== undefined ? { port: line.port } : {}), connectTimeoutMs: 0 }) : await planSshRelay(argv, req.signal);
    if (!plan.relay) return plain();
    // No relay: ssh's own connection, which it closes first; the kernel says what it left (witness.ts).
    if (!shuttle) return witnessed(plan.target, plain);
    return withRelay(plan.target, shuttle, req.signal, async (relay) => {
      if (!relay) return plain();
      const exit = await runLocalCommand(relay.argv(argv), req, { onSpawn });
      if (!exit.started) return exit.result;
      // ssh has exited: the relay waits for the host's FIN (bounded) before saying who closed.
      // 255 is ssh's own failure (or the remote's 255): no session to end politely, sshd would
      // not close before its LoginGraceTime, so reset at once (no TIME_WAIT either way).
      const o = await relay.finish(exit.code !== 255);
      return {
        exitCode: exit.code,
        signal: exit.signal,
        closedBy: o.closedBy,
        localPort: o.localPort,
        ...(o.remoteAddress !== undefined ? { remoteAddress: o.remoteAddress } : {}),
        ...(o.remotePort !== undefined ? { remotePort: o.remotePort } : {}),
        connected: true,
        error: exit.aborted ? ABORTED : null,
        // As with -R openssh: the system ssh cannot end the remote command, nor can a reset.
        ...(exit.aborted ? { remoteCommand: "left-running" as const } : {}),
      } satisfies TransportResult;
    });
  }
}

export function createExecTransport(options: TransportOptions, env?: ExecEnvironment): Transport {
  return new ExecTransport(options, env);
}
