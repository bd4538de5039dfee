// TetherClient against a scripted fake server on a real socket (support/fake-server.js), with
// the runtime's own WebSocket (Node 20: --experimental-websocket; see clients/js/README.md).
// Port of tests/test_sdk_client_fake_server.py, then the rules only this client has.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { Backoff, MessageRejected, TetherClient, TetherError } from "../src/tether-client.js";
import {
  CONV,
  FAR_FUTURE,
  RUN,
  deadUrl,
  delta,
  eventually,
  ready,
  record,
  serveForever,
  startFakeServer,
} from "./support/fake-server.js";

const MSG_ID = "a1a1a1a1-0000-4000-8000-000000000001";
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
  const client = new TetherClient({ backoff: new Backoff({ baseMs: 10, capMs: 50 }), window: null, ...options });
  cleanups.push(() => client.close());
  return client;
}

/** Starts the client and records its events until `until(type, detail)` is true; returns the record. */
function collect(client, until, timeoutMs = 5000) {
  const log = record(client);
  client.start().catch(() => {});
  return eventually(() => log.some(([type, detail]) => until(type, detail)) && log, { timeoutMs, what: "event" });
}

const sequenced = (log) => log.filter(([t]) => t === "event").map(([, f]) => f);
const states = (log, state) => log.filter(([t, d]) => t === "state" && d.state === state).map(([, d]) => d);

// --- the main scenario: 4012 mid-stream -------------------------------------------------

test("reconnects at once after 4012, resumes, resends, and delivers each event once", async () => {
  const server = await fakeServer(
    async (conn) => {
      await conn.recv("connect");
      conn.send(ready("fake-1", { resumed: false, last_seq: 0 }));
      const message = await conn.recv("message");
      const stored = { id: "m1", role: "user", text: message.text, client_msg_id: message.client_msg_id };
      // Stored, but the ack is "lost": the client must resend it after the reconnect.
      conn.send(
        { type: "message.created", seq: 1, message: stored },
        { type: "agent.started", seq: 2, run_id: RUN, in_reply_to: "m1" },
        delta(3, 0, "Nice "),
        delta(4, 1, "to meet you, "),
        { type: "reconnect", reason: "server is restarting", retry_after_ms: 0 },
      );
      conn.close(4012);
    },
    async (conn) => {
      const connect = await conn.recv("connect");
      conn.send(
        ready("fake-2", { resumed: true, last_seq: connect.last_seq + 3, replay_count: 3 }),
        delta(4, 1, "to meet you, "), // a duplicate: must not reach the application
        delta(5, 2, "Ada. I will "),
        delta(6, 3, "remember your name."),
      );
      const resent = await conn.recv("message");
      conn.send(
        { type: "message.ack", client_msg_id: resent.client_msg_id, seq: 1, duplicate: true },
        delta(5, 2, "Ada. I will "), // another duplicate
        {
          type: "agent.completed",
          seq: 7,
          run_id: RUN,
          message: { id: "b2", role: "assistant", text: "Nice to meet you, Ada. I will remember your name." },
        },
      );
    },
  );
  const client = makeClient({ endpoints: [server.url], token: "access-1" });
  const log = record(client);
  const msgId = await client.send("my name is Ada", { clientMsgId: MSG_ID });
  await eventually(() => sequenced(log).some((f) => f.type === "agent.completed"), { what: "agent.completed" });

  const events = sequenced(log);
  assert.deepEqual(events.map((f) => f.seq), [1, 2, 3, 4, 5, 6, 7]); // each exactly once, in order
  assert.equal(events[0].message.client_msg_id, msgId);
  const deltas = events.filter((f) => f.type === "agent.delta");
  assert.deepEqual(deltas.map((d) => d.index), [0, 1, 2, 3]);
  assert.equal(deltas.map((d) => d.text).join(""), events.at(-1).message.text);

  // reconnected immediately, to the same single endpoint, resuming after seq 4
  const waits = states(log, "reconnecting").filter((d) => d.delayMs !== null);
  assert.equal(waits.length, 1);
  assert.deepEqual([waits[0].delayMs, waits[0].attempt, waits[0].code], [0, 1, 4012]);
  assert.deepEqual(states(log, "connected").map((d) => [d.resumed, d.node]), [[false, "fake-1"], [true, "fake-2"]]);
  const [first, second] = server.connects();
  assert.deepEqual([first.conversation_id, first.last_seq, first.token], [null, null, "access-1"]);
  assert.deepEqual([second.conversation_id, second.last_seq], [CONV, 4]);
  assert.equal(second.client_id, first.client_id);
  assert.equal(first.client_id, client.clientId);
  assert.equal(client.resumeLatencies.length, 1);
  assert.ok(client.resumeLatencies[0] < 1000);
  assert.equal(client.node, "fake-2");

  // the unacked message was resent with the same id, and acked as a duplicate
  const sent = server.conns.map((c) => c.frames.filter((f) => f.type === "message").map((f) => f.client_msg_id));
  assert.deepEqual(sent, [[MSG_ID], [MSG_ID]]);
  const ack = await client.waitAcked(msgId);
  assert.deepEqual([ack.seq, ack.duplicate], [1, true]);
  assert.deepEqual(client.pendingMessages, []);
  assert.equal(client.lastSeq, 7);

  await client.close();
  assert.equal(client.state, "closed");
  await eventually(() => server.conns[1].frames.some((f) => f.type === "ack" && f.seq === 7), { what: "final ack" });
  await eventually(() => server.conns[1].closed?.code === 1000, { what: "close 1000" });
});

// --- failover, liveness, auth, stops ----------------------------------------------------

test("fails over to the next endpoint", async () => {
  const server = await fakeServer(serveForever);
  const client = makeClient({ endpoints: [await deadUrl(), server.url], token: "t" });
  const log = record(client);
  await client.start();
  assert.equal(client.endpoint, server.url);
  assert.ok(states(log, "connecting").some((d) => (d.reason || "").includes("connect to")));
  assert.deepEqual(client.resumeLatencies, []); // a first connection is not a resume
});

test("discovery supplies the endpoints", async () => {
  const server = await fakeServer(serveForever);
  const seenAuth = [];
  const fetch = async (url, init) => {
    assert.equal(url, "http://tether.test/api/realtime/nodes/");
    seenAuth.push(init.headers.Authorization);
    return new Response(JSON.stringify({ nodes: [{ node: "n1", ws_url: server.url }] }), { status: 200 });
  };
  const client = makeClient({ discoveryUrl: "http://tether.test/api/realtime/nodes/", token: "t", fetch });
  await client.start();
  assert.deepEqual(client.endpoints, [server.url]);
  assert.deepEqual(seenAuth, ["Bearer t"]);
});

test("a silent server is declared dead and the client resumes", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("mute"), { type: "message.created", seq: 1, message: { id: "m1", role: "user", text: "hi" } });
    // never answers a ping
  }, serveForever);
  const client = makeClient({ endpoints: [server.url], token: "t", heartbeatIntervalMs: 50, heartbeatTimeoutMs: 300 });
  const log = record(client);
  client.start();
  await eventually(() => states(log, "connected").some((d) => d.node === "live"), { what: "resume on the live script" });
  const lost = states(log, "reconnecting").filter((d) => d.delayMs !== null);
  assert.equal(lost.length, 1);
  assert.match(lost[0].reason, /no frame from the server/);
  assert.equal(server.connects()[1].last_seq, 1);
  await eventually(() => server.conns[1].frames.some((f) => f.type === "ping"), { what: "ping" });
  assert.equal(server.conns.length, 2); // the live server answers pings: no further loss
});

test("4401 renews the token via the provider; auth.expiring refreshes in place", async () => {
  const tokens = ["t1", "t2", "t3"][Symbol.iterator]();
  const server = await fakeServer(
    async (conn) => {
      await conn.recv("connect");
      conn.send({ type: "error", code: "token_expired", detail: "expired" });
      conn.close(4401);
    },
    async (conn) => {
      await conn.recv("connect");
      conn.send(ready("n"), { type: "auth.expiring", access_expires_at: FAR_FUTURE });
      const refresh = await conn.recv("auth.refresh");
      assert.deepEqual(refresh, { type: "auth.refresh", access: "t3", __taken: true });
      conn.send({ type: "auth.refreshed", access_expires_at: FAR_FUTURE + 300 });
    },
  );
  const client = makeClient({ endpoints: [server.url], tokenProvider: async () => tokens.next().value });
  await client.start();
  assert.deepEqual(server.connects().map((c) => c.token), ["t1", "t2"]);
  await eventually(() => client.accessToken === "t3", { what: "t3 adopted" });
});

test("the refresh token is used over the socket and the new pair is reported", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"), { type: "auth.expiring", access_expires_at: FAR_FUTURE });
    const refresh = await conn.recv("auth.refresh");
    assert.equal(refresh.refresh, "r1");
    conn.send({ type: "auth.refreshed", access: "a2", refresh: "r2", access_expires_at: FAR_FUTURE });
  });
  const client = makeClient({ endpoints: [server.url], token: "a1", refreshToken: "r1" });
  const log = record(client);
  await client.start();
  await eventually(() => client.accessToken === "a2" && client.refreshToken === "r2", { what: "rotation" });
  assert.deepEqual(log.filter(([t]) => t === "tokens").map(([, d]) => d), [
    { access: "a2", refresh: "r2", accessExpiresAt: FAR_FUTURE },
  ]);
});

test("forbidden stops and surfaces the error", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send({ type: "error", code: "forbidden", detail: "not your conversation" });
    conn.close(4403);
  });
  const client = makeClient({ endpoints: [server.url], token: "t", conversationId: CONV });
  const log = record(client);
  await assert.rejects(client.start(), TetherError);
  const closed = states(log, "closed");
  assert.deepEqual(closed.map((d) => [d.code, d.errorCode]), [[4403, "forbidden"]]);
  assert.ok(client.error instanceof TetherError && client.closed);
  assert.equal(server.conns.length, 1);
  await assert.rejects(client.send("hello"), TetherError);
});

test("rate limited waits retry_after_ms", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send({ type: "error", code: "rate_limited", detail: "slow down", retry_after_ms: 120 });
    conn.close(4429);
  }, serveForever);
  const client = makeClient({ endpoints: [server.url], token: "t" });
  const log = record(client);
  await client.start();
  assert.deepEqual(states(log, "connecting").filter((d) => d.delayMs !== null).map((d) => d.delayMs), [120]);
});

test("resumed:false asks the application to reload", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(
      ready("n", { resumed: false, last_seq: 50 }),
      { type: "agent.started", seq: 50, run_id: RUN, in_reply_to: "m" }, // already in the reload
      { type: "agent.started", seq: 51, run_id: RUN, in_reply_to: "m" },
    );
  });
  const client = makeClient({ endpoints: [server.url], token: "t", conversationId: CONV, lastSeq: 10 });
  const log = await collect(client, (type) => type === "event");
  assert.deepEqual(log.filter(([t]) => t === "reload").map(([, d]) => d), [
    { conversationId: CONV, afterSeq: 10, serverLastSeq: 50 },
  ]);
  assert.deepEqual(sequenced(log).map((f) => f.seq), [51]);
  assert.equal(server.connects()[0].last_seq, 10);
});

test("a gap triggers a resume from the last applied seq", async () => {
  const server = await fakeServer(
    async (conn) => {
      await conn.recv("connect");
      conn.send(ready("n"), delta(1, 0, "a"), delta(3, 2, "c"));
    },
    async (conn) => {
      const connect = await conn.recv("connect");
      assert.equal(connect.last_seq, 1);
      conn.send(ready("m", { resumed: true, last_seq: 3, replay_count: 2 }), delta(2, 1, "b"), delta(3, 2, "c"));
    },
  );
  const client = makeClient({ endpoints: [server.url], token: "t" });
  const log = await collect(client, (type, d) => type === "event" && d.seq === 3);
  assert.deepEqual(sequenced(log).map((f) => f.seq), [1, 2, 3]);
  assert.deepEqual(states(log, "reconnecting").filter((d) => d.delayMs !== null).map((d) => d.delayMs), [0]);
});

// --- rules of this client beyond the Python SDK's fake-server tests ---------------------

test("after 4401 the refresh token renews the access token over REST", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send({ type: "error", code: "token_expired", detail: "expired" });
    conn.close(4401);
  }, serveForever);
  const calls = [];
  const fetch = async (url, init) => {
    calls.push([url, JSON.parse(init.body)]);
    return new Response(JSON.stringify({ access: "a2", refresh: "r2" }), { status: 200 });
  };
  const client = makeClient({ endpoints: [server.url], token: "a1", refreshToken: "r1", fetch, httpBase: "http://api.test" });
  await client.start();
  assert.deepEqual(calls, [["http://api.test/api/auth/token/refresh/", { refresh: "r1" }]]);
  assert.deepEqual(server.connects().map((c) => c.token), ["a1", "a2"]);
  assert.equal(client.refreshToken, "r2");
});

test("a token that expired meanwhile is renewed before reconnecting", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n", { access_expires_at: Math.floor(Date.now() / 1000) - 1 }));
    await new Promise((r) => setTimeout(r, 20));
    conn.destroy();
  }, serveForever);
  const fetch = async () => new Response(JSON.stringify({ access: "fresh", refresh: "r2" }), { status: 200 });
  const client = makeClient({ endpoints: [server.url], token: "stale", refreshToken: "r1", fetch, httpBase: "http://api.test" });
  const log = record(client);
  client.start();
  await eventually(() => states(log, "connected").length === 2, { what: "second ready" });
  assert.deepEqual(server.connects().map((c) => c.token), ["stale", "fresh"]); // never an expired token, never a 4401
});

test("a message refused as too long leaves the outbox and is never resent", async () => {
  const server = await fakeServer(
    async (conn) => {
      await conn.recv("connect");
      conn.send(ready("n"));
      const message = await conn.recv("message");
      conn.send({ type: "error", code: "too_long", detail: "'text' is longer than 16000 characters", ref: message.client_msg_id });
      const ok = await conn.recv("message");
      conn.send({ type: "reconnect", reason: "restart", retry_after_ms: 0 });
      conn.close(4012);
      void ok;
    },
    async (conn) => {
      await conn.recv("connect");
      conn.send(ready("n", { resumed: true }));
    },
  );
  const storage = new Map();
  const store = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v), removeItem: (k) => storage.delete(k) };
  const client = makeClient({ endpoints: [server.url], token: "t", storage: store });
  const log = record(client);
  await client.start();
  const long = await client.send("x".repeat(20000));
  await assert.rejects(client.waitAcked(long), (err) => err instanceof MessageRejected && err.errorCode === "too_long");
  const fine = await client.send("fine");
  await eventually(() => states(log, "connected").length === 2, { what: "resume" });
  await eventually(() => server.conns[1].frames.some((f) => f.type === "message"), { what: "resend" });
  assert.deepEqual(server.conns[1].frames.filter((f) => f.type === "message").map((f) => f.client_msg_id), [fine]);
  assert.deepEqual(log.filter(([t]) => t === "rejected").map(([, d]) => [d.clientMsgId, d.code]), [[long, "too_long"]]);
  assert.deepEqual(JSON.parse(storage.get(`tether:conv:${CONV}`)).outbox.map((m) => m.clientMsgId), [fine]);
});

test("send() refuses a message whose frame exceeds maxFrameBytes without queuing it", async () => {
  const client = makeClient({ endpoints: ["ws://127.0.0.1:9/ws/v1/"], token: "t", maxFrameBytes: 100 });
  await assert.rejects(client.send("z".repeat(200)), (err) => err instanceof MessageRejected && err.errorCode === "frame_too_large");
  assert.deepEqual(client.pendingMessages, []);
});

test("a message hit by the per-conversation rate limit is resent after retry_after_ms on the same socket", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"));
    const first = await conn.recv("message");
    conn.send({ type: "error", code: "rate_limited", detail: "slow", retry_after_ms: 50, ref: first.client_msg_id });
    const again = await conn.recv("message");
    conn.send({ type: "message.ack", client_msg_id: again.client_msg_id, seq: 1, duplicate: false });
  });
  const client = makeClient({ endpoints: [server.url], token: "t" });
  await client.start();
  const id = await client.send("hello");
  const ack = await client.waitAcked(id);
  assert.equal(ack.seq, 1);
  assert.deepEqual(server.conns[0].frames.filter((f) => f.type === "message").map((f) => f.client_msg_id), [id, id]);
  assert.equal(server.conns.length, 1);
});

test("cumulative acks: every ackEvery events, after ackIntervalMs of quiet, and at close", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"));
    for (let seq = 1; seq <= 5; seq++) conn.send(delta(seq, seq - 1, "w "));
  });
  const client = makeClient({ endpoints: [server.url], token: "t", ackEvery: 2, ackIntervalMs: 50 });
  await client.start();
  await eventually(() => server.conns[0].frames.some((f) => f.type === "ack" && f.seq === 5), { what: "idle ack" });
  const acks = server.conns[0].frames.filter((f) => f.type === "ack").map((f) => f.seq);
  assert.deepEqual(acks, [2, 4, 5]);
});

test("cancel sends the cancel frame; false when not connected", async () => {
  const server = await fakeServer(serveForever);
  const client = makeClient({ endpoints: [server.url], token: "t" });
  assert.equal(await client.cancel(RUN), false);
  await client.start();
  assert.equal(await client.cancel(RUN), true);
  const frame = await server.conns[0].recv("cancel");
  assert.equal(frame.run_id, RUN);
});

test("an injected WebSocket constructor is the one used", async () => {
  const server = await fakeServer(serveForever);
  const made = [];
  class CountingWebSocket extends globalThis.WebSocket {
    constructor(url) {
      super(url);
      made.push(url);
    }
  }
  const client = makeClient({ endpoints: [server.url], token: "t", WebSocket: CountingWebSocket });
  await client.start();
  assert.deepEqual(made, [server.url]);
});

test("without any WebSocket the constructor says how to get one", () => {
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new TetherClient({ endpoints: ["ws://x/"], token: "t" }), /pass one.*ws/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("unavailable and server_error resend the same message later; a message that keeps hitting a server bug is reported", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"));
    const first = await conn.recv("message");
    conn.send({ type: "error", code: "unavailable", detail: "retry", ref: first.client_msg_id, retry_after_ms: 30 });
    const again = await conn.recv("message");
    assert.equal(again.client_msg_id, first.client_msg_id);
    conn.send({ type: "message.ack", client_msg_id: first.client_msg_id, seq: 1, duplicate: false });
    const buggy = await conn.recv("message");
    for (let i = 0; i < 4; i++) {
      conn.send({ type: "error", code: "server_error", detail: "bug", ref: buggy.client_msg_id, retry_after_ms: 10 });
      if (i < 3) assert.equal((await conn.recv("message")).client_msg_id, buggy.client_msg_id);
    }
  });
  const client = makeClient({ endpoints: [server.url], token: "t" });
  await client.start();
  const stored = await client.send("hello");
  const ack = await client.waitAcked(stored);
  assert.deepEqual([ack.seq, ack.duplicate], [1, false]);
  const doomed = await client.send("triggers a bug");
  await assert.rejects(client.waitAcked(doomed), (err) => err instanceof MessageRejected && err.errorCode === "server_error");
  assert.deepEqual(client.pendingMessages, []);
  const messages = server.conns[0].frames.filter((f) => f.type === "message").map((f) => f.client_msg_id);
  assert.deepEqual(messages, [stored, stored, doomed, doomed, doomed, doomed]);
  assert.equal(server.conns.length, 1);
});

test("an unavailable auth.refresh is tried again", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("n"), { type: "auth.expiring", access_expires_at: FAR_FUTURE });
    const first = await conn.recv("auth.refresh");
    conn.send({ type: "error", code: "unavailable", detail: "retry", retry_after_ms: 20 });
    const again = await conn.recv("auth.refresh");
    assert.equal(again.refresh, first.refresh);
    conn.send({ type: "auth.refreshed", access: "a2", refresh: "r2", access_expires_at: FAR_FUTURE });
  });
  const client = makeClient({ endpoints: [server.url], token: "a1", refreshToken: "r1" });
  await client.start();
  await eventually(() => client.accessToken === "a2" && client.refreshToken === "r2", { what: "rotation after the retry" });
});

// --- tools and approvals ------------------------------------------------------------------

const CALL = "0f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0";
const OTHER_CALL = "1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d";

test("tool steps and approvals reach the application as events; approve/deny send approval.respond; already_decided and not_found keep the socket open", async () => {
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(
      ready("fake-1"),
      { type: "agent.tool_call", seq: 1, run_id: RUN, call_id: OTHER_CALL, tool: "demo.effect", arguments: { n: 1 }, effect: "idempotent" },
      { type: "agent.tool_result", seq: 2, run_id: RUN, call_id: OTHER_CALL, status: "ok", result: { n: 1 } },
      { type: "approval.requested", seq: 3, run_id: RUN, call_id: CALL, tool: "demo.transfer", arguments: { n: 5 }, reason: "policy", expires_at: FAR_FUTURE },
    );
    const approve = await conn.recv("approval.respond");
    conn.send(
      { type: "approval.resolved", seq: 4, run_id: RUN, call_id: approve.call_id, decision: "approved", by: "tab-1" },
      { type: "agent.tool_result", seq: 5, run_id: RUN, call_id: CALL, status: "unknown", error: "outcome unknown: node died" },
    );
    const late = await conn.recv("approval.respond");
    conn.send({ type: "error", code: "already_decided", detail: "decided before", ref: late.call_id, decision: "approved" });
    const stray = await conn.recv("approval.respond");
    conn.send(
      { type: "error", code: "not_found", detail: "no such approval", ref: stray.call_id },
      { type: "agent.tool_result", seq: 6, run_id: RUN, call_id: OTHER_CALL, status: "ok", truncated: true },
    );
  });
  const client = makeClient({ endpoints: [server.url], token: "t", clientId: "tab-1" });
  assert.equal(await client.approve(CALL), false); // not connected yet: nothing sent
  const answers = [];
  client.addEventListener("event", (e) => {
    const frame = e.detail;
    if (frame.type === "approval.requested") answers.push(client.approve(frame.call_id));
    if (frame.type === "agent.tool_result" && frame.seq === 5) answers.push(client.deny(CALL)); // too late
  });
  client.addEventListener("servererror", (e) => {
    if (e.detail.code === "already_decided") answers.push(client.respondApproval("not-a-call", "approve"));
  });
  const log = await collect(client, (type, d) => type === "event" && d.seq === 6);

  assert.deepEqual(await Promise.all(answers), [true, true, true]);
  assert.deepEqual(sequenced(log).map((f) => [f.seq, f.type]), [
    [1, "agent.tool_call"],
    [2, "agent.tool_result"],
    [3, "approval.requested"],
    [4, "approval.resolved"],
    [5, "agent.tool_result"],
    [6, "agent.tool_result"],
  ]);
  assert.deepEqual(sequenced(log)[3], { type: "approval.resolved", seq: 4, run_id: RUN, call_id: CALL, decision: "approved", by: "tab-1" });
  const errors = log.filter(([t]) => t === "servererror").map(([, d]) => d);
  assert.deepEqual(errors, [
    { code: "already_decided", detail: "decided before", ref: CALL, retryAfterMs: null, decision: "approved" },
    { code: "not_found", detail: "no such approval", ref: "not-a-call", retryAfterMs: null, decision: null },
  ]);
  assert.deepEqual(server.conns[0].frames.filter((f) => f.type === "approval.respond").map(({ __bytes, __taken, ...f }) => f), [
    { type: "approval.respond", call_id: CALL, decision: "approve" },
    { type: "approval.respond", call_id: CALL, decision: "deny" },
    { type: "approval.respond", call_id: "not-a-call", decision: "approve" },
  ]);
  // Neither error closed anything: one socket, never reconnecting, still connected.
  assert.equal(server.conns.length, 1);
  assert.deepEqual(states(log, "reconnecting"), []);
  assert.equal(client.state, "connected");
  await assert.rejects(client.respondApproval(CALL, /** @type {any} */ ("approved")), TypeError);
});
