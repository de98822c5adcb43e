#!/usr/bin/env node
// Drives the stock @socket.io/redis-emitter (5.x, on node-redis 4.x) from Python tests.
//
// Usage: node emitter.mjs REDIS_URL [KEY]
//
// Reads one JSON step a line from stdin and answers each with one line on stdout,
// {"type":"done","tag":T} once Redis has processed what the step published (a PING sent
// after it on the same connection has been answered), or {"type":"error","tag":T,
// "message":...}. Steps (every one takes "nsp", default "/", "to" and "except", lists of
// rooms, and "tag"):
//   {"op":"emit", "event":E, "args":[...], "volatile":true, "compress":false}
//   {"op":"socketsJoin", "rooms":[...]}
//   {"op":"socketsLeave", "rooms":[...]}
//   {"op":"disconnectSockets", "close":bool}
//   {"op":"serverSideEmit", "args":[...]}
//   {"op":"raw", "channel":C, "base64":B}    PUBLISH these bytes as they are
//   {"op":"exit"}
// Values in "args" use the escapes of client.mjs: {"$bin": base64} is a Buffer, a key
// starting with "$" loses one "$"; and {"$date": ISO string} is a Date.

import { createInterface } from "node:readline";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

function decodeValue(value) {
  if (Array.isArray(value)) return value.map(decodeValue);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bin") return Buffer.from(value.$bin, "base64");
    if (keys.length === 1 && keys[0] === "$date") return new Date(value.$date);
    const out = {};
    for (const key of keys) {
      Object.defineProperty(out, key.startsWith("$$") ? key.slice(1) : key, {
        value: decodeValue(value[key]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  return value;
}

function say(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const [url, key] = process.argv.slice(2);
const client = createClient({ url });
client.on("error", (err) => process.stderr.write(`redis: ${err}\n`));
await client.connect();
const root = new Emitter(client, key ? { key } : undefined);

function target(step) {
  let op = step.nsp && step.nsp !== "/" ? root.of(step.nsp) : root;
  if (step.to && step.to.length) op = op.to(step.to);
  if (step.except && step.except.length) op = op.except(step.except);
  if (step.volatile) op = op.volatile;
  if (step.compress !== undefined) op = op.compress(step.compress);
  return op;
}

async function run(step) {
  switch (step.op) {
    case "emit":
      target(step).emit(step.event, ...decodeValue(step.args ?? []));
      break;
    case "socketsJoin":
      target(step).socketsJoin(step.rooms);
      break;
    case "socketsLeave":
      target(step).socketsLeave(step.rooms);
      break;
    case "disconnectSockets":
      target(step).disconnectSockets(step.close ?? false);
      break;
    case "serverSideEmit":
      (step.nsp && step.nsp !== "/" ? root.of(step.nsp) : root).serverSideEmit(
        ...decodeValue(step.args ?? []),
      );
      break;
    case "raw":
      await client.publish(step.channel, Buffer.from(step.base64, "base64"));
      break;
    default:
      throw new Error(`unknown op ${step.op}`);
  }
  // The emitter does not wait for its PUBLISH; a PING behind it on the same connection
  // is answered once Redis has processed (and delivered) it.
  await client.ping();
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const step = JSON.parse(line);
  if (step.op === "exit") break;
  try {
    await run(step);
    say({ type: "done", tag: step.tag ?? null });
  } catch (err) {
    say({ type: "error", tag: step.tag ?? null, message: String(err?.message ?? err) });
  }
}
await client.quit();
