// The demo page (see README.md, "Demo page"). Everything that touches the protocol goes
// through the JavaScript client (clients/js); this file only keeps a view of the
// conversation and draws it. One file of ~500 lines because the page is served with no build
// step and its parts (sign-in, conversation list, transcript, fault buttons) share one view.
//
// What survives a reload (sessionStorage, per tab):
//   demo:auth            the signed-in user's token pair (renewed through tokenProvider)
//   demo:view:<id>       the rendered transcript and the seq it reflects (`lastSeq`)
//   tether:*             the client's own state: client_id, conversation, outbox
// The page hands the client `lastSeq` of its saved view, so that the client resumes exactly
// after what the page shows: nothing missing, nothing twice, whenever the reload happens.

import {
  HttpError,
  TetherClient,
  createConversation,
  fetchNodes,
  listConversations,
  obtainToken,
  refreshAccess,
  signOut as revokeSignIn,
} from "tether-client";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const storage = window.sessionStorage;
const AUTH_KEY = "demo:auth";
const HASH_PREFIX = "#c=";
const SAVE_EVERY_MS = 250; // the view is saved at most this often, and when the page goes away
const origin = window.location.origin;
const wsOrigin = origin.replace(/^http/, "ws");

function readJson(key) {
  try {
    return JSON.parse(storage.getItem(key) || "null");
  } catch {
    return null;
  }
}

// --- auth -----------------------------------------------------------------------------------

let auth = readJson(AUTH_KEY); // {username, access, refresh} or null
let renewal = null; // the refresh under way: one at a time (the server rotates refresh tokens)

function saveAuth(next) {
  auth = next;
  if (next) storage.setItem(AUTH_KEY, JSON.stringify(next));
  else storage.removeItem(AUTH_KEY);
}

/** A new access token from the refresh token; signs out when the refresh is refused. */
function freshAccess() {
  if (!renewal) {
    const current = auth;
    renewal = refreshAccess({ baseUrl: origin, refresh: current.refresh })
      .then((pair) => {
        saveAuth({ ...current, access: pair.access, refresh: pair.refresh });
        return pair.access;
      })
      .catch((err) => {
        if (err instanceof HttpError && err.status === 401) signOut("Your session has expired: sign in again.");
        throw err;
      })
      .finally(() => {
        renewal = null;
      });
  }
  return renewal;
}

/** Calls a REST helper with the access token, once more with a fresh one after a 401. */
async function withAccess(call) {
  try {
    return await call(auth.access);
  } catch (err) {
    if (!(err instanceof HttpError && err.status === 401)) throw err;
    return call(await freshAccess());
  }
}

// --- the view of one conversation ---------------------------------------------------------

class View {
  constructor(conversationId) {
    const saved = readJson(`demo:view:${conversationId}`) || {};
    this.conversationId = conversationId;
    this.lastSeq = Number.isInteger(saved.lastSeq) ? saved.lastSeq : null; // the seq the entries reflect
    this.entries = Array.isArray(saved.entries) ? saved.entries : [];
    this.byRun = new Map(this.entries.filter((e) => e.runId).map((e) => [e.runId, e]));
    this.byMessage = new Map(this.entries.filter((e) => e.id).map((e) => [e.id, e]));
    this.saveTimer = null;
  }

  /** Applies one sequenced frame; returns the entry it created or changed (or null). */
  apply(frame) {
    let entry = null;
    if (frame.type === "message.created" && frame.message?.role === "user") {
      entry = this.byMessage.get(frame.message.id);
      if (!entry) {
        entry = { kind: "user", id: frame.message.id, clientMsgId: frame.message.client_msg_id, text: frame.message.text };
        this.#add(entry);
      }
    } else if (frame.type === "agent.started" || frame.type === "agent.delta") {
      entry = this.#run(frame.run_id);
      if (frame.type === "agent.delta") {
        // Deltas come once each, in index order. A later index means the ones before it are
        // gone (the history was rebuilt over REST after `resumed: false`); an earlier one
        // would be a duplicate, which is shown as it is (and flagged) rather than hidden.
        if (frame.index > entry.nextIndex) entry.partial = true;
        if (frame.index < entry.nextIndex) entry.mismatch = true;
        entry.text += frame.text;
        entry.nextIndex = frame.index + 1;
      }
    } else if (frame.type === "agent.completed") {
      entry = this.#run(frame.run_id);
      // The page shows what streamed in; it equals the completed text unless deltas were lost
      // to a rebuild (then the completed text replaces it) or a bug delivered some twice.
      if (entry.partial) entry.text = frame.message.text;
      else if (entry.text !== frame.message.text) entry.mismatch = true;
      entry.status = "done";
      entry.id = frame.message.id;
      this.byMessage.set(entry.id, entry);
    } else if (frame.type === "agent.failed") {
      entry = this.#run(frame.run_id);
      entry.status = frame.cancelled ? "stopped" : "failed";
      entry.error = frame.error;
    }
    this.lastSeq = frame.seq;
    this.scheduleSave();
    return entry;
  }

  /** After `resumed: false`: the history as the server keeps it (completed messages). */
  replaceWithMessages(messages, serverLastSeq) {
    this.entries = [];
    this.byRun.clear();
    this.byMessage.clear();
    for (const m of messages) {
      this.#add({ kind: m.role === "user" ? "user" : "assistant", id: m.id, clientMsgId: m.client_msg_id, text: m.text, status: "done" });
    }
    this.lastSeq = serverLastSeq;
    this.save();
  }

  streamingRun() {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i];
      if (e.kind === "assistant" && e.status === "streaming") return e.runId;
    }
    return null;
  }

  #run(runId) {
    let entry = this.byRun.get(runId);
    if (!entry) {
      entry = { kind: "assistant", runId, text: "", status: "streaming", nextIndex: 0 };
      this.byRun.set(runId, entry);
      this.#add(entry);
    }
    return entry;
  }

  #add(entry) {
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
      storage.setItem(`demo:view:${this.conversationId}`, JSON.stringify({ lastSeq: this.lastSeq, entries: this.entries }));
    } catch {
      // storage full: after a reload the client replays from the last saved seq
    }
  }
}

// --- drawing ----------------------------------------------------------------------------------

const transcript = $("transcript");
const nodes = new Map(); // entry -> <li>
const pending = new Map(); // client_msg_id -> <li> of a message not yet in the log

function entryNode(entry) {
  let li = nodes.get(entry);
  if (!li) {
    li = document.createElement("li");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = entry.kind === "user" ? "You" : "Agent";
    const text = document.createElement("p");
    text.className = "text";
    li.append(who, text);
    nodes.set(entry, li);
    transcript.append(li);
  }
  li.className = `msg ${entry.kind}`;
  if (entry.id) li.dataset.messageId = entry.id;
  if (entry.runId) li.dataset.runId = entry.runId;
  if (entry.clientMsgId) li.dataset.clientMsgId = entry.clientMsgId;
  if (entry.kind === "assistant") {
    li.dataset.status = entry.status;
    if (entry.mismatch) li.dataset.mismatch = "true";
    li.setAttribute("aria-busy", String(entry.status === "streaming"));
  }
  const text = li.querySelector(".text");
  if (!text.firstChild) text.append(document.createTextNode(""));
  if (text.firstChild.data !== entry.text) text.firstChild.data = entry.text;
  let note = li.querySelector(".note");
  const noteText = entry.status === "stopped" ? "stopped" : entry.status === "failed" ? `failed: ${entry.error}` : "";
  if (noteText && !note) {
    note = document.createElement("span");
    note.className = "note";
    li.append(note);
  }
  if (note) note.textContent = noteText;
  return li;
}

function drawPending(clientMsgId, text) {
  if (pending.has(clientMsgId) || view.entries.some((e) => e.clientMsgId === clientMsgId)) return;
  const li = document.createElement("li");
  li.className = "msg user pending";
  li.dataset.clientMsgId = clientMsgId;
  li.innerHTML = '<span class="who">You</span><p class="text"></p><span class="note">sending…</span>';
  li.querySelector(".text").textContent = text;
  pending.set(clientMsgId, li);
  transcript.append(li);
}

function undrawPending(clientMsgId) {
  pending.get(clientMsgId)?.remove();
  pending.delete(clientMsgId);
}

function redraw() {
  transcript.replaceChildren();
  nodes.clear();
  pending.clear();
  for (const entry of view.entries) entryNode(entry);
  for (const m of client?.pendingMessages || []) drawPending(m.clientMsgId, m.text);
  updateStop();
}

// Follow the newest text while the reader is at the bottom. Measuring the transcript forces a
// layout, so it happens once per frame, never once per event (a 1,000-event replay would
// otherwise lay the page out 1,000 times).
let stickToBottom = true;
let scrollQueued = false;
transcript.addEventListener("scroll", () => {
  stickToBottom = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 120;
});

function scrollDown() {
  if (scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    if (stickToBottom) transcript.scrollTop = transcript.scrollHeight;
  });
}

function updateStop() {
  $("stop").hidden = view?.streamingRun() == null;
}

function showBadge(detail) {
  const badge = $("badge");
  badge.dataset.state = detail.state;
  badge.dataset.node = detail.node || "";
  const node = detail.node ? ` · node ${detail.node}` : "";
  const labels = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: `Connected${node}`,
    reconnecting: detail.delayMs ? `Reconnecting in ${(detail.delayMs / 1000).toFixed(1)} s${node}` : `Reconnecting…${node}`,
    offline: "Offline",
    closed: `Disconnected${detail.reason ? `: ${detail.reason}` : ""}`,
  };
  badge.textContent = labels[detail.state] || detail.state;
}

function notice(text) {
  $("notice").textContent = text;
}

// --- the conversation ---------------------------------------------------------------------

let client = null;
let view = null;

async function endpointsFor() {
  // Every live node, this page's own first; the client fails over along this list and asks
  // discovery again when all of them failed.
  try {
    const found = await withAccess((access) => fetchNodes({ discoveryUrl: `${origin}/api/realtime/nodes/`, access }));
    const urls = found.map((n) => n.wsUrl);
    const own = urls.filter((u) => u.startsWith(wsOrigin));
    return own.length ? [...own, ...urls.filter((u) => !u.startsWith(wsOrigin))] : urls.length ? urls : [`${wsOrigin}/ws/v1/`];
  } catch {
    return [`${wsOrigin}/ws/v1/`];
  }
}

async function openConversation(id) {
  if (client) {
    view?.save();
    await client.close();
    client = null;
  }
  notice("");
  history.replaceState(null, "", `${HASH_PREFIX}${id}`);
  view = new View(id);
  markCurrent(id);
  const endpoints = await endpointsFor();
  client = new TetherClient({
    endpoints,
    discoveryUrl: `${origin}/api/realtime/nodes/`,
    httpBase: origin,
    token: auth.access,
    tokenProvider: freshAccess,
    conversationId: id,
    lastSeq: view.lastSeq, // resume exactly after what the page shows
  });
  window.tether = client; // for the browser tests and the curious
  redraw();
  transcript.scrollTop = transcript.scrollHeight;
  client.addEventListener("state", (e) => showBadge(e.detail));
  let held = null; // events that arrive while the page reloads the history over REST
  const show = (frame) => {
    const li = frame.type === "agent.delta" ? nodes.get(view.byRun.get(frame.run_id)) : null;
    const entry = view.apply(frame);
    // The common case, a delta for an answer already drawn, appends to its text: no re-render.
    if (li && !entry.mismatch && !entry.partial) li.querySelector(".text").firstChild.appendData(frame.text);
    else if (entry) entryNode(entry);
    if (entry?.kind === "user" && entry.clientMsgId) undrawPending(entry.clientMsgId);
    if (frame.type !== "agent.delta") updateStop();
  };
  client.addEventListener("event", (e) => {
    if (held) held.push(e.detail);
    else show(e.detail);
    scrollDown();
  });
  client.addEventListener("rejected", (e) => {
    undrawPending(e.detail.clientMsgId);
    notice(`Message not sent (${e.detail.code}): ${e.detail.detail}`);
  });
  client.addEventListener("servererror", (e) => {
    if (e.detail.code === "rate_limited") notice(`Slow down: retrying in ${Math.ceil((e.detail.retryAfterMs || 1000) / 1000)} s`);
  });
  client.addEventListener("reload", async (e) => {
    // The server no longer keeps the events after what this page showed: rebuild from the
    // stored messages, then apply what arrived meanwhile and is not in them.
    const current = client;
    held = [];
    let cutoff = e.detail.serverLastSeq;
    try {
      const messages = await current.fetchMessages();
      cutoff = Math.max(cutoff, ...messages.map((m) => m.seq));
      view.replaceWithMessages(messages, e.detail.serverLastSeq);
    } catch (err) {
      notice(`Could not reload the conversation: ${err.message}`);
    }
    const arrived = held;
    held = null;
    if (current !== client) return;
    redraw();
    for (const frame of arrived) if (frame.seq > cutoff) show(frame);
    view.lastSeq = current.lastSeq;
    view.save();
  });
  client.start().catch(() => {}); // the badge shows why it stopped
}

function markCurrent(id) {
  for (const li of $("conversation-list").children) {
    const button = li.querySelector("button");
    if (li.dataset.id === id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

async function refreshList() {
  const conversations = await withAccess((access) => listConversations({ baseUrl: origin, access }));
  const list = $("conversation-list");
  list.replaceChildren(
    ...conversations.map((c) => {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = c.title || `Conversation ${c.id.slice(0, 8)}`;
      button.title = `updated ${new Date(c.updated_at).toLocaleString()}`;
      button.addEventListener("click", () => openConversation(c.id));
      li.append(button);
      return li;
    }),
  );
  if (view) markCurrent(view.conversationId);
  return conversations;
}

async function newConversation() {
  const created = await withAccess((access) => createConversation({ baseUrl: origin, access }));
  await refreshList();
  await openConversation(created.id);
  $("message").focus();
}

// --- signing in and out -------------------------------------------------------------------

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  const conversations = await refreshList();
  const fromHash = window.location.hash.startsWith(HASH_PREFIX) ? window.location.hash.slice(HASH_PREFIX.length) : null;
  const stored = readJson("tether:client")?.conversationId;
  const known = (id) => id && conversations.some((c) => c.id === id);
  const id = [fromHash, stored, conversations[0]?.id].find(known);
  if (id) await openConversation(id);
  else await newConversation();
}

function signOut(message = "", { revoke = false } = {}) {
  // "Sign out" revokes the sign-in on the server too; an expired session only forgets it.
  if (revoke && auth?.refresh) revokeSignIn({ baseUrl: origin, refresh: auth.refresh }).catch(() => {});
  client?.close();
  client = null;
  view = null;
  saveAuth(null);
  for (const key of Object.keys(storage)) if (key.startsWith("demo:") || key.startsWith("tether:")) storage.removeItem(key);
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  showBadge({ state: "idle", node: null });
  $("badge").textContent = "Signed out";
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  const username = /** @type {HTMLInputElement} */ ($("username")).value.trim();
  const password = /** @type {HTMLInputElement} */ ($("password")).value;
  try {
    const pair = await obtainToken({ baseUrl: origin, username, password });
    saveAuth({ username, access: pair.access, refresh: pair.refresh });
    /** @type {HTMLInputElement} */ ($("password")).value = "";
    await showApp();
  } catch (err) {
    $("signin-error").textContent =
      err instanceof HttpError && err.status === 401 ? "Wrong username or password." : `Sign-in failed: ${err.message}`;
  }
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("message"));
  const text = input.value.trim();
  if (!text || !client) return;
  try {
    const clientMsgId = await client.send(text); // stored before this resolves: a reload now still delivers it
    input.value = "";
    drawPending(clientMsgId, text);
    scrollDown();
  } catch (err) {
    notice(`Message not sent: ${err.message}`);
  }
});

$("stop").addEventListener("click", () => {
  const runId = view?.streamingRun();
  if (runId) client?.cancel(runId);
});
$("drop").addEventListener("click", () => client?.drop());
$("go-offline").addEventListener("click", () => client?.goOffline(5000));
$("new-conversation").addEventListener("click", () => newConversation());
$("sign-out").addEventListener("click", () => signOut("", { revoke: true }));
window.addEventListener("pagehide", () => view?.save());
window.addEventListener("hashchange", () => {
  // A link to another conversation (#c=<id>) opened in this tab.
  const id = window.location.hash.startsWith(HASH_PREFIX) ? window.location.hash.slice(HASH_PREFIX.length) : null;
  if (auth && id && id !== view?.conversationId) refreshList().then(() => openConversation(id));
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") view?.save();
});

if (auth) showApp().catch((err) => notice(`Could not load the conversations: ${err.message}`));
