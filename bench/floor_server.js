#!/usr/bin/env node
// A trivial "floor" server speaking just enough Engine.IO/Socket.IO over WebSocket for the
// load generator, used to measure the load generator's own ceiling (bench/README.md).
//
//   node floor_server.js --port 8100
//
// It does no JWT verification (it only decodes the `rooms` claim), no pings, no polling.
// A broadcast builds the WebSocket frame once and writes the same bytes to every socket,
// which is the cheapest a server can do per recipient.
// - POST /v1/emit {"event", "data"|"args", "rooms"?}: one frame to each socket in `rooms`
//   (all sockets without `rooms`), then 200 {"ok":true}.
// - POST /flood {"rounds", "seq0", "pad"}: `rounds` back-to-back broadcasts of
//   42["m","SEQ:<seq>:<pad>"] to every socket, seq = seq0, seq0+1, ...; the event loop
//   runs between rounds so the reply and the client's pongs are not starved. Replies when done.
// - GET /healthz.
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

let port = 8100;
for (let i = 2; i < process.argv.length; i += 2) {
  if (process.argv[i] === "--port") port = Number(process.argv[i + 1]);
  else throw new Error(`unknown flag ${process.argv[i]}`);
}

/** @type {Map<string, Set<Conn>>} */
const rooms = new Map();
/** @type {Set<Conn>} */
const conns = new Set();
let nextId = 0;

function frame(text) {
  const payload = Buffer.from(text, "utf8");
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0x81, n]);
  } else if (n < 65536) {
    head = Buffer.from([0x81, 126, n >> 8, n & 255]);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x81;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

function roomsFromToken(token) {
  // Trusting the claim is fine here: this server only measures the load generator.
  try {
    const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
    return Array.isArray(claims.rooms) ? claims.rooms : [];
  } catch {
    return [];
  }
}

class Conn {
  constructor(socket) {
    this.socket = socket;
    this.id = `f${nextId++}`;
    this.buf = Buffer.alloc(0);
    this.rooms = [];
    socket.setNoDelay(true);
    socket.on("data", (data) => this.onData(data));
    socket.on("error", () => {});
    // The http server's sockets allow half-open; close ours when the client leaves.
    socket.on("end", () => socket.destroy());
    socket.on("close", () => this.onClose());
    const open = { sid: this.id, upgrades: [], pingInterval: 25000, pingTimeout: 20000,
      maxPayload: 1000000 };
    socket.write(frame(`0${JSON.stringify(open)}`));
  }

  onData(data) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    // Client frames are small and masked: FIN+opcode, 0x80|len (or 126 + 2 bytes), mask, payload.
    while (this.buf.length >= 6) {
      let len = this.buf[1] & 127;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        this.socket.destroy();
        return;
      }
      if (this.buf.length < off + 4 + len) return;
      const mask = this.buf.subarray(off, off + 4);
      const payload = Buffer.alloc(len);
      for (let i = 0; i < len; i++) payload[i] = this.buf[off + 4 + i] ^ mask[i & 3];
      const opcode = this.buf[0] & 15;
      this.buf = this.buf.subarray(off + 4 + len);
      if (opcode === 8) {
        this.socket.end();
        return;
      }
      this.onPacket(payload.toString("utf8"));
    }
  }

  onPacket(text) {
    if (text.startsWith("40")) {
      let auth = {};
      try {
        auth = text.length > 2 ? JSON.parse(text.slice(2)) : {};
      } catch {}
      this.rooms = roomsFromToken(String(auth.token || ""));
      for (const room of this.rooms) {
        if (!rooms.has(room)) rooms.set(room, new Set());
        rooms.get(room).add(this);
      }
      conns.add(this);
      this.socket.write(frame(`40{"sid":"${this.id}"}`));
    }
  }

  onClose() {
    conns.delete(this);
    for (const room of this.rooms) {
      const members = rooms.get(room);
      if (members) {
        members.delete(this);
        if (members.size === 0) rooms.delete(room);
      }
    }
  }
}

function targets(roomList) {
  if (!roomList || roomList.length === 0) return conns;
  if (roomList.length === 1) return rooms.get(roomList[0]) || new Set();
  const out = new Set();
  for (const room of roomList) for (const c of rooms.get(room) || []) out.add(c);
  return out;
}

function broadcast(bytes, roomList) {
  for (const c of targets(roomList)) c.socket.write(bytes);
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": text.length });
  res.end(text);
}

function flood(res, rounds, seq0, pad) {
  let round = 0;
  const step = () => {
    if (round >= rounds) {
      reply(res, 200, { ok: true, rounds });
      return;
    }
    broadcast(frame(`42["m","SEQ:${seq0 + round}:${pad}"]`), null);
    round++;
    setImmediate(step);
  };
  step();
}

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const path = req.url.split("?", 1)[0];
    if (path === "/healthz") return reply(res, 200, { status: "ok" });
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString() || "{}");
    } catch {
      return reply(res, 400, { error: { code: "invalid_json", message: "bad JSON" } });
    }
    if (path === "/v1/emit" && req.method === "POST") {
      const args = "args" in body ? body.args : "data" in body ? [body.data] : [];
      broadcast(frame(`42${JSON.stringify([body.event, ...args])}`), body.rooms);
      return reply(res, 200, { ok: true });
    }
    if (path === "/flood" && req.method === "POST") {
      return flood(res, Number(body.rounds || 1), Number(body.seq0 || 0), String(body.pad || ""));
    }
    return reply(res, 404, { error: { code: "not_found", message: path } });
  });
});

server.on("upgrade", (req, socket) => {
  const key = req.headers["sec-websocket-key"];
  if (!req.url.startsWith("/socket.io/") || !key) {
    socket.destroy();
    return;
  }
  const accept = crypto.createHash("sha1").update(key + WS_GUID).digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    + `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  new Conn(socket);
});

process.on("SIGTERM", () => process.exit(0));
server.listen({ host: "127.0.0.1", port, backlog: 1024 }, () => {
  process.stderr.write(`floor server listening on 127.0.0.1:${port}\n`);
});
