// The page's view of one conversation: the entries it shows (user messages, answers with their
// tool cards) and the seq they reflect, rebuilt only from the sequenced frames the client
// delivers. No DOM here: render.js draws entries, app.js wires the client to both.
//
// Adding an event type: write its reducer in APPLY (what it changes in the entries), give a new
// entry a `kind`, and a renderer for that kind in render.js.
//
// Tool calls and approvals (docs/protocol.md, "Tools and approvals") are cards on the answer of
// their run (`entry.tools`, in the order their calls first appeared), one card per `call_id`
// (a `once` call asked again after `outcome_unknown` is a new call, so a new card). Their
// events are sequenced like the text, so the cards are rebuilt from the log on every resume
// and reload, in any tab: a card waiting for approval is waiting on every page that shows it,
// until its `approval.resolved`. Their reducers only set fields, so applying one twice (the
// REST rebuild after `resumed: false`, then the same event live) changes nothing.
//
// The check a reader can see ("300 of 300 words, 0 gaps, 0 repeats") is computed here from what
// the page applied: every seq must be the one after the last (a higher one is a gap, an
// earlier or equal one a repeat), counted against the answers streaming at the time; the
// words are counted in the text the page built from the deltas and compared, at the end, with
// the completed text the server sent.

export const SAVE_EVERY_MS = 250; // the view is saved at most this often, and when the page goes away

/** Word count as a person counts them. @param {string} text */
export function words(text) {
  const trimmed = text.trim();
  return trimmed ? trimmed.split(/\s+/).length : 0;
}

// Frame type -> how it changes the view; returns the entry it created or changed (or null).
const APPLY = {
  "message.created"(view, frame) {
    if (frame.message?.role !== "user") return null;
    let entry = view.byMessage.get(frame.message.id);
    if (!entry) {
      entry = { kind: "user", id: frame.message.id, clientMsgId: frame.message.client_msg_id, text: frame.message.text };
      view.add(entry);
    }
    return entry;
  },
  "agent.started"(view, frame) {
    return view.run(frame.run_id);
  },
  "agent.delta"(view, frame) {
    const entry = view.run(frame.run_id);
    // Deltas come once each, in index order. A later index means the ones before it are gone
    // (the history was rebuilt over REST after `resumed: false`); an earlier one would be a
    // duplicate, which is shown as it is (and flagged) rather than hidden.
    if (frame.index > entry.nextIndex) entry.partial = true;
    if (frame.index < entry.nextIndex) entry.mismatch = true;
    entry.text += frame.text;
    entry.nextIndex = frame.index + 1;
    return entry;
  },
  "agent.completed"(view, frame) {
    const entry = view.run(frame.run_id);
    // The page shows what streamed in; it equals the completed text unless deltas were lost
    // to a rebuild (then the completed text replaces it) or a bug delivered some twice.
    entry.expectedWords = words(frame.message.text);
    entry.streamedWords = words(entry.text);
    if (entry.partial) entry.text = frame.message.text;
    else if (entry.text !== frame.message.text) entry.mismatch = true;
    entry.status = "done";
    entry.id = frame.message.id;
    view.byMessage.set(entry.id, entry);
    return entry;
  },
  "agent.failed"(view, frame) {
    const entry = view.run(frame.run_id);
    entry.status = frame.cancelled ? "stopped" : "failed";
    entry.error = frame.error;
    return entry;
  },
  // A call that needs a person's approval: nothing has happened yet.
  "approval.requested"(view, frame) {
    const { entry, card } = view.card(frame);
    card.tool = frame.tool;
    card.arguments = frame.arguments;
    card.reason = frame.reason;
    card.expiresAt = frame.expires_at;
    return entry;
  },
  "approval.resolved"(view, frame) {
    const { entry, card } = view.card(frame);
    card.decision = frame.decision;
    card.by = frame.by;
    return entry;
  },
  // The call starts now (after its approval, when it needed one).
  "agent.tool_call"(view, frame) {
    const { entry, card } = view.card(frame);
    card.tool = frame.tool;
    card.arguments = frame.arguments;
    card.effect = frame.effect;
    card.called = true;
    return entry;
  },
  "agent.tool_result"(view, frame) {
    const { entry, card } = view.card(frame);
    card.status = frame.status;
    if ("result" in frame) card.result = frame.result;
    if (frame.error !== undefined) card.error = frame.error;
    if (frame.truncated) card.truncated = true;
    return entry;
  },
};

const CARD_EVENTS = new Set(["approval.requested", "approval.resolved", "agent.tool_call", "agent.tool_result"]);

/**
 * Where a call stands, from the events applied: its result's `status` (`ok`, `error`,
 * `unknown`, `denied`) once it has one; before that `running` (called), `waiting` (for a
 * person's decision), `approved` (to be called now) or `denied` (denied or expired, its
 * `denied` result on its way). @param {any} card @returns {string}
 */
export function cardStatus(card) {
  if (card.status) return card.status;
  if (card.called) return "running";
  if (card.reason && !card.decision) return "waiting";
  return card.decision === "approved" ? "approved" : "denied";
}

export class View {
  /** @param {string} conversationId @param {Storage} storage */
  constructor(conversationId, storage) {
    this.storage = storage;
    this.key = `demo:view:${conversationId}`;
    let saved = {};
    try {
      saved = JSON.parse(storage.getItem(this.key) || "null") || {};
    } catch {
      saved = {};
    }
    this.conversationId = conversationId;
    this.lastSeq = Number.isInteger(saved.lastSeq) ? saved.lastSeq : null; // the seq the entries reflect
    this.entries = Array.isArray(saved.entries) ? saved.entries : [];
    this.byRun = new Map(this.entries.filter((e) => e.runId).map((e) => [e.runId, e]));
    this.byMessage = new Map(this.entries.filter((e) => e.id).map((e) => [e.id, e]));
    this.byCall = new Map(); // call_id -> {entry, card}
    for (const entry of this.entries) for (const card of entry.tools || []) this.byCall.set(card.callId, { entry, card });
    this.saveTimer = null;
  }

  /** Applies one sequenced frame; returns the entry it created or changed (or null). */
  apply(frame) {
    const { gaps, repeats } = this.#checkSeq(frame.seq);
    const reducer = APPLY[frame.type];
    const entry = reducer ? reducer(this, frame) : null;
    if (gaps || repeats) {
      // Counted against every answer that was streaming when it happened, and this frame's own.
      const hit = new Set(this.entries.filter((e) => e.kind === "assistant" && e.status === "streaming"));
      if (entry?.kind === "assistant") hit.add(entry);
      for (const e of hit) {
        e.gaps = (e.gaps || 0) + gaps;
        e.repeats = (e.repeats || 0) + repeats;
      }
    }
    if (this.lastSeq === null || frame.seq > this.lastSeq) this.lastSeq = frame.seq;
    this.scheduleSave();
    return entry;
  }

  #checkSeq(seq) {
    if (this.lastSeq === null) return { gaps: 0, repeats: 0 }; // a fresh view: the log starts where it starts
    if (seq <= this.lastSeq) return { gaps: 0, repeats: 1 };
    return { gaps: seq - this.lastSeq - 1, repeats: 0 };
  }

  /** After `resumed: false`: the history as the server keeps it (completed messages). */
  replaceWithMessages(messages, serverLastSeq) {
    this.entries = [];
    this.byRun.clear();
    this.byMessage.clear();
    this.byCall.clear();
    for (const m of messages) {
      const kind = m.role === "user" ? "user" : "assistant";
      this.add({ kind, id: m.id, clientMsgId: m.client_msg_id, text: m.text, status: "done", rebuilt: kind === "assistant" });
    }
    this.lastSeq = serverLastSeq;
    this.save();
  }

  /**
   * After `replaceWithMessages`: the cards of the calls whose events the log still keeps
   * (`events`: the kept sequenced events, oldest first), on the answers they belong to, so that
   * an approval still waiting can be answered from this page. A finished answer is found by
   * its message (its `agent.completed`); a run still going gets its answer entry now (its
   * next deltas continue it); the cards of a run that failed are left out with its answer.
   */
  restoreCards(events) {
    const ended = new Set();
    for (const f of events) {
      if (f.type === "agent.failed") ended.add(f.run_id);
      if (f.type !== "agent.completed") continue;
      ended.add(f.run_id);
      const entry = this.byMessage.get(f.message?.id);
      if (entry && !this.byRun.has(f.run_id)) {
        entry.runId = f.run_id;
        this.byRun.set(f.run_id, entry);
      }
    }
    for (const f of events) {
      if (CARD_EVENTS.has(f.type) && (this.byRun.has(f.run_id) || !ended.has(f.run_id))) APPLY[f.type](this, f);
    }
    this.save();
  }

  /** The card of a call (and the answer it is on), made when its first event arrives. */
  card(frame) {
    let found = this.byCall.get(frame.call_id);
    if (!found) {
      const entry = this.run(frame.run_id);
      const card = { callId: frame.call_id, runId: frame.run_id };
      (entry.tools ||= []).push(card);
      found = { entry, card };
      this.byCall.set(card.callId, found);
    }
    return found;
  }

  /** The cards waiting for a person's decision, oldest first. */
  waitingCards() {
    return [...this.byCall.values()].map((f) => f.card).filter((c) => cardStatus(c) === "waiting");
  }

  streamingRun() {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i];
      if (e.kind === "assistant" && e.status === "streaming") return e.runId;
    }
    return null;
  }

  /** The answer entry of a run, created when its first frame arrives. */
  run(runId) {
    let entry = this.byRun.get(runId);
    if (!entry) {
      entry = { kind: "assistant", runId, text: "", status: "streaming", nextIndex: 0, gaps: 0, repeats: 0 };
      this.byRun.set(runId, entry);
      this.add(entry);
    }
    return entry;
  }

  add(entry) {
    this.entries.push(entry);
    if (entry.id) this.byMessage.set(entry.id, entry);
  }

  scheduleSave() {
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => this.save(), SAVE_EVERY_MS);
  }

  /** Entries and the seq they reflect, in one write: they can never disagree. */
  save() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    try {
      this.storage.setItem(this.key, JSON.stringify({ lastSeq: this.lastSeq, entries: this.entries }));
    } catch {
      // storage full: after a reload the client replays from the last saved seq
    }
  }
}

/**
 * The check under an answer, from what the page applied: `{text, exact}`; `exact` is true only
 * for a finished answer whose streamed text is the server's completed text, with no gap and
 * no repeat. @param {any} entry
 */
export function proof(entry) {
  if (entry.rebuilt) return { text: "reloaded from the server's copy (the events were no longer kept)", exact: null };
  const got = words(entry.text);
  const counts = `${entry.gaps || 0} gap${entry.gaps === 1 ? "" : "s"}, ${entry.repeats || 0} repeat${entry.repeats === 1 ? "" : "s"}`;
  if (entry.status === "streaming") return { text: `${got} word${got === 1 ? "" : "s"} so far, ${counts}`, exact: null };
  if (entry.status === "done" && entry.partial && !entry.gaps && !entry.repeats) {
    // Deltas missing at the start, with no seq missing: the page rebuilt the history over REST
    // after `resumed: false` while this answer streamed (its start is in no kept event).
    return { text: `${got} of ${entry.expectedWords} words (the start was reloaded from the server's copy)`, exact: null };
  }
  if (entry.status === "done") {
    const streamed = entry.streamedWords ?? got; // what the page built, before a repair from the completed text
    const exact = !entry.mismatch && !entry.partial && !entry.gaps && !entry.repeats && streamed === entry.expectedWords;
    return { text: `${streamed} of ${entry.expectedWords} words, ${counts}`, exact };
  }
  return { text: `${entry.status} after ${got} word${got === 1 ? "" : "s"}, ${counts}`, exact: null };
}
