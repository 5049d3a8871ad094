/**
 * systemd socket activation: PID 1 makes the listening socket from a `.socket` unit and hands it to
 * the service when a client comes. The service may be stopped or killed; PID 1 still holds the port,
 * and starts the service again at the next connection. So the unit to stop is the socket unit.
 *
 * The unit is found from `systemctl list-sockets` when systemd is PID 1 and systemctl answers, else
 * from the unit files' ListenStream= lines (ADDRINUSE_SYSTEMD_UNIT_PATH, colon-separated, overrides
 * the standard directories). Pure parsers first.
 */
import { readFileSync, readdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";

export interface SocketUnit {
  unit: string;
  listen: string;
  activates: string | null;
  /** Where it was found: "systemctl" or the unit file's path. */
  from: string;
}

function listenPort(listen: string): number | null {
  const m = /^(?:\d+|.*:(\d+))$/.exec(listen.trim());
  if (!m) return null;
  return Number(m[1] ?? listen.trim());
}

/** `systemctl list-sockets --all --no-legend --no-pager` text. */
export function parseListSockets(text: string, port: number): SocketUnit[] {
  const out: SocketUnit[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 2) continue;
    if (listenPort(f[0]!) === port) out.push({ unit: f[1]!, listen: f[0]!, activates: f[2] ?? null, from: "systemctl" });
  }
  return out;
}

/** A .socket unit file's ListenStream= lines that name `port`. */
export function parseSocketUnit(text: string, port: number): string[] {
  const out: string[] = [];
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const s = /^\[(.+)\]$/.exec(line);
    if (s) section = s[1]!;
    const m = /^ListenStream\s*=\s*(.+)$/.exec(line);
    if (section === "Socket" && m && listenPort(m[1]!) === port) out.push(m[1]!.trim());
  }
  return out;
}

const UNIT_DIRS = ["/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"];

export function findSocketUnits(port: number, env: NodeJS.ProcessEnv = process.env, procRoot = "/proc"): SocketUnit[] {
  let comm = "";
  try {
    comm = readFileSync(`${procRoot}/1/comm`, "latin1").trim();
  } catch {
    // hidden
  }
  if (comm === "systemd" && !env.ADDRINUSE_SYSTEMD_UNIT_PATH) {
    const r = spawnSync("systemctl", ["list-sockets", "--all", "--no-legend", "--no-pager"], { encoding: "utf8", timeout: 3000 });
    if (r.status === 0) {
      const units = parseListSockets(r.stdout, port);
      if (units.length) return units;
    }
  }
  const dirs = env.ADDRINUSE_SYSTEMD_UNIT_PATH ? env.ADDRINUSE_SYSTEMD_UNIT_PATH.split(":").filter(Boolean) : UNIT_DIRS;
  const out: SocketUnit[] = [];
  const seen = new Set<string>();
  for (const dir of dirs) {
    let files: string[];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith(".socket"));
    } catch {
      continue;
    }
    for (const f of files) {
      if (seen.has(f)) continue; // the first directory wins, as in systemd's search path
      seen.add(f);
      try {
        for (const listen of parseSocketUnit(readFileSync(join(dir, f), "utf8"), port)) {
          out.push({ unit: f, listen, activates: f.replace(/\.socket$/, ".service"), from: join(dir, f) });
        }
      } catch {
        // unreadable
      }
    }
  }
  return out;
}
