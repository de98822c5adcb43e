#!/usr/bin/env node
// Opens N sockets of the official socket.io-client (each its own connection) that answer
// a server emit's acknowledgement the way applications do:
//   socket.on(event, (data, cb) => cb(reply))
//
// Usage: node ack_clients.mjs '<config JSON>'
//   {"url": "http://127.0.0.1:8000", "count": N, "event": "ask",
//    "silent": [i, ...],          // these sockets never answer
//    "transports": ["websocket"], "timeout": ms}
// The reply of socket i is {"i": i, "id": <its socket id>, "echo": <the data it got>}.
//
// Output, one JSON object a line: connected {i, id} for each socket, then ready; event {i}
// for each emit a socket receives. Input, one JSON object a line:
//   {"op": "disconnect", "i": i}   client-side disconnect of socket i
//   {"op": "exit"}

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const silent = new Set(config.silent ?? []);
const sockets = [];
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

setTimeout(() => process.exit(3), config.timeout ?? 60000).unref();

let connected = 0;
for (let i = 0; i < config.count; i++) {
  const socket = io(config.url, {
    forceNew: true,
    reconnection: false,
    transports: config.transports ?? ["websocket"],
  });
  sockets.push(socket);
  socket.on(config.event ?? "ask", (data, cb) => {
    say({ type: "event", i });
    if (!silent.has(i)) cb({ i, id: socket.id, echo: data });
  });
  socket.once("connect", () => {
    say({ type: "connected", i, id: socket.id });
    if (++connected === config.count) say({ type: "ready" });
  });
  socket.on("connect_error", (err) => say({ type: "connect_error", i, message: err.message }));
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const step = JSON.parse(line);
  if (step.op === "disconnect") sockets[step.i].disconnect();
  if (step.op === "exit") {
    for (const s of sockets) s.disconnect();
    process.exit(0);
  }
});
rl.on("close", () => process.exit(0));
