/**
 * The keys the built-in ssh client may offer, and in what order: the agent's first (only those of
 * the configured identities under IdentitiesOnly, as OpenSSH does), then the identity files, never
 * a password or a prompt. A passphrase-protected file is skipped and said so (add it to ssh-agent).
 * Each file is read once per run, not once per host.
 */
import { createPrivateKey, sign as cryptoSign, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import ssh2 from "ssh2";
import type { AnyAuthMethod, AuthenticationType, IdentityCallback, NextAuthHandler, ParsedKey } from "ssh2";

const { OpenSSHAgent, utils } = ssh2;

export interface Identity {
  path: string;
  /** Usable private key, or null (missing, encrypted, unreadable). */
  key: ParsedKey | null;
  /** Public blob from the key or its .pub file, to pick agent keys under IdentitiesOnly. */
  publicBlob: Buffer | null;
  encrypted: boolean;
}

/** Agent keys narrowed to the configured identities (IdentitiesOnly yes), as OpenSSH does. */
class FilteredAgent extends OpenSSHAgent {
  constructor(
    socketPath: string,
    private readonly allowed: readonly Buffer[],
  ) {
    super(socketPath);
  }
  override getIdentities(cb: IdentityCallback<ParsedKey>): void {
    super.getIdentities((err, keys) => {
      if (err || !keys) return cb(err, keys);
      // ssh2's agent protocol yields parsed keys; other entry shapes cannot be matched and are dropped.
      cb(undefined, keys.filter((k) => "getPublicSSH" in k && this.allowed.some((a) => a.equals(k.getPublicSSH()))));
    });
  }
}

/**
 * The key, signing through a KeyObject made once. ssh2's sign() hands OpenSSL the key's PEM text on
 * every call, which parses it again each time: ~0.4 ms of CPU per host for an ed25519 key, where
 * the signature itself takes ~0.04 ms. ssh2 keeps the PEM under a symbol of its own
 * ("Private key PEM"); if a later ssh2 drops it, the key is left as it is (slower, same result).
 */
export function signWithKeyObject(key: ParsedKey): ParsedKey {
  const holder = key as unknown as Record<symbol, unknown>;
  const pemSym = Object.getOwnPropertySymbols(key).find((s) => s.description === "Private key PEM");
  const hashSym = Object.getOwnPropertySymbols(key).find((s) => s.description === "Hash Algorithm");
  const pem = pemSym ? holder[pemSym] : undefined;
  if (typeof pem !== "string") return key;
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(pem);
  } catch {
    return key;
  }
  const defaultAlgo = hashSym ? holder[hashSym] : undefined;
  // Same contract as ssh2's BaseKey.sign: the signature, or the Error (ssh2 reports it as such).
  // (@types/ssh2 says Buffer; the library's own code returns an Error and ssh2 checks for one.)
  const sign = (data: Buffer | string, algo?: string): Buffer | Error => {
    const a = algo || (typeof defaultAlgo === "string" ? defaultAlgo : null);
    try {
      return cryptoSign(a, typeof data === "string" ? Buffer.from(data) : data, keyObject);
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  };
  key.sign = sign as ParsedKey["sign"];
  return key;
}

function readOptional(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch {
    return null;
  }
}

/** The identity files of a run, each read and parsed once. */
export class Identities {
  private readonly byPath = new Map<string, Identity>();

  get(path: string): Identity {
    let id = this.byPath.get(path);
    if (id) return id;
    id = { path, key: null, publicBlob: null, encrypted: false };
    const data = readOptional(path);
    if (data) {
      const parsed = utils.parseKey(data);
      if (parsed instanceof Error) {
        id.encrypted = /passphrase|encrypted/i.test(parsed.message);
      } else {
        const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed;
        if (key.isPrivateKey()) {
          id.key = signWithKeyObject(key);
          id.publicBlob = key.getPublicSSH();
        }
      }
    }
    if (!id.publicBlob) {
      const pub = readOptional(`${path}.pub`);
      const parsed = pub ? utils.parseKey(pub) : null;
      if (parsed && !(parsed instanceof Error)) id.publicBlob = (Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed).getPublicSSH();
    }
    this.byPath.set(path, id);
    return id;
  }
}

export type AuthHandler = (authsLeft: AuthenticationType[] | null, partial: boolean | null, next: NextAuthHandler) => void;

/** One host's authentication: the methods to try in order, and what to say when none worked. */
export class HostAuth {
  private readonly tried: string[] = [];
  private serverMethods: string[] | null = null;
  private readonly skippedEncrypted: string[];
  /** What the agent said went wrong (ssh2's "agent" level errors). */
  agentProblem: string | null = null;
  readonly handler: AuthHandler;

  constructor(user: string, ids: readonly Identity[], identitiesOnly: boolean, agent: string) {
    const methods: { label: string; method: AnyAuthMethod }[] = [];
    if (agent) {
      if (identitiesOnly) {
        const allowed = ids.flatMap((i) => (i.publicBlob ? [i.publicBlob] : []));
        if (allowed.length) methods.push({ label: "agent", method: { type: "agent", username: user, agent: new FilteredAgent(agent, allowed) } });
      } else {
        methods.push({ label: "agent", method: { type: "agent", username: user, agent } });
      }
    }
    for (const id of ids) {
      if (id.key) methods.push({ label: id.path, method: { type: "publickey", username: user, key: id.key } });
    }
    this.skippedEncrypted = ids.filter((i) => i.encrypted && !i.key).map((i) => i.path);
    let i = 0;
    this.handler = (authsLeft, _partial, next) => {
      if (authsLeft) this.serverMethods = authsLeft;
      while (i < methods.length) {
        const m = methods[i++]!;
        if (authsLeft && !authsLeft.includes("publickey")) continue;
        this.tried.push(m.label);
        next(m.method);
        return;
      }
      (next as (m: AnyAuthMethod | false) => void)(false);
    };
  }

  failureMessage(target: string): string {
    const parts = [`${target}: permission denied`];
    if (this.serverMethods) parts[0] += ` (server accepts: ${this.serverMethods.join(",")})`;
    parts.push(this.tried.length ? `tried ${this.tried.join(", ")}` : "no key to offer (no agent, no readable identity file)");
    if (this.skippedEncrypted.length) parts.push(`skipped passphrase-protected ${this.skippedEncrypted.join(", ")} (add them to ssh-agent: we never prompt)`);
    if (this.agentProblem) parts.push(`agent: ${this.agentProblem}`);
    return parts.join("; ");
  }
}
