#!/usr/bin/env node
// Node socket.io 4.8 reference for bench/acks.py: an emit that waits for every
// recipient's acknowledgement, asked over HTTP.
//
//   JWT_SECRET=... API_KEY=... [REDIS_URL=... REDIS_PREFIX=...] node ack_server.js --port P
//
// Socket.IO has no HTTP API; the closest thing to siogate's `POST /v1/emit` with
// `"ack": {"timeout_ms": N}` is `io.to(rooms).timeout(N).emitWithAck(event, ...args)`
// in the server process, so this route does exactly that and answers with the replies.
// With REDIS_URL the @socket.io/redis-adapter carries the emit and the replies between
// nodes (the adapter counts the other nodes' recipients, then awaits their acks).
//
// Contract (the subset bench/acks.py uses; names as in siogate):
// - Handshake auth {token}: an HS256 JWT signed with JWT_SECRET; the socket joins
//   `user:<sub>` and every room of the `rooms` claim.
// - POST /v1/emit, `Authorization: Bearer <API_KEY>`, JSON
//   {"event", "data"?, "rooms"?, "ack"?: {"timeout_ms"}}
//   -> with ack: 200 {"recipients": n, "acks": [reply, ...], "timeouts": 0}
//      or, when not every socket answered in time, 200 {"timeouts": 1, "error": ...}
//      (socket.io rejects the whole emit then, without the partial replies);
//      without ack: a plain emit -> 200 {"ok": true}.
// - GET /healthz -> {"status":"ok"}.
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");
const { bearerCheck, sendJson } = require("./http_util.js");

const MAX_BODY = 1_000_000;

const opts = { host: "127.0.0.1", port: 8000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (argv[i] === "--port") opts.port = Number(argv[i + 1]);
  else if (argv[i] === "--host") opts.host = argv[i + 1];
  else throw new Error(`unknown flag ${argv[i]}`);
}
const apiKey = process.env.API_KEY;
const jwtSecret = process.env.JWT_SECRET;
if (!apiKey || !jwtSecret) throw new Error("API_KEY and JWT_SECRET must be set");
const redisUrl = process.env.REDIS_URL || "";
const redisPrefix = process.env.REDIS_PREFIX || "socket.io";

// A KeyObject made once: jsonwebtoken converts a string secret on every verify (slow).
const jwtKey = crypto.createSecretKey(Buffer.from(jwtSecret, "utf8"));
const authorized = bearerCheck(apiKey);

let io;

async function handleEmit(res, body) {
  let msg;
  try {
    msg = JSON.parse(body);
  } catch {
    return sendJson(res, 400, { error: { code: "invalid_json", message: "not JSON" } });
  }
  const { event, rooms, ack } = msg || {};
  if (typeof event !== "string" || event === "") {
    return sendJson(res, 400, { error: { code: "invalid_request", message: "`event`" } });
  }
  const args = "data" in msg ? [msg.data] : [];
  let target = io.of("/");
  if (Array.isArray(rooms) && rooms.length > 0) target = target.to(rooms);
  if (!ack) {
    target.emit(event, ...args);
    return sendJson(res, 200, { ok: true });
  }
  const timeoutMs = ack.timeout_ms;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 60_000) {
    return sendJson(res, 400, { error: { code: "invalid_request", message: "timeout_ms" } });
  }
  try {
    const replies = await target.timeout(timeoutMs).emitWithAck(event, ...args);
    return sendJson(res, 200, { recipients: replies.length, acks: replies, timeouts: 0 });
  } catch (err) {
    return sendJson(res, 200, { timeouts: 1, error: String(err && err.message) });
  }
}

function onRequest(req, res) {
  const path = req.url.split("?", 1)[0];
  if (path === "/healthz") return sendJson(res, 200, { status: "ok" });
  if (path !== "/v1/emit" || req.method !== "POST") {
    return sendJson(res, 404, { error: { code: "not_found", message: path } });
  }
  if (!authorized(req)) {
    return sendJson(res, 401, { error: { code: "unauthorized", message: "API key" } });
  }
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY) {
      return sendJson(res, 413, { error: { code: "payload_too_large", message: "body" } });
    }
    handleEmit(res, Buffer.concat(chunks).toString("utf8")).catch((err) =>
      sendJson(res, 500, { error: { code: "internal", message: String(err) } }),
    );
  });
}

function authenticate(socket, next) {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (typeof token !== "string") return next(new Error("missing token"));
  try {
    socket.data.claims = jwt.verify(token, jwtKey, { algorithms: ["HS256"] });
  } catch (err) {
    return next(new Error(`invalid token: ${err.message}`));
  }
  return next();
}

function onConnection(socket) {
  const { sub, rooms } = socket.data.claims;
  const joined = typeof sub === "string" ? [`user:${sub}`] : [];
  if (Array.isArray(rooms)) for (const r of rooms) if (typeof r === "string") joined.push(r);
  if (joined.length > 0) socket.join(joined);
}

async function redisAdapter() {
  if (!redisUrl) return undefined;
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const c of [pubClient, subClient]) {
    c.on("error", (err) => process.stderr.write(`redis client: ${err.message}\n`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);
  return createAdapter(pubClient, subClient, { key: redisPrefix });
}

async function main() {
  const httpServer = http.createServer({ keepAliveTimeout: 60_000 }, onRequest);
  io = new Server(httpServer, {
    path: "/socket.io/",
    serveClient: false,
    maxHttpBufferSize: MAX_BODY,
    adapter: await redisAdapter(),
  });
  io.of("/").use(authenticate);
  io.of("/").on("connection", onConnection);
  httpServer.listen({ host: opts.host, port: opts.port, backlog: 1024 }, () => {
    process.stderr.write(`node ack reference listening on ${opts.host}:${opts.port}\n`);
  });
}

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
main().catch((err) => {
  process.stderr.write(`ack_server failed to start: ${err.stack || err}\n`);
  process.exit(1);
});
