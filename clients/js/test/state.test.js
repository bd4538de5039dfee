// Port of tests/test_sdk_state.py: dedupe by seq, gap detection, resumed:false.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Arrival, ResumeState } from "../src/tether-client.js";

const CONV = "5b0c0d6e-8a2f-4c43-9a43-5d1f7d0b2a11";
const ready = (fields = {}) => ({ type: "ready", conversation_id: CONV, resumed: true, last_seq: 0, replay_count: 0, ...fields });

test("a new conversation starts at the server's last_seq", () => {
  const state = new ResumeState();
  assert.deepEqual(state.connectFields(), { conversation_id: null, last_seq: null });
  const outcome = state.onReady(ready({ resumed: false, last_seq: 0 }), null, null);
  assert.ok(outcome.newConversation && !outcome.resumed && !outcome.reloadRequired);
  assert.equal(state.conversationId, CONV);
  assert.equal(state.lastSeq, 0);
  assert.equal(state.classify(1), Arrival.NEXT);
});

test("events apply in order and duplicates are dropped", () => {
  const state = new ResumeState(CONV, 0);
  const applied = [];
  for (const seq of [1, 2, 2, 1, 3, 3, 4]) {
    const arrival = state.classify(seq);
    if (arrival === Arrival.NEXT) {
      state.apply(seq);
      applied.push(seq);
    } else {
      assert.equal(arrival, Arrival.DUPLICATE);
    }
  }
  assert.deepEqual(applied, [1, 2, 3, 4]);
  assert.equal(state.lastSeq, 4);
});

test("a gap is detected and not applied", () => {
  const state = new ResumeState(CONV, 4);
  assert.equal(state.classify(6), Arrival.GAP);
  assert.equal(state.classify(100), Arrival.GAP);
  assert.throws(() => state.apply(6), RangeError);
  assert.equal(state.lastSeq, 4); // the resume asks for everything after 4
  assert.deepEqual(state.connectFields(), { conversation_id: CONV, last_seq: 4 });
});

test("resume keeps last_seq and the replay follows", () => {
  const state = new ResumeState(CONV, 4);
  const outcome = state.onReady(ready({ resumed: true, last_seq: 7, replay_count: 3 }), CONV, 4);
  assert.ok(outcome.resumed && !outcome.reloadRequired);
  assert.deepEqual([outcome.serverLastSeq, outcome.replayCount], [7, 3]);
  assert.equal(state.lastSeq, 4);
  assert.deepEqual([4, 5, 6].map((s) => state.classify(s)), [Arrival.DUPLICATE, Arrival.NEXT, Arrival.GAP]);
});

test("a fresh client of an existing conversation gets the whole log", () => {
  const state = new ResumeState(CONV, null);
  const outcome = state.onReady(ready({ resumed: true, last_seq: 3, replay_count: 3 }), CONV, null);
  assert.ok(outcome.resumed && !outcome.reloadRequired);
  assert.equal(state.lastSeq, 0);
  assert.equal(state.classify(1), Arrival.NEXT);
});

test("resumed:false requires a reload and continues from the server's last_seq", () => {
  const state = new ResumeState(CONV, 10);
  const outcome = state.onReady(ready({ resumed: false, last_seq: 50 }), CONV, 10);
  assert.ok(outcome.reloadRequired && !outcome.resumed && !outcome.newConversation);
  assert.equal(outcome.reloadAfterSeq, 10);
  assert.equal(outcome.serverLastSeq, 50);
  assert.equal(state.lastSeq, 50);
  assert.equal(state.classify(50), Arrival.DUPLICATE); // already in the reloaded history
  assert.equal(state.classify(51), Arrival.NEXT);
});

test("resumed:false when the client is ahead of the log", () => {
  const state = new ResumeState(CONV, 99);
  const outcome = state.onReady(ready({ resumed: false, last_seq: 5 }), CONV, 99);
  assert.ok(outcome.reloadRequired);
  assert.equal(state.lastSeq, 5);
  assert.equal(state.classify(6), Arrival.NEXT);
});

test("resumed:false for a fresh client whose log start was pruned", () => {
  const state = new ResumeState(CONV, null);
  const outcome = state.onReady(ready({ resumed: false, last_seq: 30 }), CONV, null);
  assert.ok(outcome.reloadRequired && outcome.reloadAfterSeq === 0);
  assert.equal(state.lastSeq, 30);
});

test("cumulative ack bookkeeping", () => {
  const state = new ResumeState(CONV, 0);
  assert.equal(state.ackPending(), false);
  for (const seq of [1, 2, 3]) state.apply(seq);
  assert.ok(state.ackPending() && state.unackedCount() === 3);
  state.markAcked(3);
  assert.equal(state.ackPending(), false);
  state.markAcked(1); // never goes backwards
  assert.equal(state.ackedSeq, 3);
});

test("a negative last_seq is refused", () => {
  assert.throws(() => new ResumeState(CONV, -1), RangeError);
});
