// Port of tests/test_sdk_oversize.py: which message a "frame too large" close refers to, so
// that the message is dropped instead of resent forever.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SentFrames, frameSize } from "../src/tether-client.js";

const message = (id) => ({ type: "message", client_msg_id: id, text: "..." });

test("the largest pending message is the refused frame", () => {
  const sent = new SentFrames();
  sent.record({ type: "connect", token: "t" }, 400);
  sent.record(message("small"), 100);
  sent.record(message("huge"), 1_000_000);
  sent.record(message("after"), 200);
  assert.equal(sent.culprit(new Set(["small", "huge", "after"])), "huge");
});

test("acknowledged messages are not blamed", () => {
  // A message the server acknowledged was within the limit, whatever its size.
  const sent = new SentFrames();
  sent.record({ type: "connect" }, 400);
  sent.record(message("accepted"), 60_000);
  sent.record(message("refused"), 50_000); // smaller, but the server did not accept it
  assert.equal(sent.culprit(new Set(["refused"])), "refused");
});

test("no pending message, no culprit", () => {
  const sent = new SentFrames();
  sent.record({ type: "connect" }, 400);
  sent.record(message("acked"), 100_000);
  assert.equal(sent.culprit(new Set()), null);
  assert.equal(new SentFrames().culprit(new Set(["anything"])), null);
});

test("a larger non-message frame blames no message", () => {
  // A huge `connect` or `auth.refresh` may be what was refused: dropping a message would lose
  // it for nothing.
  const sent = new SentFrames();
  sent.record({ type: "auth.refresh", access: "x".repeat(90_000) }, 90_020);
  sent.record(message("innocent"), 70_000);
  assert.equal(sent.culprit(new Set(["innocent"])), null);
  sent.record(message("equal"), 90_020);
  assert.equal(sent.culprit(new Set(["innocent", "equal"])), null); // a tie cannot tell them apart
});

test("a message sent twice on one socket counts once with its size", () => {
  const sent = new SentFrames();
  sent.record({ type: "connect" }, 400);
  sent.record(message("m"), 80_000);
  sent.record(message("m"), 80_000);
  assert.deepEqual([...sent.messages], [["m", 80_000]]);
  assert.equal(sent.culprit(new Set(["m"])), "m");
});

test("equal sizes blame the first sent", () => {
  const sent = new SentFrames();
  sent.record({ type: "connect" }, 400);
  sent.record(message("first"), 70_000);
  sent.record(message("second"), 70_000);
  assert.equal(sent.culprit(new Set(["first", "second"])), "first");
});

test("frameSize counts UTF-8 bytes", () => {
  assert.equal(frameSize("aé€😀"), 1 + 2 + 3 + 4);
});
