/**
 * Which hosts a run goes to and what it runs there. Hosts come from the words after the command, -w,
 * -H, -l FILE (or stdin), -g/-a groups and --demo; exclusions (`-host`, -x) and filters (`/re/`)
 * apply to every host, wherever it comes from, as in pdsh. Each host runs once.
 */
import { dedupeHosts, emptySelection, parseExclusion, parseHostFile, parseHostSelection, selectHosts, splitTopLevel, type HostListOptions } from "../../remote/hosts/hostlist.js";
import { UsageError } from "../../errors.js";
import type { DemoHosts } from "../../remote/demo/rshd.js";
import type { CliIO } from "../io.js";
import { loadGroupResolver } from "../startup.js";
import { readHostFile, readHostStdin } from "./host-file.js";
import type { Opts } from "./options.js";
import { EXCLUDE_SSH_ARGS_HINT, excludeLooksLikeSshArgs, HOSTFILE_MISSING_HINT } from "./peer-flags.js";

export const DEMO_COMMAND = 'echo "hello from $MULTI_RSH_HOST"; uname -sr';

/** Bounded (host-file.ts): `-l /dev/zero` is a usage error, not a crash. */
function readStdin(io: CliIO): Promise<string> {
  return readHostStdin(io.stdin);
}

/** `-l FILE`: a missing file is most often a pdsh/clush/pssh user's `-l USER`: say so. */
function readListedHostFile(path: string): string {
  try {
    return readHostFile(path);
  } catch (e) {
    if (e instanceof UsageError && /: (ENOENT|EISDIR)$/.test(e.message)) throw new UsageError(`${e.message} (${HOSTFILE_MISSING_HINT})`, "AIU_HOSTFILE");
    throw e;
  }
}

export interface Plan {
  command: string;
  hosts: string[];
  duplicates: string[];
  /** `user@host` in a host list: that host's remote user (over -u). */
  users: Map<string, string>;
}

export async function planHosts(words: string[], o: Opts, io: CliIO, demo: DemoHosts | null, transferCommand: string | null): Promise<Plan> {
  let command = "";
  // Exclusions (`-host`, -x) and filters (`/re/`) apply to every host, wherever they come from, as in pdsh.
  const sel = emptySelection();
  const listed = o.hostfile !== undefined || (o.w?.length ?? 0) > 0 || (o.H?.length ?? 0) > 0 || (o.g?.length ?? 0) > 0 || !!o.a || demo !== null;
  // Groups are read only when asked for (-g, -a, @NAME, -@NAME): see startup.ts.
  const terms = [...(o.w ?? []), ...(o.x ?? []), ...(o.H ?? []), ...(listed ? [] : words.slice(1))];
  const wantsGroups = (o.g?.length ?? 0) > 0 || !!o.a || terms.some((t) => splitTopLevel(t).some((p) => /^-?@/.test(p)));
  const groups = wantsGroups ? (await loadGroupResolver())(io.env, o.groups, readHostFile) : null;
  const lists: HostListOptions = { readFile: readHostFile, ...(groups ? { resolveGroup: (name: string) => groups.resolve(name) } : {}) };
  if (transferCommand !== null) {
    // --copy/--rcopy: the command is the transfer's; every word is the exec template, if any.
    if (!listed) throw new UsageError("--copy/--rcopy take their hosts from -w, -l, -g or -a");
    command = transferCommand;
  } else if (o.R === "exec") {
    // -R exec -w HOSTS -- TEMPLATE... COMMAND: the last word is the command, the rest the template.
    if (!listed) throw new UsageError("-R exec takes its hosts from -w or -l: multi-rsh -R exec -w HOSTS -- docker exec %h sh -c 'CMD'");
    if (words.length < 2) throw new UsageError("-R exec needs a template and a command: -- docker exec %h sh -c 'CMD'");
    command = words[words.length - 1]!;
  } else if (listed) {
    command = words.join(" ");
  }
  if (listed) {
    if (o.hostfile !== undefined) {
      const text = o.hostfile === "-" ? await readStdin(io) : readListedHostFile(o.hostfile);
      sel.include.push(...parseHostFile(text, o.hostfile === "-" ? "stdin" : o.hostfile, readHostFile));
    }
    for (const w of o.w ?? []) parseHostSelection(w, lists, sel);
    for (const h of o.H ?? []) for (const word of h.split(/\s+/).filter(Boolean)) parseHostSelection(word, lists, sel);
    for (const g of o.g ?? []) for (const name of splitTopLevel(g)) sel.include.push(...groups!.resolve(name.replace(/^@/, "")));
    if (o.a) sel.include.push(...groups!.all());
    if (demo) sel.include.push(...demo.addresses);
    if (!command && demo) command = DEMO_COMMAND;
  } else {
    if (words.length === 0) throw new UsageError('no command: multi-rsh [options] "command" host...  (or -l FILE / -w HOSTS)');
    command = words[0]!;
    for (const h of words.slice(1)) parseHostSelection(h, lists, sel);
  }
  if (!command.trim()) throw new UsageError("no command to run");
  for (const x of o.x ?? []) if (excludeLooksLikeSshArgs(x)) throw new UsageError(EXCLUDE_SSH_ARGS_HINT(x));
  for (const x of o.x ?? []) parseExclusion(x, lists, sel);
  const { hosts: unique, duplicates } = dedupeHosts(selectHosts(sel));
  if (unique.length === 0) throw new UsageError("no hosts to run on (give hosts, -w, -l or --demo)");
  return { command, hosts: unique, duplicates, users: sel.users };
}
