#!/usr/bin/env node
// The stock socket.io-client with `auth` as a function that fetches a fresh token for
// every (re)connection, the pattern docs/quickstart.md shows. Used by
// tests/integration/test_token_expiry.py.
//
// Usage: node token_refresh.mjs GATEWAY_URL TOKEN_URL CONNECTS TIMEOUT_MS [TRANSPORTS]
//
// Prints one JSON line per observation, each with "t" (seconds since the epoch):
//   token {n}, connect {id, transport}, disconnect {reason}, connect_error {message},
//   ready (after CONNECTS connects; the socket stays up until stdin closes), timeout.

import { io } from "socket.io-client";

const [gateway, tokenUrl, connectsArg, timeoutArg, transports] = process.argv.slice(2);
const wanted = Number(connectsArg);

function out(obj) {
  process.stdout.write(JSON.stringify({ t: Date.now() / 1000, ...obj }) + "\n");
}

let fetched = 0;
let connects = 0;
const options = {
  // Called on the first connection and again on every reconnection.
  auth: (cb) =>
    fetch(tokenUrl)
      .then((r) => r.json())
      .then(({ token }) => {
        fetched += 1;
        out({ type: "token", n: fetched });
        cb({ token });
      }),
};
if (transports) options.transports = transports.split(",");

const socket = io(gateway, options);
socket.on("connect", () => {
  connects += 1;
  out({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name });
  if (connects === wanted) out({ type: "ready" });
});
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));

process.stdin.resume();
process.stdin.on("end", () => {
  socket.disconnect();
  process.exit(0);
});
setTimeout(() => {
  out({ type: "timeout" });
  process.exit(3);
}, Number(timeoutArg)).unref();
