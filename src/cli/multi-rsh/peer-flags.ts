/**
 * Flags that pdsh, clush and pssh users type from habit. multi-rsh takes most of them with the same
 * meaning (-w -x -f -R -N -S -b, pssh's -p -H -P, clush's -n); where the three tools disagree with
 * each other or with us (-l, -u, -t, -h, -x) multi-rsh keeps one meaning and refuses the others'
 * with a hint, because a flag silently read another way (a user name read as a host file, a timeout
 * read as a user) is worse than a refusal. The table in the README lists every one of them.
 *
 * This module is pure: the CLI asks it for a hint when commander rejects an option, and for the
 * checks on values that look like another tool's meaning.
 */

/** One-line hints for options multi-rsh does not take, keyed by the flag as typed (before any `=`). */
const UNKNOWN_FLAG_HINTS: Readonly<Record<string, string>> = {
  "-O": "pssh's -O (an ssh option): put it in an ssh config file and give -F FILE with -R ssh or -R openssh",
  "-X": "no -X here: exclude hosts with -x HOSTS (^FILE for a file of them)",
  "-v": "no verbose mode: --json gives every host's state, error, exit code and closing side",
  "-d": "no debug mode: --json gives every host's state, error, exit code and closing side",
  "-q": "no -q: progress is drawn only on a terminal, and --json keeps stderr quiet",
  "-A": "multi-rsh never prompts for a password: load keys into ssh-agent",
  "-i": "output is printed as it arrives, 'host: line' (pssh's -P); -b gathers identical outputs per host list",
  "-B": "-b gathers stdout and stderr together (they arrive merged unless --stderr)",
  "-L": "no line mode: -b gathers identical outputs; -N drops the host prefix",
  "--diff": "no --diff: -b gathers identical outputs under folded host lists",
  "--timeout": "the total time per host is -t SECONDS (pssh's --timeout)",
  "--par": "the fan-out is -p N (pssh's --par) or -f N",
  "--hosts": "a host file is -l FILE (pssh's -h/--hosts), or -w ^FILE",
  "--host": "hosts are -w HOSTS or -H HOST",
  "--inline": "output is printed as it arrives, 'host: line'; -b gathers identical outputs per host list",
  "--print": "output is already printed as it arrives (pssh's -P)",
  "--verbose": "no verbose mode: --json gives every host's state, error, exit code and closing side",
  "--quiet": "no -q: progress is drawn only on a terminal, and --json keeps stderr quiet",
  "--nodes": "hosts are -w HOSTS (clush's --nodes)",
  "--exclude": "excluded hosts are -x HOSTS (clush's --exclude)",
  "--worker": "the transport is -R rsh|ssh|openssh|exec (clush's --worker)",
  "--dshbak": "-b gathers identical outputs (clush's --dshbak)",
  "--connect_timeout": "spelt --connect-timeout here",
  "--command_timeout": "spelt --command-timeout here",
  "--options": "ssh options go in a config file given with -F FILE (-R ssh or -R openssh)",
  "--askpass": "multi-rsh never prompts for a password: load keys into ssh-agent",
  "-c": "copies are --copy SRC... --dest DIR (clush's -c/--copy), from the hosts --rcopy",
  "--rcopy_dest": "--rcopy SRC... --dest DIR puts each host's file in DIR/NAME.HOST",
  "--outdir": "each host's output in DIR/HOST is -o DIR (pssh's --outdir), its stderr -e DIR",
  "--errdir": "each host's stderr in DIR/HOST is -e DIR (pssh's --errdir)",
  "--inline-stdout": "output is printed as it arrives, 'host: line'; -b gathers identical outputs per host list",
  "--group": "node groups are -g NAME or @NAME in -w (clush's --group)",
  "--all": "all hosts is -a (clush's --all)",
};

/** The hint for an option commander did not know, or null. `-vq` and `--par=5` are looked up as `-v`, `--par`. */
export function unknownFlagHint(flag: string): string | null {
  const key = flag.startsWith("--") ? flag.replace(/=.*$/, "") : flag.slice(0, 2);
  return UNKNOWN_FLAG_HINTS[key] ?? null;
}

/** pdsh/clush's `-u SECONDS` is the command timeout; ours is the remote user, and no user is all digits here. */
export function userLooksLikeTimeout(user: string): boolean {
  return /^\d+(\.\d+)?$/.test(user);
}

export const USER_TIMEOUT_HINT = (v: string): string =>
  `-u ${v}: -u is the remote user here; for pdsh/clush's command timeout use --command-timeout ${v}`;

/** pssh's -x is extra ssh arguments; ours excludes hosts, and no host starts with '-'. */
export function excludeLooksLikeSshArgs(value: string): boolean {
  return value.trimStart().startsWith("-");
}

export const EXCLUDE_SSH_ARGS_HINT = (v: string): string =>
  `-x '${v}': -x excludes hosts here (pdsh/clush), so a '-' inside it would exclude from the exclusions: -x already excludes; pssh's -x (extra ssh arguments) goes in an ssh config file given with -F FILE`;

export const HOSTFILE_MISSING_HINT =
  "-l is the host file here, as in the original multi-rsh; the remote user is -u USER (pdsh/clush/pssh's -l)";

export const HELP_WITH_ARGUMENTS =
  "-h is help here and takes nothing else; pssh's -h HOSTFILE is -l HOSTFILE (or -w ^HOSTFILE); --help for help";
