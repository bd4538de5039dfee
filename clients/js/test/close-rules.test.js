// Port of tests/test_sdk_close_rules.py. tests/test_sdk_js_agreement.py also compares this
// `decide` with the Python SDK's over every code and error frame.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Action, decide } from "../src/tether-client.js";

test("going away retries at once on another node", () => {
  for (const code of [1001, 1012, 4012]) {
    const d = decide(code);
    assert.equal(d.action, Action.RETRY_NOW);
    assert.ok(d.rotate);
    assert.equal(d.delayMs, 0);
  }
});

test("a reconnect frame means retry now", () => {
  for (const code of [4012, 1006, null, 1000, 4408]) {
    const d = decide(code, { reconnect: true });
    assert.equal(d.action, Action.RETRY_NOW, String(code));
    assert.ok(d.rotate);
  }
});

test("a reconnect frame does not override a hard stop", () => {
  for (const code of [4403, 4404, 4409, 4400]) {
    assert.equal(decide(code, { reconnect: true }).action, Action.STOP, String(code));
  }
});

test("frame too large drops the refused message", () => {
  // Never STOP with the rest of the outbox unsent, never resend the refused frame: the client
  // drops the message it blames (SentFrames), or stops if it blames none.
  for (const code of [4413, 1009]) {
    for (const d of [decide(code), decide(code, { reconnect: true })]) {
      assert.equal(d.action, Action.DROP_MESSAGE, String(code));
      assert.ok(d.reason.includes("frame too large"), d.reason);
    }
  }
});

test("rate limited waits retry_after_ms from the error frame", () => {
  const d = decide(4429, { error: { type: "error", code: "rate_limited", retry_after_ms: 1500 } });
  assert.equal(d.action, Action.RETRY_AFTER);
  assert.equal(d.delayMs, 1500);
});

test("rate limited: an explicit retryAfterMs wins", () => {
  const d = decide(4429, { error: { type: "error", code: "rate_limited", retry_after_ms: 1500 }, retryAfterMs: 200 });
  assert.deepEqual([d.action, d.delayMs], [Action.RETRY_AFTER, 200]);
});

test("rate limited without retry_after_ms backs off", () => {
  assert.equal(decide(4429).action, Action.BACKOFF);
});

test("codes that retrying cannot fix stop", () => {
  const cases = [
    [1000, "normal close"],
    [4400, "too many bad frames"],
    [4403, "not your conversation"],
    [4404, "no such conversation"],
    [4409, "replaced"],
    [1002, "protocol error"],
    [1003, "unsupported data"],
    [1007, "invalid frame payload"],
    [1008, "policy violation"],
  ];
  for (const [code, why] of cases) {
    const d = decide(code);
    assert.equal(d.action, Action.STOP, String(code));
    assert.ok(d.reason.includes(why), d.reason);
    assert.equal(d.retries, false);
  }
});

test("unknown 4400-series codes stop", () => {
  for (const code of [4402, 4405, 4410, 4418, 4499]) assert.equal(decide(code).action, Action.STOP);
});

test("unauthenticated refreshes the token, then retries", () => {
  assert.equal(decide(4401).action, Action.REFRESH_TOKEN);
  assert.equal(decide(4401, { error: { type: "error", code: "token_expired" } }).action, Action.REFRESH_TOKEN);
});

test("heartbeat timeout backs off", () => {
  const d = decide(4408);
  assert.equal(d.action, Action.BACKOFF);
  assert.ok(d.retries);
});

test("lost and unknown codes back off on another node", () => {
  for (const code of [1006, 1011, 1013, 1014, null, 4000, 4500, 4999, 3000]) {
    const d = decide(code);
    assert.equal(d.action, Action.BACKOFF, String(code));
    assert.ok(d.rotate);
  }
});

test("the error frame names the cause when the close code is lost", () => {
  const cases = {
    going_away: Action.RETRY_NOW,
    forbidden: Action.STOP,
    not_found: Action.STOP,
    replaced: Action.STOP,
    frame_too_large: Action.DROP_MESSAGE,
    token_expired: Action.REFRESH_TOKEN,
    unauthenticated: Action.REFRESH_TOKEN,
    heartbeat_timeout: Action.BACKOFF,
  };
  for (const [code, action] of Object.entries(cases)) {
    assert.equal(decide(1006, { error: { type: "error", code } }).action, action, code);
    assert.equal(decide(null, { error: { type: "error", code } }).action, action, code);
  }
});

test("a rate_limited error before a lost close waits", () => {
  const d = decide(1006, { error: { type: "error", code: "rate_limited", retry_after_ms: 300 } });
  assert.deepEqual([d.action, d.delayMs], [Action.RETRY_AFTER, 300]);
});

test("the per-message rate limit error does not explain a drop", () => {
  // The per-conversation message limit carries `ref` and keeps the socket open.
  const error = { type: "error", code: "rate_limited", retry_after_ms: 300, ref: "6f1e" };
  assert.equal(decide(1006, { error }).action, Action.BACKOFF);
});

test("the close code wins over the error frame", () => {
  assert.equal(decide(4012, { error: { type: "error", code: "forbidden" } }).action, Action.RETRY_NOW);
});
