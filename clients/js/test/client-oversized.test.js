// Port of tests/test_sdk_oversized_message.py: TetherClient against a fake server that refuses
// frames over a size limit as Tether does (4413 after a `frame_too_large` error, or 1009 from
// the transport): the refused message is dropped and reported, never resent, the rest of the
// outbox still goes out; and, in a browser, it also leaves the stored outbox, so a reload does
// not send it again.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { Backoff, MessageRejected, TetherClient } from "../src/tether-client.js";
import { MemoryStorage, eventually, ready, record, startFakeServer } from "./support/fake-server.js";

const LIMIT = 2000; // the fake server's REALTIME_MAX_FRAME_BYTES
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

/**
 * Each socket: `ready`, then every `message` within LIMIT is stored and acked; the first frame
 * over it closes the socket with `closeCode` (4413 with its error frame first).
 */
function refusingServer(closeCode, seen) {
  const stored = new Map();
  return async (conn) => {
    await conn.recv("connect");
    conn.send(ready(`fake-${conn.number}`, { resumed: conn.number > 0, last_seq: stored.size }));
    for (;;) {
      const frame = await conn.recv("*", 60_000);
      seen.push({ socket: conn.number, bytes: frame.__bytes, ...frame });
      if (frame.__bytes > LIMIT) {
        if (closeCode === 4413) conn.send({ type: "error", code: "frame_too_large", detail: `frame exceeds ${LIMIT} bytes` });
        conn.close(closeCode);
        return;
      }
      if (frame.type === "message") {
        const duplicate = stored.has(frame.client_msg_id);
        if (!duplicate) stored.set(frame.client_msg_id, stored.size + 1);
        conn.send({ type: "message.ack", client_msg_id: frame.client_msg_id, seq: stored.get(frame.client_msg_id), duplicate });
      }
    }
  };
}

const acked = (log, id) => log.some(([t, d]) => t === "ack" && d.clientMsgId === id);

for (const closeCode of [4413, 1009]) {
  test(`a refused message (${closeCode}) is dropped, reported, and the rest is sent`, async () => {
    const seen = [];
    const server = await fakeServer(refusingServer(closeCode, seen));
    const client = makeClient({ endpoints: [server.url], token: "access-1" });
    const log = record(client);
    await client.start();
    // Queued while the first is in flight: all three go out on the first socket.
    const first = await client.send("before");
    const poisoned = await client.send("x".repeat(5 * LIMIT));
    const after = await client.send("after");
    await eventually(() => acked(log, after), { timeoutMs: 10000, what: "the last message acked" });

    const refused = log.filter(([t]) => t === "rejected").map(([, d]) => d);
    assert.deepEqual(refused, [
      { clientMsgId: poisoned, text: "x".repeat(5 * LIMIT), code: "frame_too_large", detail: `close ${closeCode}: frame too large`, closeCode },
    ]);
    await assert.rejects(client.waitAcked(poisoned), (err) => err instanceof MessageRejected && err.code === closeCode && err.errorCode === "frame_too_large");
    assert.equal((await client.waitAcked(first)).seq, 1);
    assert.equal((await client.waitAcked(after)).seq, 2);
    // The poisoned message went out once, on the first socket, and never again.
    assert.deepEqual(seen.filter((f) => f.client_msg_id === poisoned).map((f) => f.socket), [0]);
    assert.deepEqual(client.pendingMessages, []);
    assert.equal(client.closed, false);
    const lost = log.filter(([t, d]) => t === "state" && d.state === "reconnecting" && d.code != null).map(([, d]) => d.code);
    assert.deepEqual(lost, [closeCode]);
  });
}

test("several refused messages are dropped, one close each", async () => {
  const seen = [];
  const server = await fakeServer(refusingServer(4413, seen));
  const client = makeClient({ endpoints: [server.url], token: "access-1" });
  const log = record(client);
  const huge = [];
  for (let n = 0; n < 3; n++) huge.push(await client.send(`${n}`.repeat(3 * LIMIT))); // queued before ready
  const fine = await client.send("fine");
  await eventually(() => acked(log, fine), { timeoutMs: 10000, what: "the fine message acked" });
  const refused = log.filter(([t]) => t === "rejected").map(([, d]) => d.clientMsgId);
  assert.deepEqual(refused.sort(), [...huge].sort());
  for (const id of huge) assert.equal(seen.filter((f) => f.client_msg_id === id).length, 1, "a refused message was resent");
  assert.equal(client.closed, false);
});

test("frame too large with no message to blame stops", async () => {
  // The server closes 4413 though nothing large was sent (a frame the client does not know
  // about): nothing to drop, so a resume could only loop. The client stops.
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready("fake"));
    await conn.recv("message");
    conn.send({ type: "error", code: "frame_too_large", detail: "frame exceeds 1 bytes" });
    conn.close(4413);
  });
  const client = makeClient({ endpoints: [server.url], token: "a-token-longer-than-the-message-frame".repeat(20) });
  const log = record(client);
  const id = await client.send("hi");
  await eventually(() => client.closed, { timeoutMs: 10000, what: "stop" });
  const closed = log.filter(([t, d]) => t === "state" && d.state === "closed").map(([, d]) => d);
  assert.equal(closed.length, 1);
  assert.equal(closed[0].code, 4413);
  assert.match(closed[0].reason, /no pending message was that large/);
  assert.ok(client.error);
  assert.deepEqual(client.pendingMessages.map((m) => m.clientMsgId), [id]); // kept: it was not refused
});

test("the refused message also leaves the stored outbox: a reloaded page does not send it", async () => {
  const storage = new MemoryStorage();
  const server = await fakeServer(async (conn) => {
    await conn.recv("connect");
    conn.send(ready(`fake-${conn.number}`, { resumed: conn.number > 0 }));
    if (conn.number > 0) return;
    await conn.recv("message"); // the page goes away before the server answers anything
    await conn.recv("message");
    conn.send({ type: "error", code: "frame_too_large", detail: "too large" });
    conn.close(4413);
  });
  const client = makeClient({ endpoints: [server.url], token: "t", storage, maxFrameBytes: 1 << 20 });
  await client.start();
  const small = await client.send("small");
  const big = await client.send("y".repeat(5000));
  await assert.rejects(client.waitAcked(big), MessageRejected);
  await client.close();
  const stored = JSON.parse(storage.getItem(`tether:conv:${client.conversationId}`));
  assert.deepEqual(stored.outbox.map((m) => m.clientMsgId), [small]);
});
