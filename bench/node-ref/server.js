#!/usr/bin/env node
// Node socket.io 4.8 reference server with siogate's contract, for bench/run.py.
//
//   JWT_SECRET=... API_KEY=... node server.js --port 8000 [--host 127.0.0.1]
//   REDIS_URL=redis://127.0.0.1:6390/0 [REDIS_PREFIX=name] ... node server.js --port 8001
//
// With REDIS_URL set, every node runs @socket.io/redis-adapter over two node-redis
// clients (publish, subscribe), so POST /v1/emit on any node reaches matching sockets on
// every node sharing the Redis server and the prefix (the adapter's `key`, default
// "socket.io"). The server listens only once both clients are connected.
//
// Contract (the subset the benchmark exercises, same names as siogate):
// - Socket.IO at /socket.io/ (Engine.IO v4, polling + websocket), any namespace.
// - Handshake auth {token}: an HS256 JWT signed with JWT_SECRET; `exp` required.
//   The socket joins `user:<sub>` and every room of the `rooms` claim.
//   A refused handshake gets CONNECT_ERROR {"message": ...}.
// - POST /v1/emit, `Authorization: Bearer <API_KEY>`, JSON
//   {"event", "data"? | "args"?, "namespace"="/", "rooms"?, "except"?}
//   -> io.of(ns).to(rooms).except(except).emit(event, ...args) -> 200 {"ok":true}.
// - GET /healthz -> {"status":"ok"}.
// Errors are {"error":{"code","message"}} with 400, 401, 404, 405, 413.
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");
const { bearerCheck, sendJson } = require("./http_util.js");

const MAX_BODY = 1_000_000;
const RESERVED_EVENTS = new Set([
  "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
]);

function parseArgs(argv) {
  const opts = {
    host: "127.0.0.1",
    port: 8000,
    backlog: 1024,
    apiKey: process.env.API_KEY,
    jwtSecret: process.env.JWT_SECRET,
    redisUrl: process.env.REDIS_URL || "",
    redisPrefix: process.env.REDIS_PREFIX || "socket.io",
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === "--port") opts.port = Number(value);
    else if (flag === "--host") opts.host = value;
    else if (flag === "--backlog") opts.backlog = Number(value);
    else if (flag === "--api-key") opts.apiKey = value;
    else if (flag === "--jwt-secret") opts.jwtSecret = value;
    else if (flag === "--redis-url") opts.redisUrl = value;
    else if (flag === "--redis-prefix") opts.redisPrefix = value;
    else throw new Error(`unknown flag ${flag}`);
    i++;
  }
  if (!opts.apiKey || !opts.jwtSecret) {
    throw new Error("API_KEY and JWT_SECRET must be set (env or --api-key / --jwt-secret)");
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// jsonwebtoken turns a string secret into a KeyObject on every verify() call, which
// measured ~600 us per HS256 verify here; creating the KeyObject once brings it to ~20 us.
// Without this the reference server's connect rate would be bounded by that conversion.
const jwtKey = crypto.createSecretKey(Buffer.from(opts.jwtSecret, "utf8"));
// Algorithms pinned: no `none`, no RS/HS confusion.
const VERIFY_OPTIONS = { algorithms: ["HS256"] };

const authorized = bearerCheck(opts.apiKey);

function sendError(res, status, code, message) {
  sendJson(res, status, { error: { code, message } });
}

function isStringList(value) {
  return Array.isArray(value) && value.every((item) => typeof item === "string");
}

function handleEmit(req, res, body) {
  let msg;
  try {
    msg = JSON.parse(body);
  } catch {
    return sendError(res, 400, "invalid_json", "request body is not valid JSON");
  }
  if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
    return sendError(res, 400, "invalid_request", "body must be a JSON object");
  }
  const { event, namespace = "/", rooms, except } = msg;
  if (typeof event !== "string" || event === "") {
    return sendError(res, 400, "invalid_request", "`event` must be a non-empty string");
  }
  if (RESERVED_EVENTS.has(event)) {
    return sendError(res, 400, "reserved_event", `\`${event}\` is a reserved event name`);
  }
  if ("data" in msg && "args" in msg) {
    return sendError(res, 400, "invalid_request", "give `data` or `args`, not both");
  }
  let args = [];
  if ("args" in msg) {
    if (!Array.isArray(msg.args)) {
      return sendError(res, 400, "invalid_request", "`args` must be a list");
    }
    args = msg.args;
  } else if ("data" in msg) {
    args = [msg.data];
  }
  if (typeof namespace !== "string" || !namespace.startsWith("/")) {
    return sendError(res, 400, "invalid_request", "`namespace` must start with /");
  }
  if (rooms !== undefined && !isStringList(rooms)) {
    return sendError(res, 400, "invalid_request", "`rooms` must be a list of strings");
  }
  if (except !== undefined && !isStringList(except)) {
    return sendError(res, 400, "invalid_request", "`except` must be a list of strings");
  }
  // io._nsps is the registry of existing namespaces; io.of() would create one for
  // every unknown name a caller sends. A namespace nobody joined has nobody to reach.
  const nsp = io._nsps.get(namespace);
  if (nsp !== undefined) {
    let target = nsp;
    if (rooms && rooms.length > 0) target = target.to(rooms);
    if (except && except.length > 0) target = target.except(except);
    target.emit(event, ...args);
  }
  return sendJson(res, 200, { ok: true });
}

function onRequest(req, res) {
  const path = req.url.split("?", 1)[0];
  if (path === "/healthz") {
    if (req.method !== "GET") return sendError(res, 405, "method_not_allowed", "use GET");
    return sendJson(res, 200, { status: "ok" });
  }
  if (path !== "/v1/emit") return sendError(res, 404, "not_found", `no route ${path}`);
  if (req.method !== "POST") return sendError(res, 405, "method_not_allowed", "use POST");
  if (!authorized(req)) {
    return sendError(res, 401, "unauthorized", "missing or wrong API key");
  }
  const declared = Number(req.headers["content-length"] || 0);
  if (declared > MAX_BODY) {
    res.setHeader("Connection", "close");
    return sendError(res, 413, "payload_too_large", `body over ${MAX_BODY} bytes`);
  }
  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      tooLarge = true;
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (tooLarge) {
      res.setHeader("Connection", "close");
      return sendError(res, 413, "payload_too_large", `body over ${MAX_BODY} bytes`);
    }
    handleEmit(req, res, Buffer.concat(chunks).toString("utf8"));
  });
}

function authenticate(socket, next) {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (typeof token !== "string") return next(new Error("missing token"));
  let claims;
  try {
    claims = jwt.verify(token, jwtKey, VERIFY_OPTIONS);
  } catch (err) {
    return next(new Error(`invalid token: ${err.message}`));
  }
  if (typeof claims.exp !== "number") return next(new Error("invalid token: no exp"));
  socket.data.claims = claims;
  return next();
}

function onConnection(socket) {
  const { sub, rooms } = socket.data.claims;
  const joined = [];
  if (typeof sub === "string") joined.push(`user:${sub}`);
  if (Array.isArray(rooms)) {
    for (const room of rooms) if (typeof room === "string") joined.push(room);
  }
  if (joined.length > 0) socket.join(joined);
}

// The adapter subscribes in its constructor, so both Redis clients must be connected
// before the Server (and its namespaces) exist.
async function redisAdapter() {
  if (!opts.redisUrl) return undefined;
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pubClient = createClient({ url: opts.redisUrl });
  const subClient = pubClient.duplicate();
  for (const [name, client] of [["publish", pubClient], ["subscribe", subClient]]) {
    client.on("error", (err) => process.stderr.write(`redis ${name} client: ${err.message}\n`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);
  return createAdapter(pubClient, subClient, { key: opts.redisPrefix });
}

let io;
// Set by cluster.js in the worker processes it forks: the cluster adapter instead of
// Redis, and connections handed over by the primary (@socket.io/sticky) instead of listen().
const CLUSTER_WORKER = process.env.NODE_REF_CLUSTER_WORKER === "1";

async function main() {
  const httpServer = http.createServer({ keepAliveTimeout: 60_000 }, onRequest);
  io = new Server(httpServer, {
    path: "/socket.io/",
    serveClient: false,
    pingInterval: 25_000,
    pingTimeout: 20_000,
    maxHttpBufferSize: MAX_BODY,
    adapter: CLUSTER_WORKER ? require("@socket.io/cluster-adapter").createAdapter() : await redisAdapter(),
  });

  // "/" always exists, so the catch-all child-namespace pattern never shadows it.
  for (const nsp of [io.of("/"), io.of(/^\/.+$/)]) {
    nsp.use(authenticate);
    nsp.on("connection", onConnection);
  }

  if (CLUSTER_WORKER) {
    require("@socket.io/sticky").setupWorker(io);
    return;
  }
  httpServer.listen({ host: opts.host, port: opts.port, backlog: opts.backlog }, () => {
    const { address, port } = httpServer.address();
    const mode = opts.redisUrl ? ` (redis adapter, key ${opts.redisPrefix})` : "";
    process.stderr.write(`node-ref listening on ${address}:${port}${mode}\n`);
  });
}

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

main().catch((err) => {
  process.stderr.write(`node-ref failed to start: ${err.stack || err}\n`);
  process.exit(1);
});
