/**
 * Which container a process or a network namespace belongs to, from what the container runtimes
 * leave on disk; no runtime's API or CLI is called (none may be installed, and `docker` may hang).
 *
 *  - /proc/PID/cgroup names the container's scope: `docker-<id>.scope` or `/docker/<id>` (Docker),
 *    `libpod-<id>.scope` or `/libpod_parent/libpod-<id>` (Podman), `crio-<id>.scope` (CRI-O),
 *    `cri-containerd-<id>.scope` (containerd, Kubernetes).
 *  - Docker's state, `<data-root>/containers/<id>/config.v2.json` (data-root /var/lib/docker, or
 *    ~/.local/share/docker rootless; ADDRINUSE_DOCKER_ROOT overrides), gives the name, the image, the
 *    published ports, the container's addresses and its network namespace file (SandboxKey,
 *    /var/run/docker/netns/...), which is how a namespace with no process we can see is named.
 *  - docker-proxy's command line says which host port goes to which container address and port.
 * Pure parsers first, then the reads.
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export type Runtime = "docker" | "podman" | "crio" | "containerd";

export interface ContainerRef {
  runtime: Runtime;
  id: string;
}

export interface ContainerInfo extends ContainerRef {
  name: string | null;
  image: string | null;
  /** Container addresses, one per network. */
  addresses: string[];
  /** "HOSTIP:HOSTPORT -> PORT/tcp" for each published port. */
  published: { hostIp: string; hostPort: number; containerPort: number; proto: string }[];
  /** The network namespace file (Docker's SandboxKey), if any. */
  sandboxKey: string | null;
  pid: number | null;
}

const SCOPES: [RegExp, Runtime][] = [
  [/docker-([0-9a-f]{64})\.scope/, "docker"],
  [/\/docker\/([0-9a-f]{64})/, "docker"],
  [/libpod-(?:conmon-)?([0-9a-f]{64})/, "podman"],
  [/crio-(?:conmon-)?([0-9a-f]{64})/, "crio"],
  [/cri-containerd-([0-9a-f]{64})/, "containerd"],
];

/** The container named by a /proc/PID/cgroup text, or null (a host process). */
export function containerFromCgroup(text: string): ContainerRef | null {
  for (const [re, runtime] of SCOPES) {
    const m = re.exec(text);
    if (m) return { runtime, id: m[1]! };
  }
  return null;
}

/** docker-proxy's flags (-proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80). */
export function parseDockerProxy(argv: readonly string[]): { proto: string; hostIp: string; hostPort: number; containerIp: string; containerPort: number } | null {
  if (!/(^|\/)docker-proxy$/.test(argv[0] ?? "")) return null;
  const flag = (name: string) => {
    const i = argv.findIndex((a) => a === `-${name}` || a === `--${name}`);
    return i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith(`-${name}=`))?.split("=")[1];
  };
  const hostPort = Number(flag("host-port"));
  const containerPort = Number(flag("container-port"));
  const containerIp = flag("container-ip");
  if (!Number.isInteger(hostPort) || !Number.isInteger(containerPort) || !containerIp) return null;
  return { proto: flag("proto") ?? "tcp", hostIp: flag("host-ip") ?? "0.0.0.0", hostPort, containerIp, containerPort };
}

interface DockerConfig {
  ID?: string;
  Name?: string;
  Config?: { Image?: string };
  State?: { Pid?: number; Running?: boolean };
  NetworkSettings?: {
    SandboxKey?: string;
    IPAddress?: string;
    Networks?: Record<string, { IPAddress?: string; GlobalIPv6Address?: string } | null>;
    Ports?: Record<string, { HostIp?: string; HostPort?: string }[] | null> | null;
  };
}

/** A Docker config.v2.json into what `why` says about the container. */
export function parseDockerConfig(text: string): ContainerInfo | null {
  let c: DockerConfig;
  try {
    c = JSON.parse(text) as DockerConfig;
  } catch {
    return null;
  }
  if (typeof c !== "object" || c === null || typeof c.ID !== "string") return null;
  const ns = c.NetworkSettings ?? {};
  const addresses = new Set<string>();
  if (ns.IPAddress) addresses.add(ns.IPAddress);
  for (const n of Object.values(ns.Networks ?? {})) {
    if (n?.IPAddress) addresses.add(n.IPAddress);
    if (n?.GlobalIPv6Address) addresses.add(n.GlobalIPv6Address);
  }
  const published: ContainerInfo["published"] = [];
  for (const [key, binds] of Object.entries(ns.Ports ?? {})) {
    const [port, proto] = key.split("/");
    for (const b of binds ?? []) {
      const hostPort = Number(b.HostPort);
      if (Number.isInteger(hostPort)) published.push({ hostIp: b.HostIp || "0.0.0.0", hostPort, containerPort: Number(port), proto: proto ?? "tcp" });
    }
  }
  return {
    runtime: "docker",
    id: c.ID,
    name: typeof c.Name === "string" ? c.Name.replace(/^\//, "") : null,
    image: c.Config?.Image ?? null,
    addresses: [...addresses],
    published,
    sandboxKey: ns.SandboxKey || null,
    pid: typeof c.State?.Pid === "number" && c.State.Pid > 0 ? c.State.Pid : null,
  };
}

/** Docker data roots to look in: ADDRINUSE_DOCKER_ROOT, the system one, the rootless one of this user. */
export function dockerRoots(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.ADDRINUSE_DOCKER_ROOT) return env.ADDRINUSE_DOCKER_ROOT.split(":").filter(Boolean);
  return ["/var/lib/docker", join(env.XDG_DATA_HOME ?? join(homedir(), ".local", "share"), "docker")];
}

/** Every Docker container whose state we can read. At most `limit`, so a huge host stays bounded. */
export function readDockerContainers(roots: readonly string[], limit = 500): ContainerInfo[] {
  const out: ContainerInfo[] = [];
  for (const root of roots) {
    let ids: string[];
    try {
      ids = readdirSync(join(root, "containers"));
    } catch {
      continue;
    }
    for (const id of ids) {
      if (out.length >= limit) return out;
      try {
        const info = parseDockerConfig(readFileSync(join(root, "containers", id, "config.v2.json"), "utf8"));
        if (info) out.push(info);
      } catch {
        // Not a container directory, or not readable.
      }
    }
  }
  return out;
}

/** The container behind a process: its cgroup, then the runtime's state for the name and image. */
export function containerOfPid(pid: number, containers: readonly ContainerInfo[], procRoot = "/proc"): ContainerInfo | ContainerRef | null {
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/cgroup`, "latin1");
  } catch {
    return null;
  }
  const ref = containerFromCgroup(text);
  if (!ref) return null;
  return containers.find((c) => c.id === ref.id) ?? ref;
}

/** The container whose network namespace file has this inode (Docker's SandboxKey). */
export function containerOfNamespace(nsInode: number, containers: readonly ContainerInfo[]): ContainerInfo | null {
  for (const c of containers) {
    if (!c.sandboxKey) continue;
    try {
      if (statSync(c.sandboxKey).ino === nsInode) return c;
    } catch {
      // The sandbox file is gone (container stopped).
    }
  }
  return null;
}
