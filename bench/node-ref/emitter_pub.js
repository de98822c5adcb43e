#!/usr/bin/env node
// The publisher of bench/emitter.py: the stock @socket.io/redis-emitter 5.1 on node-redis.
//
//   node emitter_pub.js REDIS_URL EMITS ROOMS [PAD_BYTES]
//
// Connects, prints {"ready":true}, waits for one line on stdin, then publishes EMITS
// events as fast as the emitter and Redis take them: event i goes to room "r<i % ROOMS>"
// with the data "SEQ:<i>:<pad>" (bench/loadgen.py's clients find the number by bytes).
// The emitter does not wait for its PUBLISH replies; a PING after the last one is
// answered once Redis has processed them all. Prints {"published", "publish_s"}.

"use strict";

const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");

const [url, emitsArg, roomsArg, padArg] = process.argv.slice(2);
const emits = Number(emitsArg);
const rooms = Number(roomsArg);
const pad = "x".repeat(Number(padArg || 16));

async function main() {
  const client = createClient({ url });
  client.on("error", (err) => process.stderr.write(`redis: ${err.message}\n`));
  await client.connect();
  const emitter = new Emitter(client);
  const targets = [];
  for (let r = 0; r < rooms; r++) targets.push(emitter.to(`r${r}`));
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  await new Promise((resolve) => process.stdin.once("data", resolve));
  process.stdin.destroy();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < emits; i++) {
    targets[i % rooms].emit("m", `SEQ:${i}:${pad}`);
    // Let node-redis write what is queued every so often (a burst of 10,000 queued
    // commands is written in one go otherwise, which is fine too, but bounded memory).
    if (i % 1000 === 999) await new Promise(setImmediate);
  }
  await client.ping();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ published: emits, publish_s: seconds }) + "\n");
  await client.quit();
}

main().catch((err) => {
  process.stderr.write(`emitter_pub failed: ${err.stack || err}\n`);
  process.exit(1);
});
