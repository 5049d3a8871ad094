/**
 * What each TIME_WAIT-related setting really does on Linux, and how to change it. Pure text; the
 * values are read by src/kernel/sysctl.ts. Facts checked against the kernel source: TIME_WAIT is
 * TCP_TIMEWAIT_LEN (60 s) and no sysctl changes it; tcp_fin_timeout bounds only orphaned FIN_WAIT_2.
 */

export interface Tunable {
  name: string;
  meaning: string;
  /** An example command that changes it (not run). */
  change: string;
}

export const TUNABLES: readonly Tunable[] = [
  {
    name: "net.ipv4.tcp_tw_reuse",
    meaning:
      "1 lets a new outgoing connection take a 4-tuple still in TIME_WAIT when timestamps prove it is newer (2 = loopback only, the default); it does nothing for servers and does not shorten TIME_WAIT.",
    change: "sysctl -w net.ipv4.tcp_tw_reuse=1",
  },
  {
    name: "net.ipv4.tcp_fin_timeout",
    meaning:
      "How long an orphaned FIN_WAIT_2 socket (closed by its program, waiting for the peer's FIN) is kept. It does NOT change TIME_WAIT, which Linux fixes at 60 s.",
    change: "sysctl -w net.ipv4.tcp_fin_timeout=30",
  },
  {
    name: "net.ipv4.tcp_max_tw_buckets",
    meaning:
      "Most TIME_WAIT sockets the system keeps; beyond it new ones are destroyed at once ('time wait bucket table overflow'), giving up the protection TIME_WAIT exists for.",
    change: "sysctl -w net.ipv4.tcp_max_tw_buckets=262144",
  },
  {
    name: "net.ipv4.ip_local_port_range",
    meaning:
      "The ephemeral ports outgoing connections take local ports from; each TIME_WAIT holds one for 60 s per destination, which is how busy clients run out.",
    change: 'sysctl -w net.ipv4.ip_local_port_range="15000 64999"',
  },
  {
    name: "net.ipv4.ip_local_reserved_ports",
    meaning:
      "Ports excluded from ephemeral allocation, so an outgoing connection never takes a port a server needs to bind later.",
    change: "sysctl -w net.ipv4.ip_local_reserved_ports=8080,9000-9010",
  },
  {
    name: "net.ipv4.tcp_timestamps",
    meaning:
      "TCP timestamps (RFC 7323). Needed by tcp_tw_reuse, and lets a client reconnect from its own TIME_WAIT port to the same peer; 0 turns both off.",
    change: "sysctl -w net.ipv4.tcp_timestamps=1",
  },
  {
    name: "net.ipv4.ip_unprivileged_port_start",
    meaning:
      "Ports below this need root or CAP_NET_BIND_SERVICE to bind; rsh clients rely on it (reserved ports 512-1023 prove root).",
    change: "sysctl -w net.ipv4.ip_unprivileged_port_start=1024",
  },
  {
    name: "net.core.somaxconn",
    meaning:
      "Upper bound on a listener's accept queue; connections waiting there when the listener closes are reset or left to close (see addrinuse lab 4).",
    change: "sysctl -w net.core.somaxconn=4096",
  },
];
