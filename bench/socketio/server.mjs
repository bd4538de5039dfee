// The Socket.IO side of bench/compare_socketio.py (issue 12): what a user would otherwise
// deploy for this job, Socket.IO 4.8 with connection-state recovery, serving the same
// workloads as Tether's benchmarks. Started and stopped by the harness; not a product.
//
//   node bench/socketio/server.mjs --port 0 --rate 20 --seconds 10
//
// prints one line `{"listening": <port>}` on stdout once it accepts connections.
//
// How recovery works (socket.io 4.8, socket.io-adapter's SessionAwareAdapter): every
// *broadcast* event packet (io.to(room).emit, without ack, not volatile) gets an offset id
// appended as its last argument and is kept in one in-memory array, all rooms together, for
// maxDisconnectionDuration. A socket closed for a recoverable reason ("transport close",
// "transport error", "ping timeout", ...) leaves a session {pid, rooms} in memory. A client
// that reconnects sends {pid, offset of the last event it got} in its CONNECT packet; the
// server scans the array for that offset and sends every later packet of the session's
// rooms, before its CONNECT answer. Nothing is written anywhere: a restart, another server
// process or an offset older than maxDisconnectionDuration means recovered=false and the
// missed events are gone. Direct socket.emit() packets are not kept at all, which is why every
// event here is a room broadcast.
//
// Workloads (the shape of bench/stream_bench.py and bench/resume_bench.py):
// - a client connects with auth {room}; it joins that room (one room = one conversation);
// - "message": starts a ticker for the room that broadcasts `agent.delta` {run_id, index, text}
//   with one token "t<unix time, 6 decimals> " each, --rate per second for --seconds, paced
//   against its start like bench/agents.py's TickAgent, then `agent.completed` with the text;
// - POST /emit {room, count, start, text}: broadcasts `count` agent.delta events to the room
//   at once (the events a resuming client missed), answers when they are all sent;
// - auth.prime: a new (not recovered) socket gets one `hello` broadcast, so that the client
//   holds an offset before its first cut (a client without an offset cannot recover).
// No authentication: with skipMiddlewares (the usual setting) a recovered socket skips the
// middlewares anyway.

import http from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import { wall } from "./wall.mjs";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    rate: { type: "string", default: "20" },
    seconds: { type: "string", default: "10" },
    // Socket.IO's default: 2 minutes.
    "max-disconnection-ms": { type: "string", default: "120000" },
  },
});
const rate = Number(args.rate);
const seconds = Number(args.seconds);

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString() || "{}"));
      } catch (err) {
        reject(err);
      }
    });
    req.on("error", reject);
  });
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

// socket.io answers its own path (/socket.io/); every other request comes here.
const httpServer = http.createServer(async (req, res) => {
  try {
    if (req.method === "POST" && req.url === "/emit") {
      const { room, count, start = 0, text } = await readJson(req);
      for (let i = 0; i < count; i++) {
        io.to(room).emit("agent.delta", { run_id: null, index: start + i, text });
      }
      return reply(res, 200, { emitted: count });
    }
    if (req.method === "GET" && req.url === "/stats") {
      const adapter = io.of("/").adapter;
      return reply(res, 200, {
        sockets: io.of("/").sockets.size,
        buffered_packets: adapter.packets.length,
        sessions: adapter.sessions.size,
        rss_kb: Math.round(process.memoryUsage().rss / 1024),
      });
    }
    if (req.url === "/healthz") return reply(res, 200, { ok: true });
    return reply(res, 404, { error: "not found" });
  } catch (err) {
    return reply(res, 500, { error: String(err) });
  }
});

const io = new Server(httpServer, {
  serveClient: false,
  connectionStateRecovery: {
    maxDisconnectionDuration: Number(args["max-disconnection-ms"]),
    skipMiddlewares: true,
  },
});

// TickAgent's shape: token i is due at start + i / rate; a late tick does not lower the rate.
function tick(room) {
  const total = Math.floor(rate * seconds);
  const start = performance.now();
  const parts = [];
  let index = 0;
  const step = () => {
    const token = `t${wall().toFixed(6)} `;
    parts.push(token);
    io.to(room).emit("agent.delta", { run_id: null, index, text: token });
    index += 1;
    if (index >= total) {
      io.to(room).emit("agent.completed", { message: { text: parts.join("") } });
      return;
    }
    setTimeout(step, Math.max(0, start + (index * 1000) / rate - performance.now()));
  };
  setTimeout(step, 0);
}

io.on("connection", (socket) => {
  const room = socket.handshake.auth.room;
  if (typeof room !== "string" || !room) {
    socket.disconnect(true);
    return;
  }
  // A recovered socket is already back in its rooms; joining again is harmless.
  socket.join(room);
  if (!socket.recovered && socket.handshake.auth.prime) {
    io.to(room).emit("hello", {});
  }
  socket.on("message", () => tick(room));
});

const shutdown = () => {
  io.close();
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

httpServer.listen(Number(args.port), args.host, () => {
  process.stdout.write(`${JSON.stringify({ listening: httpServer.address().port })}\n`);
});
