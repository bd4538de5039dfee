// The client of bench/compare_socketio.py (issue 12), one program for both systems so that
// the client costs the same on each side: Tether through `ws` (raw WebSocket, Tether's JSON
// protocol of docs/protocol.md) and Socket.IO through `socket.io-client`, which runs on the
// same `ws` version (package.json pins it) with transports: ["websocket"].
//
//   node bench/socketio/client.mjs stream|resume
//
// It reads one JSON line of configuration on stdin, writes JSON lines on stdout: requests to
// the harness ({"need": ...}, answered by one JSON line on stdin) and at the end
// {"result": {...}}. Diagnostics go to stderr. The harness computes every percentile from the
// raw samples, with the same methods as stream_bench.py and resume_bench.py.

import readline from "node:readline";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { wall } from "./wall.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
async function ask(obj) {
  emit(obj);
  const { value, done } = await input.next();
  if (done) throw new Error("the harness closed stdin");
  return JSON.parse(value);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Drops the TCP connection like a network failure: RST, no closing handshake (what
// bench/_support.py's abort_socket does with SO_LINGER 0 + abort).
function resetTcp(ws) {
  ws._socket.resetAndDestroy();
}

// ---------------------------------------------------------------- Tether (raw WebSocket)

class TetherSocket {
  constructor(url) {
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });
    this.frames = [];
    this.waiter = null;
    this.onframe = null; // when set, frames go to it instead of the queue
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
    });
    this.closed = new Promise((resolve) => this.ws.once("close", resolve));
    this.ws.on("error", () => {}); // a reset is reported by "close"
    this.ws.on("message", (data) => {
      const frame = JSON.parse(data);
      if (this.onframe) return this.onframe(frame);
      if (this.waiter) {
        const resolve = this.waiter;
        this.waiter = null;
        resolve(frame);
      } else {
        this.frames.push(frame);
      }
    });
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  next(ms = 30000) {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    return withTimeout(new Promise((resolve) => { this.waiter = resolve; }), ms, "tether frame");
  }

  // Handshake + `connect` frame, resolves with the `ready` frame (or the error frame).
  async connect(token, conversationId, lastSeq, clientId) {
    await withTimeout(this.opened, 30000, "tether socket open");
    this.send({ type: "connect", token, conversation_id: conversationId, last_seq: lastSeq, client_id: clientId });
    return this.next();
  }
}

// ---------------------------------------------------------------- Socket.IO

function socketio(url, room, prime = false) {
  // forceNew: one Manager, so one WebSocket, per client (not multiplexed), like Tether's
  // one socket per conversation. reconnection: false: the benchmark reconnects itself, at
  // once, so that no backoff timer is measured.
  return io(url, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    auth: { room, prime },
  });
}

function sioConnected(sock, ms = 30000) {
  return withTimeout(new Promise((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("connect_error", reject);
  }), ms, "socket.io connect");
}

// ---------------------------------------------------------------- streams

// One conversation streaming `expected` tokens. Returns a controller: `start()` asks for the
// answer, `done` resolves with the stream's figures. Arrival time is taken once per frame
// and every token in it gets its delay from its own creation stamp, as stream_bench.py does.
function streamState(expected) {
  const state = { delays: [], tokens: 0, events: 0, nextIndex: 0, parts: [], problems: [], lastFrame: 0, retries: 0 };
  state.delta = (frame) => {
    const now = wall();
    state.lastFrame = performance.now();
    if (frame.index !== state.nextIndex) state.problems.push(`index ${frame.index}, expected ${state.nextIndex}`);
    state.nextIndex = frame.index + 1;
    state.events += 1;
    for (const tok of frame.text.split(" ")) {
      if (!tok) continue;
      state.delays.push(now - Number(tok.slice(1)));
      state.tokens += 1;
    }
    state.parts.push(frame.text);
  };
  state.completed = (frame) => {
    state.lastFrame = performance.now();
    if (frame.message.text !== state.parts.join("")) state.problems.push("completed text != deltas");
  };
  state.summary = () => ({ delays: state.delays, tokens: state.tokens, events: state.events,
                           lost: expected - state.tokens, problems: state.problems, retries: state.retries });
  return state;
}

async function tetherStream(cfg, token, expected) {
  // A refusal with retry_after_ms (e.g. `going_away` when the node cannot join the live feed
  // in time during a burst of connects) is retried after that delay, as docs/protocol.md
  // tells clients to; the retries are counted. Opening is not part of the measure.
  const clientId = crypto.randomUUID();
  let sock;
  let ready;
  let retries = 0;
  for (;;) {
    sock = new TetherSocket(cfg.url);
    ready = await sock.connect(token, null, null, clientId);
    if (ready.type === "ready" || !ready.retry_after_ms || retries >= 10) break;
    retries += 1;
    sock.ws.terminate();
    await sleep(ready.retry_after_ms);
  }
  if (ready.type !== "ready") throw new Error(`tether refused: ${JSON.stringify(ready)}`);
  const state = streamState(expected);
  state.retries = retries;
  let lastAck = performance.now();
  let finish;
  state.done = new Promise((resolve) => { finish = resolve; });
  sock.onframe = (frame) => {
    if (frame.type === "agent.delta") {
      state.delta(frame);
      // The SDK's rhythm, as in stream_bench.py: one ack a second.
      if (performance.now() - lastAck > 1000) {
        sock.send({ type: "ack", seq: frame.seq });
        lastAck = performance.now();
      }
    } else if (frame.type === "agent.completed") {
      state.completed(frame);
      finish();
    } else if (frame.type === "agent.failed" || frame.type === "error") {
      state.problems.push(JSON.stringify(frame));
      finish();
    }
  };
  sock.ws.once("close", () => finish());
  state.start = () => sock.send({ type: "message", client_msg_id: crypto.randomUUID(), text: "go" });
  state.close = () => sock.ws.close();
  return state;
}

async function sioStream(cfg, index, expected) {
  const sock = socketio(cfg.url, `stream-${cfg.tag}-${index}`);
  await sioConnected(sock);
  const state = streamState(expected);
  let finish;
  state.done = new Promise((resolve) => { finish = resolve; });
  sock.on("agent.delta", (frame) => state.delta(frame));
  sock.on("agent.completed", (frame) => { state.completed(frame); finish(); });
  sock.on("disconnect", () => finish());
  state.start = () => sock.emit("message", { text: "go" });
  state.close = () => sock.disconnect();
  return state;
}

async function runStreams(cfg) {
  const expected = Math.floor(cfg.rate * cfg.seconds);
  const opening = [];
  for (let i = 0; i < cfg.streams; i++) {
    opening.push(cfg.system === "tether" ? tetherStream(cfg, cfg.tokens[i], expected) : sioStream(cfg, i, expected));
  }
  const t_open = performance.now();
  const streams = await withTimeout(Promise.all(opening), 120000, "opening the streams");
  const openSeconds = (performance.now() - t_open) / 1000;
  // Every socket is open and ready; all streams start together.
  const t0 = performance.now();
  for (const s of streams) {
    s.lastFrame = t0;
    s.start();
  }
  // A stream silent for 30 s has failed (stream_bench.py's per-frame timeout).
  const watchdog = setInterval(() => {
    for (const s of streams) {
      if (performance.now() - s.lastFrame > 30000) {
        s.problems.push("no frame for 30 s");
        s.lastFrame = Infinity;
        s.close();
      }
    }
  }, 1000);
  await withTimeout(Promise.all(streams.map((s) => s.done)), (cfg.seconds + 120) * 1000, "streams");
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(watchdog);
  for (const s of streams) s.close();
  const results = streams.map((s) => s.summary());
  return {
    open_s: openSeconds,
    elapsed_s: elapsed,
    delays: results.flatMap((r) => r.delays),
    tokens: results.reduce((n, r) => n + r.tokens, 0),
    events: results.reduce((n, r) => n + r.events, 0),
    lost_tokens: results.reduce((n, r) => n + r.lost, 0),
    connect_retries: results.reduce((n, r) => n + r.retries, 0),
    problems: results.flatMap((r) => r.problems).slice(0, 20),
  };
}

// ---------------------------------------------------------------- resume

// Per repetition: cut (RST) → the harness writes `missed` events while the client is away →
// after pause_ms, a new socket → every missed event. Three clocks per repetition:
//   open_to_last: new socket opened → last missed event (resume_bench.py's measure);
//   open_to_ready: new socket opened → Tether's `ready` / Socket.IO's `connect` event;
//   lost_to_last: the cut → last missed event (includes the harness writing the events and
//   the pause: run with pause_ms 0 for "disconnect → all missed received").
async function runResume(cfg) {
  const K = cfg.missed;
  const samples = { open_to_last: [], open_to_ready: [], lost_to_last: [], write: [], lost_to_open: [] };
  const problems = [];
  const record = (rep, times) => {
    if (rep < cfg.warmup) return;
    for (const [k, v] of Object.entries(times)) samples[k].push(v / 1000);
  };
  if (cfg.system === "tether") {
    let sock = new TetherSocket(cfg.url);
    let ready = await sock.connect(cfg.token, cfg.conversation_id, 0, cfg.client_id);
    if (ready.type !== "ready") throw new Error(`tether refused: ${JSON.stringify(ready)}`);
    let lastSeq = ready.last_seq;
    for (let rep = 0; rep < cfg.warmup + cfg.reps; rep++) {
      const tLost = performance.now();
      resetTcp(sock.ws);
      await sock.closed;
      const tWrite = performance.now();
      await ask({ need: "missed", rep, count: K, start: rep * K });
      const tWritten = performance.now();
      if (cfg.pause_ms) await sleep(cfg.pause_ms);
      const t0 = performance.now();
      sock = new TetherSocket(cfg.url);
      ready = await sock.connect(cfg.token, cfg.conversation_id, lastSeq, cfg.client_id);
      const tReady = performance.now();
      const got = [];
      for (let i = 0; i < (ready.replay_count || 0); i++) got.push(await sock.next());
      const tDone = performance.now();
      if (!(ready.type === "ready" && ready.resumed && ready.replay_count === K && ready.last_seq === lastSeq + K)) {
        problems.push(`rep ${rep}: ready ${JSON.stringify(ready)}`);
      }
      const wrong = got.findIndex((f, i) => f.type !== "agent.delta" || f.seq !== lastSeq + 1 + i
        || f.index !== rep * K + i || f.text !== cfg.text || f.run_id !== null);
      if (wrong !== -1 || got.length !== K) problems.push(`rep ${rep}: replay of ${got.length} frames, first wrong at ${wrong}`);
      if (got.length) lastSeq = got[got.length - 1].seq;
      record(rep, { open_to_last: tDone - t0, open_to_ready: tReady - t0, lost_to_last: tDone - tLost,
                    write: tWritten - tWrite, lost_to_open: t0 - tLost });
    }
    resetTcp(sock.ws);
  } else {
    const sock = socketio(cfg.url, cfg.room, true);
    const hello = new Promise((resolve) => sock.once("hello", resolve));
    await sioConnected(sock);
    await withTimeout(hello, 30000, "socket.io hello");
    let got = [];
    let allIn = null;
    let tDone = 0;
    sock.on("agent.delta", (frame) => {
      got.push(frame);
      if (got.length === K) {
        tDone = performance.now();
        if (allIn) allIn();
      }
    });
    for (let rep = 0; rep < cfg.warmup + cfg.reps; rep++) {
      const disconnected = new Promise((resolve) => sock.once("disconnect", resolve));
      const tLost = performance.now();
      resetTcp(sock.io.engine.transport.ws);
      const reason = await disconnected;
      const tWrite = performance.now();
      await ask({ need: "missed", rep, count: K, start: rep * K });
      const tWritten = performance.now();
      if (cfg.pause_ms) await sleep(cfg.pause_ms);
      got = [];
      tDone = 0;
      const all = new Promise((resolve) => { allIn = resolve; });
      const t0 = performance.now();
      sock.connect();
      await sioConnected(sock);
      const tReady = performance.now();
      // Recovered packets are sent before the CONNECT answer and emitted just before
      // "connect": a recovered socket has them all by now; a socket that was not recovered
      // never gets them.
      if (!sock.recovered || got.length < K) {
        problems.push(`rep ${rep}: recovered=${sock.recovered} after "${reason}", ${got.length} of ${K} missed events`);
        allIn = null;
        continue;
      }
      await withTimeout(all, 30000, "socket.io missed events");
      allIn = null;
      const wrong = got.findIndex((f, i) => f.index !== rep * K + i || f.text !== cfg.text);
      if (wrong !== -1 || got.length !== K) problems.push(`rep ${rep}: ${got.length} events, first wrong at ${wrong}`);
      record(rep, { open_to_last: tDone - t0, open_to_ready: tReady - t0, lost_to_last: tDone - tLost,
                    write: tWritten - tWrite, lost_to_open: t0 - tLost });
    }
    resetTcp(sock.io.engine.transport.ws);
  }
  return { missed: K, samples, problems: problems.slice(0, 10), problem_count: problems.length };
}

// ----------------------------------------------------------------

const mode = process.argv[2];
const { value: line } = await input.next();
const cfg = JSON.parse(line);
// Writes to a pipe are asynchronous in Node: exit only once the last line is flushed, or a
// result of several MB arrives cut.
const finish = (obj, code) => process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
try {
  finish({ result: mode === "stream" ? await runStreams(cfg) : await runResume(cfg) }, 0);
} catch (err) {
  process.stderr.write(`${err.stack || err}\n`);
  finish({ error: String(err.stack || err) }, 1);
}
