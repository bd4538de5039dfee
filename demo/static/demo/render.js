// Drawing the transcript: one <li> per entry of the view, drawn by the renderer of its `kind`
// (a new kind of entry gets a renderer here and a reducer in view.js). Answers carry their tool
// cards above their text (one per call, in call order) and the check the page computed
// (view.js `proof`) in a line under it.
//
// A card's Approve and Deny buttons carry `data-decision`; app.js answers their clicks (one
// listener on the transcript: no handler is set here, none inline). What the page knows of its
// own answer before the server's `approval.resolved` (sent, refused, not connected) is not in
// the log: it is kept here per call (`cardUi`) and drawn on the card.

import { cardStatus, proof } from "./view.js";

/** @param {HTMLElement} li @param {string} cls @param {string} tag */
function part(li, cls, tag = "span") {
  let el = li.querySelector(`:scope > .${cls}`);
  if (!el) {
    el = document.createElement(tag);
    el.className = cls;
    li.append(el);
  }
  return el;
}

/** Sets a text node's data only when it changed (a long answer is not re-laid out per event). */
function setText(el, text) {
  if (!el.firstChild) el.append(document.createTextNode(""));
  if (el.firstChild.data !== text) el.firstChild.data = text;
}

function drawMessage(li, entry, who) {
  setText(part(li, "who"), who);
  setText(part(li, "text", "p"), entry.text);
}

const STATUS_LABELS = {
  waiting: "waiting for approval",
  approved: "approved, calling…",
  running: "running…",
  ok: "ok",
  error: "error",
  unknown: "unknown",
  denied: "denied",
};

const EFFECT_HELP = {
  read: "read: no side effects; called again if its node dies",
  idempotent: "idempotent: called again with the same idempotency key if its node dies",
  local: "local: writes Tether's own database with its result: exactly once",
  once: "once: never called twice; a lost outcome is reported as unknown and asked about",
};

/** JSON on one line, cut for a card (the server's log has it whole). */
function brief(value, max = 300) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Who decided, in words: `by` is the answering socket's client_id, `timeout`, `admin` or `server`. */
export function decidedBy(by, selfId) {
  if (by === selfId) return "this tab";
  if (by === "admin") return "an administrator";
  if (by === "timeout") return "nobody in time";
  if (by === "server") return "the server (the run ended first)";
  return `another tab or device (${String(by).slice(0, 8)})`;
}

/** The decision line of a decided card ("Approved by this tab"). */
export function decisionText(card, selfId) {
  if (!card.decision) return "";
  if (card.decision === "expired") return `Expired at ${card.expiresAt ? clock(card.expiresAt) : "its deadline"}: nobody answered in time`;
  return `${card.decision === "approved" ? "Approved" : "Denied"} by ${decidedBy(card.by, selfId)}`;
}

/** Why a card waits: its reason and when its approval expires. */
function waitingText(card) {
  const why = card.reason === "outcome_unknown"
    ? "Its outcome was lost when its node stopped: it may or may not have happened. Call it again?"
    : "Needs your approval.";
  return card.expiresAt ? `${why} Expires at ${clock(card.expiresAt)}.` : why;
}

/** The outcome line: the result (cut), or why there is none. */
function resultText(card) {
  if (!card.status) return "";
  if (card.status === "ok") return card.truncated ? "result: too large to show here" : `result: ${brief(card.result)}`;
  const error = card.error ? String(card.error).slice(0, 300) : "";
  if (card.status === "denied") return error ? `not called: ${error}` : "not called";
  if (card.status === "unknown") return error || "outcome unknown: it may or may not have happened";
  return `error: ${error || "(no detail)"}`;
}

/** Shows or hides one line of a card, by class. */
function line(el, cls, text, tag = "p") {
  let node = el.querySelector(`:scope > .${cls}`);
  if (!text) {
    node?.remove();
    return;
  }
  if (!node) {
    node = document.createElement(tag);
    node.className = cls;
    insertInOrder(el, node);
  }
  setText(node, text);
}

// A card's parts keep this order whichever appears first.
const CARD_ORDER = ["tool-head", "tool-args", "tool-why", "tool-decision", "tool-actions", "tool-result", "tool-message"];

function insertInOrder(el, node) {
  const rank = (n) => CARD_ORDER.indexOf(n.classList[0]);
  const after = [...el.children].find((c) => rank(c) > rank(node));
  el.insertBefore(node, after || null);
}

function drawCard(el, card, ui, selfId) {
  const status = cardStatus(card);
  el.className = "tool-card";
  el.dataset.callId = card.callId;
  el.dataset.runId = card.runId;
  el.dataset.status = status;
  for (const [key, value] of [["tool", card.tool], ["effect", card.effect], ["reason", card.reason],
    ["decision", card.decision], ["by", card.by]]) {
    if (value) el.dataset[key] = value;
    else delete el.dataset[key];
  }
  let head = el.querySelector(":scope > .tool-head");
  if (!head) {
    head = document.createElement("div");
    head.className = "tool-head";
    const name = document.createElement("code");
    name.className = "tool-name";
    const effect = document.createElement("span");
    effect.className = "tool-effect";
    const badge = document.createElement("span");
    badge.className = "tool-status";
    head.append(name, effect, badge);
    insertInOrder(el, head);
  }
  setText(head.querySelector(".tool-name"), card.tool || "tool");
  const effect = head.querySelector(".tool-effect");
  setText(effect, card.effect || (card.reason ? "needs approval" : ""));
  effect.title = EFFECT_HELP[card.effect] || "";
  setText(head.querySelector(".tool-status"), STATUS_LABELS[status] || status);
  line(el, "tool-args", card.arguments === undefined ? "" : brief(card.arguments), "code");
  line(el, "tool-why", status === "waiting" ? waitingText(card) : card.reason === "outcome_unknown" && card.decision
    ? "Asked again after its outcome was lost." : "");
  line(el, "tool-decision", decisionText(card, selfId));
  line(el, "tool-result", resultText(card));
  drawActions(el, card, status, ui);
  // Always there, empty until the page has something to say, so that it is read out when it
  // changes (a live region, not role=status: the page has one status, the badge).
  let message = el.querySelector(":scope > .tool-message");
  if (!message) {
    message = document.createElement("p");
    message.className = "tool-message";
    message.setAttribute("aria-live", "polite");
    insertInOrder(el, message);
  }
  setText(message, ui?.message || "");
}

/** Approve and Deny while the card waits; disabled while the page's own answer is on its way. */
function drawActions(el, card, status, ui) {
  let actions = el.querySelector(":scope > .tool-actions");
  if (status !== "waiting") {
    actions?.remove();
    return;
  }
  if (!actions) {
    actions = document.createElement("div");
    actions.className = "tool-actions";
    actions.setAttribute("role", "group");
    actions.setAttribute("aria-label", `Decide on ${card.tool || "this call"}`);
    for (const [decision, label] of [["approve", "Approve"], ["deny", "Deny"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.decision = decision;
      button.className = decision === "approve" ? "approve" : "deny quiet";
      button.textContent = label;
      actions.append(button);
    }
    insertInOrder(el, actions);
  }
  for (const button of actions.querySelectorAll("button")) {
    /** @type {HTMLButtonElement} */ (button).disabled = Boolean(ui?.sending);
    button.setAttribute("aria-busy", String(ui?.sending === /** @type {HTMLElement} */ (button).dataset.decision));
  }
}

/** The answer's cards, above its text; one <li> per call, drawn in place (a focused button stays). */
function drawTools(li, entry, transcript) {
  if (!entry.tools?.length) return;
  let list = li.querySelector(":scope > .tools");
  if (!list) {
    list = document.createElement("ol");
    list.className = "tools";
    list.setAttribute("aria-label", "Tool calls");
    li.insertBefore(list, li.querySelector(":scope > .text"));
  }
  for (const card of entry.tools) {
    let el = transcript.cards.get(card.callId);
    if (!el || el.parentNode !== list) {
      el = document.createElement("li");
      transcript.cards.set(card.callId, el);
      list.append(el);
    }
    drawCard(el, card, transcript.cardUi.get(card.callId), transcript.selfId);
  }
}

const RENDERERS = {
  user(li, entry) {
    drawMessage(li, entry, "You");
  },
  assistant(li, entry, transcript) {
    drawMessage(li, entry, "Agent");
    drawTools(li, entry, transcript);
    li.dataset.status = entry.status;
    if (entry.mismatch) li.dataset.mismatch = "true";
    li.setAttribute("aria-busy", String(entry.status === "streaming"));
    const noteText = entry.status === "stopped" ? "stopped" : entry.status === "failed" ? `failed: ${entry.error}` : "";
    if (noteText) setText(part(li, "note"), noteText);
    drawProof(li, entry);
  },
};

/** The check line under an answer ("300 of 300 words, 0 gaps, 0 repeats"). */
export function drawProof(li, entry) {
  const { text, exact } = proof(entry);
  const line = part(li, "proof", "p");
  setText(line, text);
  if (exact === null) delete line.dataset.exact;
  else line.dataset.exact = String(exact);
}

export class Transcript {
  /** @param {HTMLElement} list the <ol> */
  constructor(list) {
    this.list = list;
    this.nodes = new Map(); // entry -> <li>
    this.pending = new Map(); // client_msg_id -> <li> of a message not yet in the log
    this.dirty = new Set(); // answers whose check line waits for the next frame
    this.cards = new Map(); // call_id -> <li> of its card
    this.cardUi = new Map(); // call_id -> {sending: "approve" | "deny" | null, message}: the page's own answer
    this.selfId = null; // this tab's client_id: "Approved by this tab"
  }

  /** Draws (or redraws) one entry; returns its <li>. */
  entry(entry) {
    let li = this.nodes.get(entry);
    if (!li) {
      li = document.createElement("li");
      this.nodes.set(entry, li);
      this.list.append(li);
    }
    li.className = `msg ${entry.kind}`;
    if (entry.id) li.dataset.messageId = entry.id;
    if (entry.runId) li.dataset.runId = entry.runId;
    if (entry.clientMsgId) li.dataset.clientMsgId = entry.clientMsgId;
    if (RENDERERS[entry.kind]) RENDERERS[entry.kind](li, entry, this);
    else drawMessage(li, entry, entry.kind);
    return li;
  }

  /**
   * What the page knows of its own answer to a card, drawn on it: `sending` (the decision sent,
   * its buttons disabled until the server's `approval.resolved` or an error) and `message` (a
   * short line: refused, not connected). @param {string} callId @param {object} patch
   */
  setCardUi(callId, patch) {
    const next = { ...(this.cardUi.get(callId) || {}), ...patch };
    this.cardUi.set(callId, next);
    const el = this.cards.get(callId);
    const li = el?.closest("li.msg");
    const entry = li && [...this.nodes].find(([, node]) => node === li)?.[0];
    if (entry) this.entry(entry);
  }

  /** The common case of a long answer: a delta appended to an answer already drawn. */
  appendDelta(entry, text) {
    const li = this.nodes.get(entry);
    if (!li) return this.entry(entry);
    li.querySelector(":scope > .text").firstChild.appendData(text);
    // The check counts the words of the whole answer: once per frame, not once per delta (a
    // 1,000-event replay would otherwise count them 1,000 times).
    if (this.dirty.size === 0) {
      requestAnimationFrame(() => {
        for (const e of this.dirty) {
          const node = this.nodes.get(e);
          if (node) drawProof(node, e);
        }
        this.dirty.clear();
      });
    }
    this.dirty.add(entry);
    return li;
  }

  /** After a reconnect: answers still marked as sending may have been lost with the socket. */
  clearSending() {
    for (const [callId, ui] of this.cardUi) if (ui.sending) this.setCardUi(callId, { sending: null });
  }

  /** A message handed to the client but not yet in the log: "sending…". */
  drawPending(clientMsgId, text) {
    if (this.pending.has(clientMsgId)) return;
    const li = document.createElement("li");
    li.className = "msg user pending";
    li.dataset.clientMsgId = clientMsgId;
    setText(part(li, "who"), "You");
    setText(part(li, "text", "p"), text);
    setText(part(li, "note"), "sending…");
    this.pending.set(clientMsgId, li);
    this.list.append(li);
  }

  undrawPending(clientMsgId) {
    this.pending.get(clientMsgId)?.remove();
    this.pending.delete(clientMsgId);
  }

  clear() {
    this.list.replaceChildren();
    this.nodes.clear();
    this.cards.clear();
    this.pending.clear();
    this.dirty.clear();
  }
}
