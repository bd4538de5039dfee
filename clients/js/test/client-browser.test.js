// The browser facts of TetherClient, against the fake server with a fake window:
// online/offline/visibility, the fault buttons' methods, and sessionStorage persistence
// (a page reload resumes and delivers a message typed just before it exactly once).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { Backoff, TetherClient } from "../src/tether-client.js";
import {
  CONV,
  FakeWindow,
  MemoryStorage,
  delta,
  eventually,
  ready,
  record,
  serveForever,
  startFakeServer,
} from "./support/fake-server.js";

const cleanups = [];

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function fakeServer(...scripts) {
  const server = await startFakeServer(...scripts);
  cleanups.push(() => server.close());
  return server;
}

function makeClient(options) {
  const client = new TetherClient({ backoff: new Backoff({ baseMs: 10, capMs: 50 }), storage: null, ...options });
  cleanups.push(() => client.close());
  return client;
}

const states = (log) => log.filter(([t]) => t === "state").map(([, d]) => d.state);
const sequenced = (log) => log.filter(([t]) => t === "event").map(([, f]) => f.seq);

/** A server that resumes from the client's last_seq and acks (and stores) each message once. */
function loggingServer() {
  const stored = new Map(); // client_msg_id -> seq
  let last = 0;
  const script = async (conn) => {
    const connect = await conn.recv("connect");
    const from = connect.last_seq ?? 0;
    conn.send(ready(`n${conn.number}`, { resumed: connect.conversation_id !== null, last_seq: last, replay_count: last - from }));
    for (let seq = from + 1; seq <= last; seq++) conn.send(delta(seq, seq - 1, `w${seq} `));
    for (;;) {
      const message = await conn.recv("message", 60000);
      const duplicate = stored.has(message.client_msg_id);
      if (!duplicate) stored.set(message.client_msg_id, ++last);
      conn.send({ type: "message.ack", client_msg_id: message.client_msg_id, seq: stored.get(message.client_msg_id), duplicate });
      if (!duplicate) {
        conn.send({ type: "message.created", seq: last, message: { id: `m${last}`, role: "user", text: message.text, client_msg_id: message.client_msg_id } });
      }
    }
  };
  return { script, stored, emit: () => ++last };
}

test("offline: the socket is declared dead, nothing is tried until online, then at once", async () => {
  const win = new FakeWindow();
  const server = await fakeServer(serveForever);
  const client = makeClient({ endpoints: [server.url], token: "t", window: win, backoff: new Backoff({ baseMs: 60000, capMs: 60000 }) });
  const log = record(client);
  await client.start();
  win.goOffline();
  await eventually(() => client.state === "offline", { what: "offline state" });
  await server.conns[0].ended(); // the client closed it (browsers keep sockets open under emulated offline)
  const id = await client.send("typed while offline");
  assert.equal(server.conns.length, 1); // no attempt while offline
  win.goOnline(); // the 60 s backoff does not apply: online means try now
  await client.waitConnected({ timeoutMs: 10000 });
  const resent = await server.conns[1].recv("message");
  assert.equal(resent.client_msg_id, id);
  assert.deepEqual(states(log), ["connecting", "connected", "offline", "reconnecting", "connected"]);
  const attempt = log.filter(([t, d]) => t === "state" && d.state === "reconnecting").map(([, d]) => d.delayMs);
  assert.deepEqual(attempt, [null]); // an attempt, no backoff wait before it
  assert.equal(client.resumeLatencies.length, 1);
});

test("a hidden tab that becomes visible retries at once instead of finishing a long backoff", async () => {
  const win = new FakeWindow();
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"));
    conn.destroy(); // a drop: backoff with a 60 s window
  }, serveForever);
  const client = makeClient({
    endpoints: [server.url],
    token: "t",
    window: win,
    backoff: new Backoff({ baseMs: 60000, capMs: 60000, random: () => 0.99 }),
  });
  const log = record(client);
  client.start();
  await eventually(() => log.some(([t, d]) => t === "state" && d.state === "reconnecting" && d.delayMs > 50000), { what: "long wait" });
  win.setVisibility("hidden");
  assert.equal(server.conns.length, 1);
  win.setVisibility("visible");
  // the wait was ~59 s: anything well under it is the visibility wake-up
  await eventually(() => client.connected && server.conns.length === 2, { timeoutMs: 10000, what: "reconnect on visible" });
});

test("a visible tab whose socket looks alive probes it with a ping", async () => {
  const win = new FakeWindow();
  const server = await fakeServer(serveForever);
  const client = makeClient({ endpoints: [server.url], token: "t", window: win });
  await client.start();
  win.setVisibility("hidden");
  win.setVisibility("visible");
  await eventually(() => server.conns[0].frames.some((f) => f.type === "ping"), { what: "probe ping" });
});

test("goOffline(ms): offline for that long, then back by itself", async () => {
  const server = await fakeServer(serveForever);
  const client = makeClient({ endpoints: [server.url], token: "t" });
  const log = record(client);
  await client.start();
  const t0 = performance.now();
  client.goOffline(300);
  await eventually(() => client.state === "offline", { what: "offline" });
  await eventually(() => server.conns.length === 2 && client.connected, { what: "back" });
  assert.ok(performance.now() - t0 >= 290, "reconnected before the offline period ended");
  assert.deepEqual(states(log), ["connecting", "connected", "offline", "reconnecting", "connected"]);
});

test("drop(): the socket is abandoned at once and the client resumes from what it applied", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"), delta(1, 0, "a "), delta(2, 1, "b "));
  }, async (conn) => {
    const connect = await conn.recv("connect");
    conn.send(ready("m", { resumed: true, last_seq: 3, replay_count: 1 }), delta(3, 2, "c"));
  });
  const client = makeClient({ endpoints: [server.url], token: "t" });
  const log = record(client);
  await client.start();
  await eventually(() => client.lastSeq === 2, { what: "two events" });
  client.drop();
  await eventually(() => client.lastSeq === 3, { what: "resume" });
  assert.equal(server.connects()[1].last_seq, 2);
  assert.deepEqual(sequenced(log), [1, 2, 3]);
  await server.conns[0].ended();
});

test("a reload resumes from storage and delivers a message typed just before it exactly once", async () => {
  const storage = new MemoryStorage();
  const logic = loggingServer();
  const server = await fakeServer(logic.script);
  // The page before the reload: connected, 3 events applied, a message typed; the page goes
  // away before the server's ack arrives (the server stored it).
  let hold = true;
  const first = makeClient({ endpoints: [server.url], token: "t", storage, conversationId: CONV });
  await first.start();
  for (let i = 0; i < 3; i++) server.conns[0].send(delta(logic.emit(), i, "x "));
  await eventually(() => first.lastSeq === 3, { what: "3 events" });
  const original = server.conns[0].send.bind(server.conns[0]);
  server.conns[0].send = (...frames) => (hold ? undefined : original(...frames)); // the ack is lost with the page
  const id = await first.send("typed just before the reload");
  await eventually(() => logic.stored.has(id), { what: "stored by the server" });
  const stored = JSON.parse(storage.getItem(`tether:conv:${CONV}`));
  assert.deepEqual([stored.lastSeq, stored.outbox.map((m) => m.clientMsgId)], [3, [id]]);
  first.drop(); // the page is gone: its socket dies with it
  await first.close();
  hold = false;

  // The reloaded page: same storage, no options about the conversation.
  const second = makeClient({ endpoints: [server.url], token: "t", storage });
  assert.deepEqual([second.conversationId, second.lastSeq, second.clientId], [CONV, 3, first.clientId]);
  assert.deepEqual(second.pendingMessages.map((m) => m.clientMsgId), [id]);
  const log = record(second);
  await second.start();
  const ack = await second.waitAcked(id);
  assert.deepEqual([ack.seq, ack.duplicate], [4, true]); // stored once, the resend was recognised
  const connect = server.connects().at(-1);
  assert.deepEqual([connect.conversation_id, connect.last_seq, connect.client_id], [CONV, 3, first.clientId]);
  assert.deepEqual(sequenced(log), [4]); // the message.created the first page never saw, once
  assert.equal(logic.stored.size, 1);
  assert.deepEqual(JSON.parse(storage.getItem(`tether:conv:${CONV}`)).outbox, []);
});

test("a message typed before a new conversation exists is kept under 'new' and moves to the conversation", async () => {
  const storage = new MemoryStorage();
  const logic = loggingServer();
  const server = await fakeServer(logic.script);
  const client = makeClient({ endpoints: [server.url], token: "t", storage, conversationId: null });
  client.goOffline(60000);
  const id = await client.send("first words");
  assert.deepEqual(JSON.parse(storage.getItem("tether:conv:new")).outbox.map((m) => m.clientMsgId), [id]);
  const reloaded = makeClient({ endpoints: [server.url], token: "t", storage });
  await client.close();
  assert.equal(reloaded.conversationId, null);
  await reloaded.start();
  await reloaded.waitAcked(id);
  await eventually(() => reloaded.lastSeq === 1, { what: "message.created" });
  assert.equal(storage.getItem("tether:conv:new"), null);
  assert.deepEqual(JSON.parse(storage.getItem("tether:client")), { clientId: reloaded.clientId, conversationId: CONV });
  assert.deepEqual(JSON.parse(storage.getItem(`tether:conv:${CONV}`)), { lastSeq: 1, outbox: [] });
});

test("explicit options win over storage; another conversation starts clean; storage off stores nothing", async () => {
  const storage = new MemoryStorage();
  storage.setItem("tether:client", JSON.stringify({ clientId: "tab-1", conversationId: CONV }));
  storage.setItem(`tether:conv:${CONV}`, JSON.stringify({ lastSeq: 9, outbox: [] }));
  const pinned = makeClient({ endpoints: ["ws://127.0.0.1:9/"], token: "t", storage, lastSeq: 4 });
  assert.deepEqual([pinned.conversationId, pinned.lastSeq, pinned.clientId], [CONV, 4, "tab-1"]);
  const other = makeClient({ endpoints: ["ws://127.0.0.1:9/"], token: "t", storage, conversationId: "c2" });
  assert.deepEqual([other.conversationId, other.lastSeq, other.clientId], ["c2", null, "tab-1"]);
  const off = new MemoryStorage();
  makeClient({ endpoints: ["ws://127.0.0.1:9/"], token: "t", storage: null, window: null });
  assert.equal(off.map.size, 0);
});

test("in a browser, persistence is on by default (sessionStorage)", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "sessionStorage");
  const storage = new MemoryStorage();
  globalThis.sessionStorage = storage;
  try {
    const client = new TetherClient({ endpoints: ["ws://127.0.0.1:9/"], token: "t", window: new FakeWindow() });
    assert.equal(JSON.parse(storage.getItem("tether:client")).clientId, client.clientId);
    new TetherClient({ endpoints: ["ws://127.0.0.1:9/"], token: "t", window: null, storageKey: "x" });
    assert.equal(storage.getItem("x:client"), null); // not a browser: off unless given
  } finally {
    if (saved) Object.defineProperty(globalThis, "sessionStorage", saved);
    else delete globalThis.sessionStorage;
  }
});

test("going offline during a backoff wait reports offline at once, and online retries at once", async () => {
  const win = new FakeWindow();
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"));
    conn.destroy();
  }, serveForever);
  const client = makeClient({
    endpoints: [server.url],
    token: "t",
    window: win,
    backoff: new Backoff({ baseMs: 60000, capMs: 60000, random: () => 0.99 }),
  });
  const log = record(client);
  client.start();
  await eventually(() => log.some(([t, d]) => t === "state" && d.state === "reconnecting" && d.delayMs > 50000), { what: "long wait" });
  win.goOffline();
  await eventually(() => client.state === "offline", { timeoutMs: 10000, what: "offline during the wait" });
  win.goOnline();
  await client.waitConnected({ timeoutMs: 10000 });
  assert.equal(server.conns.length, 2);
});
