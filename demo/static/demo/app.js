// The demo page (see README.md, "What to try"). Everything that touches the protocol goes
// through the JavaScript client (clients/js); the page keeps a view of the conversation and
// draws it. Served with no build step, as ES modules:
//   view.js      the conversation as the page applied it (answers and their tool cards), and
//                the check under each answer
//   render.js    drawing entries, one renderer per kind of entry, and the tool cards
//   happened.js  the "what just happened" line after a fault
//   app.js       this file: sign-in, the conversation list, the client, the controls
//
// What survives a reload (sessionStorage, per tab):
//   demo:auth            the signed-in user's token pair (renewed through tokenProvider)
//   demo:view:<id>       the rendered transcript and the seq it reflects (`lastSeq`)
//   tether:*             the client's own state: client_id, conversation, outbox
// The page hands the client `lastSeq` of its saved view, so that the client resumes exactly
// after what the page shows: nothing missing, nothing twice, whenever the reload happens.
//
// Approvals: a card's Approve / Deny sends `approval.respond` through the client; the card
// changes only when the server's `approval.resolved` arrives (from this tab or any other, or
// the admin, or the expiry: the first decision wins), so every tab shows the decision that
// stands. The page's own answer can be refused (`already_decided`, `not_found`): the card says
// so in a short line and the page goes on.

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
import { Happened } from "./happened.js";
import { Transcript } from "./render.js";
import { View } from "./view.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const storage = window.sessionStorage;
const AUTH_KEY = "demo:auth";
const HASH_PREFIX = "#c=";
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

// --- drawing ----------------------------------------------------------------------------------

const transcriptList = $("transcript");
const transcript = new Transcript(transcriptList);

function drawPending(clientMsgId, text) {
  if (view.entries.some((e) => e.clientMsgId === clientMsgId)) return; // already in the log
  transcript.drawPending(clientMsgId, text);
}

function redraw() {
  transcript.clear();
  for (const entry of view.entries) transcript.entry(entry);
  for (const m of client?.pendingMessages || []) drawPending(m.clientMsgId, m.text);
  updateStop();
}

// Follow the newest text while the reader is at the bottom. Measuring the transcript forces a
// layout, so it happens once per frame, never once per event (a 1,000-event replay would
// otherwise lay the page out 1,000 times).
let stickToBottom = true;
let scrollQueued = false;
transcriptList.addEventListener("scroll", () => {
  stickToBottom = transcriptList.scrollHeight - transcriptList.scrollTop - transcriptList.clientHeight < 120;
});

function scrollDown() {
  if (scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    if (stickToBottom) transcriptList.scrollTop = transcriptList.scrollHeight;
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

function showHappened(text) {
  const line = $("happened");
  line.textContent = text;
  line.hidden = !text;
}

function notice(text) {
  $("notice").textContent = text;
}

// --- approvals ------------------------------------------------------------------------------

// An answer the server could not take now (`unavailable`, `server_error`, `rate_limited`, with
// `retry_after_ms`) is sent again after that wait, this many times at most; then the card says
// so and its buttons work again.
const RESEND_LIMIT = 3;
const resends = new Map(); // call_id -> times sent again

/** Approve or Deny pressed on a card: the decision goes to the server (the first one wins). */
async function respond(callId, decision) {
  const current = client;
  if (!current || !view?.byCall.has(callId)) return;
  transcript.setCardUi(callId, { sending: decision, message: "" });
  let sent = false;
  try {
    sent = await current.respondApproval(callId, decision);
  } catch (err) {
    transcript.setCardUi(callId, { sending: null, message: `Not sent: ${err.message}` });
    return;
  }
  if (!sent) transcript.setCardUi(callId, { sending: null, message: "Not connected: answer again once the badge says Connected." });
}

/** An error frame about this page's answer to a card: said on the card, never thrown. */
function answerRefused(current, callId, { code, decision, retryAfterMs }) {
  const sending = transcript.cardUi.get(callId)?.sending || null;
  if (code === "already_decided") {
    transcript.setCardUi(callId, { sending: null, message: `Already decided (${decision || "elsewhere"}): the first answer wins.` });
  } else if (code === "not_found") {
    transcript.setCardUi(callId, { sending: null, message: "The server has no approval waiting for this call." });
  } else if (sending && (code === "unavailable" || code === "server_error" || code === "rate_limited")) {
    const tries = (resends.get(callId) || 0) + 1;
    resends.set(callId, tries);
    if (tries > RESEND_LIMIT) {
      resends.delete(callId);
      transcript.setCardUi(callId, { sending: null, message: "The server could not take your answer: try again." });
      return;
    }
    setTimeout(() => {
      if (client === current && transcript.cardUi.get(callId)?.sending === sending) respond(callId, sending);
    }, retryAfterMs ?? 1000);
  }
}

// One listener for every card's buttons (no handler on the buttons themselves, none inline).
$("transcript").addEventListener("click", (event) => {
  const button = /** @type {HTMLElement} */ (event.target).closest?.("button[data-decision]");
  const callId = button?.closest("[data-call-id]")?.getAttribute("data-call-id");
  if (button && callId && !(/** @type {HTMLButtonElement} */ (button).disabled)) {
    respond(callId, button.getAttribute("data-decision")).catch(() => {});
  }
});

/** Send works once the conversation's client exists (its outbox then keeps what is sent,
 * across reconnects and reloads); until then it is disabled and says why. */
function composerReady(ready) {
  /** @type {HTMLButtonElement} */ ($("send")).disabled = !ready;
  $("composer-state").textContent = ready ? "" : "Opening the conversation…";
  $("composer-state").hidden = ready;
}

// --- the conversation ---------------------------------------------------------------------

let client = null;
let view = null;
let happened = null;
let untitled = new Set(); // conversations the list shows without a title (they get one from their first message)

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

/** Opens a conversation; `cause` names what brought the page here when it resumes a view it had. */
async function openConversation(id, cause = "Reopened the conversation") {
  composerReady(false);
  if (client) {
    view?.save();
    await client.close();
    client = null;
  }
  notice("");
  showHappened("");
  history.replaceState(null, "", `${HASH_PREFIX}${id}`);
  view = new View(id, storage);
  happened = new Happened(showHappened);
  if (view.lastSeq !== null) happened.fault(cause, cause === "Reloaded the page" ? 0 : performance.now());
  markCurrent(id);
  const endpoints = await endpointsFor();
  if (view.conversationId !== id) return; // another conversation was opened meanwhile
  const current = new TetherClient({
    endpoints,
    discoveryUrl: `${origin}/api/realtime/nodes/`,
    httpBase: origin,
    token: auth.access,
    tokenProvider: freshAccess,
    conversationId: id,
    lastSeq: view.lastSeq, // resume exactly after what the page shows
  });
  client = current;
  transcript.selfId = current.clientId; // "Approved by this tab"
  window.tether = current; // for the browser tests and the curious
  const tracker = happened;
  redraw();
  transcriptList.scrollTop = transcriptList.scrollHeight;
  current.addEventListener("state", (e) => {
    showBadge(e.detail);
    tracker.state(e.detail, view.lastSeq);
    // An answer sent on a socket that was then lost may never have arrived: the buttons work
    // again (the replay brings its `approval.resolved` if it did; a second answer then gets
    // `already_decided`, which the card shows).
    if (e.detail.state === "connected") transcript.clearSending();
  });
  let held = null; // events that arrive while the page reloads the history over REST
  const show = (frame) => {
    const streamed = frame.type === "agent.delta" ? view.byRun.get(frame.run_id) : null;
    const entry = view.apply(frame);
    // The common case, a delta for an answer already drawn, appends to its text: no re-render.
    if (streamed && entry === streamed && !entry.mismatch && !entry.partial) transcript.appendDelta(entry, frame.text);
    else if (entry) transcript.entry(entry);
    if (entry?.kind === "user" && entry.clientMsgId) transcript.undrawPending(entry.clientMsgId);
    if (entry?.kind === "user" && untitled.has(view.conversationId)) {
      untitled.delete(view.conversationId);
      refreshList().catch(() => {}); // the conversation is titled from its first message now
    }
    if (frame.type === "approval.resolved") {
      resends.delete(frame.call_id);
      if (transcript.cardUi.get(frame.call_id)?.sending) transcript.setCardUi(frame.call_id, { sending: null });
    }
    if (frame.type !== "agent.delta") updateStop();
  };
  current.addEventListener("event", (e) => {
    if (held) held.push(e.detail);
    else show(e.detail);
    tracker.event();
    scrollDown();
  });
  current.addEventListener("rejected", (e) => {
    transcript.undrawPending(e.detail.clientMsgId);
    notice(`Message not sent (${e.detail.code}): ${e.detail.detail}`);
  });
  current.addEventListener("servererror", (e) => {
    const ref = e.detail.ref;
    if (typeof ref === "string" && view?.byCall.has(ref)) answerRefused(current, ref, e.detail);
    else if (e.detail.code === "rate_limited") notice(`Slow down: retrying in ${Math.ceil((e.detail.retryAfterMs || 1000) / 1000)} s`);
    else if (e.detail.code === "not_found" || e.detail.code === "already_decided") notice(`Refused (${e.detail.code}): ${e.detail.detail}`);
  });
  current.addEventListener("reload", async (e) => {
    // The server no longer keeps the events after what this page showed: rebuild from the
    // stored messages, then apply what arrived meanwhile and is not in them.
    held = [];
    let cutoff = e.detail.serverLastSeq;
    try {
      const messages = await current.fetchMessages();
      cutoff = Math.max(cutoff, ...messages.map((m) => m.seq));
      view.replaceWithMessages(messages, e.detail.serverLastSeq);
      // The tool cards are in no message: from the events the log still keeps (an approval
      // still waiting stays answerable here).
      try {
        view.restoreCards(await current.fetchEvents(0));
      } catch (err) {
        notice(`Could not reload the tool calls: ${err.message}`);
      }
    } catch (err) {
      notice(`Could not reload the conversation: ${err.message}`);
    }
    const arrived = held;
    held = null;
    if (current !== client) return;
    redraw();
    for (const frame of arrived) {
      if (frame.seq > cutoff) show(frame);
      else view.lastSeq = Math.max(view.lastSeq ?? 0, frame.seq); // in the messages already: not a gap
    }
    view.lastSeq = current.lastSeq;
    view.save();
  });
  composerReady(true);
  current.start().catch(() => {}); // the badge shows why it stopped
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
  untitled = new Set(conversations.filter((c) => !c.title).map((c) => c.id));
  const list = $("conversation-list");
  list.replaceChildren(
    ...conversations.map((c) => {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = c.title || `New conversation (${c.id.slice(0, 8)})`;
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
  composerReady(false);
  const created = await withAccess((access) => createConversation({ baseUrl: origin, access }));
  await refreshList();
  await openConversation(created.id);
  $("message").focus();
}

// --- signing in and out -------------------------------------------------------------------

async function showApp(cause) {
  $("signin").hidden = true;
  $("intro").hidden = true;
  $("app").hidden = false;
  $("faults").hidden = false;
  composerReady(false);
  const conversations = await refreshList();
  const fromHash = window.location.hash.startsWith(HASH_PREFIX) ? window.location.hash.slice(HASH_PREFIX.length) : null;
  const stored = readJson("tether:client")?.conversationId;
  const known = (id) => id && conversations.some((c) => c.id === id);
  const id = [fromHash, stored, conversations[0]?.id].find(known);
  if (id) await openConversation(id, cause);
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
  $("faults").hidden = true;
  showHappened("");
  $("intro").hidden = false;
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
    await showApp("Signed in again");
  } catch (err) {
    $("signin-error").textContent =
      err instanceof HttpError && err.status === 401 ? "Wrong username or password." : `Sign-in failed: ${err.message}`;
  }
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("message"));
  const text = input.value.trim();
  if (!text) return;
  if (!client) {
    // Send is disabled until the client exists; a submit that gets here anyway is said, not lost silently.
    notice("The conversation is still opening: send again in a moment.");
    return;
  }
  try {
    const clientMsgId = await client.send(text); // stored before this resolves: a reload now still delivers it
    input.value = "";
    drawPending(clientMsgId, text);
    scrollDown();
  } catch (err) {
    notice(`Message not sent: ${err.message}`);
  }
});

for (const button of document.querySelectorAll("button.suggestion")) {
  button.addEventListener("click", () => {
    const input = /** @type {HTMLInputElement} */ ($("message"));
    input.value = /** @type {HTMLElement} */ (button).dataset.text || "";
    input.focus();
  });
}

$("stop").addEventListener("click", () => {
  const runId = view?.streamingRun();
  if (runId) client?.cancel(runId);
});
$("drop").addEventListener("click", () => {
  if (!client) return;
  happened?.fault("Dropped the connection");
  client.drop();
});
$("go-offline").addEventListener("click", () => {
  if (!client) return;
  happened?.fault("Offline for 5 s");
  client.goOffline(5000);
});
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

if (auth) showApp("Reloaded the page").catch((err) => notice(`Could not load the conversations: ${err.message}`));
