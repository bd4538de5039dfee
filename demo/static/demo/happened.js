// "What just happened": one line after each fault, from the client's own account of the
// resume, for example "Dropped the connection: resumed on node web-2 after seq 41, 12 events
// replayed in 14 ms (0.3 s without a socket)". No DOM here: `show(text)` draws it.
//
// A fault is what the reader did (Drop connection, Go offline 5 s, a reload) or what happened
// to them (a node stopped, the network went): the first one since the last `ready` is the
// cause. At the next `connected` state the client says where it resumed (`node`), whether it
// resumed, and how many events the server replays before live ones (`replayCount`); the
// page counts those events as it applies them and stamps the time the last one arrived.

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

export class Happened {
  /** @param {(text: string) => void} show @param {() => number} [now] */
  constructor(show, now = () => performance.now()) {
    this.show = show;
    this.now = now;
    this.pending = null; // {cause, at}: the fault waiting for its resume
    this.replay = null; // {left, count, readyAt, text}: a resume whose replay is under way
    this.wasConnected = false;
  }

  /** The reader (or the page) caused a fault. The first one since the last resume is kept. */
  fault(cause, at = this.now()) {
    if (!this.pending) this.pending = { cause, at };
  }

  /** Every `state` event of the client; `afterSeq` is the seq the page's view reflects. */
  state(detail, afterSeq) {
    if (detail.state !== "connected") {
      if (this.wasConnected && detail.state !== "closed") this.fault("The connection was lost");
      if (detail.state !== "closed") this.replay = null;
      return;
    }
    this.wasConnected = true;
    const pending = this.pending;
    this.pending = null;
    if (!pending) return;
    const readyAt = this.now();
    const away = `(${seconds(readyAt - pending.at)} without a socket)`;
    if (!detail.resumed) {
      this.show(`${pending.cause}: the server no longer kept the events after seq ${afterSeq ?? 0}; ` +
        `the page reloaded the conversation from node ${detail.node} ${away}`);
      return;
    }
    const head = `${pending.cause}: resumed on node ${detail.node} after seq ${afterSeq ?? 0}`;
    if (!detail.replayCount) {
      this.show(`${head}, no events to replay ${away}`);
      return;
    }
    this.replay = { left: detail.replayCount, count: detail.replayCount, readyAt, head, away };
    this.show(`${head}, replaying ${plural(detail.replayCount, "event")}…`);
  }

  /** Every sequenced frame the page applied. */
  event() {
    const replay = this.replay;
    if (!replay) return;
    replay.left -= 1;
    if (replay.left > 0) return;
    this.replay = null;
    const took = Math.round(this.now() - replay.readyAt);
    this.show(`${replay.head}, ${plural(replay.count, "event")} replayed in ${took} ms ${replay.away}`);
  }
}
