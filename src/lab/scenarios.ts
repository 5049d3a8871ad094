/**
 * The eight ways a connection closes, each as a model script (what RFC 9293 plus Linux's rules say
 * will happen, src/lab/closing-model.ts) and a live run that makes the real kernel do it.
 *
 * Each live run follows its script phase by phase: it acts (close(), kill -9, link down...), then
 * `ctx.settle()` waits, bounded, until the kernel table shows the states the model holds at that
 * point, so the next action starts from a known place. The comparison itself is done afterwards on
 * everything the sampler saw, so a state the model does not predict is never hidden by the waiting.
 * Action labels are shared between script and run: they place the model's arrows on the real clock.
 */
import type { ScriptStep, Side } from "./closing-model.js";
import type { Agent } from "./agent.js";
import { run, type NamespaceSet } from "./netns.js";
import type { Sampler } from "./sampler.js";

export interface LabContext {
  sampler: Sampler;
  namespaces: NamespaceSet;
  /** Short and unique to this run; namespace and link names are `ailab<tag>...`. */
  tag: string;
  /** Starts an agent (in `netns` if given); stopped at teardown. */
  agent(netns?: string): Promise<Agent>;
  /** Records the action on the timeline, then does it. */
  act(label: string, side: Side | undefined, fn: () => Promise<unknown> | void): Promise<void>;
  /** Waits until both ends are in the states the model holds at the next settle point (bounded). */
  settle(): Promise<boolean>;
  /** Watches both ends of the connection client:clientPort <-> server:serverPort. */
  watchPair(o: { clientProc: string; serverProc: string; clientPort: number; serverPort: number }): void;
  /** Something the reader should know about how the run was made (shown under the timeline). */
  note(text: string): void;
}

export interface Scenario {
  id: number;
  slug: string;
  title: string;
  /** What the run shows, one or two sentences. */
  shows: string;
  /** null: loopback; otherwise what it needs. */
  needs: null | "netns" | "netns+tc";
  script: ScriptStep[];
  /**
   * Outcomes that are correct TCP but not what the scenario set out to force: reported under their
   * own status, never as a match (scenario 3 when one FIN arrived before the other was sent).
   */
  alternatives?: { status: "not-forced"; label: string; script: ScriptStep[] }[];
  /** Whether each end's program has let go of the socket at the end (decides which timer holds it). */
  orphan: Record<Side, boolean>;
  run(ctx: LabContext): Promise<void>;
}

const LO = "127.0.0.1";
const SELF = "/proc";

/** A server agent listening on loopback and a client agent connected to it, both watched. */
async function loopbackPair(ctx: LabContext, o: { paused?: boolean } = {}) {
  const server = await ctx.agent();
  const client = await ctx.agent();
  const { port } = await server.request("listen", { name: "conn", host: LO, paused: !!o.paused });
  const { localPort } = await client.request("connect", { name: "conn", host: LO, port });
  ctx.watchPair({ clientProc: SELF, serverProc: SELF, clientPort: localPort!, serverPort: port! });
  return { server, client };
}

const CLIENT_CLOSE = "client close()";
const SERVER_CLOSE = "server close()";
const PEER_VANISHES = "server's link down, then kill -9 server process";

/** Scenarios 1 and 2: `first` closes, every segment arrives, then the other end closes. */
function oneSideClosesFirst(id: number, first: Side, shows: string): Scenario {
  const second: Side = first === "client" ? "server" : "client";
  const label: Record<Side, string> = { client: CLIENT_CLOSE, server: SERVER_CLOSE };
  return {
    id,
    slug: `${first}-closes-first`,
    title: `${first} closes first`,
    shows,
    needs: null,
    script: [
      { do: "settle" },
      { do: "close", side: first, label: label[first] },
      { do: "deliver-all" },
      { do: "settle" },
      { do: "close", side: second, label: label[second] },
      { do: "deliver-all" },
    ],
    orphan: { client: true, server: true },
    async run(ctx) {
      const ends = await loopbackPair(ctx);
      await ctx.settle();
      await ctx.act(label[first], first, () => ends[first].request("close", { name: "conn" }));
      await ctx.settle();
      await ctx.act(label[second], second, () => ends[second].request("close", { name: "conn" }));
      await ctx.settle();
    },
  };
}

export const SCENARIOS: readonly Scenario[] = [
  oneSideClosesFirst(1, "client", "The end that sends the first FIN keeps TIME_WAIT; the server, closing second, passes LAST_ACK and is gone at once."),
  oneSideClosesFirst(2, "server", "Mirror of 1: the server keeps TIME_WAIT on its listening port's 4-tuple, the client keeps nothing."),
  {
    id: 3,
    slug: "simultaneous-close",
    title: "simultaneous close",
    shows:
      "Both FINs are in flight before either arrives: each end goes FIN_WAIT_1 -> CLOSING -> TIME_WAIT, so both keep TIME_WAIT. Forced by a tbf qdisc that holds packets on a namespace's loopback.",
    needs: "netns+tc",
    script: [
      { do: "settle" },
      { do: "close", side: "client", label: "both shutdown() in one tick" },
      { do: "close", side: "server", label: "both shutdown() in one tick" },
      { do: "deliver-all" },
    ],
    alternatives: [
      {
        status: "not-forced",
        label: "the client's FIN arrived before the server sent its own",
        script: [{ do: "settle" }, { do: "close", side: "client", label: "both shutdown() in one tick" }, { do: "deliver-all" }, { do: "close", side: "server" }, { do: "deliver-all" }],
      },
      {
        status: "not-forced",
        label: "the server's FIN arrived before the client sent its own",
        script: [{ do: "settle" }, { do: "close", side: "server", label: "both shutdown() in one tick" }, { do: "deliver-all" }, { do: "close", side: "client" }, { do: "deliver-all" }],
      },
    ],
    orphan: { client: true, server: true },
    async run(ctx) {
      const ns = await ctx.namespaces.add(`${ctx.tag}s`);
      const agent = await ctx.agent(ns);
      const { port } = await agent.request("listen", { name: "server", host: LO });
      const { localPort } = await agent.request("connect", { name: "client", host: LO, port });
      const proc = `/proc/${agent.pid}`;
      ctx.watchPair({ clientProc: proc, serverProc: proc, clientPort: localPort!, serverPort: port! });
      await ctx.settle();
      // A 1500-byte MTU lets tbf pass packets one by one; the filler empties its bucket, so both FINs
      // wait in the qdisc behind it and each is sent before the other is delivered.
      await run("ip", ["-n", ns, "link", "set", "lo", "mtu", "1500"]);
      await run("tc", ["-n", ns, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "400kbit", "burst", "3000", "limit", "200000"]);
      ctx.note(`namespace ${ns}, loopback shaped by tc tbf rate 400kbit burst 3000 (netem is not available on this kernel)`);
      await ctx.act("both shutdown() in one tick", undefined, () => agent.request("end-both", { names: ["client", "server"], filler: 12_000 }));
      await ctx.settle();
    },
  },
  {
    id: 4,
    slug: "listener-closed-with-pending",
    title: "listener closed with a connection pending",
    shows:
      "A connection the kernel accepted but the program never accept()ed is reset when the listener closes (Linux: inet_csk_listen_stop). No TIME_WAIT; the note's FIN_WAIT_1/TIME_WAIT is what BSD kernels did.",
    needs: null,
    script: [{ do: "settle" }, { do: "abort", side: "server", label: "listener close(), connection not accepted" }, { do: "deliver-all" }],
    orphan: { client: false, server: true },
    async run(ctx) {
      const server = await ctx.agent();
      const client = await ctx.agent();
      const { port } = await server.request("listen", { name: "conn", host: LO });
      await server.request("freeze");
      const { localPort } = await client.request("connect", { name: "conn", host: LO, port });
      ctx.watchPair({ clientProc: SELF, serverProc: SELF, clientPort: localPort!, serverPort: port! });
      await ctx.settle();
      await ctx.act("listener close(), connection not accepted", "server", () => server.request("close-listener"));
      await ctx.settle();
    },
  },
  {
    id: 5,
    slug: "killed-idle",
    title: "server process killed (SIGKILL), connection idle",
    shows:
      "The kernel closes a dead process's sockets with a FIN, so the killed end closed first: it keeps TIME_WAIT on the server's port, which a restarted server without SO_REUSEADDR cannot bind.",
    needs: null,
    script: [
      { do: "settle" },
      { do: "close", side: "server", label: "kill -9 server process" },
      { do: "deliver-all" },
      { do: "settle" },
      { do: "close", side: "client", label: CLIENT_CLOSE },
      { do: "deliver-all" },
    ],
    orphan: { client: true, server: true },
    async run(ctx) {
      const { server, client } = await loopbackPair(ctx);
      await ctx.settle();
      await ctx.act("kill -9 server process", "server", () => server.kill("SIGKILL"));
      await ctx.settle();
      await ctx.act(CLIENT_CLOSE, "client", () => client.request("close", { name: "conn" }));
      await ctx.settle();
    },
  },
  {
    id: 6,
    slug: "killed-unread-data",
    title: "server process killed with unread data",
    shows: "Closing a socket with unread data resets it (RFC 2525 §2.17): RST, no FIN, no TIME_WAIT on either end; the client sees ECONNRESET.",
    needs: null,
    script: [{ do: "settle" }, { do: "abort", side: "server", label: "kill -9 server process (data unread)" }, { do: "deliver-all" }],
    orphan: { client: false, server: true },
    async run(ctx) {
      const { server, client } = await loopbackPair(ctx, { paused: true });
      await ctx.settle();
      await ctx.act("client sends 1000 bytes the server never reads", "client", () => client.request("send", { name: "conn", bytes: 1000 }));
      const queued = await ctx.sampler.waitFor((s) => (s.lastRow("server")?.row?.rxQueue ?? 0) > 0, 5000);
      if (queued) ctx.note(`server receive queue held ${ctx.sampler.lastRow("server")?.row?.rxQueue} unread bytes when killed`);
      await ctx.act("kill -9 server process (data unread)", "server", () => server.kill("SIGKILL"));
      await ctx.settle();
    },
  },
  {
    id: 7,
    slug: "abortive-close",
    title: "abortive close (socket.resetAndDestroy())",
    shows: "SO_LINGER 0 then close(): the client sends RST and both ends are gone at once; nothing is held, and anything unsent is lost.",
    needs: null,
    script: [{ do: "settle" }, { do: "abort", side: "client", label: "client resetAndDestroy()" }, { do: "deliver-all" }],
    orphan: { client: true, server: false },
    async run(ctx) {
      const { client } = await loopbackPair(ctx);
      await ctx.settle();
      await ctx.act("client resetAndDestroy()", "client", () => client.request("reset", { name: "conn" }));
      await ctx.settle();
    },
  },
  {
    id: 8,
    slug: "peer-vanishes",
    title: "peer vanishes after our FIN",
    shows:
      "Our FIN is acknowledged, then the peer's link goes down and its process dies: we sit in FIN_WAIT_2 until tcp_fin_timeout, the peer in LAST_ACK, retrying a FIN nobody will receive until its retries run out.",
    needs: "netns",
    script: [
      { do: "settle" },
      { do: "close", side: "client", label: CLIENT_CLOSE },
      { do: "deliver-all" },
      { do: "settle" },
      { do: "cut", to: "client" },
      { do: "close", side: "server", label: PEER_VANISHES },
      { do: "deliver-all" },
    ],
    orphan: { client: true, server: true },
    async run(ctx) {
      const nsC = await ctx.namespaces.add(`${ctx.tag}c`);
      const nsS = await ctx.namespaces.add(`${ctx.tag}s`);
      const { devA, devB } = await ctx.namespaces.link(nsC, nsS, ctx.tag, "10.208.8.1", "10.208.8.2");
      await ctx.namespaces.assertRoute(nsC, "10.208.8.2", devA);
      await ctx.namespaces.assertRoute(nsS, "10.208.8.1", devB);
      const server = await ctx.agent(nsS);
      // The server agent is killed; this one stays in its namespace so its table can still be read.
      const witness = await ctx.agent(nsS);
      const client = await ctx.agent(nsC);
      const { port } = await server.request("listen", { name: "conn", host: "10.208.8.2" });
      const { localPort } = await client.request("connect", { name: "conn", host: "10.208.8.2", port });
      ctx.watchPair({ clientProc: `/proc/${client.pid}`, serverProc: `/proc/${witness.pid}`, clientPort: localPort!, serverPort: port! });
      ctx.note(`namespaces ${nsC} (client, 10.208.8.1) and ${nsS} (server, 10.208.8.2) joined by a veth pair`);
      await ctx.settle();
      await ctx.act(CLIENT_CLOSE, "client", () => client.request("close", { name: "conn" }));
      await ctx.settle();
      await ctx.act(PEER_VANISHES, "server", async () => {
        await run("ip", ["-n", nsS, "link", "set", devB, "down"]);
        server.kill("SIGKILL");
      });
      await ctx.settle();
    },
  },
];

export function scenarioById(id: number): Scenario | undefined {
  return SCENARIOS.find((s) => s.id === id);
}
