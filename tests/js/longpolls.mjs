#!/usr/bin/env node
// Many long-polling Engine.IO sessions, each opened on one node and then driven only
// through another, with Node's keep-alive HTTP agent (the load is the server's, not this
// driver's). Answers pings; finishes when every session has received EVENT.
//
// Usage: node longpolls.mjs OWNER_URL RELAY_URL COUNT EVENT TIMEOUT_MS
// Output: a line "ready" once every session is connected to "/" and polling, then one
// JSON line {"received": n, "closed": n, "errors": [...]}; exit code 0.

import http from "node:http";

const [ownerUrl, relayUrl, countArg, event, timeoutArg] = process.argv.slice(2);
const count = Number(countArg);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
setTimeout(() => finish("timeout"), Number(timeoutArg)).unref();

function request(method, base, path, body) {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const results = { received: 0, closed: 0, errors: [] };
let ready = 0;

async function session() {
  const open = await request("GET", ownerUrl, "/socket.io/?EIO=4&transport=polling");
  const { sid } = JSON.parse(open.text.slice(1));
  const path = `/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  if ((await request("POST", relayUrl, path, "40")).text !== "ok") throw new Error("POST 40");
  let counted = false;
  for (;;) {
    const poll = await request("GET", relayUrl, path);
    if (poll.status !== 200) throw new Error(`GET ${poll.status} ${poll.text}`);
    for (const packet of poll.text.split("\x1e")) {
      if (packet.startsWith("40") && !counted) {
        counted = true;
        if (++ready === count) process.stdout.write("ready\n");
      } else if (packet === "2") {
        const pong = await request("POST", relayUrl, path, "3");
        if (pong.text !== "ok") throw new Error(`pong ${pong.status} ${pong.text}`);
      } else if (packet === "1") {
        results.closed++;
        return;
      } else if (packet.includes(`"${event}"`)) {
        results.received++;
        return;
      }
    }
  }
}

function finish(why) {
  if (why) results.errors.push(why);
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(0);
}

const sessions = Array.from({ length: count }, () =>
  session().catch((err) => results.errors.push(String(err.message ?? err))),
);
await Promise.all(sessions);
finish();
