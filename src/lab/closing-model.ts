/**
 * RFC 9293's closing states as a pure model: which states each end of a connection goes through when
 * it closes, for every order in which FINs, ACKs and RSTs can cross.
 *
 * Theory of operation. `transition(state, event)` is the state diagram of RFC 9293 §3.3.2 with the
 * event processing of §3.10: a CLOSE call (§3.10.4) sends FIN, an ABORT call (§3.10.5) sends RST,
 * arriving segments are handled in the order §3.10.7.4 prescribes (ACK field before FIN bit, so a
 * FIN+ACK in FIN_WAIT_1 goes through FIN_WAIT_2 to TIME_WAIT), and the timers end what is left.
 * "ACK" here always means the acknowledgement of the other end's FIN; data is not modelled.
 *
 * `simulate(script)` runs two ends and the segments in flight between them (one queue per direction,
 * delivered in the order they were sent unless a step says otherwise), and records every transition,
 * which segment caused it and which segments it sent. A script is cut into phases by `settle` steps:
 * a state an end is in at a settle point (or at the end) is "held", i.e. it lasts until someone acts;
 * every other state is "transient" and on a real network lasts about one round trip, which is why the
 * lab may not see it on loopback.
 *
 * Linux adds three rules the RFC leaves to the implementation, and the lab reproduces them:
 *  - close() with unread data in the receive queue is an ABORT (RST), as RFC 2525 §2.17 recommends
 *    (net/ipv4/tcp.c __tcp_close: "data_was_unread"); so is close() with SO_LINGER 0 (Node's
 *    socket.resetAndDestroy()).
 *  - Closing a listener aborts each connection still waiting in its accept queue (inet_csk_listen_stop
 *    -> tcp_disconnect -> tcp_send_active_reset): RST, no TIME_WAIT. The note's "FIN_WAIT_1 is entered,
 *    and a TIME_WAIT is inevitable" is what BSD kernels did.
 *  - An orphaned FIN_WAIT_2 (its program has closed the socket) ends after net.ipv4.tcp_fin_timeout;
 *    the RFC has no such timer, and a FIN_WAIT_2 still owned by a program waits forever.
 * TIME_WAIT lasts TCP_TIMEWAIT_LEN = 60 s on Linux, fixed; RFC 9293 §3.4.2 asks for 2 MSL.
 */

export type ClosingState =
  | "LISTEN"
  | "ESTABLISHED"
  | "FIN_WAIT_1"
  | "FIN_WAIT_2"
  | "CLOSING"
  | "TIME_WAIT"
  | "CLOSE_WAIT"
  | "LAST_ACK"
  | "CLOSED";

export const CLOSING_STATES: readonly ClosingState[] = [
  "LISTEN",
  "ESTABLISHED",
  "FIN_WAIT_1",
  "FIN_WAIT_2",
  "CLOSING",
  "TIME_WAIT",
  "CLOSE_WAIT",
  "LAST_ACK",
  "CLOSED",
];

/** "ACK" acknowledges the other end's FIN. */
export type Segment = "FIN" | "ACK" | "RST";

export type TimerName = "time-wait" | "fin-wait-2" | "retransmit";

export type ClosingEvent =
  /** The CLOSE call: nothing more to send (close(), shutdown(SHUT_WR), the kernel closing a dead process's sockets). */
  | { kind: "close" }
  /** The ABORT call: drop everything and reset (SO_LINGER 0, close with unread data, listener closed with pending). */
  | { kind: "abort" }
  | { kind: "receive"; segment: Segment | "FIN+ACK" }
  | { kind: "timeout"; timer: TimerName };

export interface Transition {
  next: ClosingState;
  send: Segment[];
  /** Set when the event is not allowed in this state (e.g. close() twice): the state does not change. */
  error?: string;
}

const stay = (state: ClosingState, error?: string): Transition => (error ? { next: state, send: [], error } : { next: state, send: [] });

/** One step of the state diagram (RFC 9293 §3.3.2, event processing §3.10). */
export function transition(state: ClosingState, event: ClosingEvent): Transition {
  switch (event.kind) {
    case "close":
      // §3.10.4 CLOSE.
      if (state === "ESTABLISHED") return { next: "FIN_WAIT_1", send: ["FIN"] };
      if (state === "CLOSE_WAIT") return { next: "LAST_ACK", send: ["FIN"] };
      if (state === "LISTEN") return { next: "CLOSED", send: [] };
      if (state === "CLOSED") return stay(state, "connection does not exist");
      return stay(state, "connection closing");
    case "abort":
      // §3.10.5 ABORT: RST only from states where the other end may still think the connection is up.
      if (state === "CLOSED") return stay(state, "connection does not exist");
      if (state === "LISTEN" || state === "CLOSING" || state === "LAST_ACK" || state === "TIME_WAIT") {
        return { next: "CLOSED", send: [] };
      }
      return { next: "CLOSED", send: ["RST"] };
    case "receive":
      return receive(state, event.segment);
    case "timeout":
      if (event.timer === "time-wait" && state === "TIME_WAIT") return { next: "CLOSED", send: [] };
      if (event.timer === "fin-wait-2" && state === "FIN_WAIT_2") return { next: "CLOSED", send: [] };
      // The user timeout / retransmission limit (§3.8.3): a FIN never acknowledged.
      if (event.timer === "retransmit" && (state === "FIN_WAIT_1" || state === "CLOSING" || state === "LAST_ACK")) {
        return { next: "CLOSED", send: [] };
      }
      return stay(state, `no ${event.timer} timer runs in ${state}`);
  }
}

function receive(state: ClosingState, segment: Segment | "FIN+ACK"): Transition {
  if (segment === "FIN+ACK") {
    // §3.10.7.4: the ACK field is processed (fifth) before the FIN bit (eighth).
    const a = receive(state, "ACK");
    const f = receive(a.next, "FIN");
    return { next: f.next, send: [...a.send, ...f.send] };
  }
  if (state === "CLOSED") {
    // §3.10.7.1: anything but a RST to a connection that does not exist is answered with a RST.
    return segment === "RST" ? stay(state) : { next: "CLOSED", send: ["RST"] };
  }
  if (state === "LISTEN") return stay(state); // §3.10.7.2: FIN and RST to a listener are dropped.
  if (segment === "RST") {
    // §3.10.7.4 second: every synchronized state goes to CLOSED (Linux's default tcp_rfc1337=0 lets a RST end TIME_WAIT too).
    return { next: "CLOSED", send: [] };
  }
  if (segment === "ACK") {
    if (state === "FIN_WAIT_1") return { next: "FIN_WAIT_2", send: [] };
    if (state === "CLOSING") return { next: "TIME_WAIT", send: [] };
    if (state === "LAST_ACK") return { next: "CLOSED", send: [] };
    return stay(state);
  }
  // FIN (§3.10.7.4 eighth).
  switch (state) {
    case "ESTABLISHED":
      return { next: "CLOSE_WAIT", send: ["ACK"] };
    case "FIN_WAIT_1":
      // Our FIN is not acknowledged yet, so the other end sent its FIN before seeing ours.
      return { next: "CLOSING", send: ["ACK"] };
    case "FIN_WAIT_2":
      return { next: "TIME_WAIT", send: ["ACK"] };
    case "TIME_WAIT":
      // A retransmitted FIN: our ACK was lost. Acknowledge it again and restart the 2 MSL timer.
      return { next: "TIME_WAIT", send: ["ACK"] };
    default:
      return stay(state); // CLOSE_WAIT, CLOSING, LAST_ACK: a duplicate FIN.
  }
}

/** The Linux rule for what close() on a connected socket really calls (RFC 2525 §2.17, __tcp_close). */
export function linuxCloseCall(o: { unreadData: boolean; lingerZero: boolean }): "close" | "abort" {
  return o.unreadData || o.lingerZero ? "abort" : "close";
}

/** What keeps an end in a state, once the lab has stopped acting: the kernel timer, or a program. */
export interface Holder {
  timer: TimerName | "none";
  /** Who ends it: a kernel timer (with the setting that governs it) or the program that owns the socket. */
  endedBy: string;
}

export function heldBy(state: ClosingState, orphan: boolean): Holder {
  switch (state) {
    case "TIME_WAIT":
      return { timer: "time-wait", endedBy: "kernel timer: TCP_TIMEWAIT_LEN, 60 s, fixed on Linux (RFC 9293 asks for 2 MSL)" };
    case "FIN_WAIT_2":
      return orphan
        ? { timer: "fin-wait-2", endedBy: "kernel timer: net.ipv4.tcp_fin_timeout (the RFC has no such timer)" }
        : { timer: "none", endedBy: "the program's close(): a half-closed socket still owned waits for the peer's FIN forever" };
    case "CLOSE_WAIT":
      return { timer: "none", endedBy: "the program's close(): the kernel never ends CLOSE_WAIT on its own" };
    case "FIN_WAIT_1":
    case "CLOSING":
    case "LAST_ACK":
      // A FIN that could not leave at all (link down) is retried by the probe timer instead, on the same budget.
      return { timer: "retransmit", endedBy: "kernel retries of the FIN, backing off from 200 ms: net.ipv4.tcp_orphan_retries (0 means 8)" };
    case "ESTABLISHED":
      return { timer: "none", endedBy: "the programs (keepalive, if enabled, after net.ipv4.tcp_keepalive_time)" };
    default:
      return { timer: "none", endedBy: "nothing: the socket is gone" };
  }
}

/**
 * How long an orphan retransmitting its FIN into silence lasts: the RTO doubles from `rtoMs` for
 * `retries + 1` tries (net/ipv4/tcp_timer.c tcp_orphan_retries: 0 means 8 while the RTO is below its
 * maximum), each capped at TCP_RTO_MAX (120 s).
 */
export function orphanRetransmitBudgetMs(orphanRetries: number, rtoMs = 200): number {
  const retries = orphanRetries === 0 ? 8 : orphanRetries;
  let total = 0;
  for (let i = 0; i <= retries; i++) total += Math.min(rtoMs * 2 ** i, 120_000);
  return total;
}

// ---- Two ends and the wire between them ----

export type Side = "client" | "server";
export const SIDES: readonly Side[] = ["client", "server"];
export const other = (s: Side): Side => (s === "client" ? "server" : "client");

export type ScriptStep =
  | { do: "close"; side: Side; label?: string }
  | { do: "abort"; side: Side; label?: string }
  /** Deliver the oldest segment in flight towards `to`. */
  | { do: "deliver"; to: Side }
  /** Deliver everything in flight, oldest first, including what the deliveries send, until the wire is quiet. */
  | { do: "deliver-all" }
  /** Drop everything in flight towards `to`, and whatever is sent to it later (the link went down). */
  | { do: "cut"; to: Side }
  | { do: "timeout"; side: Side; timer: TimerName }
  /** A phase ends: the states the ends are in now last until the next step acts (the lab waits here). */
  | { do: "settle" };

export interface WireSegment {
  id: number;
  from: Side;
  segment: Segment;
  /** Index in `transitions` of the transition that sent it. */
  sentBy: number;
  /** Index of the transition it caused on arrival, if any; undefined while in flight or if it changed nothing. */
  receivedBy?: number;
  delivered: boolean;
  lost: boolean;
}

export interface ModelTransition {
  side: Side;
  from: ClosingState;
  to: ClosingState;
  /** "close()", "abort()", "FIN", "ACK", "RST", "timeout time-wait", ... */
  cause: string;
  /** The segment whose arrival caused this, by id. */
  segmentId?: number;
  /** Segments sent, by id. */
  sent: number[];
  /** Index of the script step that led to it. */
  step: number;
  /** A label from the script step (the lab's name for the action). */
  label?: string;
}

export interface PathEntry {
  state: ClosingState;
  /** Held: the end stays here until someone acts (a settle point or the end of the script). */
  held: boolean;
}

export interface ModelRun {
  transitions: ModelTransition[];
  segments: WireSegment[];
  paths: Record<Side, PathEntry[]>;
  final: Record<Side, ClosingState>;
  /** Errors from events not allowed in their state (a script bug, or a teaching case). */
  errors: string[];
}

const MAX_DELIVERIES = 64;

export function simulate(script: readonly ScriptStep[], initial: Record<Side, ClosingState> = { client: "ESTABLISHED", server: "ESTABLISHED" }): ModelRun {
  const state: Record<Side, ClosingState> = { ...initial };
  const paths: Record<Side, PathEntry[]> = { client: [{ state: initial.client, held: false }], server: [{ state: initial.server, held: false }] };
  const transitions: ModelTransition[] = [];
  const segments: WireSegment[] = [];
  const cut: Record<Side, boolean> = { client: false, server: false };
  const errors: string[] = [];

  const apply = (side: Side, event: ClosingEvent, cause: string, step: number, label?: string, segmentId?: number) => {
    const t = transition(state[side], event);
    if (t.error) errors.push(`${side} ${cause} in ${state[side]}: ${t.error}`);
    const index = transitions.length;
    const sent: number[] = [];
    for (const seg of t.send) {
      const id = segments.length;
      segments.push({ id, from: side, segment: seg, sentBy: index, delivered: false, lost: cut[other(side)] });
      sent.push(id);
    }
    if (t.next !== state[side] || sent.length > 0) {
      transitions.push({ side, from: state[side], to: t.next, cause, sent, step, ...(label ? { label } : {}), ...(segmentId !== undefined ? { segmentId } : {}) });
      if (segmentId !== undefined) segments[segmentId]!.receivedBy = index;
      if (t.next !== state[side]) paths[side].push({ state: t.next, held: false });
      state[side] = t.next;
    }
  };

  const inFlight = (to?: Side) => segments.filter((s) => !s.delivered && !s.lost && (to === undefined || s.from === other(to)));
  const deliver = (seg: WireSegment, step: number) => {
    seg.delivered = true;
    apply(other(seg.from), { kind: "receive", segment: seg.segment }, seg.segment, step, undefined, seg.id);
  };
  const markHeld = () => {
    for (const side of SIDES) paths[side][paths[side].length - 1]!.held = true;
  };

  script.forEach((s, step) => {
    switch (s.do) {
      case "close":
      case "abort":
        apply(s.side, { kind: s.do }, `${s.do}()`, step, s.label);
        break;
      case "deliver": {
        const seg = inFlight(s.to)[0];
        if (seg) deliver(seg, step);
        else errors.push(`step ${step}: nothing in flight towards ${s.to}`);
        break;
      }
      case "deliver-all":
        for (let n = 0; n < MAX_DELIVERIES; n++) {
          const seg = inFlight()[0];
          if (!seg) break;
          deliver(seg, step);
        }
        break;
      case "cut":
        cut[s.to] = true;
        for (const seg of inFlight(s.to)) seg.lost = true;
        break;
      case "timeout":
        apply(s.side, { kind: "timeout", timer: s.timer }, `timeout ${s.timer}`, step);
        break;
      case "settle":
        markHeld();
        break;
    }
  });
  markHeld();
  return { transitions, segments, paths, final: { ...state }, errors };
}

/** The states one end went through, as plain names (for display and comparison). */
export function pathStates(path: readonly PathEntry[]): ClosingState[] {
  return path.map((p) => p.state);
}

export type Verdict = { match: true } | { match: false; reason: string };

/**
 * Does an observed sequence of states fit the model's path? Every observed state must appear in the
 * model's order (a sampler can miss a transient state, never invent one), every held state must have
 * been seen, and the last observed state must be the model's last. A state observed that the model
 * does not have, or out of order, is a mismatch.
 */
export function comparePath(observed: readonly ClosingState[], model: readonly PathEntry[]): Verdict {
  let m = 0;
  for (const s of observed) {
    let found = -1;
    for (let k = m; k < model.length; k++) {
      if (model[k]!.state === s) {
        found = k;
        break;
      }
      if (model[k]!.held) return { match: false, reason: `saw ${s} before ${model[k]!.state}, which the model holds first` };
    }
    if (found < 0) return { match: false, reason: `saw ${s}, which the model does not reach here` };
    m = found + 1;
  }
  const last = observed[observed.length - 1];
  const modelLast = model[model.length - 1]!.state;
  if (last !== modelLast) return { match: false, reason: `ended in ${last ?? "nothing"}, the model ends in ${modelLast}` };
  return { match: true };
}
