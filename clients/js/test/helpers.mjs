// Shared by the node:test files: the gateway under test, and real Socket.IO
// clients that receive what the SDK sends.
//
// The gateway is started by tests/integration/test_sdk_js.py, which passes it in:
//   SIOGATE_URL, SIOGATE_API_KEY, SIOGATE_JWT_SECRET,
//   SIOGATE_WEBHOOK_PORT (where webhook.test.mjs must listen), SIOGATE_WEBHOOK_SECRET.
// The files run in parallel against that one gateway, so every test names its
// own users and rooms with uid().

import { randomUUID } from "node:crypto";
import { io } from "socket.io-client";

import { signToken } from "siogate";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through tests/integration/test_sdk_js.py`);
  }
  return value;
}

export const GATEWAY_URL = required("SIOGATE_URL");
export const API_KEY = required("SIOGATE_API_KEY");
export const JWT_SECRET = required("SIOGATE_JWT_SECRET");
export const WEBHOOK_PORT = Number(required("SIOGATE_WEBHOOK_PORT"));
export const WEBHOOK_SECRET = required("SIOGATE_WEBHOOK_SECRET");

/** How long a test waits for something the gateway should send. */
export const WAIT_MS = 5_000;

/**
 * The id and user of each socket of a sockets() listing. Gateways with cluster
 * support also name each socket's node, which these tests do not look at.
 */
export function members(listing) {
  return listing.sockets.map(({ id, user }) => ({ id, user }));
}

export function uid(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A connected socket.io-client socket that records every event it receives. */
export class Client {
  constructor(socket) {
    this.socket = socket;
    this.events = [];
    this.waiters = [];
    socket.onAny((event, ...args) => {
      this.events.push({ event, args });
      this.#wake();
    });
    socket.on("disconnect", (reason) => {
      this.disconnectReason = reason;
      this.#wake();
    });
  }

  get id() {
    return this.socket.id;
  }

  #wake() {
    for (const check of [...this.waiters]) check();
  }

  /** Resolve with the first value `pick()` returns other than undefined, or fail after WAIT_MS. */
  until(pick, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const value = pick();
        if (value === undefined) return;
        clearTimeout(timer);
        this.waiters.splice(this.waiters.indexOf(check), 1);
        resolve(value);
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(check), 1);
        const seen = JSON.stringify(this.events);
        reject(new Error(`socket ${this.id}: no ${what} within ${WAIT_MS} ms; events so far: ${seen}`));
      }, WAIT_MS);
      this.waiters.push(check);
      check();
    });
  }

  /** The args of the first received `event`. */
  next(event) {
    return this.until(() => this.events.find((e) => e.event === event)?.args, `"${event}" event`);
  }

  /** The names of the events received so far, in order. */
  names() {
    return this.events.map((e) => e.event);
  }

  disconnected() {
    return this.until(() => this.disconnectReason, "disconnect");
  }

  close() {
    this.socket.disconnect();
  }
}

/**
 * Connect a real socket.io-client to the gateway (WebSocket transport) and
 * resolve once the gateway has accepted it; reject with its connect_error.
 * The socket is closed when the test `t` ends: node:test waits for open
 * handles, and the gateway would go on counting it in rooms().
 */
export function connect(t, { token, namespace = "/" } = {}) {
  const socket = io(GATEWAY_URL + namespace, {
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    auth: token === undefined ? {} : { token },
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.disconnect();
      reject(new Error(`socket did not connect within ${WAIT_MS} ms`));
    }, WAIT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      t.after(() => socket.disconnect());
      resolve(new Client(socket));
    });
    socket.once("connect_error", (error) => {
      clearTimeout(timer);
      socket.disconnect();
      reject(error);
    });
  });
}

/** Connect as user `sub` (joined to `user:<sub>` and `rooms`) with a token from the SDK. */
export async function connectAs(t, sub, { rooms, namespace } = {}) {
  const token = await signToken({ sub, ...(rooms ? { rooms } : {}) }, JWT_SECRET);
  return connect(t, { token, namespace });
}

