// A scripted fake of the Tether server for the client tests: a minimal RFC 6455 server on
// node:http (no packages), one script per accepted socket, like the Python SDK's
// tests/test_sdk_client_fake_server.py. Only what the client uses: text frames (masked from the
// client), close with a code, ping/pong, and an abrupt drop (TCP destroyed, no close frame).

import { createHash } from "node:crypto";
import { createServer } from "node:http";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** One accepted socket; records every frame the client sent. */
export class Conn {
  constructor(socket, number) {
    this.socket = socket;
    this.number = number;
    this.frames = []; // parsed client frames, in arrival order
    this.closed = null; // {code} once the socket ended
    this.buffer = Buffer.alloc(0);
    this.waiters = [];
    this.endWaiters = [];
    socket.on("data", (chunk) => this.#onData(chunk));
    socket.on("close", () => this.#ended(this.closed?.code ?? 1006));
    socket.on("error", () => {});
  }

  /**
   * Resolves with the next client frame of this type ("*": of any type) not taken yet; frames
   * of other types stay in `frames`. Each frame carries `__bytes`, its UTF-8 size.
   */
  recv(type, timeoutMs = 5000) {
    const seen = this.frames.find((f) => (type === "*" || f.type === type) && !f.__taken);
    if (seen) {
      seen.__taken = true;
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no '${type}' frame within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        type,
        resolve: (f) => (clearTimeout(timer), resolve(f)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
    });
  }

  send(...frames) {
    for (const frame of frames) this.#write(0x1, Buffer.from(JSON.stringify(frame)));
  }

  /** Closing handshake initiated by the server with `code`. */
  close(code) {
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    this.closed = { code };
    this.#write(0x8, payload);
    this.socket.end();
  }

  /** The TCP connection dies without a close frame (client sees 1006). */
  destroy() {
    this.socket.destroy();
  }

  /** Resolves when the socket ended (either side). */
  ended() {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }

  #ended(code) {
    if (!this.closed) this.closed = { code };
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Error(`socket ended (${code})`));
    for (const resolve of this.endWaiters.splice(0)) resolve();
  }

  #write(opcode, payload) {
    if (this.socket.destroyed || !this.socket.writable) return;
    const len = payload.length;
    let header;
    if (len < 126) header = Buffer.from([0x80 | opcode, len]);
    else if (len < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode;
      header[1] = 126;
      header.writeUInt16BE(len, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode;
      header[1] = 127;
      header.writeBigUInt64BE(BigInt(len), 2);
    }
    this.socket.write(Buffer.concat([header, payload]));
  }

  #onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      const opcode = b[0] & 0x0f;
      let len = b[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (b[1] & 0x80) !== 0;
      const maskOffset = offset;
      if (masked) offset += 4;
      if (b.length < offset + len) return;
      const payload = Buffer.from(b.subarray(offset, offset + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= b[maskOffset + (i % 4)];
      this.buffer = b.subarray(offset + len);
      if (opcode === 0x1) this.#onText(payload.toString("utf8"));
      else if (opcode === 0x8) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        if (!this.closed) {
          this.closed = { code, byClient: true };
          this.#write(0x8, payload.subarray(0, 2));
        }
        this.socket.end();
      } else if (opcode === 0x9) this.#write(0xa, payload);
    }
  }

  #onText(text) {
    const frame = JSON.parse(text);
    Object.defineProperty(frame, "__bytes", { value: Buffer.byteLength(text), enumerable: false });
    this.frames.push(frame);
    const i = this.waiters.findIndex((w) => w.type === "*" || w.type === frame.type);
    if (i >= 0) {
      frame.__taken = true;
      this.waiters.splice(i, 1)[0].resolve(frame);
    }
  }
}

/**
 * Starts a fake server; socket number n runs scripts[min(n, last)].
 * @returns {Promise<{url: string, conns: Conn[], connects(): object[], close(): Promise<void>, http: import("node:http").Server}>}
 */
export async function startFakeServer(...scripts) {
  const conns = [];
  const http = createServer((req, res) => {
    res.writeHead(404);
    res.end();
  });
  http.on("upgrade", (req, socket) => {
    const accept = createHash("sha1").update(req.headers["sec-websocket-key"] + GUID).digest("base64");
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const conn = new Conn(socket, conns.length);
    conns.push(conn);
    const script = scripts[Math.min(conn.number, scripts.length - 1)];
    Promise.resolve(script(conn)).catch((err) => {
      if (!conn.socket.destroyed) console.error(`fake server script ${conn.number} failed:`, err);
    });
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address();
  return {
    url: `ws://127.0.0.1:${port}/ws/v1/`,
    http,
    conns,
    connects: () => conns.flatMap((c) => c.frames.filter((f) => f.type === "connect")),
    close: async () => {
      for (const c of conns) c.socket.destroy();
      await new Promise((resolve) => http.close(resolve));
    },
  };
}

/** A ws:// URL on which nothing listens. */
export async function deadUrl() {
  const http = createServer();
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address();
  await new Promise((resolve) => http.close(resolve));
  return `ws://127.0.0.1:${port}/ws/v1/`;
}

/** Polls `check` until it returns something truthy (deadline, never a bare sleep). */
export async function eventually(check, { timeoutMs = 5000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A deterministic random() for reproducible backoff (mulberry32). */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** In-memory sessionStorage. */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}

/** A fake browser window: `online`/`offline` events, navigator.onLine, document visibility. */
export class FakeWindow extends EventTarget {
  constructor() {
    super();
    this.navigator = { onLine: true };
    this.document = Object.assign(new EventTarget(), { visibilityState: "visible" });
  }
  goOffline() {
    this.navigator.onLine = false;
    this.dispatchEvent(new Event("offline"));
  }
  goOnline() {
    this.navigator.onLine = true;
    this.dispatchEvent(new Event("online"));
  }
  setVisibility(state) {
    this.document.visibilityState = state;
    this.document.dispatchEvent(new Event("visibilitychange"));
  }
}

/** Records every event of a client, in order: [type, detail]. */
export function record(client) {
  const log = [];
  for (const type of ["event", "state", "ack", "rejected", "servererror", "reload", "tokens"]) {
    client.addEventListener(type, (e) => log.push([type, e.detail]));
  }
  return log;
}

export const CONV = "5b0c0d6e-8a2f-4c43-9a43-5d1f7d0b2a11";
export const RUN = "9d4c1b7e-0f3a-4f55-8a1e-2b6c7d8e9f00";
export const FAR_FUTURE = Math.floor(Date.now() / 1000) + 3600;

export function ready(node, fields = {}) {
  return {
    type: "ready",
    conversation_id: CONV,
    resumed: false,
    last_seq: 0,
    replay_count: 0,
    heartbeat_interval_ms: 25000,
    access_expires_at: FAR_FUTURE,
    node,
    ...fields,
  };
}

export function delta(seq, index, text) {
  return { type: "agent.delta", seq, run_id: RUN, index, text };
}

/** A script: ready, then answer every ping until the client goes away. */
export async function serveForever(conn) {
  await conn.recv("connect");
  conn.send(ready("live"));
  for (;;) {
    const ping = await conn.recv("ping", 3_600_000);
    conn.send({ type: "pong", id: ping.id });
  }
}
