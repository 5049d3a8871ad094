/** `addrinuse why --connect HOST:PORT`: is connect() to this destination out of local ports, and why. */
import { isIP } from "node:net";
import { exhaustion, type ExhaustionReport } from "../../diagnosis/exhaustion.js";
import { parsePortRanges, seconds } from "../../diagnosis/diagnose.js";
import { parsePort } from "../../core/address.js";
import { readTcpTableAsync, tableSourceNamed } from "../../kernel/read.js";
import { readPortSettings, readSysctl } from "../../kernel/sysctl.js";
import { UsageError } from "../../errors.js";
import type { CliIO } from "../io.js";

/** "10.0.0.1:80" or "[::1]:80"; names are not looked up. */
export function destinationArg(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  const port = m ? parsePort(m[2]!) : undefined;
  if (!m || isIP(m[1]!) === 0 || port === undefined) {
    throw new UsageError(`bad destination '${text}': expected ADDRESS:PORT, e.g. 10.0.0.1:80 or [::1]:80 (names are not looked up)`, "AIU_BAD_ADDRESS");
  }
  return { host: m[1]!, port };
}

export async function connectReport(host: string, port: number, io: CliIO): Promise<ExhaustionReport> {
  const snapshot = await readTcpTableAsync({ ports: { remote: [port, port] }, source: tableSourceNamed(io.env.ADDRINUSE_TABLE) });
  const settings = readPortSettings();
  const num = (name: string) => {
    const v = readSysctl(name);
    return v === null || !/^\d+$/.test(v) ? null : Number(v);
  };
  return exhaustion(host, port, snapshot.sockets, {
    ephemeralRange: settings.ephemeralRange ?? [32768, 60999],
    reservedPorts: parsePortRanges(settings.reservedPorts),
    twReuse: num("net.ipv4.tcp_tw_reuse"),
    timestamps: num("net.ipv4.tcp_timestamps"),
  });
}

export function formatConnect(r: ExhaustionReport): string {
  const lines = [
    `connect to ${r.destination}: ${r.exhausted ? "OUT OF LOCAL PORTS (connect() gets EADDRNOTAVAIL)" : "local ports left"}`,
    `  cause:  ${r.summary.cause}`,
  ];
  if (r.summary.holder !== null) lines.push(`  holder: ${r.summary.holder}`);
  lines.push(`  do:     ${r.summary.remedy}`);
  if (r.sources.length) lines.push("");
  for (const s of r.sources) {
    lines.push(
      `  from ${s.localAddress}: ${s.used} of ${r.available} ports (${Object.entries(s.byState).map(([k, v]) => `${v} ${k}`).join(", ")})` +
        (s.reusableTimeWait ? `, ${s.reusableTimeWait} TIME_WAIT reusable (tcp_tw_reuse)` : "") +
        (s.nextFreeMs !== null ? `, next TIME_WAIT expires in ${seconds(s.nextFreeMs)}` : ""),
    );
  }
  if (r.outsideRange) lines.push(`  ${r.outsideRange} more toward it from ports outside the range (bound on purpose)`);
  lines.push("", "Why, and what to do:");
  for (const a of r.advice) lines.push(`  - ${a}`);
  return lines.join("\n") + "\n";
}

export async function runWhyConnect(dest: string, json: boolean, io: CliIO): Promise<number> {
  const { host, port } = destinationArg(dest);
  const r = await connectReport(host, port, io);
  io.stdout.write(json ? JSON.stringify(r, null, io.stdout.isTTY ? 2 : undefined) + "\n" : formatConnect(r));
  return r.exhausted ? 1 : 0;
}
