/**
 * What an operator's terminal really shows: bin/multi-rsh.js in a tmux pane (a real pty and a
 * terminal emulator), hostile rsh hosts on loopback, and the screen read back with capture-pane.
 * Escaped, no host can set the pane's title, and every line on screen starts with a true host
 * prefix; with --raw the same hosts do set it (so the check can fail).
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startHostileRsh, type HostileRsh } from "../helpers/hostile-rsh.js";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? "rsh connects from reserved ports: needs root" : !existsSync("/usr/bin/tmux") ? "no tmux (apt-get install tmux)" : false;

const HOSTS = ["127.13.8.10", "127.13.8.11", "127.13.8.12"];
const SENT: Record<string, string> = {
  "127.13.8.10": "title\x1b]2;OWNED-TITLE\x07 set\n\x1b]52;c;cm0gLXJmIH4K\x07clip\n",
  "127.13.8.11": "fine\r127.0.0.99: forged\n\x1b[2A\x1b[2Kup\n",
  "127.13.8.12": "hidden \x1b[8mSECRET\x1b[0m \xff\xfe end\n",
};
let hostile: HostileRsh;
let dir: string;
before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "aiu-tmux-"));
  hostile = await startHostileRsh(HOSTS, (s) => {
    s.socket.write(Buffer.from(SENT[s.host]!, "latin1"));
    s.exit(0);
  });
});
after(async () => {
  await hostile?.close();
  if (dir) {
    spawnSync("tmux", ["-S", join(dir, "sock"), "kill-server"], { stdio: "ignore" });
    rmSync(dir, { recursive: true, force: true });
  }
});

async function inTmux(extra: string[]): Promise<{ screen: string; title: string }> {
  const sock = join(dir, "sock");
  const cmd = [process.execPath, join(process.cwd(), "bin/multi-rsh.js"), "--port", String(hostile.port), "-w", HOSTS.join(","), ...extra, "x"]
    .map((a) => `'${a}'`)
    .join(" ");
  const tmux = (...a: string[]) => execFileSync("tmux", ["-S", sock, ...a], { encoding: "utf8" });
  tmux("new-session", "-d", "-s", "t", "-x", "160", "-y", "40", `NO_PROGRESS=1 ${cmd}; echo DONE-$?; sleep 60`);
  tmux("set-option", "-t", "t", "allow-rename", "on");
  try {
    // Bounded: until the command has printed DONE, at most 30 s.
    const deadline = Date.now() + 30_000;
    let screen = "";
    while (Date.now() < deadline) {
      screen = tmux("capture-pane", "-p", "-t", "t", "-S", "-40");
      if (/DONE-\d/.test(screen)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const title = tmux("display-message", "-p", "-t", "t", "#{pane_title}").trim();
    return { screen, title };
  } finally {
    tmux("kill-session", "-t", "t");
  }
}

test("on a terminal: escapes shown, not obeyed; every line begins with its true host", { skip, timeout: 60_000 }, async () => {
  const { screen, title } = await inTmux([]);
  assert.match(screen, /DONE-0/);
  assert.notEqual(title, "OWNED-TITLE");
  const lines = screen.split("\n").filter((l) => l.trim() && !/^DONE-|^multi-rsh:|^TIME_WAIT ledger/.test(l));
  assert.equal(lines.length, 5, screen);
  for (const l of lines) assert.ok(HOSTS.some((h) => l.startsWith(`${h}: `)), `line without its host: ${JSON.stringify(l)}`);
  assert.ok(!screen.split("\n").some((l) => l.startsWith("127.0.0.99")), "forged line at the start of a screen line");
  assert.match(screen, /127\.13\.8\.11: fine\^M127\.0\.0\.99: forged/);
  assert.match(screen, /127\.13\.8\.10: title\^\[\]2;OWNED-TITLE\^G set/);
  assert.match(screen, /SECRET/); // ESC[8m would hide it
  assert.match(screen, /\\xff\\xfe end/);
  assert.ok(!/[\u0000-\u0008\u000b-\u001f\u007f]/.test(screen), "a raw control byte on screen");
});

test("--raw trusts the hosts: the same output sets the pane's title (the check above can fail)", { skip, timeout: 60_000 }, async () => {
  const { title } = await inTmux(["--raw"]);
  assert.equal(title, "OWNED-TITLE");
});
