#!/usr/bin/env node
// server.js on several cores, as socket.io documents it for one machine: node:cluster,
// @socket.io/sticky in the primary (it accepts every connection and hands it to a
// worker, the same one for all requests of a session) and @socket.io/cluster-adapter
// (broadcasts go through the primary to the other workers).
//
//   WORKERS=4 JWT_SECRET=... API_KEY=... node cluster.js --port 8000 [--host 127.0.0.1]
"use strict";

const cluster = require("node:cluster");
const http = require("node:http");

if (cluster.isPrimary) {
  const { setupMaster } = require("@socket.io/sticky");
  const { setupPrimary } = require("@socket.io/cluster-adapter");
  const argv = process.argv.slice(2);
  const flag = (name, fallback) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  const host = flag("--host", "127.0.0.1");
  const port = Number(flag("--port", "8000"));
  const workers = Number(process.env.WORKERS || "2");
  const httpServer = http.createServer();
  setupMaster(httpServer, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  cluster.setupPrimary({ serialization: "advanced" });
  for (let i = 0; i < workers; i++) {
    cluster.fork({ NODE_REF_CLUSTER_WORKER: "1" });
  }
  let online = 0;
  cluster.on("listening", () => {});
  cluster.on("online", () => {
    online += 1;
    if (online === workers) {
      httpServer.listen({ host, port, backlog: 1024 }, () => {
        process.stderr.write(`node-ref cluster listening on ${host}:${port} with ${workers} workers\n`);
      });
    }
  });
  cluster.on("exit", (worker, code) => {
    process.stderr.write(`node-ref worker ${worker.process.pid} exited with ${code}\n`);
  });
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  require("./server.js");
}
