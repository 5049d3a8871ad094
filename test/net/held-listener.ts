/**
 * A listener in a child process whose event loop is held, so it accepts nothing: handshakes complete
 * in the kernel and wait in the accept queue (backlog + 1 of them); once it is full, further SYNs are
 * dropped and connects hang. `release()` lets the child close the listener in the same synchronous
 * stretch, still without accepting. Bounded: the child lets go by itself after 20 s.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CHILD = `
const net = require("net"), fs = require("fs");
const [go, backlog] = process.argv.slice(1);
const s = net.createServer(() => console.log("accepted"));
s.listen({ port: 0, host: "127.0.0.1", backlog: Number(backlog) }, () => {
  console.log(s.address().port);
  const until = Date.now() + 20000;
  while (!fs.existsSync(go) && Date.now() < until) {}
  s.close();
  console.log("closed");
  setTimeout(() => process.exit(0), 2000);
});
`;

export interface HeldListener {
  port: number;
  /** Lines the child printed after the port ("accepted", "closed"). */
  seen: string[];
  release(): void;
  dispose(): void;
}

export async function heldListener(backlog = 511): Promise<HeldListener> {
  const dir = mkdtempSync(join(tmpdir(), "ainet-held-"));
  const go = join(dir, "go");
  const child = spawn(process.execPath, ["-e", CHILD, go, String(backlog)], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! });
  const port = Number(((await once(lines, "line")) as [string])[0]);
  const seen: string[] = [];
  lines.on("line", (l: string) => seen.push(l));
  return {
    port,
    seen,
    release: () => writeFileSync(go, ""),
    dispose: () => {
      writeFileSync(go, "");
      child.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
