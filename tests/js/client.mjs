#!/usr/bin/env node
// Drives the official socket.io-client through a scenario and reports what it sees.
//
// Usage:
//   node client.mjs '<scenario JSON>'     scenario from argv
//   node client.mjs -                     scenario is the first line of stdin
//
// Scenario:
//   {
//     "url": "http://127.0.0.1:8000",   // without the namespace
//     "namespace": "/",                 // appended to url
//     "options": {...},                 // io() options: transports, auth, upgrade, forceNew, ...
//     "steps": [{"op": "connect"}, ...],
//     "interactive": false,             // true: after `steps`, read more steps from stdin,
//                                       //       one JSON object a line, until EOF or {"op":"exit"}
//     "timeout": 30000                  // ms; the driver always exits by then (exit code 3)
//   }
//
// Steps (all optional fields have defaults; "tag" is echoed in the step's result):
//   {"op":"connect", "timeout":ms}           open the socket, wait for connect or connect_error
//   {"op":"connect", "socket":S, "namespace":NS, "auth":{...}}
//                                            open another socket, on the same Manager (so the
//                                            same Engine.IO connection); any step takes
//                                            "socket":S to act on it (default "main")
//   {"op":"emit", "event":E, "args":[...]}   fire and forget
//   {"op":"emit", "event":E, "args":[...], "ack":true, "timeout":ms, "wait":true, "tag":T}
//                                            emit with an ack callback; waits for it unless wait=false
//   {"op":"wait", "event":E, "count":N, "timeout":ms, "tag":T}
//                                            until N events named E have arrived (in total)
//   {"op":"wait_transport", "name":"websocket", "timeout":ms, "tag":T}
//   {"op":"transport", "tag":T}              report the current transport name
//   {"op":"sleep", "ms":N}
//   {"op":"disconnect"}                      client-side disconnect
//   {"op":"drop"}                            close the Engine.IO connection (socket.io.engine.close())
//   {"op":"wait_disconnect", "timeout":ms, "tag":T}
//   {"op":"exit"}
//
// Output: one JSON object a line on stdout, each with a "type":
//   ready, open {transport}, connected {id, transport, recovered}, connect_error {message, data}, event {event, args},
//   ack {tag, args} | ack_timeout {tag, message}, upgrade {transport}, transport {tag, name},
//   waited {tag, event, count} | wait_timeout {tag, event, count, got}, disconnect {reason, description},
//   error {message}, done, timeout.
//   Observations of a socket other than "main" carry "socket": its name.
//
// Values cross the JSON boundary with two escapes, in both directions:
//   binary (Buffer, ArrayBuffer, typed arrays)  <->  {"$bin": "<base64>"}
//   an object key starting with "$"             <->  the same key with one more "$" in front
// so that any JSON value, even one holding a "$bin" key, survives the trip unchanged.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const DEFAULT_STEP_TIMEOUT = 10000;

// ---------------------------------------------------------------- output

let exiting = false;

function emitLine(obj) {
  if (exiting) return;
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function finish(code) {
  if (exiting) return;
  exiting = true;
  // A write to a pipe is synchronous on Linux, but wait for the callback anyway so that
  // the last line is never lost on other platforms.
  process.stdout.write("", () => process.exit(code));
}

// ---------------------------------------------------------------- value codec

// defineProperty, not assignment: `out["__proto__"] = v` would set the prototype.
function setOwn(obj, key, value) {
  Object.defineProperty(obj, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function isBinary(value) {
  return (
    Buffer.isBuffer(value) ||
    value instanceof ArrayBuffer ||
    ArrayBuffer.isView(value)
  );
}

function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

export function encodeValue(value) {
  if (isBinary(value)) return { $bin: toBuffer(value).toString("base64") };
  if (Array.isArray(value)) return value.map(encodeValue);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) {
      setOwn(out, key.startsWith("$") ? "$" + key : key, encodeValue(value[key]));
    }
    return out;
  }
  if (typeof value === "function") return { $fn: true };
  return value;
}

export function decodeValue(value) {
  if (Array.isArray(value)) return value.map(decodeValue);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bin") {
      return Buffer.from(value.$bin, "base64");
    }
    const out = {};
    for (const key of keys) {
      setOwn(out, key.startsWith("$$") ? key.slice(1) : key, decodeValue(value[key]));
    }
    return out;
  }
  return value;
}

// ---------------------------------------------------------------- state

const waiters = new Set(); // functions re-checked after every observation

function notify() {
  for (const check of [...waiters]) check();
}

// Resolves when `predicate()` holds, or with false after `timeout` ms.
function until(predicate, timeout) {
  return new Promise((resolve) => {
    if (predicate()) return resolve(true);
    let timer = null;
    const check = () => {
      if (predicate()) {
        waiters.delete(check);
        clearTimeout(timer);
        resolve(true);
      }
    };
    timer = setTimeout(() => {
      waiters.delete(check);
      resolve(false);
    }, timeout);
    waiters.add(check);
  });
}

// Sockets by name. "main" is the scenario's socket; a step with "socket": NAME and
// "namespace": NS opens another one on the same Manager, i.e. multiplexed on the same
// Engine.IO connection. Observations of a socket other than "main" carry its name.
const peers = new Map();
let manager = null;

class Peer {
  constructor(name) {
    this.name = name;
    this.socket = null;
    this.counts = new Map(); // event name -> number received
    this.state = "idle"; // idle | connecting | connected | refused | disconnected
  }

  report(obj) {
    emitLine(this.name === "main" ? obj : { ...obj, socket: this.name });
    notify();
  }
}

function peer(step) {
  const name = step.socket ?? "main";
  let p = peers.get(name);
  if (!p) {
    p = new Peer(name);
    peers.set(name, p);
  }
  return p;
}

function transportName() {
  return manager?.engine?.transport?.name ?? null;
}

function watchManager(m) {
  const watchEngine = () => {
    const engine = m.engine;
    if (!engine || engine.__siogateWatched) return;
    engine.__siogateWatched = true;
    engine.on("upgrade", (transport) => {
      emitLine({ type: "upgrade", transport: transport.name });
      notify();
    });
  };
  m.on("open", () => {
    // The transport the engine opened with (before any upgrade).
    emitLine({ type: "open", transport: transportName() });
    watchEngine();
    notify();
  });
  return watchEngine;
}

function openSocket(scenario, p, step) {
  let s;
  if (manager === null) {
    const ns = step.namespace ?? scenario.namespace ?? "/";
    // reconnection off by default: a refused or dropped socket must stay observable,
    // not be retried behind the test's back.
    const options = { reconnection: false, forceNew: true, ...(scenario.options ?? {}) };
    if (step.auth !== undefined) options.auth = step.auth;
    if (options.auth !== undefined) options.auth = decodeValue(options.auth);
    s = io(scenario.url.replace(/\/$/, "") + (ns === "/" ? "/" : ns), options);
    manager = s.io;
    watchManager(manager);
  } else {
    const opts = step.auth === undefined ? {} : { auth: decodeValue(step.auth) };
    s = manager.socket(step.namespace ?? "/", opts);
  }

  s.on("connect", () => {
    p.state = "connected";
    p.report({ type: "connected", id: s.id, transport: transportName(), recovered: s.recovered });
  });
  s.on("connect_error", (err) => {
    p.state = "refused";
    p.report({
      type: "connect_error",
      message: err?.message ?? String(err),
      data: err?.data === undefined ? null : encodeValue(err.data),
    });
  });
  s.on("disconnect", (reason, details) => {
    p.state = "disconnected";
    const description = details?.description;
    p.report({
      type: "disconnect",
      reason,
      description:
        description === undefined ? null : String(description?.message ?? description),
    });
  });
  s.onAny((event, ...args) => {
    // A server-side emit with an ack hands us a callback as the last argument; answer it
    // with no arguments and say so.
    let ackRequested = false;
    if (args.length && typeof args[args.length - 1] === "function") {
      ackRequested = true;
      args.pop()();
    }
    p.counts.set(event, (p.counts.get(event) ?? 0) + 1);
    const line = { type: "event", event, args: encodeValue(args) };
    if (ackRequested) line.ack_requested = true;
    p.report(line);
  });
  return s;
}

function disconnectAll() {
  for (const p of peers.values()) p.socket?.disconnect();
}

// ---------------------------------------------------------------- steps

async function runStep(scenario, step) {
  const timeout = step.timeout ?? DEFAULT_STEP_TIMEOUT;
  const tag = step.tag ?? null;
  const p = peer(step);
  const socket = p.socket;
  switch (step.op) {
    case "connect": {
      if (!socket) p.socket = openSocket(scenario, p, step);
      else socket.connect();
      p.state = "connecting";
      const ok = await until(() => p.state !== "connecting", timeout);
      if (!ok) p.report({ type: "connect_timeout", tag });
      return;
    }
    case "emit": {
      if (!socket) throw new Error("emit before connect");
      const args = decodeValue(step.args ?? []);
      if (!step.ack) {
        socket.emit(step.event, ...args);
        return;
      }
      let acked = false;
      socket.timeout(timeout).emit(step.event, ...args, (err, ...res) => {
        acked = true;
        if (err) p.report({ type: "ack_timeout", tag, message: err.message });
        else p.report({ type: "ack", tag, args: encodeValue(res) });
      });
      if (step.wait ?? true) await until(() => acked, timeout + 1000);
      return;
    }
    case "wait": {
      const count = step.count ?? 1;
      const ok = await until(() => (p.counts.get(step.event) ?? 0) >= count, timeout);
      const got = p.counts.get(step.event) ?? 0;
      p.report(
        ok
          ? { type: "waited", tag, event: step.event, count }
          : { type: "wait_timeout", tag, event: step.event, count, got },
      );
      return;
    }
    case "wait_transport": {
      const name = step.name ?? "websocket";
      const ok = await until(() => transportName() === name, timeout);
      emitLine({ type: ok ? "transport" : "wait_timeout", tag, name: transportName() });
      return;
    }
    case "transport":
      emitLine({ type: "transport", tag, name: transportName() });
      return;
    case "sleep":
      await new Promise((resolve) => setTimeout(resolve, step.ms ?? 0));
      return;
    case "disconnect":
      socket?.disconnect();
      return;
    case "drop":
      // Lose the transport without leaving (connection state recovery tests).
      manager?.engine?.close();
      return;
    case "wait_disconnect": {
      const ok = await until(() => p.state === "disconnected", timeout);
      if (!ok) p.report({ type: "wait_timeout", tag, event: "disconnect" });
      return;
    }
    case "exit":
      disconnectAll();
      finish(0);
      return;
    default:
      throw new Error(`unknown op: ${JSON.stringify(step.op)}`);
  }
}

// Steps run one at a time, in order, whichever source they come from.
let chain = Promise.resolve();

function enqueue(scenario, step) {
  chain = chain.then(() =>
    runStep(scenario, step).catch((err) => {
      emitLine({ type: "error", message: String(err?.message ?? err) });
    }),
  );
  return chain;
}

// ---------------------------------------------------------------- main

async function main() {
  const stdinLines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const lines = stdinLines[Symbol.asyncIterator]();

  let scenario;
  try {
    const arg = process.argv[2];
    if (arg === undefined || arg === "-") {
      const first = await lines.next();
      if (first.done) throw new Error("no scenario on stdin");
      scenario = JSON.parse(first.value);
    } else {
      scenario = JSON.parse(arg);
    }
    if (typeof scenario.url !== "string") throw new Error("scenario.url is required");
  } catch (err) {
    emitLine({ type: "error", message: `bad scenario: ${err?.message ?? err}` });
    finish(2);
    return;
  }

  // The global timeout keeps a stuck scenario from outliving its test.
  setTimeout(() => {
    emitLine({ type: "timeout" });
    finish(3);
  }, scenario.timeout ?? 30000).unref();

  emitLine({ type: "ready" });
  for (const step of scenario.steps ?? []) enqueue(scenario, step);
  await chain;

  if (!scenario.interactive) {
    disconnectAll();
    emitLine({ type: "done" });
    finish(0);
    return;
  }
  for (;;) {
    const next = await lines.next();
    if (next.done) break;
    const text = next.value.trim();
    if (!text) continue;
    let step;
    try {
      step = JSON.parse(text);
    } catch (err) {
      emitLine({ type: "error", message: `bad step: ${err.message}` });
      continue;
    }
    enqueue(scenario, step);
  }
  // stdin closed: whoever drove us is gone.
  await chain;
  disconnectAll();
  emitLine({ type: "done" });
  finish(0);
}

main();
