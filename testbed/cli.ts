/**
 * `npm run testbed -- up --hosts N [--fault refused=1,hang=2] | down | status`, each with `--json`.
 * The programmatic side is testbed.ts; this only parses, prints, and maps errors through cli/exit.ts.
 */
import { Command } from "commander";
import { UsageError } from "../src/errors.js";
import { commanderOutput, reportError } from "../src/cli/exit.js";
import { processIO, type CliIO } from "../src/cli/io.js";
import { FAULTS, MAX_HOSTS, down, status, up, TestbedError, type Fault, type Testbed } from "./testbed.js";

function hostsArg(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > MAX_HOSTS) throw new UsageError(`--hosts must be 1-${MAX_HOSTS}, not '${v}'`);
  return n;
}

export function parseFaults(v: string): Partial<Record<Fault, number>> {
  const out: Partial<Record<Fault, number>> = {};
  for (const part of v.split(",").filter(Boolean)) {
    const m = /^([a-z]+)(?:=(\d+))?$/.exec(part);
    if (!m || !(FAULTS as readonly string[]).includes(m[1]!)) {
      throw new UsageError(`bad --fault '${part}': expected NAME[=COUNT] with NAME one of ${FAULTS.join(", ")}`);
    }
    out[m[1] as Fault] = (out[m[1] as Fault] ?? 0) + Number(m[2] ?? 1);
  }
  return out;
}

function describe(tb: Testbed): string {
  const faults = tb.hosts.filter((h) => h.fault).map((h) => `${h.address}=${h.fault}`);
  const f = tb.files;
  return [
    `testbed ${tb.prefix}: ${tb.hosts.length} hosts ${tb.hosts[0]!.address}..${tb.hosts[tb.hosts.length - 1]!.address} on bridge ${tb.bridge}, client ${tb.clientAddress}` +
      (tb.created
        ? ` (up in ${(tb.setupMs / 1000).toFixed(1)} s: ${tb.phasesMs.root} ms links, ${tb.phasesMs.hosts} ms daemons, ${tb.phasesMs.listen} ms until listening; hosts use ${Math.round(tb.hostPssBytes / 2 ** 20)} MiB PSS)`
        : " (already up)"),
    ...(faults.length ? [`faults: ${faults.join(" ")}`] : []),
    `hosts file:  ${f.hosts}   (without faults: ${f.hostsOk})`,
    `ssh config:  ${f.sshConfig}   (key ${f.clientKey}, known_hosts ${f.knownHosts})`,
    `try:         pdsh -R rsh -w ^${f.hostsOk} hostname`,
    `             PDSH_SSH_ARGS_APPEND="-F ${f.sshConfig}" pdsh -R ssh -w ^${f.hostsOk} hostname`,
    "",
  ].join("\n");
}

export async function main(argv: string[], io: CliIO): Promise<number> {
  let code = 0;
  const program = new Command("testbed")
    .description("real rshd/sshd hosts in network namespaces on this machine")
    .exitOverride()
    .configureOutput(commanderOutput("testbed", io))
    .allowExcessArguments(false);
  program
    .command("up")
    .description("create N hosts (idempotent; a crashed run is cleaned first)")
    .requiredOption("--hosts <n>", `number of hosts, 1-${MAX_HOSTS}`, hostsArg)
    .option("--fault <list>", `fault hosts, e.g. refused=1,hang=2 (${FAULTS.join(", ")})`, parseFaults, {})
    .option("--prefix <p>", "prefix of namespaces, links and the state dir", "aitb")
    .option("--net <10.N>", "the private /16", "10.233")
    .option("--parallel <n>", "hosts set up at once", (v) => hostsArg(v), 8)
    .option("--max-startups <v>", "sshd MaxStartups: START:RATE:FULL, or default (OpenSSH's 10:30:100)", "200:30:400")
    .option("--json", "one JSON document on stdout")
    .action(async (o: { hosts: number; fault: Partial<Record<Fault, number>>; prefix: string; net: string; parallel: number; maxStartups: string; json?: boolean }) => {
      const tb = await up({ hosts: o.hosts, faults: o.fault, prefix: o.prefix, net: o.net, parallel: o.parallel, maxStartups: o.maxStartups });
      io.stdout.write(o.json ? JSON.stringify(tb, null, 2) + "\n" : describe(tb));
    });
  program
    .command("down")
    .description("remove every namespace, link, process and file of the testbed")
    .option("--prefix <p>", "prefix", "aitb")
    .option("--net <10.N>", "the /16 given to up (checked against it; optional)")
    .option("--json", "one JSON document on stdout")
    .action(async (o: { prefix: string; net?: string; json?: boolean }) => {
      const r = await down({ prefix: o.prefix, ...(o.net !== undefined ? { net: o.net } : {}) });
      io.stdout.write(o.json ? JSON.stringify(r) + "\n" : `testbed ${o.prefix}: removed ${r.namespaces} namespaces and ${r.processes} processes\n`);
    });
  program
    .command("status")
    .description("what is up, checked against the kernel (exit 0 up, 1 not)")
    .option("--prefix <p>", "prefix", "aitb")
    .option("--json", "one JSON document on stdout")
    .action((o: { prefix: string; json?: boolean }) => {
      const s = status({ prefix: o.prefix });
      code = s.up ? 0 : 1;
      if (o.json) io.stdout.write(JSON.stringify(s, null, 2) + "\n");
      else if (s.testbed && s.up) io.stdout.write(describe({ ...s.testbed, created: false }));
      else {
        io.stdout.write(
          `testbed ${o.prefix}: not up (${s.namespaces} namespaces, ${s.processes} processes` +
            (s.notListening.length ? `, not listening: ${s.notListening.slice(0, 5).join(" ")}` : "") +
            ")\n",
        );
      }
    });
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof TestbedError) {
      io.stderr.write(`testbed: ${e.message}\n`);
      return 1;
    }
    return reportError("testbed", e, io);
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main(process.argv.slice(2), processIO()).then((c) => (process.exitCode = c));
}
