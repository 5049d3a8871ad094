/**
 * The algorithms the built-in ssh client offers: ssh2's, narrowed to what this Node's OpenSSL runs,
 * in our order, and what an ssh config's Ciphers, KexAlgorithms and MACs make of them. Pure but for
 * asking OpenSSL its cipher list once.
 */
import { getCiphers } from "node:crypto";
import { matchPattern } from "./known-hosts.js";
import type { SshHostConfig } from "./config.js";

/** Host key algorithms ssh2 supports, in its default preference (protocol/constants.js). */
export const HOST_KEY_ALGORITHMS = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

/** OpenSSL's name for each cipher: ssh2 refuses a cipher this Node's OpenSSL lacks (chacha20 in some builds). */
const CIPHER_OPENSSL: Record<string, string> = {
  "aes128-gcm@openssh.com": "aes-128-gcm",
  "aes256-gcm@openssh.com": "aes-256-gcm",
  "aes128-ctr": "aes-128-ctr",
  "aes192-ctr": "aes-192-ctr",
  "aes256-ctr": "aes-256-ctr",
  "chacha20-poly1305@openssh.com": "chacha20",
  "aes256-cbc": "aes-256-cbc",
  "aes192-cbc": "aes-192-cbc",
  "aes128-cbc": "aes-128-cbc",
  "3des-cbc": "des-ede3-cbc",
};
const OPENSSL_CIPHERS = new Set(getCiphers());
const usableCipher = (name: string): boolean => OPENSSL_CIPHERS.has(CIPHER_OPENSSL[name] ?? "");
/**
 * Algorithms offered, in order, when the ssh config names none (Ciphers, KexAlgorithms, MACs):
 * ssh2's own secure defaults, with the ciphers pinned to AES-GCM first. ssh2 runs AES-GCM on
 * Node's native crypto (one AEAD pass, no separate MAC); without its optional native binding (when
 * its install-time build fails) its chacha20-poly1305 computes Poly1305 in JavaScript, and with the
 * binding it would put chacha20 first on a CPU without AES instructions.
 * Compression stays ssh2's default, "none" first: a few bytes of `hostname` gain nothing from zlib.
 */
const CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr", "chacha20-poly1305@openssh.com"].filter(usableCipher);
const KEX = [
  "curve25519-sha256",
  "curve25519-sha256@libssh.org",
  "ecdh-sha2-nistp256",
  "ecdh-sha2-nistp384",
  "ecdh-sha2-nistp521",
  "diffie-hellman-group-exchange-sha256",
  "diffie-hellman-group14-sha256",
  "diffie-hellman-group15-sha512",
  "diffie-hellman-group16-sha512",
  "diffie-hellman-group17-sha512",
  "diffie-hellman-group18-sha512",
];
const MACS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1"];
/** What a config may ask for beyond the defaults (older algorithms ssh2 still speaks). */
const CIPHERS_SUPPORTED = [...CIPHERS, ...["aes256-cbc", "aes192-cbc", "aes128-cbc", "3des-cbc"].filter(usableCipher)];
const KEX_SUPPORTED = [...KEX, "diffie-hellman-group-exchange-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1"];
const MACS_SUPPORTED = [...MACS, "hmac-md5", "hmac-sha2-256-96", "hmac-sha2-512-96", "hmac-sha1-96", "hmac-md5-96"];

/**
 * The algorithm list an OpenSSH-style spec asks for (ssh_config(5) Ciphers, KexAlgorithms, MACs):
 * `a,b` is the list, `+a,b` appends, `-a,*b*` removes (wildcards allowed), `^a,b` puts first. Names
 * outside `supported` are dropped (they can only be OpenSSH's own). The defaults when there is no spec.
 */
export function applyAlgorithmSpec(defaults: readonly string[], supported: readonly string[], spec: string | null): string[] {
  if (spec === null || spec.trim() === "") return [...defaults];
  const op = spec[0] === "+" || spec[0] === "-" || spec[0] === "^" ? spec[0] : "";
  const names = spec
    .slice(op ? 1 : 0)
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
  const known = names.filter((n) => supported.includes(n));
  switch (op) {
    case "+":
      return [...new Set([...defaults, ...known])];
    case "^":
      return [...new Set([...known, ...defaults])];
    case "-":
      return defaults.filter((d) => !names.some((pat) => matchPattern(d, pat)));
    default:
      return [...new Set(known)];
  }
}

export interface Algorithms {
  cipher: string[];
  kex: string[];
  hmac: string[];
}

/** What the config's specs leave of our lists; the keyword that leaves nothing, if one does. */
export function algorithmsFor(specs: SshHostConfig["algorithms"]): { algorithms: Algorithms; empty: string | null } {
  const algorithms = {
    cipher: applyAlgorithmSpec(CIPHERS, CIPHERS_SUPPORTED, specs.ciphers),
    kex: applyAlgorithmSpec(KEX, KEX_SUPPORTED, specs.kex),
    hmac: applyAlgorithmSpec(MACS, MACS_SUPPORTED, specs.macs),
  };
  const lists = [["Ciphers", algorithms.cipher], ["KexAlgorithms", algorithms.kex], ["MACs", algorithms.hmac]] as const;
  return { algorithms, empty: lists.find(([, list]) => list.length === 0)?.[0] ?? null };
}

/** Host key algorithms in the order to offer: those known_hosts has keys for first (as OpenSSH does), then ours. */
export function hostKeyOrder(known: readonly string[]): string[] {
  return [...new Set([...known.filter((a) => HOST_KEY_ALGORITHMS.includes(a)), ...HOST_KEY_ALGORITHMS])];
}
