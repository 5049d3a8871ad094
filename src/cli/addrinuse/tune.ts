/** `addrinuse tune`: the settings that govern TIME_WAIT and ports, what they really do, how to change them. Changes nothing. */
import { TUNABLES } from "../../diagnosis/tunables.js";
import { readSockstat, readSysctl } from "../../kernel/sysctl.js";
import { readTcpSocketsAsync, tableSourceNamed } from "../../kernel/read.js";
import type { CliIO } from "../io.js";

export interface TuneReport {
  settings: { name: string; value: string | null; meaning: string; change: string }[];
  timeWait: { current: number; maxBuckets: number | null; share: number | null };
  ephemeral: { from: number; to: number; size: number; inUse: number; timeWait: number } | null;
  timeWaitSeconds: 60;
}

export async function tuneReport(source: ReturnType<typeof tableSourceNamed> = "auto"): Promise<TuneReport> {
  const settings = TUNABLES.map((t) => ({ ...t, value: readSysctl(t.name) }));
  const sock = readSockstat();
  const maxRaw = readSysctl("net.ipv4.tcp_max_tw_buckets");
  const maxBuckets = maxRaw === null ? null : Number(maxRaw);
  const range = readSysctl("net.ipv4.ip_local_port_range");
  let ephemeral: TuneReport["ephemeral"] = null;
  if (range) {
    const [from, to] = range.split(" ").map(Number) as [number, number];
    // Only the ephemeral range's rows (filtered in the kernel over netlink), not the whole table.
    const { rows: inRange } = await readTcpSocketsAsync({ ports: { local: [from, to] }, source });
    const rows = inRange.filter((r) => r.state !== "LISTEN");
    ephemeral = {
      from,
      to,
      size: to - from + 1,
      inUse: new Set(rows.map((r) => r.localPort)).size,
      timeWait: rows.filter((r) => r.state === "TIME_WAIT").length,
    };
  }
  return {
    settings,
    timeWait: { current: sock.timeWait, maxBuckets, share: maxBuckets ? sock.timeWait / maxBuckets : null },
    ephemeral,
    timeWaitSeconds: 60,
  };
}

export function formatTune(r: TuneReport): string {
  const out: string[] = [];
  for (const s of r.settings) {
    out.push(`${s.name} = ${s.value ?? "(not readable)"}`, `    ${s.meaning}`, `    change: ${s.change}`);
  }
  out.push(
    "",
    `TIME_WAIT now: ${r.timeWait.current}` +
      (r.timeWait.maxBuckets ? ` of ${r.timeWait.maxBuckets} buckets (${((r.timeWait.share ?? 0) * 100).toFixed(2)}%)` : "") +
      `; each lasts ${r.timeWaitSeconds} s (TCP_TIMEWAIT_LEN, fixed in the kernel).`,
  );
  if (r.ephemeral) {
    out.push(
      `Ephemeral ports ${r.ephemeral.from}-${r.ephemeral.to} (${r.ephemeral.size}): ${r.ephemeral.inUse} local ports in use, ${r.ephemeral.timeWait} sockets in TIME_WAIT.`,
    );
  }
  out.push("Nothing was changed; the commands above are for you to run (as root) if you decide to.");
  return out.join("\n") + "\n";
}

export async function runTune(json: boolean, io: CliIO): Promise<number> {
  const r = await tuneReport(tableSourceNamed(io.env.ADDRINUSE_TABLE));
  io.stdout.write(json ? JSON.stringify(r, null, 2) + "\n" : formatTune(r));
  return 0;
}
