/**
 * A run's known_hosts files: each read once, whatever the number of hosts, and indexed per set of
 * files (KnownHostsIndex); a key accepted under accept-new is appended to the file and seen by the
 * hosts after it. The reading of the lines is known-hosts.ts's (no I/O there).
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { fsConfigReader } from "./config-files.js";
import { formatKnownHostsLine, KnownHostsIndex, parseKnownHosts, type KnownHostEntry } from "./known-hosts.js";

export class KnownHostsStore {
  private readonly byFile = new Map<string, KnownHostEntry[]>();
  private readonly indexes = new Map<string, { files: readonly string[]; index: KnownHostsIndex }>();

  /** The lines of these files that bear on `name` (see KnownHostsIndex.forHost). */
  entries(files: readonly string[], name: string): KnownHostEntry[] {
    const key = files.join("\0");
    let index = this.indexes.get(key);
    if (!index) {
      index = { files, index: new KnownHostsIndex() };
      for (const f of files) {
        let entries = this.byFile.get(f);
        if (!entries) {
          const text = fsConfigReader.read(f);
          entries = text ? parseKnownHosts(text, f) : [];
          this.byFile.set(f, entries);
        }
        index.index.add(entries);
      }
      this.indexes.set(key, index);
    }
    return index.index.forHost(name);
  }

  /** accept-new: file the key in `file` (the first user known_hosts file), and here for later hosts. */
  add(file: string, name: string, key: Buffer, hash: boolean): void {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const line = formatKnownHostsLine(name, key, hash);
    appendFileSync(file, line, { mode: 0o600 });
    const added = parseKnownHosts(line, file);
    const entries = this.byFile.get(file) ?? [];
    entries.push(...added);
    this.byFile.set(file, entries);
    for (const { files, index } of this.indexes.values()) if (files.includes(file)) index.add(added);
  }
}
