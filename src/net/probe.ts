/**
 * Can this port be bound right now? Answered by binding it, the way a Node server would (libuv sets
 * SO_REUSEADDR), and closing at once. A listener that never accepted leaves nothing behind, so unlike
 * a connect probe (wait-on, wait-port) this leaves no TIME_WAIT anywhere.
 */
import { createServer } from "node:net";

export type BindResult = { ok: true } | { ok: false; errno: string; message: string };

export function tryBind(port: number, host?: string): Promise<BindResult> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", (err: NodeJS.ErrnoException) => {
      resolve({ ok: false, errno: err.code ?? "UNKNOWN", message: err.message });
    });
    const opts = host === undefined ? { port, exclusive: true } : { port, host, exclusive: true };
    server.listen(opts, () => {
      server.close(() => resolve({ ok: true }));
    });
  });
}
