// Port of tests/test_sdk_outbox.py: unacknowledged messages resent in order with the same ids.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Outbox, uuid4 } from "../src/tether-client.js";

const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("ids are generated uuid4", () => {
  const outbox = new Outbox();
  const item = outbox.add("hello");
  assert.match(item.clientMsgId, UUID4);
  assert.deepEqual(outbox.resendFrames(), [{ type: "message", client_msg_id: item.clientMsgId, text: "hello" }]);
});

test("the fallback uuid4 (pages without crypto.randomUUID) is a uuid4 too", () => {
  const randomUUID = globalThis.crypto.randomUUID;
  try {
    Object.defineProperty(globalThis.crypto, "randomUUID", { value: undefined, configurable: true });
    const ids = new Set(Array.from({ length: 200 }, () => uuid4()));
    assert.equal(ids.size, 200);
    for (const id of ids) assert.match(id, UUID4);
  } finally {
    Object.defineProperty(globalThis.crypto, "randomUUID", { value: randomUUID, configurable: true });
  }
});

test("resend after every reconnect keeps ids and order", () => {
  const outbox = new Outbox();
  const sent = ["one", "two", "three"].map((t) => outbox.add(t));
  const first = outbox.resendFrames();
  const second = outbox.resendFrames();
  assert.deepEqual(first, second);
  assert.deepEqual(first.map((f) => f.client_msg_id), sent.map((m) => m.clientMsgId));
  assert.deepEqual(first.map((f) => f.text), ["one", "two", "three"]);
});

test("ack removes the message", () => {
  const outbox = new Outbox();
  const [one, two, three] = ["one", "two", "three"].map((t) => outbox.add(t));
  assert.deepEqual(outbox.ack(two.clientMsgId), two);
  assert.equal(outbox.has(two.clientMsgId), false);
  assert.deepEqual(outbox.resendFrames().map((f) => f.client_msg_id), [one.clientMsgId, three.clientMsgId]);
  assert.equal(outbox.size, 2);
});

test("a duplicate ack removes it too and repeated acks are harmless", () => {
  const outbox = new Outbox();
  const item = outbox.add("resent after a reconnect");
  // {"type":"message.ack","duplicate":true}: the server already had it.
  assert.deepEqual(outbox.ack(item.clientMsgId), item);
  assert.equal(outbox.ack(item.clientMsgId), null);
  assert.deepEqual(outbox.resendFrames(), []);
  assert.equal(outbox.ack(uuid4()), null); // an ack of someone else's message
});

test("new messages queue behind pending ones", () => {
  const outbox = new Outbox();
  const a = outbox.add("a");
  const b = outbox.add("b");
  outbox.ack(a.clientMsgId);
  const c = outbox.add("c");
  assert.deepEqual(outbox.pending().map((m) => m.clientMsgId), [b.clientMsgId, c.clientMsgId]);
  assert.deepEqual([...outbox].map((m) => m.clientMsgId), [b.clientMsgId, c.clientMsgId]);
});

test("explicit ids are normalised and unique", () => {
  const outbox = new Outbox();
  const id = uuid4();
  assert.equal(outbox.add("x", id.toUpperCase()).clientMsgId, id);
  assert.throws(() => outbox.add("y", id), /already pending/);
  assert.throws(() => outbox.add("z", "not-a-uuid"), TypeError);
});

test("discard drops a refused message", () => {
  const outbox = new Outbox();
  const item = outbox.add("far too long");
  assert.deepEqual(outbox.discard(item.clientMsgId), item);
  assert.equal(outbox.size, 0);
});

test("the stored form restores the same messages in the same order", () => {
  const outbox = new Outbox();
  ["a", "b", "c"].forEach((t) => outbox.add(t));
  const restored = Outbox.fromJSON(JSON.parse(JSON.stringify(outbox)));
  assert.deepEqual(restored.resendFrames(), outbox.resendFrames());
  // entries this version did not write are skipped, not fatal
  const odd = Outbox.fromJSON([{ clientMsgId: "nope", text: "x" }, { text: "" }, null, { clientMsgId: uuid4(), text: "ok" }]);
  assert.deepEqual(odd.pending().map((m) => m.text), ["ok"]);
  assert.equal(Outbox.fromJSON(undefined).size, 0);
});
