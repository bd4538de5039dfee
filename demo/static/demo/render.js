// Drawing the transcript: one <li> per entry of the view, drawn by the renderer of its `kind`
// (a new kind of entry, say a tool call card, gets a renderer here and a reducer in view.js).
// Answers carry the check the page computed (view.js `proof`) in a line under their text.

import { proof } from "./view.js";

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

const RENDERERS = {
  user(li, entry) {
    drawMessage(li, entry, "You");
  },
  assistant(li, entry) {
    drawMessage(li, entry, "Agent");
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
    (RENDERERS[entry.kind] || drawMessage)(li, entry, entry.kind);
    return li;
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
    this.pending.clear();
    this.dirty.clear();
  }
}
