// Port of tests/test_sdk_backoff.py: full jitter within min(cap, base * 2**n).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../src/tether-client.js";
import { seededRandom } from "./support/fake-server.js";

test("defaults", () => {
  const backoff = new Backoff();
  assert.deepEqual([backoff.baseMs, backoff.capMs, backoff.maxAttempts], [250, 10000, null]);
});

test("every delay is within the bound of its attempt", () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const backoff = new Backoff({ baseMs: 250, capMs: 10000, random: seededRandom(attempt) });
    const bound = Math.min(10000, 250 * 2 ** attempt);
    assert.equal(backoff.bound(attempt), bound);
    for (let i = 0; i < 500; i++) {
      const d = backoff.delay(attempt);
      assert.ok(d >= 0 && d <= bound, `${d} outside [0, ${bound}]`);
    }
  }
});

test("bounds double until the cap", () => {
  const backoff = new Backoff({ baseMs: 250, capMs: 10000 });
  assert.deepEqual([...Array(8).keys()].map((n) => backoff.bound(n)), [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
});

test("cap is respected for huge attempts", () => {
  const backoff = new Backoff({ baseMs: 250, capMs: 3000, random: seededRandom(7) });
  for (const attempt of [10, 63, 64, 1000, 10 ** 6]) {
    assert.equal(backoff.bound(attempt), 3000);
    for (let i = 0; i < 200; i++) assert.ok(backoff.delay(attempt) <= 3000);
  }
});

test("full jitter spreads over the whole window", () => {
  const backoff = new Backoff({ baseMs: 250, capMs: 10000, random: seededRandom(12345) });
  const bound = backoff.bound(3); // 2 s
  const samples = Array.from({ length: 20000 }, () => backoff.delay(3));
  assert.ok(Math.min(...samples) < 0.02 * bound);
  assert.ok(Math.max(...samples) > 0.98 * bound);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.ok(Math.abs(mean - bound / 2) < 0.03 * (bound / 2), `mean ${mean}`);
  const buckets = new Array(10).fill(0);
  for (const s of samples) buckets[Math.min(9, Math.floor((s / bound) * 10))] += 1;
  assert.ok(buckets.every((c) => c > 1600 && c < 2400), `not uniform: ${buckets}`); // ~2000 each
});

test("an injected random makes delays reproducible", () => {
  const first = new Backoff({ random: seededRandom(42) });
  const second = new Backoff({ random: seededRandom(42) });
  const seq = (b) => [...Array(10).keys()].map((n) => b.delay(n));
  assert.deepEqual(seq(first), seq(second));
});

test("attempts limit", () => {
  const backoff = new Backoff({ maxAttempts: 3 });
  assert.deepEqual([0, 1, 2, 3, 4].map((n) => backoff.allows(n)), [true, true, true, false, false]);
  assert.equal(new Backoff({ maxAttempts: 0 }).allows(0), false);
  assert.equal(new Backoff().allows(10 ** 9), true); // null: forever
});

test("invalid configuration is refused", () => {
  for (const options of [{ baseMs: 0 }, { baseMs: -1 }, { baseMs: 2000, capMs: 1000 }, { maxAttempts: -1 }]) {
    assert.throws(() => new Backoff(options), RangeError, JSON.stringify(options));
  }
});

test("a negative attempt is refused", () => {
  assert.throws(() => new Backoff().bound(-1), RangeError);
});
