/**
 * One bind and connect from a chosen local port, and what its errno means for connectFrom: a port
 * the kernel refused (EADDRINUSE at bind, EADDRNOTAVAIL at connect: a live 4-tuple) is worth another
 * port, anything else ends the call with an AddrinuseError that says what to do. Apart from
 * connect-from.ts because it is the socket I/O; which port to try is decided there.
 */
import net from "node:net";
import { AddrinuseError } from "../errors.js";
import { formatEndpoint } from "../core/address.js";
import { MAX_TIMER_MS } from "../core/timer.js";
import type { ConnectFromOptions } from "./connect-from.js";

export type Attempt =
  | { ok: true; socket: net.Socket }
  | { ok: false; retry: true; errno: string }
  | { ok: false; retry: false; error: unknown };

/** One bind+connect from `localPort`. Never rejects. */
export function bindAndConnect(
  o: ConnectFromOptions,
  localPort: number,
  deadline: number | undefined,
): Promise<Attempt> {
  return new Promise((resolve) => {
    const where = formatEndpoint(o.host, o.port);
    const opts: net.NetConnectOpts = { host: o.host, port: o.port, localPort };
    if (o.localAddress !== undefined) opts.localAddress = o.localAddress;
    const socket = net.connect(opts);
    let timer: NodeJS.Timeout | undefined;
    const finish = (r: Attempt) => {
      if (timer) clearTimeout(timer);
      socket.removeListener("connect", onConnect);
      socket.removeListener("error", onError);
      o.signal?.removeEventListener("abort", onAbort);
      if (!r.ok) socket.destroy();
      resolve(r);
    };
    const onConnect = () => finish({ ok: true, socket });
    const onError = (err: NodeJS.ErrnoException) => {
      const code = err.code ?? "";
      if (code === "EADDRINUSE" || code === "EADDRNOTAVAIL") return finish({ ok: false, retry: true, errno: code });
      if (code === "EACCES" || code === "EPERM") {
        return finish({
          ok: false,
          retry: false,
          error: new AddrinuseError(
            "AIU_NOT_ROOT",
            `binding local port ${localPort} to reach ${where} needs root or CAP_NET_BIND_SERVICE (ports below 1024 are privileged); run as root or use localPorts above 1023`,
            { cause: err },
          ),
        });
      }
      if (code === "ECONNREFUSED") {
        return finish({
          ok: false,
          retry: false,
          error: new AddrinuseError("AIU_CONNECT_REFUSED", `connection to ${where} refused: nothing listens there`, { cause: err }),
        });
      }
      if (code === "ETIMEDOUT") {
        return finish({
          ok: false,
          retry: false,
          error: new AddrinuseError("AIU_CONNECT_TIMEOUT", `connecting to ${where} timed out in the kernel`, { cause: err }),
        });
      }
      finish({
        ok: false,
        retry: false,
        error: new AddrinuseError("AIU_CONNECT_FAILED", `connecting to ${where} from local port ${localPort} failed: ${err.message}`, { cause: err }),
      });
    };
    const onAbort = () => finish({ ok: false, retry: false, error: o.signal?.reason });
    socket.once("connect", onConnect);
    socket.once("error", onError);
    o.signal?.addEventListener("abort", onAbort, { once: true });
    if (deadline !== undefined) {
      timer = setTimeout(
        () =>
          finish({
            ok: false,
            retry: false,
            error: new AddrinuseError(
              "AIU_CONNECT_TIMEOUT",
              `connecting to ${where} took longer than connectTimeoutMs=${o.connectTimeoutMs}`,
            ),
          }),
        // Clamped: past 2^31-1 ms a Node timer fires at once (core/timer.ts).
        Math.min(MAX_TIMER_MS, Math.max(0, deadline - Date.now())),
      );
    }
  });
}
